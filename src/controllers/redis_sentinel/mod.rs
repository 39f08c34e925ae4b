//! The RedisSentinel controller. Today: dereference the auth Secret, validate, report status.

pub mod build;
pub mod conf;
pub mod follow;
pub mod heal;
pub mod topology;

use super::{
    Managed, SecretRef, Verdict, check_secret, finish, instrumented, not_yet_managed, publish,
    referrers,
};
use crate::context::{Context, scoped_api};
use crate::controllers::roll::{self, RollPod, RollStep};
use crate::crd::RedisSentinel;
use crate::crd::redis_sentinel::RedisMasterStatus;
use crate::error::Result;
use crate::k8s::apply::{self, ChildCache};
use crate::k8s::children::ChildKind;
use crate::k8s::conditions::{Extra, Health};
use crate::k8s::labels;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};
use kube::{Client, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use topology::{Plan, RedisNode, SentinelNode};

impl Managed for RedisSentinel {
    const KIND: &'static str = "RedisSentinel";
}

/// What the spec points at, as found in the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct World {
    /// The user-supplied auth Secret, when the spec names one.
    pub auth_secret: Option<SecretRef>,
}

pub async fn dereference(rs: &RedisSentinel, ctx: &Context) -> Result<World> {
    let mut world = World::default();
    if let (true, Some(secret), Some(ns)) = (
        rs.spec.auth.enabled,
        &rs.spec.auth.existing_secret,
        rs.namespace(),
    ) {
        world.auth_secret = Some(
            check_secret(ctx, &ns, &secret.name, Some(&secret.key))
                .await?
                .0,
        );
    }
    Ok(world)
}

/// Pure validation of what the schema cannot check.
pub fn validate(rs: &RedisSentinel, world: &World) -> Verdict {
    let ns = rs.namespace().unwrap_or_default();
    let health = match (&rs.spec.auth.existing_secret, world.auth_secret) {
        (Some(s), Some(SecretRef::MissingSecret)) => Health::stalled(
            "SecretNotFound",
            format!(
                "spec.auth.existingSecret: Secret \"{}\" does not exist in namespace \"{ns}\"",
                s.name
            ),
        ),
        (Some(s), Some(SecretRef::MissingKey)) => Health::stalled(
            "SecretKeyNotFound",
            format!(
                "spec.auth.existingSecret: Secret \"{}\" has no key \"{}\"",
                s.name, s.key
            ),
        ),
        _ => not_yet_managed("RedisSentinel"),
    };
    let mut verdict = Verdict::new(health);
    if !rs.spec.auth.enabled {
        verdict = verdict.with(Extra {
            type_: "AuthDisabled",
            status: true,
            reason: "PasswordOff".into(),
            message: "spec.auth.enabled is false: Redis and Sentinel accept clients without a password; only the app's own pods may reach them".into(),
        });
    }
    verdict
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
];

/// (ready, wanted) pods of a StatefulSet in the cache; wanted from the spec we apply.
fn readiness(cache: &ChildCache, ns: &str, name: &str, wanted: i32) -> (i32, i32) {
    let ready = cache
        .get(ChildKind::StatefulSet, ns, name)
        .and_then(|s| s.data.get("status")?.get("readyReplicas")?.as_i64())
        .and_then(|n| i32::try_from(n).ok())
        .unwrap_or(0);
    (ready, wanted)
}

/// Pure: where the rollout stands, from the StatefulSets' own status.
pub fn rollout(rs: &RedisSentinel, cache: &ChildCache) -> Health {
    let ns = rs.namespace().unwrap_or_default();
    let names = build::Names::of(&rs.name_any());
    let (redis_ready, redis_wanted) = readiness(cache, &ns, &names.redis, rs.spec.redis.replicas);
    let (sentinel_ready, sentinel_wanted) =
        readiness(cache, &ns, &names.sentinel, rs.spec.sentinel.replicas);
    if redis_ready < redis_wanted || sentinel_ready < sentinel_wanted {
        return Health::progressing(
            "PodsStarting",
            format!(
                "{redis_ready}/{redis_wanted} Redis pods and {sentinel_ready}/{sentinel_wanted} Sentinels ready"
            ),
        );
    }
    Health::progressing(
        "ConfiguringReplication",
        "all pods ready; replication and Sentinel monitoring are being configured",
    )
}

/// What the data plane looks like, for status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    pub master: Option<(String, String)>,
    pub replicas_in_sync: i32,
    pub sentinels_agreeing: i32,
    /// Sentinels that agree and also know every replica and every other Sentinel: only
    /// then can they fail over (a Sentinel learns replicas from the master every 10 s).
    pub sentinels_ready: i32,
}

/// Pure: the observed topology once the plan's master is known.
pub fn topology_of(
    rs: &RedisSentinel,
    plan: &Plan,
    redis: &[RedisNode],
    sentinels: &[SentinelNode],
) -> Topology {
    let Some(master) = plan
        .master
        .as_ref()
        .and_then(|m| redis.iter().find(|n| &n.pod == m))
    else {
        return Topology::default();
    };
    let in_sync = redis
        .iter()
        .filter(|n| n.pod != master.pod)
        .filter(|n| {
            n.replication.as_ref().is_some_and(|r| {
                !r.is_master && r.link_up && r.master_host.as_deref() == Some(master.ip.as_str())
            })
        })
        .count();
    let agreeing = sentinels
        .iter()
        .filter(|s| {
            s.view
                .as_ref()
                .and_then(|v| v.master.as_ref())
                .is_some_and(|(ip, _)| *ip == master.ip)
        })
        .count();
    let (want_replicas, want_others) = (
        i64::from(rs.spec.redis.replicas - 1),
        i64::from(rs.spec.sentinel.replicas - 1),
    );
    let ready = sentinels
        .iter()
        .filter_map(|s| s.view.as_ref())
        .filter(|v| v.master.as_ref().is_some_and(|(ip, _)| *ip == master.ip))
        .filter(|v| {
            v.number("num-slaves").unwrap_or(0) >= want_replicas
                && v.number("num-other-sentinels").unwrap_or(0) >= want_others
        })
        .count();
    Topology {
        master: Some((master.pod.clone(), master.ip.clone())),
        replicas_in_sync: i32::try_from(in_sync).unwrap_or(i32::MAX),
        sentinels_agreeing: i32::try_from(agreeing).unwrap_or(i32::MAX),
        sentinels_ready: i32::try_from(ready).unwrap_or(i32::MAX),
    }
}

/// Pure: overall health from the rollout, the plan and the topology.
pub fn assess(rs: &RedisSentinel, rollout: Health, plan: &Plan, topo: &Topology) -> Health {
    if let Some(why) = &plan.hold {
        return Health::progressing("FailoverInProgress", why.clone());
    }
    if !plan.steps.is_empty() {
        return Health::progressing(
            "ConfiguringReplication",
            format!(
                "{} change(s) to replication or Sentinel monitoring under way",
                plan.steps.len()
            ),
        );
    }
    if !matches!(rollout, Health::Progressing { ref reason, .. } if reason == "ConfiguringReplication")
    {
        return rollout;
    }
    let Some((pod, ip)) = &topo.master else {
        return Health::progressing("NoMaster", "no reachable Redis pod yet");
    };
    let (want_replicas, want_sentinels) = (rs.spec.redis.replicas - 1, rs.spec.sentinel.replicas);
    if topo.replicas_in_sync < want_replicas {
        return Health::progressing(
            "ReplicasSyncing",
            format!(
                "{}/{want_replicas} replicas in sync with master {pod}",
                topo.replicas_in_sync
            ),
        );
    }
    if topo.sentinels_agreeing < want_sentinels {
        return Health::progressing(
            "SentinelsConverging",
            format!(
                "{}/{want_sentinels} Sentinels agree that {pod} is master",
                topo.sentinels_agreeing
            ),
        );
    }
    if topo.sentinels_ready < want_sentinels {
        return Health::progressing(
            "SentinelsDiscovering",
            format!(
                "{}/{want_sentinels} Sentinels know every replica and Sentinel; until all do, a failover could stall",
                topo.sentinels_ready
            ),
        );
    }
    Health::Ready {
        reason: "Healthy".into(),
        message: format!(
            "master {pod} ({ip}), {}/{want_replicas} replicas in sync, {}/{want_sentinels} Sentinels agree",
            topo.replicas_in_sync, topo.sentinels_agreeing
        ),
    }
}

/// Takes the next step of a rolling update when the set is healthy; returns the health to
/// report (a roll under way is progress, not readiness).
/// What one reconcile observed of the data plane and decided about it.
struct Observed<'a> {
    plan: &'a Plan,
    redis: &'a [RedisNode],
    sentinels: &'a [SentinelNode],
    auth: &'a Option<String>,
}

async fn roll_forward(
    ctx: &Context,
    rs: &RedisSentinel,
    cache: &ChildCache,
    seen: &Observed<'_>,
    health: Health,
) -> Result<Health> {
    let Observed {
        plan,
        redis,
        sentinels,
        auth,
    } = *seen;
    let ns = rs.namespace().unwrap_or_default();
    let revision = super::update_revision(cache, &ns, &build::Names::of(&rs.name_any()).redis);
    let Some(revision) = revision else {
        return Ok(health);
    };
    let pods: Vec<RollPod> = heal::pods(ctx, rs, "redis")
        .iter()
        .map(|p| RollPod {
            name: p.name_any(),
            ordinal: roll::ordinal(&p.name_any()),
            outdated: p.labels().get("controller-revision-hash") != Some(&revision),
            is_primary: plan.master.as_deref() == Some(p.name_any().as_str()),
        })
        .collect();
    let healthy = matches!(health, Health::Ready { .. });
    let (updated, total) = roll::progress(&pods);
    let step = roll::next(&pods, healthy);
    let note = match &step {
        None => return Ok(health),
        Some(RollStep::Update(pod)) => {
            Api::<Pod>::namespaced(ctx.client.clone(), &ns)
                .delete(pod, &kube::api::DeleteParams::default())
                .await?;
            format!("{updated}/{total} Redis pods updated; replacing replica {pod}")
        }
        Some(RollStep::Handover) => {
            let group = rs.name_any();
            // A planned switchover loses nothing: writes pause on the master until every
            // replica has all of them, then Sentinel promotes one.
            let master = plan
                .master
                .as_ref()
                .and_then(|m| redis.iter().find(|n| &n.pod == m));
            let Some(master) = master else {
                return Ok(health);
            };
            let mep = crate::stores::redis::Endpoint {
                ip: master.ip.clone(),
                port: conf::REDIS_PORT as u16,
                password: auth.clone(),
            };
            let store_err =
                |e: crate::stores::redis::StoreError| crate::error::Error::Store(e.to_string());
            crate::stores::redis::pause_writes(&mep, 10_000)
                .await
                .map_err(store_err)?;
            let want = usize::try_from(rs.spec.redis.replicas - 1).unwrap_or(0);
            if !crate::stores::redis::replicas_caught_up(&mep, want, Duration::from_secs(5))
                .await
                .map_err(store_err)?
            {
                crate::stores::redis::unpause(&mep)
                    .await
                    .map_err(store_err)?;
                return Ok(Health::progressing(
                    "RollingUpdate",
                    "replicas did not catch up with the master within 5 s; switchover postponed",
                ));
            }
            let ep = sentinels.iter().find(|s| s.view.is_some()).map(|s| {
                crate::stores::redis::Endpoint {
                    ip: s.ip.clone(),
                    port: conf::SENTINEL_PORT as u16,
                    password: auth.clone(),
                }
            });
            let Some(ep) = ep else { return Ok(health) };
            crate::stores::redis::sentinel(&ep, &["FAILOVER", &group])
                .await
                .map_err(|e| crate::error::Error::Store(e.to_string()))?;
            format!(
                "{updated}/{total} Redis pods updated; every replica is, so Sentinel hands the master role to one before the old master is replaced"
            )
        }
    };
    tracing::info!(%note, "rolling update");
    publish(ctx, rs, EventType::Normal, "RollingUpdate", "Roll", &note).await;
    Ok(Health::progressing("RollingUpdate", note))
}

/// How often a healthy set is polled anyway: the safety net behind +switch-master.
const SAFETY_POLL: Duration = Duration::from_secs(30);
/// How soon to look again while converging.
const CONVERGING: Duration = Duration::from_secs(2);

pub async fn reconcile(rs: Arc<RedisSentinel>, ctx: Arc<Context>) -> Result<Action> {
    instrumented(rs, ctx, |rs, ctx| async move {
        ctx.redis_followers.sweep(&ctx.caches.redis_sentinels);
        tracing::debug!("dereferencing");
        let world = dereference(&rs, &ctx).await?;
        let verdict = validate(&rs, &world);
        if matches!(verdict.health, Health::Stalled { .. }) {
            return finish(&ctx, rs.as_ref(), verdict, |_| {}).await;
        }
        let ns = rs.namespace().unwrap_or_default();
        let uid = rs.uid().unwrap_or_default();
        let password = super::random_password()?;
        let children = build::build(&rs, &build::Inputs { generated_password: &password });
        let cache = &ctx.caches.children.redis_sentinel;
        tracing::debug!("applying children");
        // Comparing against a cache still filling would rewrite what already exists.
        ctx.synced.wait().await;
        let mut applied = apply::apply(&ctx.client, cache, &ns, &children).await?;
        apply::prune(&ctx.client, cache, &ns, &uid, &children, &mut applied).await?;
        if !applied.written.is_empty() || !applied.pruned.is_empty() {
            tracing::info!(written = ?applied.written, pruned = ?applied.pruned, "children applied");
        }

        // The data plane: whatever runs is observed and repaired, ready or not (a failover
        // happens exactly when pods are not ready).
        tracing::debug!("observing the data plane");
        let auth = heal::password(&ctx, &rs).await?;
        let (redis, sentinels) = heal::observe(&ctx, &rs, &auth).await;
        let handles = follow::Handles {
            client: ctx.client.clone(),
            pods: ctx.caches.redis_pods.clone(),
            trigger: ctx.redis_trigger.clone(),
            metrics: ctx.metrics.clone(),
        };
        ctx.redis_followers.ensure(&handles, &ns, &rs.name_any(), sentinels.iter().map(|s| s.ip.clone()).collect(), auth.clone());
        let plan = topology::plan(&rs.spec, &redis, &sentinels);
        tracing::debug!(master = ?plan.master, steps = plan.steps.len(), hold = ?plan.hold, "planned");
        if let Some(why) = &plan.decision {
            publish(&ctx, rs.as_ref(), EventType::Warning, "SplitBrainResolved", "Heal", why).await;
        }
        let done = heal::execute(&ctx, &rs, &plan, &redis, &sentinels, &auth).await?;
        if !done.is_empty() {
            tracing::info!(actions = ?done, "repaired replication");
            publish(&ctx, rs.as_ref(), EventType::Normal, "Repaired", "Heal", &done.join("; ")).await;
        }
        let topo = topology_of(&rs, &plan, &redis, &sentinels);
        let previous_master = rs.status.as_ref().and_then(|s| s.master.as_ref()).map(|m| m.pod.clone());
        let moved = matches!((&previous_master, &topo.master), (Some(old), Some((new, _))) if old != new);
        if moved && let (Some(old), Some((new, _))) = (&previous_master, &topo.master) {
            publish(&ctx, rs.as_ref(), EventType::Normal, "MasterChanged", "Failover", &format!("master moved from {old} to {new}")).await;
        }
        let health = assess(&rs, rollout(&rs, cache), &plan, &topo);
        let seen = Observed { plan: &plan, redis: &redis, sentinels: &sentinels, auth: &auth };
        let health = roll_forward(&ctx, &rs, cache, &seen, health).await?;
        let requeue = Some(if matches!(health, Health::Ready { .. }) { SAFETY_POLL } else { CONVERGING });
        let backup_pods = heal::pods(&ctx, &rs, "backup");
        let (last_backup, backup_warning) = super::job_results::last(&backup_pods.iter().map(|p| p.as_ref()).collect::<Vec<_>>());
        let previous_backup = rs.status.as_ref().and_then(|s| s.last_backup.as_ref());
        if let Some(b) = &last_backup
            && previous_backup.and_then(|p| p.job.as_ref()) != b.job.as_ref()
        {
            let note = format!("backup {} ({} bytes) written by Job {}", b.file.as_deref().unwrap_or("?"), b.size_bytes.unwrap_or(0), b.job.as_deref().unwrap_or("?"));
            publish(&ctx, rs.as_ref(), EventType::Normal, "BackupSucceeded", "Backup", &note).await;
        }
        let mut extras = verdict.extras;
        extras.extend(backup_warning);
        let verdict = Verdict { health, extras, requeue };
        let selector = labels::selector(build::APP, &rs.name_any(), "redis").iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
        let replicas = readiness(cache, &ns, &build::Names::of(&rs.name_any()).redis, 0).0;
        finish(&ctx, rs.as_ref(), verdict, |s| {
            s.selector = Some(selector);
            s.replicas = Some(replicas);
            if let Some((pod, ip)) = &topo.master {
                s.master = Some(RedisMasterStatus { pod: pod.clone(), address: Some(ip.clone()) });
            }
            s.replicas_in_sync = Some(topo.replicas_in_sync);
            s.sentinels_agreeing = Some(topo.sentinels_agreeing);
            if moved {
                s.last_failover_time = Some(Time(jiff::Timestamp::now()));
            }
            if last_backup.is_some() {
                s.last_backup = last_backup;
            }
        })
        .await
    })
    .await
}

/// The controller, woken by its children, its pods, Secrets a RedisSentinel references, and
/// failover followers (`requests`).
pub fn controller(
    client: &Client,
    namespace: Option<&str>,
    requests: futures::channel::mpsc::UnboundedReceiver<ObjectRef<RedisSentinel>>,
    synced: &crate::k8s::sync::Synced,
) -> (Controller<RedisSentinel>, ChildCache, Store<Pod>) {
    let wc = watcher::Config::default();
    let ctl = super::main_controller::<RedisSentinel>(client, namespace, synced);
    let store = ctl.store();
    let secrets = scoped_api::<PartialObjectMeta<Secret>>(client, namespace);
    let ctl = ctl.watches(secrets, wc, move |secret| {
        let name = secret.name_any();
        referrers(&store, secret.namespace(), |rs| {
            rs.spec
                .auth
                .existing_secret
                .as_ref()
                .is_some_and(|s| s.name == name)
        })
    });
    let (ctl, pods) = super::watch_pods(ctl, client, namespace, build::KIND, synced);
    let ctl = ctl.reconcile_on(requests);
    let (ctl, children) =
        apply::watch_children(ctl, client, namespace, build::KIND, CHILD_KINDS, synced);
    (ctl, children, pods)
}
