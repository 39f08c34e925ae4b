//! The VoteApp pipeline: validate (against the cached stores and siblings) → dereference the
//! data plane (the shared queue's length) → build → hand over (replicas to autoscalers, stores
//! no longer declared to the user) → apply and prune → routes → status.

use super::build::{self, Built, Inputs};
use super::names::{KIND, QUEUE_KEY, REDIS_PORT};
use super::queue;
use super::status::{self, Observed};
use super::validate::{self, Validated};
use crate::context::Context;
use crate::controllers::apps::binding::NAMESPACE_CONFLICT;
use crate::controllers::apps::{self, glue, handoff, route};
use crate::controllers::{Verdict, conclude, finish, instrumented, publish};
use crate::crd::VoteApp;
use crate::crd::vote_app::QueueMode;
use crate::error::Result;
use crate::k8s::apply;
use crate::k8s::cache::ChildCache;
use crate::k8s::children::ChildKind;
use crate::k8s::owner::Owner;
use crate::k8s::secrets;
use crate::stores::redis::{self as store, Endpoint};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use std::sync::Arc;
use std::time::Duration;

/// How often the queue is read while workers scale on it.
const QUEUE_POLL: Duration = Duration::from_secs(10);

pub async fn reconcile(app: Arc<VoteApp>, ctx: Arc<Context>) -> Result<Action> {
    instrumented(app, ctx, run).await
}

async fn run(app: Arc<VoteApp>, ctx: Arc<Context>) -> Result<Action> {
    let owner = Owner::of(app.as_ref(), KIND)?;
    // Validation reads the caches of stores and siblings: they must have listed.
    ctx.synced.wait().await;
    let v = match validate::validate(&app, owner.clone(), &ctx.caches) {
        Ok(v) => v,
        Err(stalled) => {
            if stalled.reason() == NAMESPACE_CONFLICT
                && apps::conflict_over(&ctx.client, &owner, &ctx.caches.vote_apps).await
            {
                return Ok(Action::requeue(apps::CACHE_CATCH_UP));
            }
            return finish(&ctx, app.as_ref(), Verdict::new(stalled), |_| {}).await;
        }
    };
    let names: &[&str] = match v.mode {
        QueueMode::Shared => &[super::names::REDIS_SERVICE, super::names::DB_SERVICE],
        QueueMode::PerPod => &[super::names::DB_SERVICE],
    };
    let cache = ctx.caches.owned.children(KIND);
    if let Some(stalled) = glue::taken(&ctx.client, cache, &v.owner, names).await? {
        return finish(&ctx, app.as_ref(), Verdict::new(stalled), |_| {}).await;
    }
    let queue_length = queue_length(&ctx, &app, &v).await;
    let inputs = Inputs {
        workers: workers(&app, queue_length),
    };
    let Built { children, routes } = build::build(&app, &v, &inputs)?;
    hand_over(&ctx, &app, &v, cache).await?;
    let keep = [ChildKind::RedisSentinel, ChildKind::PatroniCluster];
    let applied = apply::sync_keeping(&ctx.client, cache, &v.owner, &children, &keep).await;
    let routes = route::sync(&ctx.client, &v.owner, &routes).await?;
    announce(&ctx, &app, &v, &inputs, queue_length).await;
    let tiers = status::tiers(&v, cache, &ctx.caches.owned.pods(KIND));
    let health = if routes.api_missing {
        route::api_missing("spec.vote.httpRoute/spec.result.httpRoute")
    } else {
        status::assess(&v, cache, &tiers)
    };
    let scaling = app.spec.worker.autoscaling.is_some() && v.mode == QueueMode::Shared;
    let mut used = vec![(&v.postgres.status, v.postgres.exists)];
    used.extend(v.redis.as_ref().map(|r| (&r.status, r.exists)));
    let requeue = [scaling.then_some(QUEUE_POLL), apps::stores::recheck(&used)];
    let verdict = Verdict {
        requeue: requeue.into_iter().flatten().min(),
        ..Verdict::new(health)
    };
    let fill = |s: &mut _| status::fill(s, &v, tiers, Observed { queue_length });
    conclude(&ctx, app.as_ref(), verdict, applied, fill).await
}

/// The shared queue's length, read from the master the store reports; `None` when there is
/// no shared queue or it cannot be read now (the workers then keep their count).
async fn queue_length(ctx: &Context, app: &VoteApp, v: &Validated) -> Option<i64> {
    let redis = v.redis.as_ref()?;
    let ip = redis.master_address.clone()?;
    let password = match &redis.password {
        Some((secret, key)) => {
            let ns = &v.owner.namespace;
            secrets::read(&ctx.client, ns, secret, key).await.ok()?
        }
        None => None,
    };
    let ep = Endpoint {
        ip,
        port: REDIS_PORT as u16,
        password,
    };
    match store::list_length(&ep, QUEUE_KEY).await {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::debug!(error = %e, app = %v.owner.name, "queue length not readable now");
            app.status.as_ref().and_then(|s| s.queue_length)
        }
    }
}

/// Worker pods: the spec's count, or the queue-driven one.
fn workers(app: &VoteApp, queue_length: Option<i64>) -> i32 {
    let w = &app.spec.worker;
    let Some(auto) = &w.autoscaling else {
        return w.replicas;
    };
    let current = app
        .status
        .as_ref()
        .and_then(|s| s.worker.as_ref()?.replicas)
        .unwrap_or(auto.min_replicas);
    match queue_length {
        Some(n) => queue::workers(auto, current, n),
        None => current.clamp(auto.min_replicas, auto.max_replicas),
    }
}

/// Replicas of autoscaled tiers to their autoscalers; stores the spec stopped declaring to
/// the user.
async fn hand_over(ctx: &Context, app: &VoteApp, v: &Validated, cache: &ChildCache) -> Result<()> {
    let ns = &v.owner.namespace;
    let tiers = [
        (&app.spec.vote.web, &v.names.vote),
        (&app.spec.result, &v.names.result),
    ];
    for (spec, name) in tiers {
        if spec.autoscaling.is_some() {
            handoff::replicas_to_autoscaler(&ctx.client, cache, ns, name).await?;
        }
    }
    let owned_redis: Vec<&str> = v
        .redis_store
        .iter()
        .filter(|b| b.owned)
        .map(|b| b.name.as_str())
        .collect();
    let owned_db: Vec<&str> = [&v.postgres_store]
        .into_iter()
        .filter(|b| b.owned)
        .map(|b| b.name.as_str())
        .collect();
    let kinds = [
        (ChildKind::RedisSentinel, owned_redis, "spec.redis.spec"),
        (ChildKind::PatroniCluster, owned_db, "spec.postgres.spec"),
    ];
    for (kind, wanted, field) in kinds {
        for name in handoff::release_stores(&ctx.client, cache, &v.owner, kind, &wanted).await? {
            let kind = kind.api_resource().kind;
            let note = format!(
                "{kind} {name} is no longer declared in {field}; it keeps running with its data and is no longer owned by this VoteApp: delete it yourself when it is not needed"
            );
            publish(
                ctx,
                app,
                EventType::Normal,
                "StoreReleased",
                "Release",
                &note,
            )
            .await;
        }
    }
    Ok(())
}

/// Events for what the operator does on the stock images' behalf.
async fn announce(
    ctx: &Context,
    app: &VoteApp,
    v: &Validated,
    inputs: &Inputs,
    queue_length: Option<i64>,
) {
    let before = app
        .status
        .as_ref()
        .and_then(|s| s.worker.as_ref()?.replicas);
    if app.spec.worker.autoscaling.is_some()
        && let Some(before) = before
        && before != inputs.workers
    {
        let queue = queue_length.map_or("unknown".to_string(), |n| n.to_string());
        let note = format!(
            "{} workers → {} for a queue of {queue} votes",
            before, inputs.workers
        );
        publish(ctx, app, EventType::Normal, "WorkersScaled", "Scale", &note).await;
    }
    let previous = app
        .status
        .as_ref()
        .and_then(|s| s.result_primary.as_deref());
    if let (Some(old), Some(new)) = (previous, v.postgres.leader.as_deref())
        && old != new
    {
        let note = format!(
            "the PostgreSQL primary moved from {old} to {new}; the result tier is restarted because its image keeps one database connection and never reconnects"
        );
        publish(
            ctx,
            app,
            EventType::Normal,
            "ResultRestarted",
            "Roll",
            &note,
        )
        .await;
    }
}
