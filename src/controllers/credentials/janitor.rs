//! Lifts the credentials finalizer from Secrets whose owner is gone or going. The owner's own
//! reconcile cannot do it: once a store is deleted, nothing reconciles it any more, and its
//! Secrets (garbage-collected or orphaned) would keep the finalizer for ever.

use super::FINALIZER;
use crate::context::Context;
use crate::k8s::children::ChildKind;
use crate::k8s::labels;
use crate::k8s::secrets;
use crate::k8s::watches::scoped_api;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use std::future::Future;
use std::sync::Arc;

/// Watches the operator's Secrets (metadata only) until `stop` resolves, lifting the finalizer
/// from each one whose owner no longer holds it. Runs only while this replica leads.
pub async fn run(ctx: Arc<Context>, stop: impl Future<Output = ()>) {
    let api = scoped_api::<PartialObjectMeta<Secret>>(&ctx.client, ctx.namespace.as_deref());
    let wc =
        watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER));
    let sweep = watcher(api, wc)
        .default_backoff()
        .applied_objects()
        .for_each(|secret| {
            let ctx = ctx.clone();
            async move {
                match secret {
                    Ok(s) => release(&ctx, &s).await,
                    Err(e) => tracing::debug!(error = %e, "credentials janitor watch"),
                }
            }
        });
    tokio::select! {
        _ = sweep => {}
        _ = stop => {}
    }
}

/// Lifts the finalizer when the Secret's owner does not hold it any more.
async fn release(ctx: &Context, secret: &PartialObjectMeta<Secret>) {
    if !secret.finalizers().iter().any(|f| f == FINALIZER) {
        return;
    }
    let (ns, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
    if owner_holds(ctx, &ns, secret).await {
        return;
    }
    match secrets::remove_finalizer(&ctx.client, &ns, &name, FINALIZER).await {
        Ok(true) => {
            tracing::info!(namespace = %ns, secret = %name, "owner gone: credentials finalizer lifted")
        }
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(namespace = %ns, secret = %name, error = %e, "could not lift the credentials finalizer")
        }
    }
}

/// Whether the Secret's controller (a store of ours) exists, with the same uid, and is not
/// being deleted. The caches answer when they can; a miss is confirmed with the API, so a
/// lagging cache never strips a live store's protection.
async fn owner_holds(ctx: &Context, ns: &str, secret: &PartialObjectMeta<Secret>) -> bool {
    let refs = secret.owner_references();
    let Some(owner) = refs.iter().find(|r| r.controller == Some(true)) else {
        return false;
    };
    let alive = |meta: &kube::api::ObjectMeta| {
        meta.uid.as_deref() == Some(owner.uid.as_str()) && meta.deletion_timestamp.is_none()
    };
    let cached = match owner.kind.as_str() {
        "RedisSentinel" => ctx
            .caches
            .redis_sentinels
            .get(&ObjectRef::new(&owner.name).within(ns))
            .map(|o| alive(o.meta())),
        "PatroniCluster" => ctx
            .caches
            .patroni_clusters
            .get(&ObjectRef::new(&owner.name).within(ns))
            .map(|o| alive(o.meta())),
        // Not a store of ours: nothing of ours protects its Secrets.
        _ => return false,
    };
    if cached == Some(true) {
        return true;
    }
    let Some(kind) = ChildKind::of(&owner.kind) else {
        return false;
    };
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), ns, &kind.api_resource());
    // A list by name, not a get: listing is what the operator's role grants on its kinds.
    let lp = ListParams::default().fields(&format!("metadata.name={}", owner.name));
    match api.list_metadata(&lp).await {
        Ok(found) => found.items.iter().any(|o| alive(&o.metadata)),
        // Unknown: keep the protection; the next event or resync asks again.
        Err(e) => {
            tracing::debug!(error = %e, "owner of a credentials Secret not readable");
            true
        }
    }
}
