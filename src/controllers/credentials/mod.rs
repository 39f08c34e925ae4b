//! Credentials the operator generated are never regenerated behind a running store's back
//! (DESIGN.md §6), and passwords a user changes are rolled out to every member.
//!
//! Between build and apply, [`protect`] puts the finalizer [`FINALIZER`] on every generated
//! credential Secret (a child created once with `initial` content). A `kubectl delete` then
//! leaves the Secret terminating with its data: the guard reads the data, lifts the finalizer
//! and creates the Secret again with the same data, with a Warning event. A Secret that is gone
//! for good while the store has started is never replaced by a new random one: the store is
//! `Stalled` with `CredentialsLost`. The finalizer is lifted only when the owner goes
//! ([`janitor`]), so deleting the store still garbage-collects its Secrets.
//!
//! Rotation needs the password the members run with while the Secret already holds the next
//! one: the store's `<name>-credentials-in-use` Secret keeps a copy of every password as rolled
//! out. A difference between it and the source Secret is a rotation to roll out ([`redis`],
//! [`patroni`]); once every member has the new password, the copy takes it.

pub mod janitor;
pub mod patroni;
pub mod redis;

use crate::context::Context;
use crate::controllers::{Verdict, WAITING_RECHECK};
use crate::error::{Error, Result};
use crate::k8s::FIELD_MANAGER;
use crate::k8s::cache::ChildCache;
use crate::k8s::children::{Child, ChildKind};
use crate::k8s::conditions::{Extra, Health};
use crate::k8s::factory::Factory;
use crate::k8s::owner::Owner;
use crate::k8s::secrets;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim, Secret};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// Keeps a generated credential Secret (and its data) until the operator has read it.
pub const FINALIZER: &str = "guestbook-operator.dev/credentials";
/// On the in-use Secret: the source Secrets' versions whose passwords it holds.
const VERSION: &str = "guestbook-operator.dev/credentials-version";
/// On the in-use Secret: how many rotations have been rolled out (Patroni restarts its members
/// when it changes).
const ROTATION: &str = "guestbook-operator.dev/credentials-rotation";

/// One password the members run with, tracked for rotation: its key in the in-use Secret and
/// the Secret and key it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracked {
    pub key: &'static str,
    pub secret: String,
    pub secret_key: String,
}

/// A store, as protecting its credentials needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreCredentials {
    /// `app.kubernetes.io/name` and component of the in-use Secret.
    pub app: &'static str,
    pub component: &'static str,
    pub tracked: Vec<Tracked>,
    /// The store has started once one of these StatefulSets exists...
    pub statefulsets: Vec<String>,
    /// ...or, when its data holds the passwords, a claim these labels select.
    pub claims: Option<String>,
    /// How to start afresh instead, for the `CredentialsLost` message.
    pub afresh: String,
}

/// A tracked password: as rolled out to the members, and as its Secret holds it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Password {
    pub key: &'static str,
    pub secret: String,
    pub in_use: String,
    pub current: String,
}

impl Password {
    pub fn changed(&self) -> bool {
        self.in_use != self.current
    }
}

/// What [`protect`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Guarded {
    /// `Stalled` when a generated credential is gone while the store runs.
    pub lost: Option<Health>,
    /// The in-use Secret's name.
    pub in_use: String,
    /// Tracked passwords (empty when some could not be read: nothing to roll out then).
    pub passwords: Vec<Password>,
    /// The source Secrets' resourceVersions now, joined by commas.
    pub version: String,
    /// The version the in-use Secret holds the passwords of.
    pub recorded: String,
    /// Rotations rolled out so far.
    pub rotation: u32,
}

impl Guarded {
    pub fn rotating(&self) -> bool {
        self.passwords.iter().any(Password::changed)
    }

    /// The verdict of a store whose generated credentials are lost: `Stalled`, looked at
    /// again now and then (a Secret recreated by hand carries none of our labels, so no watch
    /// of ours announces it).
    pub fn lost_verdict(&self, extras: Vec<Extra>) -> Option<Verdict> {
        let lost = self.lost.clone()?;
        Some(Verdict {
            extras,
            requeue: Some(WAITING_RECHECK),
            ..Verdict::new(lost)
        })
    }

    pub fn current(&self, key: &str) -> Option<&str> {
        let p = self.passwords.iter().find(|p| p.key == key)?;
        Some(p.current.as_str())
    }
}

pub fn in_use_name(owner: &Owner) -> String {
    format!("{}-credentials-in-use", owner.name)
}

/// Secrets as the API has them now, each read once per [`protect`]. Not the cache: it may
/// still show a Secret that was just deleted, and deciding that one is there (or lost) must
/// not rest on a stale copy.
#[derive(Default)]
struct Lookups(BTreeMap<String, Option<Secret>>);

impl Lookups {
    async fn get(&mut self, client: &kube::Client, ns: &str, name: &str) -> Result<Option<Secret>> {
        if let Some(s) = self.0.get(name) {
            return Ok(s.clone());
        }
        let s = Api::<Secret>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await?;
        self.0.insert(name.to_string(), s.clone());
        Ok(s)
    }

    /// After a write: the next read asks the API again.
    fn forget(&mut self, name: &str) {
        self.0.remove(name);
    }
}

/// String values of a Secret's data (and stringData, for a child not created yet).
fn values(secret: &Secret) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = secret.string_data.clone().unwrap_or_default();
    for (k, v) in secret.data.iter().flatten() {
        out.insert(k.clone(), String::from_utf8_lossy(&v.0).to_string());
    }
    out
}

/// What a child Secret will hold when created: its `initial` content, else its object.
fn child_values(child: &Child) -> BTreeMap<String, String> {
    let content = child.initial.as_ref().unwrap_or(&child.object);
    serde_json::from_value::<Secret>(content.clone())
        .map(|s| values(&s))
        .unwrap_or_default()
}

fn set_finalizer(obj: &mut Value, on: bool) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if on {
            meta.insert("finalizers".into(), serde_json::json!([FINALIZER]));
        } else {
            meta.remove("finalizers");
        }
    }
}

/// The child as applied and as created: with the finalizer.
fn protected(child: &mut Child) {
    set_finalizer(&mut child.object, true);
    if let Some(initial) = child.initial.as_mut() {
        set_finalizer(initial, true);
    }
}

/// What became of one credential Secret.
enum Fate {
    Kept,
    /// Recreated with the data of its deleted copy.
    Restored,
    /// Not applied this time (the previous owner's copy is still going away).
    Deferred,
    /// Gone while the store runs: the reason.
    Lost(String),
}

/// Protects the store's generated credential Secrets among `children` (see the module doc),
/// adds the in-use Secret to them, and reads the tracked passwords. Call it after the caches
/// have synced and before [`crate::k8s::apply::sync`].
pub async fn protect<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    owner: &Owner,
    cache: &ChildCache,
    children: &mut Vec<Child>,
    store: &StoreCredentials,
) -> Result<Guarded> {
    let deleting = obj.meta().deletion_timestamp.is_some();
    let ns = &owner.namespace;
    let mut out = Guarded {
        in_use: in_use_name(owner),
        ..Guarded::default()
    };
    if !deleting {
        release_unwanted(ctx, owner, cache, children, store).await?;
    }
    let mut dropped = Vec::new();
    let mut seen = Lookups::default();
    for child in children.iter_mut().filter(|c| is_credential(c)) {
        if deleting {
            // The finalizer comes off with the owner; the janitor lifts what remains.
            set_finalizer(&mut child.object, false);
            continue;
        }
        protected(child);
        match guard(ctx, obj, owner, cache, &mut seen, child, store).await? {
            Fate::Kept => {}
            Fate::Restored => {}
            Fate::Deferred => dropped.push(child.name.clone()),
            Fate::Lost(why) => {
                dropped.push(child.name.clone());
                out.lost
                    .get_or_insert(Health::stalled("CredentialsLost", why));
            }
        }
    }
    children.retain(|c| !(c.kind == ChildKind::Secret && dropped.contains(&c.name)));
    if store.tracked.is_empty() || deleting {
        return Ok(out);
    }
    let in_use = seen.get(&ctx.client, ns, &out.in_use).await?;
    let held = in_use.as_ref().map(values).unwrap_or_default();
    let mut sources = Vec::new();
    for t in &store.tracked {
        if let Some((value, version)) = source(ctx, &mut seen, children, ns, t).await? {
            sources.push((t, value, version));
        }
    }
    let data: Vec<(&str, &str)> = if sources.len() == store.tracked.len() {
        let annotations = in_use
            .as_ref()
            .map(|s| s.annotations().clone())
            .unwrap_or_default();
        out.version = sources
            .iter()
            .map(|(_, _, v)| v.as_str())
            .collect::<Vec<_>>()
            .join(",");
        out.recorded = annotations
            .get(VERSION)
            .cloned()
            .unwrap_or_else(|| out.version.clone());
        out.rotation = annotations
            .get(ROTATION)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        out.passwords = sources
            .iter()
            .map(|(t, value, _)| Password {
                key: t.key,
                secret: t.secret.clone(),
                in_use: held.get(t.key).cloned().unwrap_or_else(|| value.clone()),
                current: value.clone(),
            })
            .collect();
        sources
            .iter()
            .map(|(t, v, _)| (t.key, v.as_str()))
            .collect()
    } else if in_use.is_some() {
        // A source is lost or unreadable: nothing to compare or roll out, but the copy stays
        // (it may be what the user restores the source from).
        held.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    } else {
        return Ok(out);
    };
    let mut child =
        Factory::new(owner, store.app).generated_secret(&out.in_use, store.component, &data)?;
    if let Some(meta) = child
        .initial
        .as_mut()
        .and_then(|i| i.get_mut("metadata"))
        .and_then(Value::as_object_mut)
    {
        meta.insert(
            "annotations".into(),
            serde_json::json!({VERSION: out.version, ROTATION: "0"}),
        );
    }
    // Its own deletion is recovered like any other; when it is gone for good, the copy is
    // made again from the Secrets the store reads (nothing new is generated).
    let in_use_store = StoreCredentials {
        statefulsets: Vec::new(),
        claims: None,
        ..store.clone()
    };
    protected(&mut child);
    match guard(ctx, obj, owner, cache, &mut seen, &mut child, &in_use_store).await? {
        Fate::Deferred => return Ok(out),
        Fate::Kept | Fate::Restored | Fate::Lost(_) => {}
    }
    children.push(child);
    Ok(out)
}

/// Lifts the finalizer from the owner's Secrets that are going away because they are no longer
/// wanted (pruned after a spec change, or deleted by hand): only a wanted one is restored.
async fn release_unwanted(
    ctx: &Context,
    owner: &Owner,
    cache: &ChildCache,
    children: &[Child],
    store: &StoreCredentials,
) -> Result<()> {
    let ns = &owner.namespace;
    let in_use = (!store.tracked.is_empty()).then(|| in_use_name(owner));
    for s in cache.owned(ChildKind::Secret, ns, &owner.uid) {
        let name = s.name_any();
        let wanted = children
            .iter()
            .any(|c| c.kind == ChildKind::Secret && c.name == name)
            || in_use.as_deref() == Some(name.as_str());
        let ours = s.finalizers().iter().any(|f| f == FINALIZER);
        if !wanted && ours && s.metadata.deletion_timestamp.is_some() {
            secrets::remove_finalizer(&ctx.client, ns, &name, FINALIZER).await?;
            tracing::info!(secret = %name, "no longer wanted: credentials finalizer lifted");
        }
    }
    Ok(())
}

/// A Secret created once with generated content.
fn is_credential(c: &Child) -> bool {
    c.kind == ChildKind::Secret && c.initial.is_some()
}

/// A tracked password as its Secret holds it now, with the Secret's resourceVersion. A child
/// of ours holds what the Secret holds (the guard put the live data in), or what it will be
/// created with.
async fn source(
    ctx: &Context,
    seen: &mut Lookups,
    children: &[Child],
    ns: &str,
    t: &Tracked,
) -> Result<Option<(String, String)>> {
    let live = seen.get(&ctx.client, ns, &t.secret).await?;
    let version = live
        .as_ref()
        .and_then(|s| s.metadata.resource_version.clone())
        .unwrap_or_default();
    let ours = children
        .iter()
        .find(|c| c.kind == ChildKind::Secret && c.name == t.secret);
    let value = match ours {
        Some(child) => child_values(child).get(&t.secret_key).cloned(),
        None => live.and_then(|s| secrets::value(&s, &t.secret_key)),
    };
    Ok(value.map(|v| (v, version)))
}

/// Decides the fate of one credential Secret and carries out a restore.
async fn guard<K: Resource<DynamicType = ()>>(
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
async fn restore(ctx: &Context, ns: &str, child: &mut Child, old: &Secret) -> Result<()> {
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
fn holding(child: &mut Child, live: &Secret) -> Result<Secret> {
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
async fn started(
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

/// Writes what the in-use Secret holds after a rollout: the passwords (when given), the
/// source versions, and, with `rotated`, one more rotation.
pub async fn record(
    ctx: &Context,
    ns: &str,
    g: &Guarded,
    passwords: bool,
    rotated: bool,
) -> Result<()> {
    let mut patch = serde_json::json!({"metadata": {"annotations": {
        VERSION: g.version,
        ROTATION: (g.rotation + u32::from(rotated)).to_string(),
    }}});
    if passwords {
        let data: BTreeMap<&str, ByteString> = g
            .passwords
            .iter()
            .map(|p| (p.key, ByteString(p.current.clone().into_bytes())))
            .collect();
        patch["data"] = serde_json::to_value(data).map_err(|source| Error::Serialize {
            what: format!("Secret {}", g.in_use),
            source,
        })?;
    }
    Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .patch(&g.in_use, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Pure: the `AuthenticationFailed` health for members that refuse the password.
pub fn auth_failed(refused: &[(String, String)], secret: &str) -> Health {
    let pods: Vec<String> = refused.iter().map(|(p, _)| p.clone()).collect();
    let why = refused.first().map(|(_, e)| e.as_str()).unwrap_or_default();
    Health::stalled(
        "AuthenticationFailed",
        format!(
            "{} refuse the password in Secret {secret} ({why}): they run with another password. Put the password they run with back into Secret {secret}; the operator then rolls a new one out itself",
            pods.join(", ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::owner::Owner;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owner() -> Owner {
        Owner {
            kind: "RedisSentinel",
            namespace: "ns".into(),
            name: "cache".into(),
            uid: "u1".into(),
            reference: OwnerReference::default(),
            part_of: "cache".into(),
        }
    }

    fn store() -> StoreCredentials {
        StoreCredentials {
            app: "redis-sentinel",
            component: "redis",
            tracked: vec![Tracked {
                key: "password",
                secret: "cache-redis-auth".into(),
                secret_key: "password".into(),
            }],
            statefulsets: vec!["cache-redis".into()],
            claims: None,
            afresh: "delete StatefulSet cache-redis".into(),
        }
    }

    #[test]
    fn a_lost_message_names_the_secret_its_keys_the_copy_and_the_way_out() {
        let f = Factory::new(&owner(), "redis-sentinel");
        let child = f
            .generated_secret("cache-redis-auth", "redis", &[("password", "p")])
            .expect("child");
        let m = lost_message(&child, &owner(), &store(), "StatefulSet cache-redis exists");
        assert!(
            m.starts_with("Secret cache-redis-auth held credentials"),
            "{m}"
        );
        assert!(m.contains("(keys password)"), "{m}");
        assert!(m.contains("Secret cache-credentials-in-use"), "{m}");
        assert!(m.ends_with("or delete StatefulSet cache-redis"), "{m}");
        assert!(!m.contains(" p "), "never the password itself: {m}");
    }

    #[test]
    fn finalizers_go_on_and_off_the_object() {
        let mut v = serde_json::json!({"metadata": {"name": "x"}});
        set_finalizer(&mut v, true);
        assert_eq!(v["metadata"]["finalizers"], serde_json::json!([FINALIZER]));
        set_finalizer(&mut v, false);
        assert!(v["metadata"].get("finalizers").is_none());
    }

    #[test]
    fn a_child_holds_its_initial_values() {
        let f = Factory::new(&owner(), "redis-sentinel");
        let child = f
            .generated_secret("s", "redis", &[("username", "u"), ("password", "p")])
            .expect("child");
        let v = child_values(&child);
        assert_eq!(v.get("password").map(String::as_str), Some("p"));
        assert_eq!(v.get("username").map(String::as_str), Some("u"));
        assert!(is_credential(&child));
    }

    #[test]
    fn a_rotation_is_a_difference_between_in_use_and_current() {
        let p = |in_use: &str, current: &str| Password {
            key: "password",
            secret: "s".into(),
            in_use: in_use.into(),
            current: current.into(),
        };
        let g = Guarded {
            passwords: vec![p("a", "a")],
            ..Guarded::default()
        };
        assert!(!g.rotating());
        let g = Guarded {
            passwords: vec![p("a", "a"), p("b", "c")],
            ..Guarded::default()
        };
        assert!(g.rotating());
        assert_eq!(g.current("password"), Some("a"));
    }

    #[test]
    fn an_auth_failure_names_the_members_and_the_secret() {
        let h = auth_failed(
            &[("cache-redis-1".into(), "WRONGPASS invalid".into())],
            "cache-redis-auth",
        );
        assert_eq!(h.reason(), "AuthenticationFailed");
        assert!(h.message().starts_with(
            "cache-redis-1 refuse the password in Secret cache-redis-auth (WRONGPASS"
        ));
    }
}
