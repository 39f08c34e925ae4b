//! Caches of the objects the controllers own, filled by their own watches: children per owner
//! kind (the apply path compares against them, pruning finds by owner uid in them) and the
//! pods of each kind's workloads.

use super::children::ChildKind;
use super::labels;
use super::monitoring::MonitoringApi;
use super::sync::Synced;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::DynamicObject;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

/// Children of one owner kind, one store per child kind.
#[derive(Clone, Default)]
pub struct ChildCache {
    stores: BTreeMap<ChildKind, Store<DynamicObject>>,
}

impl ChildCache {
    pub fn get(&self, kind: ChildKind, ns: &str, name: &str) -> Option<Arc<DynamicObject>> {
        let store = self.stores.get(&kind)?;
        store.get(&ObjectRef::new_with(name, kind.api_resource()).within(ns))
    }

    /// Children of `kind` in `ns` whose controller is the object with `owner_uid`.
    pub fn owned(&self, kind: ChildKind, ns: &str, owner_uid: &str) -> Vec<Arc<DynamicObject>> {
        let Some(store) = self.stores.get(&kind) else {
            return Vec::new();
        };
        store
            .state()
            .into_iter()
            .filter(|o| o.metadata.namespace.as_deref() == Some(ns))
            .filter(|o| {
                o.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.controller == Some(true) && r.uid == owner_uid)
            })
            .collect()
    }

    pub fn kinds(&self) -> impl Iterator<Item = ChildKind> + '_ {
        self.stores.keys().copied()
    }
}

/// Every controller's caches, by owner kind (`RedisSentinel`, ...).
#[derive(Clone, Default)]
pub struct OwnedCaches {
    children: BTreeMap<&'static str, ChildCache>,
    pods: BTreeMap<&'static str, Store<Pod>>,
    /// Answers for a kind that watches nothing of that sort: always empty.
    none: ChildCache,
}

impl OwnedCaches {
    pub fn insert(
        &mut self,
        owner_kind: &'static str,
        children: ChildCache,
        pods: Option<Store<Pod>>,
    ) {
        self.children.insert(owner_kind, children);
        if let Some(p) = pods {
            self.pods.insert(owner_kind, p);
        }
    }

    /// The children of every object of `owner_kind`.
    pub fn children(&self, owner_kind: &str) -> &ChildCache {
        self.children.get(owner_kind).unwrap_or(&self.none)
    }

    /// The pods of every object of `owner_kind`; empty if that kind watches no pods.
    pub fn pods(&self, owner_kind: &str) -> Store<Pod> {
        match self.pods.get(owner_kind) {
            Some(p) => p.clone(),
            None => reflector::store::Writer::default().as_reader(),
        }
    }
}

/// Adds to `ctl` a watch per child kind (only children labelled as owned by `owner_kind`),
/// so that a change to a child reconciles its owner, and returns the caches they fill. The
/// monitoring kinds' watches start once `monitoring` finds their API served (a watch of a kind
/// not served would fail forever), and readiness does not wait for them; every object is
/// reconciled again each time the API arrives, to create what it withheld.
pub fn watch_children<K>(
    mut ctl: Controller<K>,
    client: &Client,
    namespace: Option<&str>,
    owner_kind: &str,
    kinds: &[ChildKind],
    synced: &Synced,
    monitoring: &MonitoringApi,
) -> (Controller<K>, ChildCache)
where
    K: Resource<DynamicType = ()>
        + Clone
        + Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let mut cache = ChildCache::default();
    for kind in kinds {
        let ar = kind.api_resource();
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        let wc = watcher::Config::default().labels(&labels::owned_by_kind(owner_kind));
        let writer = reflector::store::Writer::new(ar.clone());
        cache.stores.insert(*kind, writer.as_reader());
        let stream = if kind.is_monitoring() {
            let served = monitoring.when_served();
            futures::stream::once(async move {
                served.await;
                reflector::reflector(writer, watcher::watcher(api, wc)).default_backoff()
            })
            .flatten()
            .touched_objects()
            .boxed()
        } else {
            synced
                .track(reflector::reflector(writer, watcher::watcher(api, wc)).default_backoff())
                .touched_objects()
                .boxed()
        };
        ctl = ctl.owns_stream_with(stream, ar);
    }
    if kinds.iter().any(|k| k.is_monitoring()) {
        ctl = ctl.reconcile_all_on(monitoring.arrivals());
    }
    (ctl, cache)
}
