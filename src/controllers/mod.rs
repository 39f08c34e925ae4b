//! One controller per kind, each a visible pipeline in its `reconcile.rs`: dereference (API
//! reads and data-plane observation) → validate (pure) → build (pure) → apply and prune (one
//! shared call, [`crate::k8s::apply::sync`]) → act (heal, roll, backups) → status. This module
//! holds the runtime all four share: status writes with their events, instrumentation, and
//! what happens when a reconcile fails.

pub mod apps;
pub(crate) mod backups;
pub mod credentials;
pub mod guestbook;
pub(crate) mod job_results;
pub mod patroni_cluster;
pub mod redis_sentinel;
pub(crate) mod roll;
pub mod vote_app;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::k8s::apply::Applied;
use crate::k8s::conditions::{self, Extra, Health};
use crate::k8s::status::{KStatus, apply_status};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::object::HasStatus;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
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

/// What one reconcile concluded: the object's health, extra conditions, when to look again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub health: Health,
    pub extras: Vec<Extra>,
    /// Look again after this long, instead of the default for the health.
    pub requeue: Option<Duration>,
    /// The data plane was just changed (a repair, a configuration patch): look at the outcome
    /// this soon even when a child was refused, whose retry otherwise backs off for minutes.
    pub followup: Option<Duration>,
}

impl Verdict {
    pub fn new(health: Health) -> Self {
        Self {
            health,
            extras: Vec::new(),
            requeue: None,
            followup: None,
        }
    }
}

/// Writes the status for `verdict` (only if it changed), records a Warning event when the
/// object newly stalls or fails, and decides when to look again. `fill` sets the
/// kind-specific status fields.
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
    write_status(ctx, obj, &verdict, false, fill).await?;
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

/// The status write behind [`finish`]. `failed`: the health describes a failure (a Warning
/// event names it the first time it is written, not on every retry).
async fn write_status<K>(
    ctx: &Context,
    obj: &K,
    verdict: &Verdict,
    failed: bool,
    fill: impl FnOnce(&mut K::Status),
) -> Result<()>
where
    K: Managed,
    K::Status: KStatus,
{
    let current = ctx.written_status.freshest(obj);
    let previous = current.clone().unwrap_or_default();
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
    if !apply_status(&api, obj, current.as_ref(), &desired, &ctx.written_status).await? {
        return Ok(());
    }
    let was = conditions::find(previous.conditions(), conditions::READY)
        .map(|c| (c.reason.as_str(), c.message.as_str()));
    let now = (verdict.health.reason(), verdict.health.message());
    let stalled = matches!(verdict.health, Health::Stalled { .. });
    // A problem the pods show (a pending claim, an image pull) is one failure while its reason
    // stands: the kubelet's words change with every retry.
    let diagnosed = crate::k8s::diagnose::is_diagnosis(now.0);
    let distinct = match diagnosed {
        true => was.map(|w| w.0) != Some(now.0),
        false => was != Some(now),
    };
    if (stalled || failed || diagnosed) && distinct {
        publish(ctx, obj, EventType::Warning, now.0, "Reconcile", now.1).await;
    }
    Ok(())
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

/// Takes the ServiceMonitor/PodMonitor children out of `children` where the API server does
/// not serve them, and says so with one Normal event per object and generation. Monitoring is
/// optional: the object is neither Stalled nor Reconciling for it.
pub async fn withhold_monitoring<K: Managed>(
    ctx: &Context,
    obj: &K,
    children: &mut Vec<crate::k8s::children::Child>,
) where
    K::Status: KStatus,
{
    if crate::k8s::monitoring::withhold(children, ctx.monitoring.served()) {
        tell_monitoring_missing(ctx, obj).await;
    }
}

/// Takes out of `applied` the monitoring children the API server refused as a kind it does not
/// serve (its CRDs went since the last discovery): monitoring is then not served, the object
/// is told so as in [`withhold_monitoring`], and its reconcile does not fail for it.
pub async fn monitoring_refused<K: Managed>(
    ctx: &Context,
    obj: &K,
    applied: &mut crate::k8s::apply::Applied,
) where
    K::Status: KStatus,
{
    use crate::k8s::monitoring::is_api_gone;
    let before = applied.failed.len();
    applied
        .failed
        .retain(|f| !(f.kind.is_monitoring() && f.action == "apply" && is_api_gone(&f.error)));
    if applied.failed.len() != before {
        ctx.monitoring.set(false);
        tell_monitoring_missing(ctx, obj).await;
    }
}

/// One Normal event per object and generation: monitoring is wanted but not served.
async fn tell_monitoring_missing<K: Managed>(ctx: &Context, obj: &K)
where
    K::Status: KStatus,
{
    use crate::k8s::monitoring;
    let uid = obj.uid().unwrap_or_default();
    let generation = obj.meta().generation.unwrap_or(0);
    if ctx
        .monitoring_told
        .first(&uid, generation, || ctx.caches.uids())
    {
        let note = format!(
            "spec.monitoring.enabled: this cluster does not serve {}/{} (ServiceMonitor, \
             PodMonitor), so none is created; once the Prometheus Operator's CRDs are \
             installed they are, within --api-discovery-interval-seconds (or set it to false)",
            monitoring::GROUP,
            monitoring::VERSION
        );
        publish(
            ctx,
            obj,
            EventType::Normal,
            monitoring::API_MISSING,
            "Monitor",
            &note,
        )
        .await;
    }
}

/// The health a failed reconcile reports: `Stalled` when retrying the same input cannot help,
/// `Reconciling` while it may.
pub fn failure_health(error: &Error) -> Health {
    let message = error.to_string();
    if error.is_permanent() {
        Health::stalled("ReconcileFailed", message)
    } else {
        Health::progressing("ReconcileError", message)
    }
}

/// Runs one reconcile of `obj` with metrics and a tracing span. A failure the pipeline did not
/// report itself is written to the object's status (observedGeneration, `Ready=False` with
/// `Stalled` or `Reconciling`): an empty or stale status would read as Current to kstatus.
pub async fn instrumented<K, F, Fut>(obj: Arc<K>, ctx: Arc<Context>, run: F) -> Result<Action>
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
    let result = tracing::Instrument::instrument(run(obj.clone(), ctx.clone()), span.clone()).await;
    ctx.metrics.reconciled(K::KIND, started.elapsed());
    match &result {
        Ok(_) => ctx.note_success(&key),
        // Already in status, with what did work beside it.
        Err(Error::Children { .. }) => {}
        Err(e) => {
            let verdict = Verdict::new(failure_health(e));
            let write = write_status(&ctx, obj.as_ref(), &verdict, true, |_| {});
            if let Err(w) = tracing::Instrument::instrument(write, span).await {
                tracing::warn!(error = %w, "could not report the failure in status");
            }
        }
    }
    result
}

/// Requeue policy after a failed reconcile: exponential per object, so neither a broken API
/// server nor a refused child becomes a hot loop.
pub fn error_policy<K: Managed>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action
where
    K::Status: KStatus,
{
    ctx.metrics.failed(K::KIND, error.metric_label());
    let failures = ctx.note_failure(&object_key::<K>(&obj));
    let delay = error.retry_delay(failures);
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

/// Concludes a reconcile from what apply and prune did: a Warning event per child put back
/// after another manager changed it (naming the field and the manager), then [`finish`] when
/// every child was accepted, else [`finish_with_failures`].
pub async fn conclude<K>(
    ctx: &Context,
    obj: &K,
    verdict: Verdict,
    applied: Applied,
    fill: impl FnOnce(&mut K::Status),
) -> Result<Action>
where
    K: Managed,
    K::Status: KStatus,
{
    for drift in &applied.drift {
        let note = drift.note();
        publish(
            ctx,
            obj,
            EventType::Warning,
            "DriftRepaired",
            "Apply",
            &note,
        )
        .await;
    }
    let failures = applied.failed;
    if failures.is_empty() {
        finish(ctx, obj, verdict, fill).await
    } else {
        finish_with_failures(ctx, obj, verdict, failures, fill).await
    }
}

/// The status and outcome of a reconcile whose children were not all accepted: the health
/// names the first refused child (with the server's words), `Stalled` when the refusal is
/// permanent. Returns the failures as the error, so the retry backs off.
pub async fn finish_with_failures<K>(
    ctx: &Context,
    obj: &K,
    mut verdict: Verdict,
    failures: Vec<crate::error::ChildFailure>,
    fill: impl FnOnce(&mut K::Status),
) -> Result<Action>
where
    K: Managed,
    K::Status: KStatus,
{
    let error = Error::Children {
        failures,
        followup: verdict.followup,
    };
    let reason = if error.is_permanent() {
        "ChildRejected"
    } else {
        "ChildApplyFailed"
    };
    let message = error.to_string();
    verdict.health = if error.is_permanent() {
        Health::stalled(reason, message)
    } else {
        Health::progressing(reason, message)
    };
    write_status(ctx, obj, &verdict, true, fill).await?;
    Err(error)
}
