//! The Guestbook controller: the guestbook front end on a Redis store (seeds 000–002) — the
//! frontend tier, an optional rate-limiting nginx tier in front ([`proxy`]), the Redis Services
//! the frontend image hard-codes, autoscaling, Ingress and HTTPRoute, and the store it
//! references or owns. The pipeline is in [`reconcile`].

pub mod build;
pub mod names;
pub(crate) mod proxy;
pub(crate) mod reconcile;
pub(crate) mod status;
pub mod validate;

pub use reconcile::reconcile;

use super::Managed;
use crate::crd::{Guestbook, RedisSentinel};
use crate::k8s::cache::{OwnedCaches, watch_children};
use crate::k8s::children::ChildKind;
use crate::k8s::monitoring::MonitoringApi;
use crate::k8s::sync::Synced;
use crate::k8s::watches::{main_controller, referrers, scoped_api, watch_pods};
use kube::runtime::{Controller, watcher};
use kube::{Client, ResourceExt};
use names::KIND;

impl Managed for Guestbook {
    const KIND: &'static str = KIND;
}

/// The kinds of object a Guestbook owns.
pub const CHILD_KINDS: &[ChildKind] = &[
    ChildKind::ConfigMap,
    ChildKind::Service,
    ChildKind::PodDisruptionBudget,
    ChildKind::RedisSentinel,
    ChildKind::Deployment,
    ChildKind::HorizontalPodAutoscaler,
    ChildKind::Ingress,
    ChildKind::PodMonitor,
];

/// The name of the store `gb` uses.
fn store_of(gb: &Guestbook) -> String {
    match &gb.spec.redis.name {
        Some(name) => name.clone(),
        None => names::Names::of(&gb.name_any()).own_store,
    }
}

/// The controller, also woken when its store changes (readiness, failover) or another
/// Guestbook in the namespace comes or goes. Registers its caches in `owned`.
pub fn controller(
    client: &Client,
    namespace: Option<&str>,
    synced: &Synced,
    owned: &mut OwnedCaches,
    monitoring: &MonitoringApi,
) -> Controller<Guestbook> {
    let wc = watcher::Config::default();
    let ctl = main_controller::<Guestbook>(client, namespace, synced);
    let (by_store, by_sibling) = (ctl.store(), ctl.store());
    let stores = scoped_api::<RedisSentinel>(client, namespace);
    let ctl = ctl
        .watches(stores, wc.clone(), move |rs| {
            let name = rs.name_any();
            referrers(&by_store, rs.namespace(), |gb| store_of(gb) == name)
        })
        .watches(
            scoped_api::<Guestbook>(client, namespace),
            wc,
            move |changed| {
                let name = changed.name_any();
                referrers(&by_sibling, changed.namespace(), |gb| gb.name_any() != name)
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
