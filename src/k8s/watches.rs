//! The watches a controller is built from: its own kind, the pods of its workloads, and what
//! its objects reference — each mapped back to the objects it concerns.

use super::labels;
use super::sync::Synced;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// An Api for `K` in `namespace`, or across all namespaces.
pub fn scoped_api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A controller for `K` whose main watch is tracked by `synced` (see [`super::sync`]).
pub fn main_controller<K>(
    client: &Client,
    namespace: Option<&str>,
    synced: &Synced,
) -> Controller<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let api = scoped_api::<K>(client, namespace);
    let (store, events) = synced.reflect(api, watcher::Config::default());
    Controller::for_stream(events.applied_objects(), store)
}

/// Adds a watch of the pods whose template carries `owner_kind`'s owner labels: a pod event
/// reconciles its owner (named by the owner-name label). Returns the pods' cache.
pub fn watch_pods<K>(
    ctl: Controller<K>,
    client: &Client,
    namespace: Option<&str>,
    owner_kind: &str,
    synced: &Synced,
) -> (Controller<K>, Store<Pod>)
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let api = scoped_api::<Pod>(client, namespace);
    let wc = watcher::Config::default().labels(&labels::owned_by_kind(owner_kind));
    let (pods, events) = synced.reflect(api, wc);
    let ctl = ctl.watches_stream(events.touched_objects(), |pod: Pod| {
        let name = pod.labels().get(labels::OWNER_NAME).cloned()?;
        Some(ObjectRef::new(&name).within(&pod.namespace()?))
    });
    (ctl, pods)
}

/// Every cached object in `namespace` for which `refers` holds, as reconcile requests: how a
/// change to something an object points at wakes that object.
pub fn referrers<K>(
    store: &Store<K>,
    namespace: Option<String>,
    refers: impl Fn(&K) -> bool,
) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .state()
        .into_iter()
        .filter(|o| o.meta().namespace == namespace && refers(o))
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}
