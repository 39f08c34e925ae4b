//! Watches pods and hands each real one to its own task; keeps caches of what pods need.

use crate::error::Result;
use crate::ipam::Ipam;
use crate::objects::Objects;
use crate::pod::{PodTask, Shared, Update};
use crate::settings::Settings;
use crate::{net, sandbox};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// A cache of every `K`, kept current in the background.
fn cache<K>(client: &Client) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher::watcher(Api::<K>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .for_each(|_| futures::future::ready(()));
    tokio::spawn(stream);
    store
}

/// Stops what an earlier runner left behind: container processes, namespaces, state.
pub async fn clean_leftovers(state_dir: &Path) {
    let pods = state_dir.join("pods");
    for pod in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
        for c in std::fs::read_dir(pod.path().join("containers"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Some(pid) = sandbox::read_pid(&c.path().join("pid")) {
                for p in sandbox::container_pids(pid) {
                    sandbox::signal(p, libc::SIGKILL);
                }
            }
        }
    }
    for ns in net::ours().await.unwrap_or_default() {
        let _ = net::delete(&ns).await;
    }
    for veth in net::stray_veths().await.unwrap_or_default() {
        let _ = net::ip(&["link", "del", &veth]).await;
    }
    let _ = std::fs::remove_dir_all(&pods);
    let _ = std::fs::remove_dir_all(state_dir.join("index"));
}

fn is_real(settings: &Settings, pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.node_name.is_some()
        && spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(|c| settings.is_real(c.image.as_deref().unwrap_or_default()))
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

struct Tasks {
    running: HashMap<String, (watch::Sender<Update>, tokio::task::JoinHandle<()>)>,
    /// Pods whose task has ended: an event that comes after (the object's last changes
    /// before it goes) starts nothing again.
    done: HashSet<String>,
}

impl Tasks {
    fn send(&mut self, shared: &Arc<Shared>, pod: Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let pod = Arc::new(pod);
        if let Some((tx, _)) = self.running.get(&uid) {
            let _ = tx.send(Update::Pod(pod));
            return;
        }
        if terminal(&pod) || self.done.contains(&uid) {
            return;
        }
        tracing::info!(pod = ?pod.metadata.name, ns = ?pod.metadata.namespace, "running pod");
        let (tx, rx) = watch::channel(Update::Pod(pod.clone()));
        let task = PodTask::new(shared.clone(), pod);
        self.running.insert(uid, (tx, tokio::spawn(task.run(rx))));
    }

    fn gone(&mut self, uid: &str) {
        if let Some((tx, _)) = self.running.get(uid) {
            let _ = tx.send(Update::Gone);
        }
    }
}

/// Runs until `shutdown` resolves, then stops every pod's processes (the API is left alone).
pub async fn run(
    settings: Settings,
    client: Client,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    clean_leftovers(&settings.state_dir).await;
    if let Some(set) = &settings.hairpin_set
        && let Err(e) = net::hairpin_flush(set).await
    {
        tracing::warn!(error = %e, "cannot empty the hairpin set");
    }
    std::fs::create_dir_all(settings.pods_dir()).map_err(crate::error::io(settings.pods_dir()))?;
    let objects = Objects {
        config_maps: cache::<ConfigMap>(&client),
        secrets: cache::<Secret>(&client),
    };
    let nodes = cache::<Node>(&client);
    for ready in [
        objects.config_maps.wait_until_ready().await,
        objects.secrets.wait_until_ready().await,
        nodes.wait_until_ready().await,
    ] {
        if ready.is_err() {
            tracing::error!("a cache never filled");
        }
    }
    let shared = Arc::new(Shared {
        client: client.clone(),
        ipam: Mutex::new(Ipam::new(settings.ip_offset)),
        settings,
        objects,
        nodes,
    });
    let mut tasks = Tasks {
        running: HashMap::new(),
        done: HashSet::new(),
    };
    let mut seen: HashSet<String> = HashSet::new();
    let events =
        watcher::watcher(Api::<Pod>::all(client), watcher::Config::default()).default_backoff();
    tokio::pin!(events);
    tokio::pin!(shutdown);
    tracing::info!("pod runner ready");
    loop {
        let event = tokio::select! {
            _ = &mut shutdown => break,
            e = events.next() => e,
        };
        let ended: Vec<String> = tasks
            .running
            .iter()
            .filter(|(_, (_, h))| h.is_finished())
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in ended {
            tasks.running.remove(&uid);
            tasks.done.insert(uid);
        }
        match event {
            None => break,
            Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed; retrying"),
            Some(Ok(Event::Init)) => seen.clear(),
            Some(Ok(Event::InitApply(pod))) => {
                if is_real(&shared.settings, &pod) {
                    seen.insert(pod.metadata.uid.clone().unwrap_or_default());
                    tasks.send(&shared, pod);
                }
            }
            Some(Ok(Event::InitDone)) => {
                let missing: Vec<String> = tasks
                    .running
                    .keys()
                    .filter(|u| !seen.contains(*u))
                    .cloned()
                    .collect();
                for uid in missing {
                    tasks.gone(&uid);
                }
            }
            Some(Ok(Event::Apply(pod))) => {
                if is_real(&shared.settings, &pod) {
                    tasks.send(&shared, pod);
                }
            }
            Some(Ok(Event::Delete(pod))) => {
                tasks.gone(pod.metadata.uid.as_deref().unwrap_or_default())
            }
        }
    }
    tracing::info!(pods = tasks.running.len(), "stopping every pod");
    for (tx, _) in tasks.running.values() {
        let _ = tx.send(Update::Shutdown);
    }
    for (_, (_, handle)) in tasks.running.drain() {
        let _ = tokio::time::timeout(Duration::from_secs(15), handle).await;
    }
    clean_leftovers(&shared.settings.state_dir).await;
    Ok(())
}
