//! The PatroniCluster controller. Today: dereference Secrets, claims and the StorageClass,
//! validate, report status.

pub mod build;

use super::{
    Managed, SecretRef, Verdict, check_secret, finish, instrumented, not_yet_managed, publish,
    referrers,
};
use crate::context::{Context, scoped_api};
use crate::crd::PatroniCluster;
use crate::crd::patroni_cluster::PatroniMemberStatus;
use crate::error::Result;
use crate::k8s::apply::{self, ChildCache};
use crate::k8s::children::ChildKind;
use crate::k8s::conditions::{Extra, Health};
use crate::k8s::labels;
use crate::stores::patroni::{self, Cluster};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

impl Managed for PatroniCluster {
    const KIND: &'static str = "PatroniCluster";
}

/// What the spec points at, as found in the cluster. Each entry: (spec field, name, found).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct World {
    pub secrets: Vec<(String, String, SecretRef)>,
    pub storage_class: Option<(String, bool)>,
    pub bootstrap_claim: Option<(String, bool)>,
}

/// Secrets the spec names explicitly, with the field that names them.
fn referenced_secrets(pc: &PatroniCluster) -> Vec<(String, String)> {
    let auth = &pc.spec.auth;
    let mut out = Vec::new();
    if let Some(s) = &auth.superuser_secret_name {
        out.push(("spec.auth.superuserSecretName".to_string(), s.clone()));
    }
    if let Some(s) = &auth.replication_secret_name {
        out.push(("spec.auth.replicationSecretName".to_string(), s.clone()));
    }
    for (i, u) in pc.spec.users.iter().enumerate() {
        if let Some(s) = &u.secret_name {
            out.push((format!("spec.users[{i}].secretName"), s.clone()));
        }
    }
    out
}

pub async fn dereference(pc: &PatroniCluster, ctx: &Context) -> Result<World> {
    let ns = pc.namespace().unwrap_or_default();
    let mut world = World::default();
    for (field, name) in referenced_secrets(pc) {
        let found = check_secret(ctx, &ns, &name, Some("password")).await?;
        world.secrets.push((field, name, found));
    }
    if let Some(class) = &pc.spec.storage.storage_class_name {
        let api: Api<StorageClass> = Api::all(ctx.client.clone());
        world.storage_class = Some((class.clone(), api.get_metadata_opt(class).await?.is_some()));
    }
    if let Some(b) = &pc.spec.bootstrap {
        let api = ctx.namespaced::<PersistentVolumeClaim>(&ns);
        let claim = &b.from_backup.claim_name;
        world.bootstrap_claim = Some((claim.clone(), api.get_metadata_opt(claim).await?.is_some()));
    }
    Ok(world)
}

/// Pure validation of what the schema cannot check.
pub fn validate(pc: &PatroniCluster, world: &World) -> Verdict {
    let ns = pc.namespace().unwrap_or_default();
    let secret_problem = world
        .secrets
        .iter()
        .find_map(|(field, name, found)| match found {
            SecretRef::MissingSecret => Some(Health::stalled(
                "SecretNotFound",
                format!("{field}: Secret \"{name}\" does not exist in namespace \"{ns}\""),
            )),
            SecretRef::MissingKey => Some(Health::stalled(
                "SecretKeyNotFound",
                format!("{field}: Secret \"{name}\" has no key \"password\""),
            )),
            SecretRef::Present => None,
        });
    let health = if let Some(h) = secret_problem {
        h
    } else if let Some((class, false)) = &world.storage_class {
        Health::stalled(
            "StorageClassNotFound",
            format!("spec.storage.storageClassName: StorageClass \"{class}\" does not exist"),
        )
    } else if let Some((claim, false)) = &world.bootstrap_claim {
        Health::stalled(
            "BackupClaimNotFound",
            format!(
                "spec.bootstrap.fromBackup.claimName: PersistentVolumeClaim \"{claim}\" does not exist in namespace \"{ns}\""
            ),
        )
    } else {
        not_yet_managed("PatroniCluster")
    };
    let mut verdict = Verdict::new(health);
    if pc.spec.auth.stock_app_credentials {
        verdict = verdict.with(Extra {
            type_: "InsecureCredentials",
            status: true,
            reason: "StockAppCredentials".into(),
            message: "spec.auth.stockAppCredentials is true: the superuser is postgres/postgres, as the stock voting app requires; only the app's own pods may reach the database".into(),
        });
    }
    // Say so rather than report Ready while ignoring part of the spec.
    let pending: Vec<&str> = [
        (!pc.spec.users.is_empty(), "spec.users"),
        (!pc.spec.databases.is_empty(), "spec.databases"),
        (pc.spec.backup.is_some(), "spec.backup"),
        (pc.spec.bootstrap.is_some(), "spec.bootstrap"),
    ]
    .into_iter()
    .filter_map(|(set, field)| set.then_some(field))
    .collect();
    if !pending.is_empty() {
        verdict = verdict.with(Extra {
            type_: "FeaturesPending",
            status: true,
            reason: "NotYetImplemented".into(),
            message: format!(
                "{} accepted but not acted on by this operator version",
                pending.join(", ")
            ),
        });
    }
    verdict
}

/// The kinds of object a PatroniCluster owns.
pub const CHILD_KINDS: &[ChildKind] = &[
    ChildKind::ServiceAccount,
    ChildKind::Role,
    ChildKind::RoleBinding,
    ChildKind::Secret,
    ChildKind::ConfigMap,
    ChildKind::Service,
    ChildKind::PodDisruptionBudget,
    ChildKind::StatefulSet,
];

/// Members' pods with an address, by name.
fn member_pods(ctx: &Context, pc: &PatroniCluster) -> Vec<(String, String)> {
    let ns = pc.namespace();
    let name = pc.name_any();
    let mut out: Vec<(String, String)> = ctx
        .caches
        .patroni_pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace == ns && p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.labels().get(labels::INSTANCE) == Some(&name)
                && p.labels().get(labels::NAME).map(String::as_str) == Some(build::APP)
        })
        .filter_map(|p| Some((p.name_any(), p.status.as_ref()?.pod_ip.clone()?)))
        .collect();
    out.sort();
    out
}

/// What Patroni reports, from the first member that answers.
async fn observe(members: &[(String, String)]) -> Option<Cluster> {
    for (pod, ip) in members {
        match patroni::cluster(ip, build::API_PORT as u16).await {
            Ok(c) => return Some(c),
            Err(e) => tracing::debug!(%pod, error = %e, "Patroni not reachable"),
        }
    }
    None
}

/// Pure: health from the pods and what Patroni reports.
pub fn assess(pc: &PatroniCluster, ready_pods: i32, cluster: Option<&Cluster>) -> Health {
    let want = pc.spec.members;
    let Some(cluster) = cluster else {
        return Health::progressing(
            "PodsStarting",
            format!("{ready_pods}/{want} members ready; Patroni not answering yet"),
        );
    };
    let Some(leader) = cluster.leader() else {
        return Health::progressing(
            "NoLeader",
            "Patroni has no leader (bootstrapping or electing)",
        );
    };
    let streaming = cluster
        .members
        .iter()
        .filter(|m| m.name != leader.name && (m.state == "streaming" || m.state == "running"))
        .count();
    let want_replicas = usize::try_from(want - 1).unwrap_or(0);
    if ready_pods < want || streaming < want_replicas {
        return Health::progressing(
            "ReplicasStarting",
            format!(
                "leader {}, {streaming}/{want_replicas} replicas streaming, {ready_pods}/{want} members ready",
                leader.name
            ),
        );
    }
    Health::Ready {
        reason: "Healthy".into(),
        message: format!(
            "leader {}, {streaming}/{want_replicas} replicas streaming",
            leader.name
        ),
    }
}

fn ready_pods(cache: &ChildCache, ns: &str, name: &str) -> i32 {
    cache
        .get(ChildKind::StatefulSet, ns, name)
        .and_then(|s| s.data.get("status")?.get("readyReplicas")?.as_i64())
        .and_then(|n| i32::try_from(n).ok())
        .unwrap_or(0)
}

const SAFETY_POLL: Duration = Duration::from_secs(30);
const CONVERGING: Duration = Duration::from_secs(3);

pub async fn reconcile(pc: Arc<PatroniCluster>, ctx: Arc<Context>) -> Result<Action> {
    instrumented(pc, ctx, |pc, ctx| async move {
        let world = dereference(&pc, &ctx).await?;
        let verdict = validate(&pc, &world);
        if matches!(verdict.health, Health::Stalled { .. }) {
            return finish(&ctx, pc.as_ref(), verdict, |_| {}).await;
        }
        let ns = pc.namespace().unwrap_or_default();
        let (superuser, replication) = (super::random_password()?, super::random_password()?);
        let children = build::build(&pc, &build::Inputs { superuser_password: &superuser, replication_password: &replication });
        let cache = &ctx.caches.children.patroni_cluster;
        ctx.synced.wait().await;
        let mut applied = apply::apply(&ctx.client, cache, &ns, &children).await?;
        apply::prune(&ctx.client, cache, &ns, &pc.uid().unwrap_or_default(), &children, &mut applied).await?;
        if !applied.written.is_empty() || !applied.pruned.is_empty() {
            tracing::info!(written = ?applied.written, pruned = ?applied.pruned, "children applied");
        }
        let name = pc.name_any();
        let cluster = observe(&member_pods(&ctx, &pc)).await;
        let ready = ready_pods(cache, &ns, &name);
        let health = assess(&pc, ready, cluster.as_ref());
        let leader = cluster.as_ref().and_then(|c| c.leader()).map(|m| m.name.clone());
        let previous = pc.status.as_ref().and_then(|s| s.leader.clone());
        if let (Some(old), Some(new)) = (&previous, &leader)
            && old != new
        {
            publish(&ctx, pc.as_ref(), EventType::Normal, "LeaderChanged", "Failover", &format!("Patroni leader moved from {old} to {new}")).await;
        }
        let requeue = Some(if matches!(health, Health::Ready { .. }) { SAFETY_POLL } else { CONVERGING });
        let verdict = Verdict { health, extras: verdict.extras, requeue };
        let selector = labels::selector(build::APP, &name, "postgres").iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
        finish(&ctx, pc.as_ref(), verdict, |s| {
            s.replicas = Some(ready);
            s.selector = Some(selector);
            if let Some(c) = &cluster {
                s.leader = leader.clone();
                let mut members: Vec<PatroniMemberStatus> = c
                    .members
                    .iter()
                    .map(|m| PatroniMemberStatus { name: m.name.clone(), role: Some(m.role.clone()), state: Some(m.state.clone()), lag_bytes: m.lag, timeline: m.timeline })
                    .collect();
                members.sort_by(|a, b| a.name.cmp(&b.name));
                s.members = members;
            }
        })
        .await
    })
    .await
}

/// The controller, also woken when a Secret or claim a PatroniCluster references changes.
pub fn controller(
    client: &Client,
    namespace: Option<&str>,
    synced: &crate::k8s::sync::Synced,
) -> (Controller<PatroniCluster>, ChildCache, Store<Pod>) {
    let wc = watcher::Config::default();
    let ctl = super::main_controller::<PatroniCluster>(client, namespace, synced);
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
                pc.spec
                    .bootstrap
                    .as_ref()
                    .is_some_and(|b| b.from_backup.claim_name == name)
            })
        });
    let (ctl, pods) = super::watch_pods(ctl, client, namespace, build::KIND, synced);
    let (ctl, children) =
        apply::watch_children(ctl, client, namespace, build::KIND, CHILD_KINDS, synced);
    (ctl, children, pods)
}
