//! The PatroniCluster controller: dereference the Secrets, claims and StorageClass the spec
//! names, validate, observe Patroni (`GET /cluster` by pod address), build and apply the
//! children (the restore and roles Jobs once there is a primary), then act through Patroni's
//! REST API — configuration, rolling updates, scale-down handovers — and report status.

pub mod backup;
pub mod build;
pub mod config;
pub mod jobs;
pub mod operate;
pub mod roles;
pub mod scripts;

use super::job_results;
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
use jobs::{job_failed, job_pods, newest_result, restore_health, roles_health};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use operate::MemberPod;
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
    /// resourceVersion of each user's Secret named in the spec ("" for generated ones).
    pub user_secret_versions: Vec<String>,
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
    let mut versions = std::collections::BTreeMap::new();
    for (field, name) in referenced_secrets(pc) {
        let (found, version) = check_secret(ctx, &ns, &name, Some("password")).await?;
        versions.insert(name.clone(), version.unwrap_or_default());
        world.secrets.push((field, name, found));
    }
    world.user_secret_versions = pc
        .spec
        .users
        .iter()
        .map(|u| {
            u.secret_name
                .as_ref()
                .and_then(|s| versions.get(s).cloned())
                .unwrap_or_default()
        })
        .collect();
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
    ChildKind::PersistentVolumeClaim,
    ChildKind::CronJob,
    ChildKind::Job,
];

/// Members' pods with an address, by name; pods being deleted are left out.
fn member_pods(ctx: &Context, pc: &PatroniCluster) -> Vec<MemberPod> {
    job_pods(ctx, pc, "postgres")
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let ip = p.status.as_ref()?.pod_ip.clone()?;
            Some(MemberPod { pod: p, ip })
        })
        .collect()
}

/// Pods whose Ready condition is True.
fn ready_count(pods: &[MemberPod]) -> i32 {
    let ready = pods
        .iter()
        .filter(|m| {
            m.pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count();
    i32::try_from(ready).unwrap_or(i32::MAX)
}

/// What Patroni reports, from the first member that answers.
async fn observe(members: &[MemberPod]) -> Option<Cluster> {
    for m in members {
        match patroni::cluster(&m.ip, build::API_PORT as u16).await {
            Ok(c) => return Some(c),
            Err(e) => tracing::debug!(pod = %m.pod.name_any(), error = %e, "Patroni not reachable"),
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
        .filter(|m| m.name != leader.name && m.state == "streaming")
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
        let name = pc.name_any();
        let names = build::Names::of(&name);
        let cache = &ctx.caches.children.patroni_cluster;
        ctx.synced.wait().await;
        let pods = member_pods(&ctx, &pc);
        let cluster = observe(&pods).await;
        let leader = cluster.as_ref().and_then(|c| c.leader()).map(|m| m.name.clone());

        // A bootstrap restore runs once the cluster has a primary, until it has succeeded.
        let restore = newest_result(&ctx, &pc, "restore");
        let restored = pc.status.as_ref().and_then(|s| s.restored_from.as_ref()).is_some_and(|r| r.succeeded == Some(true))
            || restore.as_ref().is_some_and(|r| r.succeeded == Some(true));
        let restore_job = cache.get(ChildKind::Job, &ns, &names.restore).is_some();
        let want_restore = pc.spec.bootstrap.is_some() && !restored && (leader.is_some() || restore_job);

        // Scaling down never removes the leader's pod: hold the StatefulSet until it moved.
        let live_replicas = cache
            .get(ChildKind::StatefulSet, &ns, &names.statefulset)
            .and_then(|s| s.data.get("spec")?.get("replicas")?.as_i64())
            .and_then(|n| i32::try_from(n).ok());
        let hold = operate::leader_in_the_way(pc.spec.members, leader.as_deref()) && live_replicas.is_some_and(|r| r > pc.spec.members);
        let replicas = if hold { live_replicas.unwrap_or(pc.spec.members) } else { pc.spec.members };

        // Roles and databases are created through the primary, again whenever they change.
        let fingerprint = roles::fingerprint(&pc, &world.user_secret_versions);
        let roles_job = roles::job_name(&names, &fingerprint);
        let has_roles = !pc.spec.users.is_empty() || !pc.spec.databases.is_empty();
        let want_roles = has_roles && (leader.is_some() || cache.get(ChildKind::Job, &ns, &roles_job).is_some());

        if let Some(waiting) = operate::clear_stale_dcs(&ctx, &pc, cache).await? {
            let verdict = Verdict { health: Health::progressing("WaitingForOldMembers", waiting), extras: verdict.extras, requeue: Some(CONVERGING) };
            return finish(&ctx, pc.as_ref(), verdict, |_| {}).await;
        }
        let (superuser, replication) = (super::random_password()?, super::random_password()?);
        let user_passwords = pc.spec.users.iter().map(|_| super::random_password()).collect::<Result<Vec<_>>>()?;
        let inputs = build::Inputs {
            superuser_password: &superuser,
            replication_password: &replication,
            restore: want_restore,
            replicas,
            user_passwords: &user_passwords,
            roles: want_roles.then_some(fingerprint.as_str()),
        };
        let children = build::build(&pc, &inputs);
        let mut applied = apply::apply(&ctx.client, cache, &ns, &children).await?;
        apply::prune(&ctx.client, cache, &ns, &pc.uid().unwrap_or_default(), &children, &mut applied).await?;
        if !applied.written.is_empty() || !applied.pruned.is_empty() {
            tracing::info!(written = ?applied.written, pruned = ?applied.pruned, "children applied");
        }
        let ready = ready_count(&pods);
        let mut health = assess(&pc, ready, cluster.as_ref());
        let previous = pc.status.as_ref().and_then(|s| s.leader.clone());
        if let (Some(old), Some(new)) = (&previous, &leader)
            && old != new
        {
            publish(&ctx, pc.as_ref(), EventType::Normal, "LeaderChanged", "Failover", &format!("Patroni leader moved from {old} to {new}")).await;
        }
        let mut requeue = None;
        let leader_ip = leader.as_ref().and_then(|l| pods.iter().find(|m| m.pod.name_any() == *l)).map(|m| m.ip.clone());
        if let (Some(c), Some(ip)) = (&cluster, leader_ip) {
            match operate::configure(&ctx, &pc, &ip).await {
                Ok(false) if hold => health = operate::make_room(&ctx, &pc, &pods, c).await?,
                Ok(true) => {
                    // Members pick the change up (and flag pending restarts) on their next loop.
                    health = Health::progressing("Configuring", "Patroni's dynamic configuration was patched; members apply it on their next loop");
                    requeue = Some(Duration::from_secs(u64::try_from(pc.spec.patroni.loop_wait).unwrap_or(10) + 1));
                }
                Ok(false) => {
                    let revision = super::update_revision(cache, &ns, &names.statefulset);
                    health = operate::roll_forward(&ctx, &pc, revision.as_deref(), &pods, c, health).await?;
                }
                // The leader's lock outlives its process by up to ttl: a failover is under way,
                // not an error of ours.
                Err(e) => {
                    tracing::info!(error = %e, "the Patroni leader does not answer; configuration and rolling updates wait");
                    health = Health::progressing("LeaderUnreachable", format!("cannot read or patch the configuration through leader {}: {e}", leader.as_deref().unwrap_or_default()));
                }
            }
        }
        let restore_failed = restore.as_ref().filter(|r| r.succeeded == Some(false) && job_failed(cache, &ns, &names.restore));
        if let Some(h) = restore_health(&pc, restored, restore_failed, leader.is_some()) {
            health = h;
        }
        if has_roles && let Some(h) = roles_health(&ctx, &pc, cache, &roles_job, &health) {
            health = h;
        }
        let mut extras = verdict.extras;
        let backup_pods = job_pods(&ctx, &pc, "backup");
        let (last_backup, backup_warning) = job_results::last(&backup_pods.iter().map(AsRef::as_ref).collect::<Vec<_>>());
        extras.extend(backup_warning);
        let check = newest_result(&ctx, &pc, "restore-check");
        if let Some(c) = check.as_ref().filter(|c| c.succeeded == Some(false)) {
            extras.push(Extra {
                type_: "RestoreCheckFailed",
                status: true,
                reason: "LastRestoreCheckFailed".into(),
                message: format!("restore check Job {} failed: {}", c.job.as_deref().unwrap_or_default(), c.message.as_deref().unwrap_or("no message")),
            });
        }
        let requeue = requeue.or(Some(if matches!(health, Health::Ready { .. }) { SAFETY_POLL } else { CONVERGING }));
        let verdict = Verdict { health, extras, requeue };
        let selector = labels::selector(build::APP, &name, "postgres").iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
        finish(&ctx, pc.as_ref(), verdict, |s| {
            // Job pods come and go with history limits: keep what was last read.
            if last_backup.is_some() {
                s.last_backup = last_backup;
            }
            if check.is_some() {
                s.last_restore_check = check;
            }
            if let Some(r) = restore.filter(|r| r.succeeded == Some(true)) {
                s.restored_from.get_or_insert(r);
            }
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
