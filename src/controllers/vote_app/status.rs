//! Pure: a VoteApp's health from its tiers and stores, and the status written from it.

use super::names::{APP, RESULT, VOTE, WORKER};
use super::validate::Validated;
use crate::controllers::apps::health::{self, tier_problem, tier_status, tier_waiting};
use crate::controllers::apps::stores::waiting_for;
use crate::crd::common::TierStatus;
use crate::crd::vote_app::{QueueMode, VoteAppStatus};
use crate::k8s::cache::ChildCache;
use crate::k8s::conditions::Health;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;

/// What one reconcile read of the app's tiers.
pub struct Tiers {
    pub vote: TierStatus,
    pub result: TierStatus,
    pub worker: Option<TierStatus>,
    /// Problems the pods of waiting tiers show (from the app's pod cache), in tier order.
    pub problems: Vec<Health>,
}

pub fn tiers(v: &Validated, cache: &ChildCache, pods: &Store<Pod>) -> Tiers {
    let ns = &v.owner.namespace;
    let vote = tier_status(cache, ns, &v.names.vote);
    let result = tier_status(cache, ns, &v.names.result);
    let worker = (v.mode == QueueMode::Shared).then(|| tier_status(cache, ns, &v.names.worker));
    let app = (APP, v.owner.name.as_str());
    let mut problems = Vec::new();
    let tiers = [
        (&v.names.vote, VOTE, Some(&vote)),
        (&v.names.result, RESULT, Some(&result)),
        (&v.names.worker, WORKER, worker.as_ref()),
    ];
    for (name, component, status) in tiers {
        let Some(t) = status else { continue };
        let waits = tier_waiting(cache, ns, name, component, t).is_some();
        problems.extend(tier_problem(pods, ns, app, component, waits));
    }
    Tiers {
        vote,
        result,
        worker,
        problems,
    }
}

pub fn assess(v: &Validated, cache: &ChildCache, t: &Tiers) -> Health {
    let ns = &v.owner.namespace;
    let mut stores = Vec::new();
    if let Some(r) = &v.redis {
        stores.extend(waiting_for(
            "RedisSentinel",
            "spec.redis",
            &r.status,
            r.exists,
            ns,
        ));
    }
    let p = &v.postgres;
    stores.extend(waiting_for(
        "PatroniCluster",
        "spec.postgres",
        &p.status,
        p.exists,
        ns,
    ));
    let mut waits = Vec::new();
    waits.extend(tier_waiting(cache, ns, &v.names.vote, VOTE, &t.vote));
    waits.extend(tier_waiting(cache, ns, &v.names.result, RESULT, &t.result));
    if let Some(w) = &t.worker {
        waits.extend(tier_waiting(cache, ns, &v.names.worker, WORKER, w));
    }
    let count = |t: &TierStatus| t.available_replicas.unwrap_or(0);
    let mut ready = format!("vote {}, result {}", count(&t.vote), count(&t.result));
    if let Some(w) = &t.worker {
        ready.push_str(&format!(", worker {}", count(w)));
    }
    ready.push_str(" available; stores Ready");
    health::assess(t.problems.clone(), stores, waits, ready)
}

/// What the reconcile observed beyond the tiers.
pub struct Observed {
    pub queue_length: Option<i64>,
}

pub fn fill(s: &mut VoteAppStatus, v: &Validated, t: Tiers, seen: Observed) {
    s.vote = Some(t.vote);
    s.result = Some(t.result);
    s.worker = t.worker;
    s.redis_store = v.redis_store.as_ref().map(|b| b.name.clone());
    s.redis = v.redis.as_ref().map(|r| r.status.clone());
    s.postgres_store = Some(v.postgres_store.name.clone());
    s.postgres = Some(v.postgres.status.clone());
    s.queue_length = seen.queue_length;
    if v.postgres.leader.is_some() {
        s.result_primary = v.postgres.leader.clone();
    }
}
