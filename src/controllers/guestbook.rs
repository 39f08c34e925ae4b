//! The Guestbook controller. Today: resolve the Redis store, check the namespace is free,
//! report status.

use super::apps::{namespace_conflict, resolve_binding};
use super::{Managed, Verdict, finish, instrumented};
use crate::context::{Caches, Context};
use crate::crd::{Guestbook, RedisSentinel};
use crate::error::Result;
use crate::k8s::cache::OwnedCaches;
use crate::k8s::conditions::Health;
use crate::k8s::watches::{main_controller, referrers, scoped_api};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Client, ResourceExt};
use std::sync::Arc;

impl Managed for Guestbook {
    const KIND: &'static str = "Guestbook";
}

/// Pure validation against the cached view of the namespace. Returns the verdict and the
/// name of the store in use.
pub fn validate(gb: &Guestbook, caches: &Caches) -> (Verdict, String) {
    let names = &gb.spec.redis_service_names;
    let services = format!("\"{}\" and \"{}\"", names.leader, names.follower);
    let binding = resolve_binding(
        gb,
        gb.spec.redis.name.as_deref(),
        "redis",
        "spec.redis",
        "RedisSentinel",
        &caches.redis_sentinels,
    );
    let health = namespace_conflict(gb, &caches.guestbooks, "Guestbook", &services)
        .or(binding.problem)
        .unwrap_or_else(|| not_yet_managed("Guestbook"));
    (Verdict::new(health), binding.store)
}

pub async fn reconcile(gb: Arc<Guestbook>, ctx: Arc<Context>) -> Result<Action> {
    instrumented(gb, ctx, |gb, ctx| async move {
        let (verdict, store) = validate(&gb, &ctx.caches);
        finish(&ctx, gb.as_ref(), verdict, |s| s.redis_store = Some(store)).await
    })
    .await
}

/// The controller, also woken when a RedisSentinel or another Guestbook in the namespace changes.
pub fn controller(
    client: &Client,
    namespace: Option<&str>,
    synced: &crate::k8s::sync::Synced,
    _owned: &mut OwnedCaches,
) -> Controller<Guestbook> {
    let wc = watcher::Config::default();
    let ctl = main_controller::<Guestbook>(client, namespace, synced);
    let (by_store, by_sibling) = (ctl.store(), ctl.store());
    let stores = scoped_api::<RedisSentinel>(client, namespace);
    ctl.watches(stores, wc.clone(), move |rs| {
        referrers(&by_store, rs.namespace(), |_| true)
    })
    .watches(
        scoped_api::<Guestbook>(client, namespace),
        wc,
        move |changed| {
            let name = changed.name_any();
            referrers(&by_sibling, changed.namespace(), |gb| gb.name_any() != name)
        },
    )
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
