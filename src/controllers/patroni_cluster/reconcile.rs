//! The PatroniCluster pipeline: dereference (the Secrets, StorageClass and claim the spec
//! names; Patroni's view by pod address) → validate → build (with the Jobs the cluster's state
//! calls for) → apply and prune → act through Patroni's REST API (configuration, scale-down
//! handovers, rolling updates) → status.

use super::build::{self, Inputs};
use super::jobs::{job_failed, job_pods, newest_result, restore_health, roles_health};
use super::names::{API_PORT, APP, BACKUP, KIND, Names, POSTGRES, RESTORE, RESTORE_CHECK};
use super::operate::{self, MemberPod};
use super::roles;
use super::status::{self, JobResults};
use super::validate::{self, Validated, World, referenced_secrets};
use crate::context::Context;
use crate::controllers::credentials;
use crate::controllers::{
    Verdict, WAITING_RECHECK, backups, conclude, finish, instrumented, job_results,
    monitoring_refused, publish, withhold_monitoring,
};
use crate::crd::PatroniCluster;
use crate::crd::common::BackupStatus;
use crate::crd::patroni_cluster::PatroniClusterStatus;
use crate::error::Result;
use crate::k8s::apply;
use crate::k8s::cache::ChildCache;
use crate::k8s::children::ChildKind;
use crate::k8s::conditions::{Extra, Health};
use crate::k8s::diagnose;
use crate::k8s::live::Members;
use crate::k8s::owner::Owner;
use crate::k8s::pods::{component_pods, update_revision};
use crate::k8s::routing;
use crate::k8s::secrets::{self, random_password};
use crate::stores::patroni::{self, Cluster};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub async fn reconcile(pc: Arc<PatroniCluster>, ctx: Arc<Context>) -> Result<Action> {
    instrumented(pc, ctx, run).await
}

async fn run(pc: Arc<PatroniCluster>, ctx: Arc<Context>) -> Result<Action> {
    let owner = Owner::of(pc.as_ref(), KIND)?;
    let world = dereference(&ctx, &pc, &owner).await?;
    let v = match validate::validate(&pc, owner, &world) {
        Ok(v) => v,
        Err(stalled) => {
            let verdict = Verdict {
                extras: validate::warnings(&pc),
                requeue: validate::recheck(&stalled),
                ..Verdict::new(stalled)
            };
            return finish(&ctx, pc.as_ref(), verdict, |_| {}).await;
        }
    };
    ctx.synced.wait().await;
    let cache = ctx.caches.owned.children(KIND);
    let seen = observe(&ctx, &v).await;
    let wants = wants(&ctx, &pc, &v, cache, &seen);
    if let Some(waiting) = operate::clear_stale_dcs(&ctx, &pc, &v, cache).await? {
        let verdict = Verdict {
            extras: validate::warnings(&pc),
            requeue: Some(ctx.settings.converging_poll),
            ..Verdict::new(Health::progressing("WaitingForOldMembers", waiting))
        };
        return finish(&ctx, pc.as_ref(), verdict, |_| {}).await;
    }
    let (superuser, replication) = (random_password()?, random_password()?);
    let user_passwords = pc
        .spec
        .users
        .iter()
        .map(|_| random_password())
        .collect::<Result<Vec<_>>>()?;
    let inputs = Inputs {
        superuser_password: &superuser,
        replication_password: &replication,
        restore: wants.restore,
        replicas: wants.replicas,
        user_passwords: &user_passwords,
        roles: wants.roles.then_some(wants.fingerprint.as_str()),
    };
    let mut children = build::build(&pc, &v, &inputs)?;
    let creds = credentials::patroni::store(&pc, &v);
    let creds =
        credentials::protect(&ctx, pc.as_ref(), &v.owner, cache, &mut children, &creds).await?;
    let has_primary = seen.leader.is_some();
    let rotation =
        credentials::patroni::prepare(&ctx, &pc, &v, cache, &creds, has_primary, &mut children)
            .await?;
    withhold_monitoring(&ctx, pc.as_ref(), &mut children).await;
    let mut applied = apply::sync(&ctx.client, cache, &v.owner, &children).await;
    monitoring_refused(&ctx, pc.as_ref(), &mut applied).await;
    if let Some(verdict) = creds.lost_verdict(validate::warnings(&pc)) {
        // Members must not be rolled while a Secret they start with is missing.
        return conclude(&ctx, pc.as_ref(), verdict, applied, |_| {}).await;
    }
    let (health, followup) = act(&ctx, &pc, &v, cache, &seen, &wants).await?;
    let members: Vec<&Pod> = seen.pods.iter().map(|m| m.pod.as_ref()).collect();
    let cluster = seen.cluster.as_ref();
    credentials::patroni::replace_stranded(&ctx, &pc, &v, cache, &creds, cluster, &members).await?;
    let rolled = credentials::patroni::rolled(cache, &v, creds.rotation, pc.spec.members, &members);
    let (health, version) = credentials::patroni::conclude(&creds, rotation, rolled, health);
    let jobs = JobResults {
        last_backup: None,
        restore_check: newest_result(&ctx, &v, RESTORE_CHECK),
        restore: wants.restore_result,
    };
    let backup_pods = job_pods(&ctx, &v, BACKUP);
    let (last_backup, backup_warning) =
        job_results::last(&backup_pods.iter().map(AsRef::as_ref).collect::<Vec<_>>());
    let jobs = JobResults {
        last_backup,
        ..jobs
    };
    let mut extras = validate::warnings(&pc);
    extras.extend(backup_warning);
    extras.extend(restore_check_warning(jobs.restore_check.as_ref()));
    let health = status::explain(health, world.trouble.as_ref());
    let leader = seen.leader.as_deref();
    let leader_pod = leader.and_then(|l| seen.pods.iter().find(|m| m.pod.name_any() == l));
    let health = match (&health, leader, leader_pod) {
        (Health::Ready { .. }, Some(leader), Some(m)) => {
            let (ns, service) = (&v.owner.namespace, &v.names.primary);
            routing::check(&ctx.client, ns, service, "leader", leader, &m.ip)
                .await
                .unwrap_or(health)
        }
        _ => health,
    };
    let requeue = followup.unwrap_or(if matches!(health, Health::Ready { .. }) {
        ctx.settings.safety_poll
    } else if diagnose::is_diagnosis(health.reason()) {
        // The pods' events say when the claim binds or the image arrives.
        WAITING_RECHECK
    } else {
        ctx.settings.converging_poll
    });
    let verdict = Verdict {
        health,
        extras,
        requeue: Some(requeue),
        followup,
    };
    let previous = pc.status.as_ref();
    let last_success = backups::last_success(
        jobs.last_backup.as_ref(),
        previous.and_then(|s| s.last_successful_backup.clone()),
        previous.and_then(|s| s.last_backup.as_ref()),
    );
    let check =
        (jobs.restore_check.as_ref()).or(previous.and_then(|s| s.last_restore_check.as_ref()));
    let spec = pc.spec.backup.as_ref().map(|b| &b.common);
    let series = backups::series(spec, last_success.as_ref(), check, jiff::Timestamp::now());
    backups::observe(&ctx, KIND, &v.owner.namespace, &v.owner.name, series);
    let ready = status::ready_count(&seen.pods);
    let fill = |s: &mut PatroniClusterStatus| {
        status::fill(s, &v, ready, seen.cluster.as_ref(), leader, jobs);
        s.credentials_version = version.or(s.credentials_version.take());
    };
    conclude(&ctx, pc.as_ref(), verdict, applied, fill).await
}

/// What the spec references, as found in the cluster.
async fn dereference(ctx: &Context, pc: &PatroniCluster, owner: &Owner) -> Result<World> {
    let ns = &owner.namespace;
    let mut world = World::default();
    let mut versions = BTreeMap::new();
    for (field, name) in referenced_secrets(pc) {
        let (found, version) = secrets::check(&ctx.client, ns, &name, Some("password")).await?;
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
        let api = ctx.namespaced::<PersistentVolumeClaim>(ns);
        let claim = &b.from_backup.claim_name;
        world.bootstrap_claim = Some((claim.clone(), api.get_metadata_opt(claim).await?.is_some()));
    }
    // What already runs, from the caches (which must have listed): the members' StatefulSet
    // and pods.
    ctx.synced.wait().await;
    let sts = Names::of(&owner.name).statefulset;
    let live = ctx.caches.owned.children(KIND);
    let live = live.get(ChildKind::StatefulSet, ns, &sts);
    world.members = live.and_then(|s| Members::of(&s));
    let store = ctx.caches.owned.pods(KIND);
    let pods = component_pods(&store, ns, &owner.name, APP, POSTGRES);
    let pods: Vec<&Pod> = pods.iter().map(AsRef::as_ref).collect();
    let claims = diagnose::read_claims(&ctx.client, ns, &diagnose::claims_to_check(&pods)).await;
    world.trouble = diagnose::diagnose(&pods, &claims);
    Ok(world)
}

/// What Patroni reports, and the members' pods.
struct Seen {
    pods: Vec<MemberPod>,
    cluster: Option<Cluster>,
    leader: Option<String>,
}

/// Members' pods with an address (pods being deleted left out), and the cluster as the first
/// member that answers describes it.
async fn observe(ctx: &Context, v: &Validated) -> Seen {
    let pods: Vec<MemberPod> = job_pods(ctx, v, POSTGRES)
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let ip = p.status.as_ref()?.pod_ip.clone()?;
            Some(MemberPod { pod: p, ip })
        })
        .collect();
    let mut cluster = None;
    for m in &pods {
        match patroni::cluster(&m.ip, API_PORT as u16).await {
            Ok(c) => {
                cluster = Some(c);
                break;
            }
            Err(e) => tracing::debug!(pod = %m.pod.name_any(), error = %e, "Patroni not reachable"),
        }
    }
    let leader = cluster
        .as_ref()
        .and_then(|c| c.leader())
        .map(|m| m.name.clone());
    Seen {
        pods,
        cluster,
        leader,
    }
}

/// What the cluster's state asks of this build.
struct Wants {
    /// The bootstrap restore Job: once the cluster has a primary, until it has succeeded.
    restore: bool,
    restored: bool,
    restore_result: Option<BackupStatus>,
    /// StatefulSet replicas: held above `spec.members` while a scale-down waits for the
    /// leader to move off a member it would remove.
    replicas: i32,
    hold: bool,
    /// The roles Job (created through the primary, again whenever what it applies changes).
    roles: bool,
    has_roles: bool,
    fingerprint: String,
}

fn wants(
    ctx: &Context,
    pc: &PatroniCluster,
    v: &Validated,
    cache: &ChildCache,
    seen: &Seen,
) -> Wants {
    let ns = &v.owner.namespace;
    let has_leader = seen.leader.is_some();
    let restore_result = newest_result(ctx, v, RESTORE);
    let previous = pc.status.as_ref().and_then(|s| s.restored_from.as_ref());
    let restored = previous.is_some_and(|r| r.succeeded == Some(true))
        || restore_result
            .as_ref()
            .is_some_and(|r| r.succeeded == Some(true));
    let restore_job = cache.get(ChildKind::Job, ns, &v.names.restore).is_some();
    let live_replicas = cache
        .get(ChildKind::StatefulSet, ns, &v.names.statefulset)
        .and_then(|s| s.data.get("spec")?.get("replicas")?.as_i64())
        .and_then(|n| i32::try_from(n).ok());
    let members = pc.spec.members;
    let hold = operate::leader_in_the_way(members, seen.leader.as_deref())
        && live_replicas.is_some_and(|r| r > members);
    let fingerprint = roles::fingerprint(pc, &v.user_secret_versions);
    let roles_job = roles::job_name(&v.names, &fingerprint);
    let has_roles = !pc.spec.users.is_empty() || !pc.spec.databases.is_empty();
    Wants {
        restore: pc.spec.bootstrap.is_some() && !restored && (has_leader || restore_job),
        restored,
        restore_result,
        replicas: if hold {
            live_replicas.unwrap_or(members)
        } else {
            members
        },
        hold,
        roles: has_roles && (has_leader || cache.get(ChildKind::Job, ns, &roles_job).is_some()),
        has_roles,
        fingerprint,
    }
}

/// Acts through Patroni's REST API on the leader: configuration first, then a scale-down's
/// handover or the next rolling-update step. Returns the health and, if it must be sooner
/// than usual, when to look again.
async fn act(
    ctx: &Context,
    pc: &PatroniCluster,
    v: &Validated,
    cache: &ChildCache,
    seen: &Seen,
    wants: &Wants,
) -> Result<(Health, Option<Duration>)> {
    let ns = &v.owner.namespace;
    let mut health = status::assess(pc, status::ready_count(&seen.pods), seen.cluster.as_ref());
    let leader = seen.leader.as_deref();
    let previous = pc.status.as_ref().and_then(|s| s.leader.as_deref());
    if let (Some(old), Some(new)) = (previous, leader)
        && old != new
    {
        let note = format!("Patroni leader moved from {old} to {new}");
        publish(
            ctx,
            pc,
            EventType::Normal,
            "LeaderChanged",
            "Failover",
            &note,
        )
        .await;
    }
    let mut requeue = None;
    let leader_ip = leader
        .and_then(|l| seen.pods.iter().find(|m| m.pod.name_any() == l))
        .map(|m| m.ip.clone());
    if let (Some(c), Some(ip)) = (&seen.cluster, leader_ip) {
        match operate::configure(ctx, pc, &ip).await {
            Ok(false) if wants.hold => {
                health = operate::make_room(ctx, pc, &seen.pods, c).await?;
            }
            Ok(true) => {
                // Members pick the change up (and flag pending restarts) on their next loop.
                health = Health::progressing(
                    "Configuring",
                    "Patroni's dynamic configuration was patched; members apply it on their next loop",
                );
                let loop_wait = u64::try_from(pc.spec.patroni.loop_wait).unwrap_or(10);
                requeue = Some(Duration::from_secs(loop_wait + 1));
            }
            Ok(false) => {
                let revision = update_revision(cache, ns, &v.names.statefulset);
                let pods = &seen.pods;
                health =
                    operate::roll_forward(ctx, pc, v, revision.as_deref(), pods, c, health).await?;
            }
            // The leader's lock outlives its process by up to ttl: a failover is under way,
            // not an error of ours.
            Err(e) => {
                tracing::info!(error = %e, "the Patroni leader does not answer; configuration and rolling updates wait");
                health = Health::progressing(
                    "LeaderUnreachable",
                    format!(
                        "cannot read or patch the configuration through leader {}: {e}",
                        leader.unwrap_or_default()
                    ),
                );
            }
        }
    }
    let restore_failed = wants
        .restore_result
        .as_ref()
        .filter(|r| r.succeeded == Some(false) && job_failed(cache, ns, &v.names.restore));
    if let Some(h) = restore_health(pc, v, wants.restored, restore_failed, leader.is_some()) {
        health = h;
    }
    let roles_job = roles::job_name(&v.names, &wants.fingerprint);
    if wants.has_roles
        && let Some(h) = roles_health(ctx, v, cache, &roles_job, &health)
    {
        health = h;
    }
    Ok((health, requeue))
}

fn restore_check_warning(check: Option<&BackupStatus>) -> Option<Extra> {
    let c = check.filter(|c| c.succeeded == Some(false))?;
    Some(Extra {
        type_: "RestoreCheckFailed",
        status: true,
        reason: "LastRestoreCheckFailed".into(),
        message: format!(
            "restore check Job {} failed: {}",
            c.job.as_deref().unwrap_or_default(),
            c.message.as_deref().unwrap_or("no message")
        ),
    })
}
