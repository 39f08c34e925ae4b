//! The RedisSentinel controller: a Redis master with replicas and a Sentinel quorum. The
//! pipeline is in [`reconcile`]; the heal loop ([`heal`], [`topology`]) keeps replication and
//! Sentinel monitoring in order, [`follow`] moves the master label the moment Sentinel
//! announces a failover, [`rollout`] rolls pods without losing a write.

pub mod build;
pub(crate) mod conf;
pub(crate) mod follow;
pub(crate) mod heal;
pub mod names;
pub(crate) mod reconcile;
pub(crate) mod rollout;
pub(crate) mod status;
pub(crate) mod topology;
pub mod validate;

pub use reconcile::reconcile;

use super::Managed;
use crate::crd::RedisSentinel;
use crate::k8s::cache::{OwnedCaches, watch_children};
use crate::k8s::children::ChildKind;
use crate::k8s::monitoring::MonitoringApi;
use crate::k8s::sync::Synced;
use crate::k8s::watches::{main_controller, referrers, scoped_api, watch_pods};
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Client, ResourceExt};
use names::KIND;

impl Managed for RedisSentinel {
    const KIND: &'static str = KIND;
}

/// The kinds of object a RedisSentinel owns.
pub const CHILD_KINDS: &[ChildKind] = &[
    ChildKind::Secret,
    ChildKind::ConfigMap,
    ChildKind::PersistentVolumeClaim,
    ChildKind::Service,
    ChildKind::NetworkPolicy,
    ChildKind::PodDisruptionBudget,
    ChildKind::StatefulSet,
    ChildKind::CronJob,
    ChildKind::ServiceMonitor,
];

/// The controller, woken by its children, its pods, Secrets a RedisSentinel references, and
/// failover followers (`requests`). Registers its caches in `owned`.
pub fn controller(
    client: &Client,
    namespace: Option<&str>,
    requests: futures::channel::mpsc::UnboundedReceiver<ObjectRef<RedisSentinel>>,
    synced: &Synced,
    owned: &mut OwnedCaches,
    monitoring: &MonitoringApi,
) -> Controller<RedisSentinel> {
    let ctl = main_controller::<RedisSentinel>(client, namespace, synced);
    let store = ctl.store();
    let secrets = scoped_api::<PartialObjectMeta<Secret>>(client, namespace);
    let ctl = ctl.watches(secrets, watcher::Config::default(), move |secret| {
        let name = secret.name_any();
        referrers(&store, secret.namespace(), |rs| {
            let auth = &rs.spec.auth;
            auth.existing_secret
                .as_ref()
                .is_some_and(|s| s.name == name)
        })
    });
    let (ctl, pods) = watch_pods(ctl, client, namespace, KIND, synced);
    let ctl = ctl.reconcile_on(requests);
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
