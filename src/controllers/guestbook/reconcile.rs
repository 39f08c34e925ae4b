//! The Guestbook pipeline: validate (against the cached stores and siblings) → build → hand
//! over (replicas to autoscalers, stores no longer declared to the user) → apply and prune →
//! routes → status.

use super::build::{self, Built};
use super::names::KIND;
use super::status;
use super::validate::{self, Validated};
use crate::context::Context;
use crate::controllers::apps::binding::NAMESPACE_CONFLICT;
use crate::controllers::apps::{self, glue, handoff, route};
use crate::controllers::{
    Verdict, conclude, finish, instrumented, monitoring_refused, publish, withhold_monitoring,
};
use crate::crd::Guestbook;
use crate::error::Result;
use crate::k8s::apply;
use crate::k8s::cache::ChildCache;
use crate::k8s::children::ChildKind;
use crate::k8s::owner::Owner;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use std::sync::Arc;

pub async fn reconcile(gb: Arc<Guestbook>, ctx: Arc<Context>) -> Result<Action> {
    instrumented(gb, ctx, run).await
}

async fn run(gb: Arc<Guestbook>, ctx: Arc<Context>) -> Result<Action> {
    let owner = Owner::of(gb.as_ref(), KIND)?;
    // Validation reads the caches of stores and siblings: they must have listed.
    ctx.synced.wait().await;
    let v = match validate::validate(&gb, owner.clone(), &ctx.caches) {
        Ok(v) => v,
        Err(stalled) => {
            if stalled.reason() == NAMESPACE_CONFLICT
                && apps::conflict_over(&ctx.client, &owner, &ctx.caches.guestbooks).await
            {
                return Ok(Action::requeue(apps::CACHE_CATCH_UP));
            }
            return finish(&ctx, gb.as_ref(), Verdict::new(stalled), |_| {}).await;
        }
    };
    let n = &gb.spec.redis_service_names;
    let names = [n.leader.as_str(), n.follower.as_str()];
    let cache = ctx.caches.owned.children(KIND);
    if let Some(stalled) = glue::taken(&ctx.client, cache, &v.owner, &names).await? {
        return finish(&ctx, gb.as_ref(), Verdict::new(stalled), |_| {}).await;
    }
    let Built {
        mut children,
        routes,
    } = build::build(&gb, &v)?;
    withhold_monitoring(&ctx, gb.as_ref(), &mut children).await;
    hand_over(&ctx, &gb, &v, cache).await?;
    let keep = [ChildKind::RedisSentinel];
    let mut applied = apply::sync_keeping(&ctx.client, cache, &v.owner, &children, &keep).await;
    monitoring_refused(&ctx, gb.as_ref(), &mut applied).await;
    let routes = route::sync(&ctx.client, &v.owner, &routes).await?;
    let tiers = status::tiers(&gb, &v, cache, &ctx.caches.owned.pods(KIND));
    let health = if routes.api_missing {
        route::api_missing("spec.httpRoute")
    } else {
        status::assess(&v, cache, &tiers)
    };
    let verdict = Verdict {
        requeue: apps::stores::recheck(&[(&v.redis.status, v.redis.exists)]),
        ..Verdict::new(health)
    };
    let fill = |s: &mut _| status::fill(s, &gb, &v, tiers);
    conclude(&ctx, gb.as_ref(), verdict, applied, fill).await
}

/// Replicas of autoscaled tiers to their autoscalers; stores the spec stopped declaring to
/// the user.
async fn hand_over(ctx: &Context, gb: &Guestbook, v: &Validated, cache: &ChildCache) -> Result<()> {
    let ns = &v.owner.namespace;
    if gb.spec.frontend.autoscaling.is_some() {
        handoff::replicas_to_autoscaler(&ctx.client, cache, ns, &v.names.frontend).await?;
    }
    if gb
        .spec
        .proxy
        .as_ref()
        .is_some_and(|p| p.autoscaling.is_some())
    {
        handoff::replicas_to_autoscaler(&ctx.client, cache, ns, &v.names.proxy).await?;
    }
    let wanted: Vec<&str> = match v.store.owned {
        true => vec![v.store.name.as_str()],
        false => Vec::new(),
    };
    let released = handoff::release_stores(
        &ctx.client,
        cache,
        &v.owner,
        ChildKind::RedisSentinel,
        &wanted,
    )
    .await?;
    for name in released {
        let note = format!(
            "RedisSentinel {name} is no longer declared in spec.redis.spec; it keeps running with its data and is no longer owned by this Guestbook: delete it yourself when it is not needed"
        );
        publish(
            ctx,
            gb,
            EventType::Normal,
            "StoreReleased",
            "Release",
            &note,
        )
        .await;
    }
    Ok(())
}
