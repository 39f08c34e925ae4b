//! The guard of generated credential Secrets (see the module doc of [`super`]): the finalizer
//! that keeps a deleted Secret's data readable, the restore that recreates it with that data,
//! and the verdict when one is gone for good while the store has started.

use super::{FINALIZER, Lookups, StoreCredentials, child_values, in_use_name};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::k8s::FIELD_MANAGER;
use crate::k8s::cache::ChildCache;
use crate::k8s::children::{Child, ChildKind};
use crate::k8s::owner::Owner;
use crate::k8s::secrets;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim, Secret};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::Value;
use std::time::Duration;

pub(super) fn set_finalizer(obj: &mut Value, on: bool) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if on {
            meta.insert("finalizers".into(), serde_json::json!([FINALIZER]));
        } else {
            meta.remove("finalizers");
        }
    }
}

/// The child as applied and as created: with the finalizer.
pub(super) fn protected(child: &mut Child) {
    set_finalizer(&mut child.object, true);
    if let Some(initial) = child.initial.as_mut() {
        set_finalizer(initial, true);
    }
}

/// What became of one credential Secret.
pub(super) enum Fate {
    Kept,
    /// Recreated with the data of its deleted copy.
    Restored,
    /// Not applied this time (the previous owner's copy is still going away).
    Deferred,
    /// Gone while the store runs: the reason.
    Lost(String),
}

/// Decides the fate of one credential Secret and carries out a restore.
pub(super) async fn guard<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    owner: &Owner,
    cache: &ChildCache,
    seen: &mut Lookups,
    child: &mut Child,
    store: &StoreCredentials,
) -> Result<Fate> {
    let ns = &owner.namespace;
    let Some(secret) = seen.get(&ctx.client, ns, &child.name).await? else {
        return Ok(match started(ctx, cache, ns, store).await? {
            Some(why) => Fate::Lost(lost_message(child, owner, store, &why)),
            None => Fate::Kept,
        });
    };
    if secret.metadata.deletion_timestamp.is_none() {
        if cache.get(ChildKind::Secret, ns, &child.name).is_none() {
            // Made by hand (as the CredentialsLost message asks): adopted at once, with the
            // finalizer; the apply path only sees Secrets carrying our labels.
            // Pinned to the uid just read: a Secret deleted again meanwhile is not recreated
            // without its data.
            let uid = secret.metadata.uid.as_deref().unwrap_or_default();
            Api::<Secret>::namespaced(ctx.client.clone(), ns)
                .patch(
                    &child.name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&crate::k8s::apply::pinned(&child.object, uid)),
                )
                .await?;
            seen.forget(&child.name);
        }
        holding(child, &secret)?;
        // Applied pinned to the uid just read, never created: if the Secret is deleted for
        // good before the apply (its finalizer lifted), the API server refuses, and the next
        // reconcile finds it gone (`CredentialsLost`) instead of a silent re-creation.
        if let Some(uid) = secret.metadata.uid.as_deref() {
            child.object = crate::k8s::apply::pinned(&child.object, uid);
        }
        return Ok(Fate::Kept);
    }
    let controller = secret
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.clone());
    let ours = secret.finalizers().iter().any(|f| f == FINALIZER);
    if controller.as_deref() != Some(owner.uid.as_str()) || !ours {
        // An earlier owner's copy, or held by someone else's finalizer: wait until it is gone.
        return Ok(Fate::Deferred);
    }
    restore(ctx, ns, child, &secret).await?;
    seen.forget(&child.name);
    let note = format!(
        "Secret {} was deleted while {} {} uses it; recreated it with the same data (finalizer {FINALIZER} kept it until the operator had read it)",
        child.name, owner.kind, owner.name
    );
    tracing::warn!(secret = %child.name, "credentials restored");
    // The Secret is the event's related object: events about the same object and reason are
    // otherwise folded into one series, and each restored Secret must be named.
    let event = Event {
        type_: EventType::Warning,
        reason: "CredentialsRestored".into(),
        note: Some(note),
        action: "Restore".into(),
        secondary: Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Secret".into()),
            name: Some(child.name.clone()),
            namespace: Some(ns.clone()),
            ..ObjectReference::default()
        }),
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, "could not record event");
    }
    Ok(Fate::Restored)
}

/// Recreates `old` (terminating, held by our finalizer, as just read) with the same data:
/// lifts the finalizer (the API server then removes it), creates it again from the child.
pub(super) async fn restore(
    ctx: &Context,
    ns: &str,
    child: &mut Child,
    old: &Secret,
) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let old_uid = old.metadata.uid.clone();
    secrets::remove_finalizer(&ctx.client, ns, &child.name, FINALIZER).await?;
    for _ in 0..50 {
        match api.get_metadata_opt(&child.name).await? {
            Some(s) if s.metadata.uid == old_uid => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => break,
        }
    }
    let mut secret = holding(child, old)?;
    secret.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match api.create(&pp, &secret).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.is_already_exists() => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Makes the child's creation content hold `live`'s data (and type and annotations) instead
/// of what it was built with: if anything creates it again, it is with the data the store
/// uses, never a new random one. Returns that content.
pub(super) fn holding(child: &mut Child, live: &Secret) -> Result<Secret> {
    let what = || format!("Secret {}", child.name);
    let content = child
        .initial
        .clone()
        .unwrap_or_else(|| child.object.clone());
    let mut secret: Secret =
        serde_json::from_value(content).map_err(|source| Error::Serialize {
            what: what(),
            source,
        })?;
    secret.string_data = None;
    secret.data = live.data.clone();
    secret.type_ = live.type_.clone().or(secret.type_);
    if let Some(a) = live.metadata.annotations.clone() {
        secret
            .metadata
            .annotations
            .get_or_insert_default()
            .extend(a);
    }
    child.initial = Some(
        serde_json::to_value(&secret).map_err(|source| Error::Serialize {
            what: what(),
            source,
        })?,
    );
    Ok(secret)
}

/// Why the store counts as started (its members run with, or its data holds, the passwords),
/// or `None` for a new store that may still generate them.
pub(super) async fn started(
    ctx: &Context,
    cache: &ChildCache,
    ns: &str,
    store: &StoreCredentials,
) -> Result<Option<String>> {
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
    for sts in &store.statefulsets {
        if cache.get(ChildKind::StatefulSet, ns, sts).is_some()
            || api.get_metadata_opt(sts).await?.is_some()
        {
            return Ok(Some(format!("StatefulSet {sts} exists")));
        }
    }
    let Some(selector) = &store.claims else {
        return Ok(None);
    };
    let claims = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns)
        .list_metadata(&ListParams::default().labels(selector))
        .await?;
    let names: Vec<String> = claims.items.iter().map(|c| c.name_any()).collect();
    Ok((!names.is_empty()).then(|| format!("its data claims {} exist", names.join(", "))))
}

/// Pure: the `CredentialsLost` message: which Secret, why nothing is generated, what to do.
pub fn lost_message(child: &Child, owner: &Owner, store: &StoreCredentials, why: &str) -> String {
    let keys: Vec<String> = child_values(child).into_keys().collect();
    let copy = if store.tracked.iter().any(|t| t.secret == child.name) {
        format!(
            " (the operator's copy in Secret {} holds the passwords as rolled out)",
            in_use_name(owner)
        )
    } else {
        String::new()
    };
    format!(
        "Secret {name} held credentials the operator generated and is gone while the store has started ({why}): a new password would lock its members out, so none is generated. Recreate Secret {name} (keys {keys}) with the values the store runs with{copy}, or {afresh}",
        name = child.name,
        keys = keys.join(", "),
        afresh = store.afresh,
    )
}
