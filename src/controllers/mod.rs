//! One controller per kind. Each follows the same pipeline: dereference (read what the spec
//! points at), validate (pure), build and apply (children; arriving with the store and app
//! issues), then status. This module holds the parts all four share.

pub mod apps;
pub mod guestbook;
pub mod job_results;
pub mod patroni_cluster;
pub mod redis_sentinel;
pub mod roll;
pub mod vote_app;

use crate::context::Context;
use crate::error::{Error, Result, backoff};
use crate::k8s::conditions::{self, Extra, Health};
use crate::k8s::status::{KStatus, apply_status};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::object::HasStatus;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a healthy object is looked at again without any event: a safety net only.
pub const RESYNC: Duration = Duration::from_secs(300);
/// How often an object waiting on something is looked at again, besides watch events.
pub const WAITING_RECHECK: Duration = Duration::from_secs(60);

/// A kind of ours, as the shared machinery needs it.
pub trait Managed:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + HasStatus
    + Clone
    + Debug
    + DeserializeOwned
    + Send
    + Sync
    + 'static
where
    Self::Status: KStatus,
{
    const KIND: &'static str;
}

/// The result of the validate step: the object's health and any extra conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub health: Health,
    pub extras: Vec<Extra>,
    /// Look again after this long, instead of the default for the health.
    pub requeue: Option<Duration>,
}

impl Verdict {
    pub fn new(health: Health) -> Self {
        Self {
            health,
            extras: Vec::new(),
            requeue: None,
        }
    }
    pub fn with(mut self, extra: Extra) -> Self {
        self.extras.push(extra);
        self
    }
}

/// The health reported while an object's workloads are not built by this operator version.
pub fn not_yet_managed(kind: &str) -> Health {
    Health::unknown(
        "NotYetManaged",
        format!(
            "spec accepted and validated; this operator version does not create the {kind}'s workloads yet"
        ),
    )
}

/// Writes the status for `verdict` (only if it changed), records an event when the object
/// stalls, and decides when to look again. `fill` sets the kind-specific status fields.
pub async fn finish<K>(
    ctx: &Context,
    obj: &K,
    verdict: Verdict,
    fill: impl FnOnce(&mut K::Status),
) -> Result<Action>
where
    K: Managed,
    K::Status: KStatus,
{
    let previous = obj.status().cloned().unwrap_or_default();
    let now = Time(jiff::Timestamp::now());
    let generation = obj.meta().generation;
    let conds = conditions::compute(
        previous.conditions(),
        &verdict.health,
        generation,
        &verdict.extras,
        &now,
    );
    let mut desired = previous.clone();
    fill(&mut desired);
    desired.set_kstatus(generation, conds);
    let namespace = obj.namespace().ok_or_else(|| Error::MissingField {
        kind: K::KIND,
        name: obj.name_any(),
        field: "metadata.namespace",
    })?;
    let api = ctx.namespaced::<K>(&namespace);
    if apply_status(&api, obj, &desired).await? {
        let was_stalled = conditions::find(previous.conditions(), conditions::STALLED)
            .is_some_and(|c| c.status == "True" && c.reason == verdict.health.reason());
        if let Health::Stalled { reason, message } = &verdict.health
            && !was_stalled
        {
            publish(ctx, obj, EventType::Warning, reason, "Validate", message).await;
        }
    }
    if let Some(after) = verdict.requeue {
        return Ok(Action::requeue(after));
    }
    Ok(match verdict.health {
        // Stalled needs a change to the object or to what it references; both arrive as
        // watch events, so there is nothing to retry.
        Health::Stalled { .. } => Action::await_change(),
        Health::Progressing { .. } => Action::requeue(WAITING_RECHECK),
        Health::Ready { .. } | Health::Unknown { .. } => Action::requeue(RESYNC),
    })
}

/// Publishes an event about `obj`; failure to record an event never fails a reconcile.
pub async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note.chars().take(1024).collect()),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, "could not record event");
    }
}

/// Runs `reconcile` with metrics, a tracing span and failure bookkeeping.
pub async fn instrumented<K, F, Fut>(obj: Arc<K>, ctx: Arc<Context>, reconcile: F) -> Result<Action>
where
    K: Managed,
    K::Status: KStatus,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: std::future::Future<Output = Result<Action>>,
{
    let started = Instant::now();
    let key = object_key::<K>(&obj);
    let span = tracing::info_span!(
        "reconcile",
        kind = K::KIND,
        namespace = obj.namespace().unwrap_or_default(),
        name = obj.name_any()
    );
    let result = tracing::Instrument::instrument(reconcile(obj, ctx.clone()), span).await;
    ctx.metrics.reconciled(K::KIND, started.elapsed());
    if result.is_ok() {
        ctx.note_success(&key);
    }
    result
}

/// Requeue policy after a failed reconcile: exponential per object.
pub fn error_policy<K: Managed>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action
where
    K::Status: KStatus,
{
    ctx.metrics.failed(K::KIND, error.metric_label());
    let failures = ctx.note_failure(&object_key::<K>(&obj));
    let delay = backoff(failures.saturating_sub(1));
    tracing::warn!(kind = K::KIND, namespace = obj.namespace().unwrap_or_default(), name = obj.name_any(), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

fn object_key<K: Managed>(obj: &K) -> String
where
    K::Status: KStatus,
{
    format!(
        "{}/{}/{}",
        K::KIND,
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// A controller for `K` whose main watch is tracked by `synced` (see [`crate::k8s::sync`]).
pub fn main_controller<K>(
    client: &kube::Client,
    namespace: Option<&str>,
    synced: &crate::k8s::sync::Synced,
) -> kube::runtime::Controller<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    use kube::runtime::{WatchStreamExt, watcher};
    let api = crate::context::scoped_api::<K>(client, namespace);
    let (store, events) = synced.reflect(api, watcher::Config::default());
    kube::runtime::Controller::for_stream(events.applied_objects(), store)
}

/// Adds a watch of the pods whose template carries `owner_kind`'s owner labels: a pod event
/// reconciles its owner (named by the owner-name label). Returns the pods' cache.
pub fn watch_pods<K>(
    ctl: kube::runtime::Controller<K>,
    client: &kube::Client,
    namespace: Option<&str>,
    owner_kind: &str,
    synced: &crate::k8s::sync::Synced,
) -> (
    kube::runtime::Controller<K>,
    Store<k8s_openapi::api::core::v1::Pod>,
)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::{WatchStreamExt, watcher};
    let api = crate::context::scoped_api::<Pod>(client, namespace);
    let wc = watcher::Config::default().labels(&crate::k8s::labels::owned_by_kind(owner_kind));
    let (pods, events) = synced.reflect(api, wc);
    let events = events.touched_objects();
    let ctl = ctl.watches_stream(events, |pod: Pod| {
        let name = pod.labels().get(crate::k8s::labels::OWNER_NAME).cloned()?;
        Some(ObjectRef::new(&name).within(&pod.namespace()?))
    });
    (ctl, pods)
}

/// 32 random alphanumerics from the kernel, for a generated password.
pub fn random_password() -> Result<String> {
    use std::io::Read;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 64];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| Error::Io {
            what: "/dev/urandom".into(),
            source,
        })?;
    // Rejection sampling keeps every character equally likely.
    Ok(bytes
        .iter()
        .filter(|b| **b < 248)
        .take(32)
        .map(|b| ALPHABET[usize::from(*b) % 62] as char)
        .collect())
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

/// What a referenced Secret key looks like from here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretRef {
    Present,
    MissingSecret,
    MissingKey,
}

/// Looks up a Secret (and optionally one key of it) in `namespace`; with its resourceVersion
/// when it exists.
pub async fn check_secret(
    ctx: &Context,
    namespace: &str,
    name: &str,
    key: Option<&str>,
) -> Result<(SecretRef, Option<String>)> {
    let api = ctx.namespaced::<Secret>(namespace);
    let Some(secret) = api.get_opt(name).await? else {
        return Ok((SecretRef::MissingSecret, None));
    };
    let has = |k: &str| {
        secret.data.as_ref().is_some_and(|d| d.contains_key(k))
            || secret
                .string_data
                .as_ref()
                .is_some_and(|d| d.contains_key(k))
    };
    let found = match key {
        Some(k) if !has(k) => SecretRef::MissingKey,
        _ => SecretRef::Present,
    };
    Ok((found, secret.metadata.resource_version.clone()))
}

/// The object among `candidates` (same kind, same namespace) that owns the namespace's fixed
/// Service names: the oldest, then the first by name. Deterministic, so two objects never
/// both believe they won.
pub fn namespace_owner<'a, K: Resource + 'a>(
    candidates: impl Iterator<Item = &'a K>,
) -> Option<String> {
    candidates
        .filter(|o| o.meta().deletion_timestamp.is_none())
        .map(|o| {
            (
                o.meta().creation_timestamp.clone().map(|t| t.0),
                o.meta().name.clone().unwrap_or_default(),
            )
        })
        .min_by(|a, b| match (&a.0, &b.0) {
            (Some(x), Some(y)) => x.cmp(y).then_with(|| a.1.cmp(&b.1)),
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, None) => a.1.cmp(&b.1),
        })
        .map(|(_, name)| name)
}

/// A StatefulSet's update revision, once its controller has seen the current template.
pub fn update_revision(
    cache: &crate::k8s::apply::ChildCache,
    ns: &str,
    name: &str,
) -> Option<String> {
    let sts = cache.get(crate::k8s::children::ChildKind::StatefulSet, ns, name)?;
    let status = sts.data.get("status")?;
    let observed = status.get("observedGeneration")?.as_i64()?;
    if Some(observed) != sts.metadata.generation {
        return None;
    }
    Some(status.get("updateRevision")?.as_str()?.to_string())
}

/// Pods of one component (`redis`, `postgres`, `backup`...) of the instance `obj` of store
/// `app`, from a controller's pod cache, by ordinal.
pub fn component_pods<K: Resource>(
    pods: &Store<k8s_openapi::api::core::v1::Pod>,
    obj: &K,
    app: &str,
    component: &str,
) -> Vec<Arc<k8s_openapi::api::core::v1::Pod>> {
    use crate::k8s::labels;
    let (ns, name) = (obj.namespace(), obj.name_any());
    let mut out: Vec<_> = pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace == ns)
        .filter(|p| {
            let l = p.labels();
            l.get(labels::INSTANCE) == Some(&name)
                && l.get(labels::COMPONENT).map(String::as_str) == Some(component)
                && l.get(labels::NAME).map(String::as_str) == Some(app)
        })
        .collect();
    out.sort_by_key(|p| roll::ordinal(&p.name_any()));
    out
}
