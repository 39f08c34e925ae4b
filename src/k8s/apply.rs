//! The one path by which children reach the cluster ([`sync`]): server-side apply under one
//! field manager, forced, in kind order (configuration before workloads), skipped when the live
//! object already holds everything we would apply; then pruning of what the owner no longer
//! wants, found in the caches by the owner's uid. A child the API server refuses does not stop
//! the others: every refusal is collected and reported.

use super::FIELD_MANAGER;
use super::cache::ChildCache;
use super::children::{Child, ChildKind};
use super::drift::{self, Drift};
use super::owner::Owner;
use crate::error::{ChildFailure, Error};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::{Api, Client};
use serde_json::Value;
use std::collections::BTreeSet;

/// `desired` is contained in `live`: every field we set has our value there. Server-side
/// defaults may add fields; lists of named items match by name, owner references by uid.
pub fn contains(desired: &Value, live: &Value) -> bool {
    difference(desired, live).is_none()
}

/// The path of the first field we set that `live` does not hold, if any. Label selectors
/// must be equal, not merely contain ours: one more key makes a selector select nothing.
pub fn difference(desired: &Value, live: &Value) -> Option<String> {
    difference_at(desired, live, "")
}

/// Keys whose maps must be equal. All are atomic maps in the API (a forced apply replaces them
/// whole), so repairing them takes one apply, never a fight with another manager.
fn exact(key: &str) -> bool {
    key == "selector" || key == "matchLabels"
}

fn difference_at(desired: &Value, live: &Value, key: &str) -> Option<String> {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => {
            let ours = d.iter().find_map(|(k, dv)| match l.get(k) {
                Some(lv) => difference_at(dv, lv, k).map(|p| format!(".{k}{p}")),
                None => (!is_empty(dv)).then(|| format!(".{k}")),
            });
            ours.or_else(|| {
                let extra = l.keys().find(|k| !d.contains_key(*k))?;
                (exact(key) && d.values().all(Value::is_string)).then(|| format!(".{extra}"))
            })
        }
        (Value::Array(d), Value::Array(l)) => match key_of(d) {
            Some(id_key) => d.iter().find_map(|dv| {
                let id = &dv[id_key];
                match l.iter().find(|lv| &lv[id_key] == id) {
                    Some(lv) => difference_at(dv, lv, "").map(|p| format!("[{id_key}={id}]{p}")),
                    None => Some(format!("[{id_key}={id}]")),
                }
            }),
            None if d.len() != l.len() => {
                Some(format!("[{} items, live has {}]", d.len(), l.len()))
            }
            None => d
                .iter()
                .zip(l)
                .enumerate()
                .find_map(|(i, (a, b))| difference_at(a, b, "").map(|p| format!("[{i}]{p}"))),
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

/// What one sync did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Objects written (created or patched), as `Kind/name`.
    pub written: Vec<String>,
    /// Objects deleted by pruning, as `Kind/name`.
    pub pruned: Vec<String>,
    /// Children put back after another field manager changed them.
    pub drift: Vec<Drift>,
    /// Children the API server refused, in apply order.
    pub failed: Vec<ChildFailure>,
}

impl Applied {
    pub fn changed(&self) -> bool {
        !self.written.is_empty() || !self.pruned.is_empty()
    }
}

fn api(client: &Client, ns: &str, kind: ChildKind) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &kind.api_resource())
}

/// Brings the owner's children to `desired`: applies each one that differs from its cached
/// live copy (in kind order), then prunes the owner's children not desired any more. Every
/// child is tried; refusals are collected in [`Applied::failed`].
pub async fn sync(
    client: &Client,
    cache: &ChildCache,
    owner: &Owner,
    desired: &[Child],
) -> Applied {
    sync_keeping(client, cache, owner, desired, &[]).await
}

/// [`sync`], never pruning children of the kinds in `keep` (an app's stores: letting go of one
/// is a decision of its own, see [`crate::controllers::apps::handoff`]).
pub async fn sync_keeping(
    client: &Client,
    cache: &ChildCache,
    owner: &Owner,
    desired: &[Child],
    keep: &[ChildKind],
) -> Applied {
    let mut out = Applied::default();
    let mut sorted: Vec<&Child> = desired.iter().collect();
    sorted.sort_by_key(|c| c.kind);
    for child in sorted {
        if let Err(error) = apply_one(client, cache, &owner.namespace, child, &mut out).await {
            out.failed
                .push(ChildFailure::new(child.kind, &child.name, "apply", error));
        }
    }
    prune(client, cache, owner, desired, keep, &mut out).await;
    if out.changed() {
        tracing::info!(written = ?out.written, pruned = ?out.pruned, "children applied");
    }
    out
}

async fn apply_one(
    client: &Client,
    cache: &ChildCache,
    ns: &str,
    child: &Child,
    out: &mut Applied,
) -> Result<(), Error> {
    let live = cache.get(child.kind, ns, &child.name);
    let label = format!("{}/{}", child.kind.api_resource().kind, child.name);
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
        let Some(path) = difference(&ours, &live) else {
            return Ok(());
        };
        let manager = live["metadata"]["managedFields"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|e| serde_json::from_value(e.clone()).ok())
                    .collect::<Vec<ManagedFieldsEntry>>()
            })
            .and_then(|entries| drift::changed_by(&entries, &path, FIELD_MANAGER));
        tracing::info!(child = %label, field = %path, ?manager, "child differs from the spec; applying");
        out.drift.push(Drift {
            child: label.clone(),
            field: path,
            manager,
        });
    }
    let api = api(client, ns, child.kind);
    // A child pinned to a uid (see `pinned`) is known to exist: it is applied, never created.
    let known = child.object["metadata"]["uid"].is_string();
    match (&live, &child.initial) {
        (None, Some(initial)) if !known => {
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
                Err(kube::Error::Api(s)) if s.is_already_exists() => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        (live, initial) => {
            // Strict: a field the API server does not know is an error, never silently dropped.
            let params = PatchParams::apply(FIELD_MANAGER)
                .force()
                .validation_strict();
            let uid = live.as_ref().and_then(|l| l.metadata.uid.as_deref());
            let body = match (uid, initial) {
                // A child with create-only content is applied without it: if the object was
                // deleted since the cache saw it, the apply would create it partial (a
                // credentials Secret without its password). The uid makes the API server
                // refuse instead (409), and the next reconcile sees it gone.
                (Some(uid), Some(_)) => pinned(&child.object, uid),
                _ => child.object.clone(),
            };
            api.patch(&child.name, &params, &Patch::Apply(&body))
                .await?;
        }
    }
    out.written.push(label);
    Ok(())
}

/// `object` with `metadata.uid` set: applied, it only ever updates the object with that uid
/// and never creates one.
pub(crate) fn pinned(object: &Value, uid: &str) -> Value {
    let mut body = object.clone();
    if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("uid".into(), Value::String(uid.into()));
    }
    body
}

/// Deletes children the owner no longer wants: those in the caches whose controller reference
/// is the owner's uid but which are not in `desired`.
async fn prune(
    client: &Client,
    cache: &ChildCache,
    owner: &Owner,
    desired: &[Child],
    keep: &[ChildKind],
    out: &mut Applied,
) {
    let wanted: BTreeSet<(ChildKind, &str)> =
        desired.iter().map(|c| (c.kind, c.name.as_str())).collect();
    let ns = &owner.namespace;
    let kinds: Vec<ChildKind> = cache.kinds().filter(|k| !keep.contains(k)).collect();
    for kind in kinds.into_iter().rev() {
        for obj in cache.owned(kind, ns, &owner.uid) {
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
                Ok(_) => out
                    .pruned
                    .push(format!("{}/{name}", kind.api_resource().kind)),
                // Gone already, or its whole kind is (a bare 404: the monitoring CRDs went).
                Err(kube::Error::Api(s)) if s.is_not_found() || s.code == 404 => {}
                Err(e) => out
                    .failed
                    .push(ChildFailure::new(kind, &name, "prune", e.into())),
            }
        }
    }
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
    fn a_selector_with_one_more_key_is_drift() {
        let desired = json!({"spec": {"selector": {"app": "db", "role": "primary"}}});
        let live = json!({"spec": {"selector": {"app": "db", "role": "primary", "x": "y"}, "type": "ClusterIP"}});
        assert_eq!(
            super::difference(&desired, &live).as_deref(),
            Some(".spec.selector.x")
        );
        let labels = json!({"metadata": {"labels": {"app": "db"}}});
        assert!(
            contains(
                &labels,
                &json!({"metadata": {"labels": {"app": "db", "team": "x"}}})
            ),
            "other maps may hold more"
        );
        let deploy = json!({"spec": {"selector": {"matchLabels": {"app": "db"}}}});
        assert!(!contains(
            &deploy,
            &json!({"spec": {"selector": {"matchLabels": {"app": "db", "x": "1"}}}})
        ));
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
