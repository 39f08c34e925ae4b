//! Following failovers as they happen: one task per RedisSentinel subscribes to
//! `+switch-master` on every Sentinel and moves the role labels (so the master Service) the
//! moment a switch is announced, then asks for a full reconcile. Polling is only the safety net.

use super::names::{REDIS, ROLE_MASTER, ROLE_REPLICA, SENTINEL_PORT};
use crate::crd::RedisSentinel;
use crate::k8s::labels;
use crate::metrics::Metrics;
use crate::stores::redis::{self as store, Endpoint, SwitchMaster};
use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a follower needs besides its target.
#[derive(Clone)]
pub struct Handles {
    pub client: Client,
    pub pods: Store<Pod>,
    pub trigger: UnboundedSender<ObjectRef<RedisSentinel>>,
    pub metrics: Arc<Metrics>,
}

struct Follower {
    sentinels: BTreeSet<String>,
    password: Option<String>,
    task: tokio::task::JoinHandle<()>,
}

/// The running followers, by `namespace/name`.
#[derive(Default)]
pub struct Followers {
    running: Mutex<HashMap<String, Follower>>,
}

impl Followers {
    /// Makes sure a follower subscribes to exactly these Sentinels with this password.
    pub fn ensure(
        &self,
        handles: &Handles,
        ns: &str,
        name: &str,
        sentinels: BTreeSet<String>,
        password: Option<String>,
    ) {
        let key = format!("{ns}/{name}");
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = running.get(&key)
            && f.sentinels == sentinels
            && f.password == password
            && !f.task.is_finished()
        {
            return;
        }
        if let Some(old) = running.remove(&key) {
            old.task.abort();
        }
        if sentinels.is_empty() {
            return;
        }
        let task = tokio::spawn(follow(
            handles.clone(),
            ns.to_string(),
            name.to_string(),
            sentinels.clone(),
            password.clone(),
        ));
        running.insert(
            key,
            Follower {
                sentinels,
                password,
                task,
            },
        );
    }

    /// Stops followers whose RedisSentinel is gone.
    pub fn sweep(&self, existing: &Store<RedisSentinel>) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.retain(|key, f| {
            let (ns, name) = key.split_once('/').unwrap_or_default();
            let keep = existing.get(&ObjectRef::new(name).within(ns)).is_some();
            if !keep {
                f.task.abort();
            }
            keep
        });
    }
}

async fn follow(
    handles: Handles,
    ns: String,
    name: String,
    sentinels: BTreeSet<String>,
    password: Option<String>,
) {
    let (tx, mut rx) = futures::channel::mpsc::unbounded::<(SwitchMaster, Instant)>();
    // Dropping the set (when this task is aborted) stops every subscription with it.
    let mut subscriptions = tokio::task::JoinSet::new();
    for ip in sentinels {
        let ep = Endpoint {
            ip,
            port: SENTINEL_PORT as u16,
            password: password.clone(),
        };
        let tx = tx.clone();
        subscriptions.spawn(async move {
            loop {
                match store::switch_master(&ep).await {
                    Ok(mut stream) => {
                        while let Some(sw) = stream.next().await {
                            let _ = tx.unbounded_send((sw, Instant::now()));
                        }
                    }
                    Err(e) => tracing::debug!(sentinel = %ep.addr(), error = %e, "cannot subscribe to +switch-master"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    drop(tx);
    let mut last: Option<(String, Instant)> = None;
    while let Some((sw, seen)) = rx.next().await {
        if sw.group != name {
            continue;
        }
        // Every Sentinel announces the same switch; act on the first.
        if last
            .as_ref()
            .is_some_and(|(ip, at)| *ip == sw.new.0 && at.elapsed() < Duration::from_secs(30))
        {
            continue;
        }
        last = Some((sw.new.0.clone(), Instant::now()));
        match relabel(&handles, &ns, &name, &sw.new.0).await {
            Ok(pod) => {
                handles.metrics.master_followed(seen.elapsed());
                tracing::info!(namespace = %ns, name = %name, master = %pod, address = %sw.new.0, took = ?seen.elapsed(), "followed +switch-master");
            }
            Err(e) => {
                tracing::warn!(namespace = %ns, name = %name, error = %e, "could not follow +switch-master")
            }
        }
        let _ = handles
            .trigger
            .unbounded_send(ObjectRef::new(&name).within(&ns));
    }
}

/// Waits (at most 1 s) until the Service's EndpointSlices list none of `gone`.
async fn slice_without(h: &Handles, ns: &str, service: &str, gone: &[String]) {
    let api: Api<EndpointSlice> = Api::namespaced(h.client.clone(), ns);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        let Ok(slices) = api.list(&lp).await else {
            return;
        };
        let listed = slices
            .items
            .iter()
            .flat_map(|s| s.endpoints.iter().flatten())
            .flat_map(|e| e.addresses.iter())
            .any(|a| gone.contains(a));
        if !listed {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Moves the master label to the pod with address `ip`: old master off first.
async fn relabel(h: &Handles, ns: &str, name: &str, ip: &str) -> Result<String, kube::Error> {
    let redis: Vec<Arc<Pod>> = h
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
        .filter(|p| {
            p.labels().get(labels::INSTANCE).map(String::as_str) == Some(name)
                && p.labels().get(labels::COMPONENT).map(String::as_str) == Some(REDIS)
        })
        .collect();
    let Some(new) = redis
        .iter()
        .find(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_deref()) == Some(ip))
    else {
        return Ok(format!("(no pod at {ip})"));
    };
    let api: Api<Pod> = Api::namespaced(h.client.clone(), ns);
    let set =
        |role: &'static str| serde_json::json!({"metadata": {"labels": {labels::ROLE: role}}});
    let mut moved = Vec::new();
    for old in redis.iter().filter(|p| {
        p.name_any() != new.name_any()
            && p.labels().get(labels::ROLE).map(String::as_str) == Some(ROLE_MASTER)
    }) {
        api.patch(
            &old.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&set(ROLE_REPLICA)),
        )
        .await?;
        moved.extend(old.status.as_ref().and_then(|s| s.pod_ip.clone()));
    }
    if !moved.is_empty() {
        // Two pod changes in quick succession make the EndpointSlice controller find its own
        // cache stale and retry the Service a second later. Let the first change land first.
        slice_without(h, ns, &super::names::Names::of(name).master_service, &moved).await;
    }
    api.patch(
        &new.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&set(ROLE_MASTER)),
    )
    .await?;
    Ok(new.name_any())
}
