//! The VoteApp controller. Today: resolve the Redis and PostgreSQL stores, check the namespace
//! is free, report status.

use super::apps::{namespace_conflict, resolve_binding};
use super::{Managed, Verdict, finish, instrumented};
use crate::context::{Caches, Context};
use crate::crd::{PatroniCluster, RedisSentinel, VoteApp};
use crate::error::Result;
use crate::k8s::cache::OwnedCaches;
use crate::k8s::conditions::Health;
use crate::k8s::watches::{main_controller, referrers, scoped_api};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Client, ResourceExt};
use std::sync::Arc;

impl Managed for VoteApp {
    const KIND: &'static str = "VoteApp";
}

/// Pure validation against the cached view of the namespace. Returns the verdict and the
/// names of the Redis and PostgreSQL stores in use.
pub fn validate(app: &VoteApp, caches: &Caches) -> (Verdict, String, String) {
    let redis = resolve_binding(
        app,
        app.spec.redis.name.as_deref(),
        "redis",
        "spec.redis",
        "RedisSentinel",
        &caches.redis_sentinels,
    );
    let postgres = resolve_binding(
        app,
        app.spec.postgres.name.as_deref(),
        "db",
        "spec.postgres",
        "PatroniCluster",
        &caches.patroni_clusters,
    );
    let health = namespace_conflict(app, &caches.vote_apps, "VoteApp", "\"redis\" and \"db\"")
        .or(redis.problem)
        .or(postgres.problem)
        .unwrap_or_else(|| not_yet_managed("VoteApp"));
    (Verdict::new(health), redis.store, postgres.store)
}

pub async fn reconcile(app: Arc<VoteApp>, ctx: Arc<Context>) -> Result<Action> {
    instrumented(app, ctx, |app, ctx| async move {
        let (verdict, redis, postgres) = validate(&app, &ctx.caches);
        finish(&ctx, app.as_ref(), verdict, |s| {
            s.redis_store = Some(redis);
            s.postgres_store = Some(postgres);
        })
        .await
    })
    .await
}

/// The controller, also woken when a store or another VoteApp in the namespace changes.
pub fn controller(
    client: &Client,
    namespace: Option<&str>,
    synced: &crate::k8s::sync::Synced,
    _owned: &mut OwnedCaches,
) -> Controller<VoteApp> {
    let wc = watcher::Config::default();
    let ctl = main_controller::<VoteApp>(client, namespace, synced);
    let (a, b, c) = (ctl.store(), ctl.store(), ctl.store());
    let redis = scoped_api::<RedisSentinel>(client, namespace);
    let postgres = scoped_api::<PatroniCluster>(client, namespace);
    ctl.watches(redis, wc.clone(), move |s| {
        referrers(&a, s.namespace(), |_| true)
    })
    .watches(postgres, wc.clone(), move |s| {
        referrers(&b, s.namespace(), |_| true)
    })
    .watches(scoped_api::<VoteApp>(client, namespace), wc, move |v| {
        let name = v.name_any();
        referrers(&c, v.namespace(), |a| a.name_any() != name)
    })
}

/// The health reported while this operator version does not build the app's workloads.
fn not_yet_managed(kind: &str) -> Health {
    Health::unknown(
        "NotYetManaged",
        format!(
            "spec accepted and validated; this operator version does not create the {kind}'s workloads yet"
        ),
    )
}
