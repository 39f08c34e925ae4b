//! Pure: an app's tiers and stores summed up into its health. Ready only when every tier has
//! all its pods available on the current template and every store is Ready; otherwise
//! `Reconciling`, naming what it waits for.

use crate::crd::common::TierStatus;
use crate::k8s::cache::ChildCache;
use crate::k8s::children::ChildKind;
use crate::k8s::conditions::Health;
use crate::k8s::pods::status_count;

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

/// The app's health: the first store it waits for, else the tiers it waits for, else Ready
/// with `ready` as the message.
pub fn assess(store_waits: Vec<Health>, tier_waits: Vec<String>, ready: String) -> Health {
    if let Some(h) = store_waits.into_iter().next() {
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
