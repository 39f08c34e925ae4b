//! Pure: an app's tiers and stores summed up into its health. Ready only when every tier has
//! all its pods available on the current template and every store is Ready; otherwise
//! `Reconciling`, naming what it waits for — first a tier whose pods show a problem the user
//! must act on (an image that cannot be pulled, a pod that cannot be scheduled), quoting the
//! cluster.

use crate::crd::common::TierStatus;
use crate::k8s::cache::ChildCache;
use crate::k8s::children::ChildKind;
use crate::k8s::conditions::Health;
use crate::k8s::diagnose;
use crate::k8s::pods::{component_pods, status_count};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;

/// A tier's counts from its Deployment (wanted pods as the live object has them: the
/// autoscaler's count when it owns the tier).
pub fn tier_status(cache: &ChildCache, ns: &str, name: &str) -> TierStatus {
    let wanted = cache
        .get(ChildKind::Deployment, ns, name)
        .and_then(|d| d.data.get("spec")?.get("replicas")?.as_i64())
        .and_then(|n| i32::try_from(n).ok());
    let count = |field| status_count(cache, ChildKind::Deployment, ns, name, field);
    TierStatus {
        replicas: wanted,
        available_replicas: Some(count("availableReplicas")),
        updated_replicas: Some(count("updatedReplicas")),
    }
}

/// Whether the Deployment's controller has seen its current spec.
fn observed(cache: &ChildCache, ns: &str, name: &str) -> bool {
    cache.get(ChildKind::Deployment, ns, name).is_some_and(|d| {
        let seen = d
            .data
            .get("status")
            .and_then(|s| s.get("observedGeneration")?.as_i64());
        seen.is_some() && seen == d.metadata.generation
    })
}

/// `Some("vote 1/2 available")` while the tier is not fully rolled out and available.
pub fn tier_waiting(
    cache: &ChildCache,
    ns: &str,
    name: &str,
    component: &str,
    t: &TierStatus,
) -> Option<String> {
    let wanted = t.replicas.unwrap_or(0);
    let available = t.available_replicas.unwrap_or(0);
    let updated = t.updated_replicas.unwrap_or(0);
    if !observed(cache, ns, name) {
        return Some(format!("{component} rollout not observed yet"));
    }
    (available < wanted || updated < wanted)
        .then(|| format!("{component} {available}/{wanted} available, {updated}/{wanted} updated"))
}

/// The problem the pods of a waiting tier show (see [`diagnose`]), as the app's health.
/// `app` and `instance` select the pods (the app's name label and the object's name).
pub fn tier_problem(
    pods: &Store<Pod>,
    ns: &str,
    (app, instance): (&str, &str),
    component: &str,
    waiting: bool,
) -> Option<Health> {
    if !waiting {
        return None;
    }
    let pods = component_pods(pods, ns, instance, app, component);
    let pods: Vec<&Pod> = pods.iter().map(AsRef::as_ref).collect();
    let p = diagnose::diagnose(&pods, &[])?;
    Some(Health::progressing(
        p.reason,
        format!("{component} tier: {}", p.message),
    ))
}

/// The app's health: the first tier problem, else the first store it waits for, else the
/// tiers it waits for, else Ready with `ready` as the message. A tier's problem comes before
/// a store that is starting: it will not go away by waiting.
pub fn assess(
    problems: Vec<Health>,
    store_waits: Vec<Health>,
    tier_waits: Vec<String>,
    ready: String,
) -> Health {
    if let Some(h) = problems.into_iter().chain(store_waits).next() {
        return h;
    }
    if !tier_waits.is_empty() {
        return Health::progressing("TiersStarting", tier_waits.join("; "));
    }
    Health::Ready {
        reason: "Healthy".into(),
        message: ready,
    }
}
