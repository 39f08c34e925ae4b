//! The RedisSentinel pipeline: dereference → validate → build → apply and prune → act (heal
//! replication and Sentinel monitoring, follow failovers, roll, read backup results) → status.

use super::build::{self, Inputs};
use super::names::{APP, BACKUP, KIND, Names, REDIS, SENTINEL};
use super::rollout::{self, Observed};
use super::status::{self, Topology};
use super::validate::{self, Validated, World};
use super::{follow, heal, topology};
use crate::context::Context;
use crate::controllers::credentials::{self, Guarded};
use crate::controllers::{
    Verdict, WAITING_RECHECK, backups, conclude, finish, instrumented, job_results,
    monitoring_refused, publish, withhold_monitoring,
};
use crate::crd::RedisSentinel;
use crate::crd::common::BackupStatus;
use crate::crd::redis_sentinel::RedisSentinelStatus;
use crate::error::Result;
use crate::k8s::apply;
use crate::k8s::cache::ChildCache;
use crate::k8s::children::ChildKind;
use crate::k8s::conditions::{Extra, Health};
use crate::k8s::diagnose;
use crate::k8s::live::Members;
use crate::k8s::owner::Owner;
use crate::k8s::pods::component_pods;
use crate::k8s::routing;
use crate::k8s::secrets;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use std::sync::Arc;

pub async fn reconcile(rs: Arc<RedisSentinel>, ctx: Arc<Context>) -> Result<Action> {
    instrumented(rs, ctx, run).await
}

async fn run(rs: Arc<RedisSentinel>, ctx: Arc<Context>) -> Result<Action> {
    ctx.redis_followers.sweep(&ctx.caches.redis_sentinels);
    let owner = Owner::of(rs.as_ref(), KIND)?;
    let world = dereference(&ctx, &rs, &owner).await?;
    let v = match validate::validate(&rs, owner, &world) {
        Ok(v) => v,
        Err(stalled) => {
            let verdict = Verdict {
                extras: validate::warnings(&rs),
                requeue: validate::recheck(&stalled),
                ..Verdict::new(stalled)
            };
            return finish(&ctx, rs.as_ref(), verdict, |_| {}).await;
        }
    };
    let password = secrets::random_password()?;
    let mut children = build::build(
        &rs,
        &v,
        &Inputs {
            generated_password: &password,
        },
    )?;
    // Comparing against a cache still filling would rewrite what already exists.
    ctx.synced.wait().await;
    let cache = ctx.caches.owned.children(KIND);
    let creds = credentials::redis::store(&v);
    let creds =
        credentials::protect(&ctx, rs.as_ref(), &v.owner, cache, &mut children, &creds).await?;
    withhold_monitoring(&ctx, rs.as_ref(), &mut children).await;
    let mut applied = apply::sync(&ctx.client, cache, &v.owner, &children).await;
    monitoring_refused(&ctx, rs.as_ref(), &mut applied).await;
    if let Some(verdict) = creds.lost_verdict(validate::warnings(&rs)) {
        return conclude(&ctx, rs.as_ref(), verdict, applied, |_| {}).await;
    }
    let acted = act(&ctx, &rs, &v, cache, &creds).await?;
    let mut extras = validate::warnings(&rs);
    extras.extend(acted.backup_warning);
    let health = status::explain(acted.health, world.trouble.as_ref());
    let health = match (&health, &acted.topology.master) {
        (Health::Ready { .. }, Some((pod, ip))) => {
            let (ns, service) = (&v.owner.namespace, &v.names.master_service);
            routing::check(&ctx.client, ns, service, "master", pod, ip)
                .await
                .unwrap_or(health)
        }
        _ => health,
    };
    let requeue = if matches!(health, Health::Ready { .. }) {
        ctx.settings.safety_poll
    } else if diagnose::is_diagnosis(health.reason()) {
        // The pods' events say when the claim binds or the image arrives.
        WAITING_RECHECK
    } else {
        ctx.settings.converging_poll
    };
    let verdict = Verdict {
        health,
        extras,
        requeue: Some(requeue),
        followup: acted.repaired.then_some(ctx.settings.converging_poll),
    };
    let (topo, moved, last_backup) = (acted.topology, acted.master_moved, acted.last_backup);
    let previous = rs.status.as_ref();
    let last_success = backups::last_success(
        last_backup.as_ref(),
        previous.and_then(|s| s.last_successful_backup.clone()),
        previous.and_then(|s| s.last_backup.as_ref()),
    );
    let series = backups::series(
        rs.spec.backup.as_ref(),
        last_success.as_ref(),
        None,
        jiff::Timestamp::now(),
    );
    backups::observe(&ctx, KIND, &v.owner.namespace, &v.owner.name, series);
    let version = acted.credentials_version;
    let fill = |s: &mut RedisSentinelStatus| {
        status::fill(s, &v, cache, &topo, moved, last_backup);
        s.credentials_version = version.or(s.credentials_version.take());
    };
    conclude(&ctx, rs.as_ref(), verdict, applied, fill).await
}

/// What the spec references, and what already runs, as found in the cluster.
async fn dereference(ctx: &Context, rs: &RedisSentinel, owner: &Owner) -> Result<World> {
    let mut world = World::default();
    let ns = &owner.namespace;
    if let (true, Some(secret)) = (rs.spec.auth.enabled, &rs.spec.auth.existing_secret) {
        let (found, _) = secrets::check(&ctx.client, ns, &secret.name, Some(&secret.key)).await?;
        world.auth_secret = Some(found);
    }
    let storage = rs.spec.redis.storage.as_ref();
    if let Some(class) = storage.and_then(|s| s.storage_class_name.as_ref()) {
        let api: Api<StorageClass> = Api::all(ctx.client.clone());
        world.storage_class = Some((class.clone(), api.get_metadata_opt(class).await?.is_some()));
    }
    // The live objects come from the caches: they must have listed.
    ctx.synced.wait().await;
    let names = Names::of(&owner.name);
    let live = ctx.caches.owned.children(KIND);
    let sts = live.get(ChildKind::StatefulSet, ns, &names.redis);
    world.members = sts.and_then(|s| Members::of(&s));
    let store = ctx.caches.owned.pods(KIND);
    let mut pods = component_pods(&store, ns, &owner.name, APP, REDIS);
    pods.extend(component_pods(&store, ns, &owner.name, APP, SENTINEL));
    let pods: Vec<&Pod> = pods.iter().map(AsRef::as_ref).collect();
    let claims = diagnose::read_claims(&ctx.client, ns, &diagnose::claims_to_check(&pods)).await;
    world.trouble = diagnose::diagnose(&pods, &claims);
    Ok(world)
}

/// What the data-plane steps found and did.
struct Acted {
    health: Health,
    topology: Topology,
    master_moved: bool,
    last_backup: Option<BackupStatus>,
    backup_warning: Option<Extra>,
    /// The auth Secret's version every Redis and Sentinel uses.
    credentials_version: Option<String>,
    /// Replication or Sentinel monitoring was repaired: the topology seen is from before.
    repaired: bool,
}

/// The data plane: whatever runs is observed and repaired, ready or not (a failover happens
/// exactly when pods are not ready); then the next rolling-update step; then backup results.
async fn act(
    ctx: &Context,
    rs: &RedisSentinel,
    v: &Validated,
    cache: &ChildCache,
    creds: &Guarded,
) -> Result<Acted> {
    // A changed password reaches every member before anything else talks to them.
    let rotation = credentials::redis::roll_out(ctx, rs, v, creds).await?;
    let auth = rotation.auth.clone();
    let (redis, sentinels, refused) = heal::observe(ctx, v, &auth).await;
    let handles = follow::Handles {
        client: ctx.client.clone(),
        pods: ctx.caches.owned.pods(KIND),
        trigger: ctx.redis_trigger.clone(),
        metrics: ctx.metrics.clone(),
    };
    let sentinel_ips = sentinels.iter().map(|s| s.ip.clone()).collect();
    let (ns, name) = (&v.owner.namespace, &v.owner.name);
    ctx.redis_followers
        .ensure(&handles, ns, name, sentinel_ips, auth.clone());
    let plan = topology::plan(&rs.spec, &redis, &sentinels);
    tracing::debug!(master = ?plan.master, steps = plan.steps.len(), hold = ?plan.hold, "planned");
    if let Some(why) = &plan.decision {
        publish(
            ctx,
            rs,
            EventType::Warning,
            "SplitBrainResolved",
            "Heal",
            why,
        )
        .await;
    }
    let done = heal::execute(ctx, rs, v, &plan, &redis, &sentinels, &auth).await?;
    if !done.is_empty() {
        tracing::info!(actions = ?done, "repaired replication");
        let note = done.join("; ");
        publish(ctx, rs, EventType::Normal, "Repaired", "Heal", &note).await;
    }
    let topo = status::topology_of(rs, &plan, &redis, &sentinels);
    let previous = rs.status.as_ref().and_then(|s| s.master.as_ref());
    let moved = match (previous, &topo.master) {
        (Some(old), Some((new, _))) if old.pod != *new => {
            let note = format!("master moved from {} to {new}", old.pod);
            publish(
                ctx,
                rs,
                EventType::Normal,
                "MasterChanged",
                "Failover",
                &note,
            )
            .await;
            true
        }
        _ => false,
    };
    let health = status::assess(rs, status::rollout(rs, v, cache), &plan, &topo);
    let seen = Observed {
        plan: &plan,
        redis: &redis,
        sentinels: &sentinels,
        auth: &auth,
    };
    let health = rollout::roll_forward(ctx, rs, v, cache, &seen, health).await?;
    let secret = v.password.as_ref().map(|(s, _)| s.as_str());
    let health = credentials::redis::health(&rotation, &refused, secret, health);
    let backup_pods = heal::pods(ctx, v, BACKUP);
    let backup_pods: Vec<_> = backup_pods.iter().map(AsRef::as_ref).collect();
    let (last_backup, backup_warning) = job_results::last(&backup_pods);
    let previous = rs.status.as_ref().and_then(|s| s.last_backup.as_ref());
    if let Some(b) = &last_backup
        && previous.and_then(|p| p.job.as_ref()) != b.job.as_ref()
    {
        let note = format!(
            "backup {} ({} bytes) written by Job {}",
            b.file.as_deref().unwrap_or("?"),
            b.size_bytes.unwrap_or(0),
            b.job.as_deref().unwrap_or("?")
        );
        publish(
            ctx,
            rs,
            EventType::Normal,
            "BackupSucceeded",
            "Backup",
            &note,
        )
        .await;
    }
    Ok(Acted {
        health,
        topology: topo,
        master_moved: moved,
        last_backup,
        backup_warning,
        credentials_version: rotation.version,
        repaired: !done.is_empty(),
    })
}
