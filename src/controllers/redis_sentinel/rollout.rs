//! Rolling updates of Redis pods through the shared driver: a replica is updated by replacing
//! its pod; the master hands over with a lossless switchover — writes paused until every
//! replica has them, then `SENTINEL FAILOVER` — and is replaced only as a replica.

use super::names::{REDIS, REDIS_PORT, SENTINEL_PORT};
use super::topology::{Plan, RedisNode, SentinelNode};
use super::validate::Validated;
use crate::context::Context;
use crate::controllers::roll::{self, Handover, RollPod};
use crate::crd::RedisSentinel;
use crate::error::Result;
use crate::k8s::cache::ChildCache;
use crate::k8s::conditions::Health;
use crate::k8s::pods::{ordinal, update_revision};
use crate::stores::redis::{self as store, Endpoint};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, ResourceExt};
use std::time::Duration;

/// What one reconcile observed of the data plane and decided about it.
pub struct Observed<'a> {
    pub plan: &'a Plan,
    pub redis: &'a [RedisNode],
    pub sentinels: &'a [SentinelNode],
    pub auth: &'a Option<String>,
}

/// Takes the next step of a rolling update when the set is healthy; returns the health to
/// report.
pub async fn roll_forward(
    ctx: &Context,
    rs: &RedisSentinel,
    v: &Validated,
    cache: &ChildCache,
    seen: &Observed<'_>,
    health: Health,
) -> Result<Health> {
    let ns = &v.owner.namespace;
    let Some(revision) = update_revision(cache, ns, &v.names.redis) else {
        return Ok(health);
    };
    let pods: Vec<RollPod> = super::heal::pods(ctx, v, REDIS)
        .iter()
        .map(|p| RollPod {
            name: p.name_any(),
            ordinal: ordinal(&p.name_any()),
            outdated: p.labels().get("controller-revision-hash") != Some(&revision),
            is_primary: seen.plan.master.as_deref() == Some(p.name_any().as_str()),
        })
        .collect();
    let update = async |pod: &str| -> Result<String> {
        Api::<Pod>::namespaced(ctx.client.clone(), ns)
            .delete(pod, &kube::api::DeleteParams::default())
            .await?;
        Ok(format!("replacing replica {pod}"))
    };
    let handover = async || handover(rs, v, seen).await;
    roll::drive(ctx, rs, "Redis pods", &pods, health, update, handover).await
}

async fn handover(rs: &RedisSentinel, v: &Validated, seen: &Observed<'_>) -> Result<Handover> {
    let master = seen
        .plan
        .master
        .as_ref()
        .and_then(|m| seen.redis.iter().find(|n| &n.pod == m));
    let Some(master) = master else {
        return Ok(Handover::NotNow);
    };
    let mep = Endpoint {
        ip: master.ip.clone(),
        port: REDIS_PORT as u16,
        password: seen.auth.clone(),
    };
    // A planned switchover loses nothing: writes pause on the master until every replica has
    // all of them, then Sentinel promotes one.
    store::pause_writes(&mep, 10_000).await?;
    let want = usize::try_from(rs.spec.redis.replicas - 1).unwrap_or(0);
    if !store::replicas_caught_up(&mep, want, Duration::from_secs(5)).await? {
        store::unpause(&mep).await?;
        return Ok(Handover::Waiting(
            "replicas did not catch up with the master within 5 s; switchover postponed".into(),
        ));
    }
    let sentinel = seen.sentinels.iter().find(|s| s.view.is_some());
    let Some(sentinel) = sentinel else {
        return Ok(Handover::NotNow);
    };
    let ep = Endpoint {
        ip: sentinel.ip.clone(),
        port: SENTINEL_PORT as u16,
        password: seen.auth.clone(),
    };
    store::sentinel(&ep, &["FAILOVER", &v.owner.name]).await?;
    Ok(Handover::Done(
        "every replica is, so Sentinel hands the master role to one before the old master is replaced".into(),
    ))
}
