//! Two hand-overs an app's reconcile makes before its children are applied.
//!
//! `replicas` to an autoscaler: once a tier is autoscaled its Deployment is applied without
//! `replicas`. Server-side apply removes a field its only owner stops applying, and the
//! Deployment would fall back to one pod until the autoscaler reacts. So while we are the only
//! owner, a second field manager first co-owns the current count; then the field survives our
//! apply and the autoscaler takes it from there.
//!
//! Stores to the user: an owned store the spec no longer declares inline (the app switched to a
//! reference, or dropped the store) is never deleted with its data behind the user's back: the
//! app lets go of it (owner reference and owner labels removed) and says so in an event.

use crate::error::Result;
use crate::k8s::cache::ChildCache;
use crate::k8s::children::ChildKind;
use crate::k8s::owner::Owner;
use crate::k8s::{FIELD_MANAGER, labels};
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

/// The manager that holds `replicas` during the hand-over.
pub const HANDOFF_MANAGER: &str = "guestbook-operator-handoff";

/// Whether our field manager is the one that last applied `spec.replicas` of `live`.
fn we_own_replicas(live: &DynamicObject) -> bool {
    live.metadata.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some(FIELD_MANAGER)
            && m.operation.as_deref() == Some("Apply")
            && m.fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:spec")?.get("f:replicas"))
                .is_some()
    })
}

/// Makes the autoscaler-bound Deployment `name` keep its pod count when we stop applying it.
pub async fn replicas_to_autoscaler(
    client: &Client,
    cache: &ChildCache,
    ns: &str,
    name: &str,
) -> Result<bool> {
    let Some(live) = cache.get(ChildKind::Deployment, ns, name) else {
        return Ok(false);
    };
    if !we_own_replicas(&live) {
        return Ok(false);
    }
    let Some(replicas) = live
        .data
        .get("spec")
        .and_then(|s| s.get("replicas"))
        .cloned()
    else {
        return Ok(false);
    };
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &ChildKind::Deployment.api_resource());
    let body = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas},
    });
    api.patch(
        name,
        &PatchParams::apply(HANDOFF_MANAGER),
        &Patch::Apply(&body),
    )
    .await?;
    tracing::info!(
        deployment = name,
        "replicas co-owned for the hand-over to the autoscaler"
    );
    Ok(true)
}

/// Lets go of the owned stores (of `kind`) that are not among `wanted`; returns their names.
pub async fn release_stores(
    client: &Client,
    cache: &ChildCache,
    owner: &Owner,
    kind: ChildKind,
    wanted: &[&str],
) -> Result<Vec<String>> {
    let mut released = Vec::new();
    for store in cache.owned(kind, &owner.namespace, &owner.uid) {
        let name = store.metadata.name.clone().unwrap_or_default();
        if wanted.contains(&name.as_str()) || store.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &owner.namespace, &kind.api_resource());
        // A merge patch: owner references are replaced whole; the owner labels are removed so
        // our watches (which select on them) forget the store.
        let others: Vec<_> = store
            .metadata
            .owner_references
            .iter()
            .flatten()
            .filter(|r| r.uid != owner.uid)
            .cloned()
            .collect();
        let patch = json!({"metadata": {
            "ownerReferences": others,
            "labels": {labels::OWNER_KIND: null, labels::OWNER_NAME: null, labels::MANAGED_BY: null},
        }});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        released.push(name);
    }
    Ok(released)
}
