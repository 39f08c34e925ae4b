//! The PatroniCluster controller: PostgreSQL made highly available by Patroni, with Kubernetes
//! as its DCS. The pipeline is in [`reconcile`]; [`operate`] acts through Patroni's REST API
//! (configuration, scale-down handovers, rolling updates), [`backup`] and [`roles`] build the
//! Jobs, [`jobs`] reads their results.

pub(crate) mod backup;
pub mod build;
pub(crate) mod config;
pub(crate) mod jobs;
pub mod names;
pub(crate) mod operate;
pub(crate) mod reconcile;
pub(crate) mod roles;
pub(crate) mod scripts;
pub(crate) mod status;
pub mod validate;

pub use reconcile::reconcile;

use super::Managed;
use crate::crd::PatroniCluster;
use crate::k8s::cache::{OwnedCaches, watch_children};
use crate::k8s::children::ChildKind;
use crate::k8s::monitoring::MonitoringApi;
use crate::k8s::sync::Synced;
use crate::k8s::watches::{main_controller, referrers, scoped_api, watch_pods};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::{Controller, watcher};
use kube::{Client, ResourceExt};
use names::KIND;
use validate::referenced_secrets;

impl Managed for PatroniCluster {
    const KIND: &'static str = KIND;
}

/// The kinds of object a PatroniCluster owns.
pub const CHILD_KINDS: &[ChildKind] = &[
    ChildKind::ServiceAccount,
    ChildKind::Role,
    ChildKind::RoleBinding,
    ChildKind::Secret,
    ChildKind::ConfigMap,
    ChildKind::Service,
    ChildKind::NetworkPolicy,
    ChildKind::PodDisruptionBudget,
    ChildKind::StatefulSet,
    ChildKind::PersistentVolumeClaim,
    ChildKind::CronJob,
    ChildKind::Job,
    ChildKind::ServiceMonitor,
];

/// The controller, also woken when a Secret or claim a PatroniCluster references changes.
/// Registers its caches in `owned`.
pub fn controller(
    client: &Client,
    namespace: Option<&str>,
    synced: &Synced,
    owned: &mut OwnedCaches,
    monitoring: &MonitoringApi,
) -> Controller<PatroniCluster> {
    let wc = watcher::Config::default();
    let ctl = main_controller::<PatroniCluster>(client, namespace, synced);
    let (by_secret, by_claim) = (ctl.store(), ctl.store());
    let secrets = scoped_api::<PartialObjectMeta<Secret>>(client, namespace);
    let claims = scoped_api::<PartialObjectMeta<PersistentVolumeClaim>>(client, namespace);
    let ctl = ctl
        .watches(secrets, wc.clone(), move |secret| {
            let name = secret.name_any();
            referrers(&by_secret, secret.namespace(), |pc| {
                referenced_secrets(pc).iter().any(|(_, s)| *s == name)
            })
        })
        .watches(claims, wc, move |claim| {
            let name = claim.name_any();
            referrers(&by_claim, claim.namespace(), |pc| {
                let bootstrap = pc.spec.bootstrap.as_ref();
                bootstrap.is_some_and(|b| b.from_backup.claim_name == name)
            })
        });
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
