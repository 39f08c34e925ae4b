//! The one path by which children reach the cluster: server-side apply under one field
//! manager, forced, in kind order (configuration before workloads), skipped when the live
//! object already holds everything we would apply; then pruning of what we no longer want.

use super::children::{Child, ChildKind};
use super::{FIELD_MANAGER, labels};
use crate::error::{Error, Result};
use futures::StreamExt;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

/// Caches of one controller's children, one per kind, filled by its own watches.
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

/// Adds to `ctl` a watch per child kind (only children labelled as owned by `owner_kind`),
/// so that a change to a child reconciles its owner, and returns the caches they fill.
pub fn watch_children<K>(
    mut ctl: Controller<K>,
    client: &Client,
    namespace: Option<&str>,
    owner_kind: &str,
    kinds: &[ChildKind],
    synced: &super::sync::Synced,
) -> (Controller<K>, ChildCache)
where
    K: Resource<DynamicType = ()>
        + Clone
        + Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Eq + Hash + Clone,
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
        let stream = synced
            .track(reflector::reflector(writer, watcher::watcher(api, wc)).default_backoff())
            .touched_objects();
        ctl = ctl.owns_stream_with(stream.boxed(), ar);
    }
    (ctl, cache)
}

/// `desired` is contained in `live`: every field we set has our value there. Server-side
/// defaults may add fields; lists of named items match by name, owner references by uid.
pub fn contains(desired: &Value, live: &Value) -> bool {
    difference(desired, live).is_none()
}

/// The path of the first field we set that `live` does not hold, if any.
pub fn difference(desired: &Value, live: &Value) -> Option<String> {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().find_map(|(k, dv)| match l.get(k) {
            Some(lv) => difference(dv, lv).map(|p| format!(".{k}{p}")),
            None => (!is_empty(dv)).then(|| format!(".{k}")),
        }),
        (Value::Array(d), Value::Array(l)) => match key_of(d) {
            Some(key) => d.iter().find_map(|dv| {
                let id = &dv[key];
                match l.iter().find(|lv| &lv[key] == id) {
                    Some(lv) => difference(dv, lv).map(|p| format!("[{key}={id}]{p}")),
                    None => Some(format!("[{key}={id}]")),
                }
            }),
            None if d.len() != l.len() => {
                Some(format!("[{} items, live has {}]", d.len(), l.len()))
            }
            None => d
                .iter()
                .zip(l)
                .enumerate()
                .find_map(|(i, (a, b))| difference(a, b).map(|p| format!("[{i}]{p}"))),
        },
        (Value::Number(a), Value::Number(b)) => (a.as_f64() != b.as_f64()).then(String::new),
        (d, Value::Null) => (!is_empty(d)).then(String::new),
        (d, l) => (d != l).then(String::new),
    }
}

/// What the API server drops on write: Go's `omitempty` zero values.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
    }
}

/// The identifying key of a list of objects, if every element has it.
fn key_of(items: &[Value]) -> Option<&'static str> {
    ["uid", "name"]
        .into_iter()
        .find(|k| !items.is_empty() && items.iter().all(|i| i.get(k).is_some_and(|v| !v.is_null())))
}

/// What one apply pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Objects written (created or patched), as `Kind/name`.
    pub written: Vec<String>,
    /// Objects deleted by pruning, as `Kind/name`.
    pub pruned: Vec<String>,
}

fn api(client: &Client, ns: &str, kind: ChildKind) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &kind.api_resource())
}

/// Applies every child that differs from its live copy, in kind order.
pub async fn apply(
    client: &Client,
    cache: &ChildCache,
    ns: &str,
    desired: &[Child],
) -> Result<Applied> {
    let mut sorted: Vec<&Child> = desired.iter().collect();
    sorted.sort_by_key(|c| c.kind);
    let mut out = Applied::default();
    // Strict: a field the API server does not know is an error, never silently dropped.
    let params = PatchParams::apply(FIELD_MANAGER)
        .force()
        .validation_strict();
    for child in sorted {
        let live = cache.get(child.kind, ns, &child.name);
        if let Some(live) = &live {
            let live = serde_json::to_value(live.as_ref()).map_err(|source| Error::Serialize {
                what: child.name.clone(),
                source,
            })?;
            // Items of a list carry no apiVersion/kind; the cache holds the type anyway.
            let mut ours = child.object.clone();
            if let Some(m) = ours.as_object_mut() {
                m.remove("apiVersion");
                m.remove("kind");
            }
            match difference(&ours, &live) {
                None => continue,
                Some(path) => {
                    tracing::info!(kind = ?child.kind, name = %child.name, field = %path, "child differs from the spec; applying")
                }
            }
        }
        let api = api(client, ns, child.kind);
        match (&live, &child.initial) {
            (None, Some(initial)) => {
                let obj: DynamicObject =
                    serde_json::from_value(initial.clone()).map_err(|source| Error::Serialize {
                        what: child.name.clone(),
                        source,
                    })?;
                let pp = PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PostParams::default()
                };
                match api.create(&pp, &obj).await {
                    Ok(_) => {}
                    // Created by an earlier reconcile our cache has not seen yet.
                    Err(kube::Error::Api(s)) if s.is_already_exists() => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            _ => {
                api.patch(&child.name, &params, &Patch::Apply(&child.object))
                    .await?;
            }
        }
        out.written.push(format!("{:?}/{}", child.kind, child.name));
    }
    Ok(out)
}

/// Deletes children the owner no longer wants: those in the caches that carry the owner's
/// labels and controller reference but are not in `desired`.
pub async fn prune(
    client: &Client,
    cache: &ChildCache,
    ns: &str,
    owner_uid: &str,
    desired: &[Child],
    out: &mut Applied,
) -> Result<()> {
    let wanted: BTreeSet<(ChildKind, &str)> =
        desired.iter().map(|c| (c.kind, c.name.as_str())).collect();
    for kind in cache.kinds().collect::<Vec<_>>().into_iter().rev() {
        for obj in cache.owned(kind, ns, owner_uid) {
            let name = obj.metadata.name.clone().unwrap_or_default();
            if wanted.contains(&(kind, name.as_str())) || obj.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            let dp = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..DeleteParams::default()
            };
            match api(client, ns, kind).delete(&name, &dp).await {
                Ok(_) => out.pruned.push(format!("{kind:?}/{name}")),
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::contains;
    use serde_json::json;

    #[test]
    fn server_defaults_do_not_count_as_drift() {
        let desired = json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "redis", "image": "r:1"}]}}}});
        let live = json!({"spec": {"replicas": 3, "revisionHistoryLimit": 10, "template": {"spec": {"dnsPolicy": "ClusterFirst", "containers": [{"name": "redis", "image": "r:1", "terminationMessagePath": "/dev/termination-log"}]}}}});
        assert!(contains(&desired, &live));
    }

    #[test]
    fn changed_fields_and_missing_items_are_drift() {
        let desired = json!({"spec": {"replicas": 3, "ports": [{"name": "redis", "port": 6379}]}});
        assert!(!contains(
            &desired,
            &json!({"spec": {"replicas": 5, "ports": [{"name": "redis", "port": 6379}]}})
        ));
        assert!(!contains(
            &desired,
            &json!({"spec": {"replicas": 3, "ports": [{"name": "other", "port": 1}]}})
        ));
        assert!(
            contains(&json!({"a": {}}), &json!({})),
            "empty objects we send may be dropped by the server"
        );
        assert!(
            contains(&json!({"delay": 0, "ro": false}), &json!({})),
            "so are zero values"
        );
        assert!(!contains(&json!({"delay": 5}), &json!({})));
    }

    #[test]
    fn named_lists_match_by_name_in_any_order() {
        let desired = json!([{"name": "a", "v": 1}, {"name": "b", "v": 2}]);
        assert!(contains(
            &desired,
            &json!([{"name": "b", "v": 2}, {"name": "a", "v": 1, "extra": true}])
        ));
        assert!(!contains(&desired, &json!([{"name": "a", "v": 1}])));
    }
}
