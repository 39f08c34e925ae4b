//! What every reconcile gets: the client, caches of our kinds, metrics, the event recorder.

use crate::crd::{Guestbook, PatroniCluster, RedisSentinel, VoteApp};
use crate::k8s::cache::OwnedCaches;
use crate::metrics::Metrics;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub type RedisTrigger =
    futures::channel::mpsc::UnboundedSender<kube::runtime::reflector::ObjectRef<RedisSentinel>>;

/// Read-only caches of our four kinds, filled by the controllers' own watches.
#[derive(Clone)]
pub struct Caches {
    pub redis_sentinels: Store<RedisSentinel>,
    pub patroni_clusters: Store<PatroniCluster>,
    pub guestbooks: Store<Guestbook>,
    pub vote_apps: Store<VoteApp>,
    /// What each kind owns (children, pods), as its own watches see it.
    pub owned: OwnedCaches,
}

/// Tunables of the reconcile loops.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often a healthy store is polled anyway: the safety net behind the events it is
    /// followed by (`+switch-master`, pod and child watches).
    pub safety_poll: Duration,
    /// How soon a store that is converging (starting, failing over, rolling) is looked at again.
    pub converging_poll: Duration,
    /// How often the API server is asked again which optional APIs (the Prometheus
    /// Operator's) it serves.
    pub api_discovery: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            safety_poll: Duration::from_secs(30),
            converging_poll: Duration::from_secs(2),
            api_discovery: Duration::from_secs(60),
        }
    }
}

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    /// Resolves once every watch cache has listed.
    pub synced: crate::k8s::sync::Synced,
    /// Failover followers of RedisSentinels.
    pub redis_followers: crate::controllers::redis_sentinel::follow::Followers,
    /// Asks the RedisSentinel controller to reconcile one object now.
    pub redis_trigger: RedisTrigger,
    /// The one namespace watched, or all of them.
    pub namespace: Option<String>,
    pub caches: Caches,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Consecutive failures per object, for the retry backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Whether the API server serves monitoring.coreos.com/v1 (asked again periodically).
    pub monitoring: Arc<crate::k8s::monitoring::MonitoringApi>,
    /// Objects told that monitoring is not served, for one event per generation.
    pub monitoring_told: crate::k8s::monitoring::Told,
    /// The status last written per object, until the cache has caught up with it.
    pub written_status: crate::k8s::status::Written,
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        settings: Settings,
        namespace: Option<String>,
        caches: Caches,
        metrics: Arc<Metrics>,
        recorder: Recorder,
        redis_trigger: RedisTrigger,
        synced: crate::k8s::sync::Synced,
        monitoring: Arc<crate::k8s::monitoring::MonitoringApi>,
    ) -> Self {
        Self {
            client,
            settings,
            synced,
            namespace,
            caches,
            metrics,
            recorder,
            redis_trigger,
            redis_followers: Default::default(),
            failures: Mutex::default(),
            monitoring,
            monitoring_told: Default::default(),
            written_status: Default::default(),
        }
    }

    /// An Api for `K` in one namespace.
    pub fn namespaced<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Records one more failure of `key`; returns how many in a row.
    pub fn note_failure(&self, key: &str) -> u32 {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    pub fn note_success(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

impl Caches {
    /// The uids of every cached object of our kinds.
    pub fn uids(&self) -> HashSet<String> {
        fn of<K: Resource<DynamicType = ()> + Clone>(s: &Store<K>) -> Vec<String> {
            s.state()
                .iter()
                .filter_map(|o| o.meta().uid.clone())
                .collect()
        }
        [
            of(&self.redis_sentinels),
            of(&self.patroni_clusters),
            of(&self.guestbooks),
            of(&self.vote_apps),
        ]
        .concat()
        .into_iter()
        .collect()
    }

    /// Caches holding exactly these objects: for validating offline (tests, `render`).
    pub fn from_objects(
        redis_sentinels: Vec<RedisSentinel>,
        patroni_clusters: Vec<PatroniCluster>,
        guestbooks: Vec<Guestbook>,
        vote_apps: Vec<VoteApp>,
    ) -> Self {
        Self {
            redis_sentinels: filled(redis_sentinels),
            patroni_clusters: filled(patroni_clusters),
            guestbooks: filled(guestbooks),
            vote_apps: filled(vote_apps),
            owned: OwnedCaches::default(),
        }
    }
}

fn filled<K>(objects: Vec<K>) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let (store, mut writer) = kube::runtime::reflector::store();
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Init);
    for o in objects {
        writer.apply_watcher_event(&kube::runtime::watcher::Event::InitApply(o));
    }
    writer.apply_watcher_event(&kube::runtime::watcher::Event::InitDone);
    store
}
