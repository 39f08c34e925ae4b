//! The VoteApp controller: the voting app (seeds 003, 004) — vote, result and worker tiers, the
//! `redis` and `db` Services the stock images hard-code, the stores it references or owns, the
//! shared or per-pod queue and workers scaled on its length ([`queue`]). The pipeline is in
//! [`reconcile`].

pub mod build;
pub mod names;
pub(crate) mod queue;
pub(crate) mod reconcile;
pub(crate) mod status;
pub mod validate;

pub use reconcile::reconcile;

use super::Managed;
use crate::crd::{PatroniCluster, RedisSentinel, VoteApp};
use crate::k8s::cache::{OwnedCaches, watch_children};
use crate::k8s::children::ChildKind;
use crate::k8s::monitoring::MonitoringApi;
use crate::k8s::sync::Synced;
use crate::k8s::watches::{main_controller, referrers, scoped_api, watch_pods};
use kube::runtime::{Controller, watcher};
use kube::{Client, ResourceExt};
use names::{KIND, Names};

impl Managed for VoteApp {
    const KIND: &'static str = KIND;
}

/// The kinds of object a VoteApp owns.
pub const CHILD_KINDS: &[ChildKind] = &[
    ChildKind::Service,
    ChildKind::PodDisruptionBudget,
    ChildKind::RedisSentinel,
    ChildKind::PatroniCluster,
    ChildKind::Deployment,
    ChildKind::HorizontalPodAutoscaler,
    ChildKind::Ingress,
];

fn redis_of(app: &VoteApp) -> Option<String> {
    let r = app.spec.redis.as_ref()?;
    Some(
        r.name
            .clone()
            .unwrap_or_else(|| Names::of(&app.name_any()).own_redis),
    )
}

fn postgres_of(app: &VoteApp) -> String {
    let p = &app.spec.postgres;
    p.name
        .clone()
        .unwrap_or_else(|| Names::of(&app.name_any()).own_db)
}

/// The controller, also woken when one of its stores changes (readiness, failover, a new
/// primary) or another VoteApp in the namespace comes or goes. Registers its caches in `owned`.
pub fn controller(
    client: &Client,
    namespace: Option<&str>,
    synced: &Synced,
    owned: &mut OwnedCaches,
    monitoring: &MonitoringApi,
) -> Controller<VoteApp> {
    let wc = watcher::Config::default();
    let ctl = main_controller::<VoteApp>(client, namespace, synced);
    let (a, b, c) = (ctl.store(), ctl.store(), ctl.store());
    let redis = scoped_api::<RedisSentinel>(client, namespace);
    let postgres = scoped_api::<PatroniCluster>(client, namespace);
    let ctl = ctl
        .watches(redis, wc.clone(), move |s| {
            let name = s.name_any();
            referrers(&a, s.namespace(), |app| {
                redis_of(app).as_deref() == Some(name.as_str())
            })
        })
        .watches(postgres, wc.clone(), move |s| {
            let name = s.name_any();
            referrers(&b, s.namespace(), |app| postgres_of(app) == name)
        })
        .watches(
            scoped_api::<VoteApp>(client, namespace),
            wc,
            move |changed| {
                let name = changed.name_any();
                referrers(&c, changed.namespace(), |app| app.name_any() != name)
            },
        );
    // The tiers' pods: what a tier that does not become available shows (image pulls,
    // scheduling) is reported in status, and a change to it wakes the app.
    let (ctl, pods) = watch_pods(ctl, client, namespace, KIND, synced);
    let (ctl, children) = watch_children(
        ctl,
        client,
        namespace,
        KIND,
        CHILD_KINDS,
        synced,
        monitoring,
    );
    owned.insert(KIND, children, Some(pods));
    ctl
}
