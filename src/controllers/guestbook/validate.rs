//! Pure: what the schema cannot check, against the cached view of the namespace — one
//! Guestbook per namespace (its Service names are fixed), the Redis store it binds to, and
//! whether the frontend image can use that store.

use super::names::{KIND, Names};
use crate::context::Caches;
use crate::controllers::apps::binding::{self, Binding};
use crate::controllers::apps::image_repo;
use crate::controllers::apps::stores::RedisView;
use crate::crd::{Guestbook, RedisSentinel};
use crate::k8s::conditions::Health;
use crate::k8s::owner::Owner;

/// A Guestbook that can be built.
#[derive(Clone, Debug)]
pub struct Validated {
    pub owner: Owner,
    pub names: Names,
    pub store: Binding<RedisSentinel>,
    pub redis: RedisView,
    /// The frontend runs an image that speaks the stock contract (no password).
    pub stock_frontend: bool,
}

/// Images known to hard-code a password-less Redis (the guestbook's PHP frontends).
pub fn is_stock_frontend(image: &str) -> bool {
    matches!(
        image_repo(image),
        "gb-frontend" | "example-guestbook-php-redis" | "guestbook-php-redis"
    )
}

/// `Err` carries the `Stalled` health naming the field at fault.
pub fn validate(gb: &Guestbook, owner: Owner, caches: &Caches) -> Result<Validated, Health> {
    let names = &gb.spec.redis_service_names;
    let services = format!("\"{}\" and \"{}\"", names.leader, names.follower);
    if let Some(conflict) = binding::namespace_conflict(&owner, &caches.guestbooks, KIND, &services)
    {
        return Err(conflict);
    }
    let store = binding::resolve(
        &owner,
        gb.spec.redis.name.as_deref(),
        "redis",
        "spec.redis",
        "RedisSentinel",
        &caches.redis_sentinels,
    )?;
    let redis = RedisView::of(&store, gb.spec.redis.spec.as_deref());
    let stock_frontend = is_stock_frontend(&gb.spec.frontend.image);
    if stock_frontend && redis.password.is_some() {
        let fix = if store.owned {
            "set spec.redis.spec.auth.enabled: false (the operator then admits only this app's pods to the store)".to_string()
        } else {
            format!(
                "disable auth on RedisSentinel \"{}\", reference another store",
                store.name
            )
        };
        return Err(Health::stalled(
            "StoreNeedsPassword",
            format!(
                "spec.redis: RedisSentinel \"{}\" requires a password (its spec.auth.enabled is true, the default), but the frontend image {} cannot send one; {fix}, or use an image that reads REDIS_PASSWORD",
                store.name, gb.spec.frontend.image
            ),
        ));
    }
    Ok(Validated {
        names: Names::of(&owner.name),
        owner,
        store,
        redis,
        stock_frontend,
    })
}
