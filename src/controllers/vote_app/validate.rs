//! Pure: what the schema cannot check, against the cached view of the namespace — one VoteApp
//! per namespace (`redis` and `db` are fixed names), the stores it binds to, and whether its
//! images can use them (the stock images send no Redis password and log in to PostgreSQL as
//! postgres/postgres).

use super::names::{KIND, Names};
use crate::context::Caches;
use crate::controllers::apps::binding::{self, Binding};
use crate::controllers::apps::image_repo;
use crate::controllers::apps::stores::{PostgresView, RedisView};
use crate::crd::vote_app::QueueMode;
use crate::crd::{PatroniCluster, RedisSentinel, VoteApp};
use crate::k8s::conditions::Health;
use crate::k8s::owner::Owner;

/// A VoteApp that can be built.
#[derive(Clone, Debug)]
pub struct Validated {
    pub owner: Owner,
    pub names: Names,
    pub mode: QueueMode,
    /// The shared queue's store; `None` in `PerPod` mode.
    pub redis_store: Option<Binding<RedisSentinel>>,
    pub redis: Option<RedisView>,
    pub postgres_store: Binding<PatroniCluster>,
    pub postgres: PostgresView,
    /// Images that speak the stock contract (no Redis password, postgres/postgres).
    pub stock_vote: bool,
    pub stock_worker: bool,
    pub stock_result: bool,
}

pub fn mode(app: &VoteApp) -> QueueMode {
    app.spec.queue.as_ref().map(|q| q.mode).unwrap_or_default()
}

/// `Err` carries the `Stalled` health naming the field at fault.
pub fn validate(app: &VoteApp, owner: Owner, caches: &Caches) -> Result<Validated, Health> {
    let services = "\"redis\" and \"db\"";
    if let Some(conflict) = binding::namespace_conflict(&owner, &caches.vote_apps, KIND, services) {
        return Err(conflict);
    }
    let spec = &app.spec;
    let mode = mode(app);
    let redis_binding = match (mode, &spec.redis) {
        (QueueMode::Shared, Some(r)) => Some((
            binding::resolve(
                &owner,
                r.name.as_deref(),
                "redis",
                "spec.redis",
                "RedisSentinel",
                &caches.redis_sentinels,
            )?,
            r.spec.as_deref(),
        )),
        (QueueMode::Shared, None) => {
            return Err(Health::stalled(
                "StoreMissing",
                "spec.redis: the Shared queue needs a Redis store (a name or an inline spec)",
            ));
        }
        (QueueMode::PerPod, _) => None,
    };
    let postgres_store = binding::resolve(
        &owner,
        spec.postgres.name.as_deref(),
        "db",
        "spec.postgres",
        "PatroniCluster",
        &caches.patroni_clusters,
    )?;
    let postgres = PostgresView::of(&postgres_store, spec.postgres.spec.as_deref());
    let redis = redis_binding
        .as_ref()
        .map(|(b, inline)| RedisView::of(b, *inline));
    let stock = |image: &str, repo: &str| image_repo(image) == repo;
    let v = Validated {
        names: Names::of(&owner.name),
        owner,
        mode,
        redis_store: redis_binding.map(|(b, _)| b),
        redis,
        postgres_store,
        postgres,
        stock_vote: stock(&spec.vote.web.vote_image(), "examplevotingapp_vote"),
        stock_worker: stock(&spec.worker.image, "examplevotingapp_worker"),
        stock_result: stock(&spec.result.result_image(), "examplevotingapp_result"),
    };
    let stock_redis_client = v.stock_vote || v.stock_worker;
    if let (true, Some(r), Some(b)) = (stock_redis_client, &v.redis, &v.redis_store)
        && r.password.is_some()
    {
        let fix = if b.owned {
            "set spec.redis.spec.auth.enabled: false (the operator then admits only this app's pods to the store)"
        } else {
            "disable auth on that store or reference another one"
        };
        return Err(Health::stalled(
            "StoreNeedsPassword",
            format!(
                "spec.redis: RedisSentinel \"{}\" requires a password (its spec.auth.enabled is true, the default), but the stock vote and worker images cannot send one; {fix}, or use images that read REDIS_PASSWORD",
                b.name
            ),
        ));
    }
    let stock_db_client = v.stock_worker || v.stock_result;
    if stock_db_client && v.postgres.exists_or_inline() && !v.postgres.stock_credentials {
        return Err(Health::stalled(
            "StoreCredentials",
            format!(
                "spec.postgres: PatroniCluster \"{}\" does not set spec.auth.stockAppCredentials, but the stock worker and result images log in as postgres/postgres; set it (spec.postgres.spec.auth.stockAppCredentials: true for an inline store), or use images that read POSTGRES_USER and POSTGRES_PASSWORD",
                v.postgres_store.name
            ),
        ));
    }
    Ok(v)
}
