//! Pure: where a RedisSentinel stands — the StatefulSets' rollout, the observed topology, the
//! overall health — and the status written from it.

use super::names::{APP, REDIS};
use super::topology::{Plan, RedisNode, SentinelNode};
use super::validate::Validated;
use crate::controllers::backups;
use crate::crd::RedisSentinel;
use crate::crd::common::BackupStatus;
use crate::crd::redis_sentinel::{RedisMasterStatus, RedisSentinelStatus};
use crate::k8s::cache::ChildCache;
use crate::k8s::children::ChildKind;
use crate::k8s::conditions::Health;
use crate::k8s::diagnose::{self, Problem};
use crate::k8s::labels;
use crate::k8s::pods::status_count;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Reasons that only say the store is not there yet: the pods' own problem, when they show
/// one, is reported instead (see [`crate::k8s::diagnose`]).
const WAITING: &[&str] = &["PodsStarting", "FailoverInProgress", "NoMaster"];

/// The health to report: a waiting one explained by the pods' problem, if they show one.
pub fn explain(health: Health, trouble: Option<&Problem>) -> Health {
    diagnose::explain(health, trouble, WAITING)
}

/// Pure: where the rollout stands, from the StatefulSets' own status.
pub fn rollout(rs: &RedisSentinel, v: &Validated, cache: &ChildCache) -> Health {
    let ns = &v.owner.namespace;
    let ready = |name: &str| status_count(cache, ChildKind::StatefulSet, ns, name, "readyReplicas");
    let (redis_ready, redis_wanted) = (ready(&v.names.redis), rs.spec.redis.replicas);
    let (sentinel_ready, sentinel_wanted) = (ready(&v.names.sentinel), rs.spec.sentinel.replicas);
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

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
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
    let agree = |s: &&SentinelNode| {
        s.view
            .as_ref()
            .and_then(|v| v.master.as_ref())
            .is_some_and(|(ip, _)| *ip == master.ip)
    };
    let (want_replicas, want_others) = (
        i64::from(rs.spec.redis.replicas - 1),
        i64::from(rs.spec.sentinel.replicas - 1),
    );
    let ready = sentinels
        .iter()
        .filter(agree)
        .filter_map(|s| s.view.as_ref())
        .filter(|v| {
            v.number("num-slaves").unwrap_or(0) >= want_replicas
                && v.number("num-other-sentinels").unwrap_or(0) >= want_others
        })
        .count();
    Topology {
        master: Some((master.pod.clone(), master.ip.clone())),
        replicas_in_sync: count(in_sync),
        sentinels_agreeing: count(sentinels.iter().filter(agree).count()),
        sentinels_ready: count(ready),
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
    if rollout.reason() != "ConfiguringReplication" {
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

/// The kind-specific status fields from one reconcile's observations.
pub fn fill(
    s: &mut RedisSentinelStatus,
    v: &Validated,
    cache: &ChildCache,
    topo: &Topology,
    master_moved: bool,
    last_backup: Option<BackupStatus>,
) {
    let selector = labels::selector(APP, &v.owner.name, REDIS);
    s.selector = Some(labels::selector_string(&selector));
    s.replicas = Some(status_count(
        cache,
        ChildKind::StatefulSet,
        &v.owner.namespace,
        &v.names.redis,
        "readyReplicas",
    ));
    if let Some((pod, ip)) = &topo.master {
        s.master = Some(RedisMasterStatus {
            pod: pod.clone(),
            address: Some(ip.clone()),
        });
    }
    s.replicas_in_sync = Some(topo.replicas_in_sync);
    s.sentinels_agreeing = Some(topo.sentinels_agreeing);
    if master_moved {
        s.last_failover_time = Some(Time(jiff::Timestamp::now()));
    }
    // Job pods come and go with history limits: keep what was last read.
    s.last_successful_backup = backups::last_success(
        last_backup.as_ref(),
        s.last_successful_backup.take(),
        s.last_backup.as_ref(),
    );
    if last_backup.is_some() {
        s.last_backup = last_backup;
    }
}
