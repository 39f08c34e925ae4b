//! Pure: a Guestbook's health from its tiers and its store, and the status written from it.

use super::names::{APP, FRONTEND, PROXY};
use super::validate::Validated;
use crate::controllers::apps::health::{self, tier_problem, tier_status, tier_waiting};
use crate::controllers::apps::stores::waiting_for;
use crate::crd::Guestbook;
use crate::crd::common::TierStatus;
use crate::crd::guestbook::GuestbookStatus;
use crate::k8s::cache::ChildCache;
use crate::k8s::conditions::Health;
use crate::k8s::labels;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;

/// What one reconcile read of the app's tiers.
pub struct Tiers {
    pub frontend: TierStatus,
    pub proxy: Option<TierStatus>,
    /// Problems the pods of waiting tiers show (from the app's pod cache), frontend first.
    pub problems: Vec<Health>,
}

pub fn tiers(gb: &Guestbook, v: &Validated, cache: &ChildCache, pods: &Store<Pod>) -> Tiers {
    let ns = &v.owner.namespace;
    let frontend = tier_status(cache, ns, &v.names.frontend);
    let proxy = gb
        .spec
        .proxy
        .as_ref()
        .map(|_| tier_status(cache, ns, &v.names.proxy));
    let app = (APP, v.owner.name.as_str());
    let waiting = |name: &str, component: &str, t: &TierStatus| {
        tier_waiting(cache, ns, name, component, t).is_some()
    };
    let mut problems: Vec<Health> = tier_problem(
        pods,
        ns,
        app,
        FRONTEND,
        waiting(&v.names.frontend, FRONTEND, &frontend),
    )
    .into_iter()
    .collect();
    if let Some(p) = &proxy {
        let waits = waiting(&v.names.proxy, PROXY, p);
        problems.extend(tier_problem(pods, ns, app, PROXY, waits));
    }
    Tiers {
        frontend,
        proxy,
        problems,
    }
}

pub fn assess(v: &Validated, cache: &ChildCache, t: &Tiers) -> Health {
    let ns = &v.owner.namespace;
    let store = waiting_for(
        "RedisSentinel",
        "spec.redis",
        &v.redis.status,
        v.redis.exists,
        ns,
    );
    let mut waits: Vec<String> = tier_waiting(cache, ns, &v.names.frontend, FRONTEND, &t.frontend)
        .into_iter()
        .collect();
    if let Some(p) = &t.proxy {
        waits.extend(tier_waiting(cache, ns, &v.names.proxy, PROXY, p));
    }
    let count = |t: &TierStatus| t.available_replicas.unwrap_or(0);
    let mut ready = format!("frontend {} available", count(&t.frontend));
    if let Some(p) = &t.proxy {
        ready.push_str(&format!(", proxy {} available", count(p)));
    }
    ready.push_str(&format!("; Redis store {} Ready", v.store.name));
    health::assess(
        t.problems.clone(),
        store.into_iter().collect(),
        waits,
        ready,
    )
}

pub fn fill(s: &mut GuestbookStatus, gb: &Guestbook, v: &Validated, t: Tiers) {
    s.replicas = t.frontend.replicas;
    s.available_replicas = t.frontend.available_replicas;
    s.selector = Some(labels::selector_string(&labels::selector(
        APP,
        &v.owner.name,
        FRONTEND,
    )));
    s.redis_store = Some(v.store.name.clone());
    s.redis = Some(v.redis.status.clone());
    s.frontend = Some(t.frontend);
    s.proxy = t.proxy;
    s.entry_service = Some(super::build::entry_service(gb, v));
}
