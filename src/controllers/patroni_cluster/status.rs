//! Pure: where a PatroniCluster stands — from its members' pods and what Patroni reports —
//! and the status written from it.

use super::names::{APP, POSTGRES};
use super::operate::MemberPod;
use super::validate::Validated;
use crate::controllers::backups;
use crate::crd::PatroniCluster;
use crate::crd::common::BackupStatus;
use crate::crd::patroni_cluster::{PatroniClusterStatus, PatroniMemberStatus, SynchronousMode};
use crate::k8s::conditions::Health;
use crate::k8s::diagnose::{self, Problem};
use crate::k8s::labels;
use crate::k8s::pods::is_ready;
use crate::stores::patroni::Cluster;

/// Patroni's role for the member it replicates to synchronously.
const SYNC_STANDBY: &str = "sync_standby";

/// Replication lag is rewritten in status only when it moved by more than this, one WAL
/// segment: any WAL the primary writes moves it for a moment, and a segment switch (a backup
/// forces one) jumps the primary's position to the next segment, up to 16 MiB ahead of the
/// replicas until they replay it. A status that follows that is a write every few reads (seen
/// at 64 KiB, long after the cluster had settled). Patroni's `/metrics` has the exact figure.
pub const LAG_STEP: i64 = 16 * 1024 * 1024;

/// Reasons that only say the cluster is not there yet: the pods' own problem, when they show
/// one, is reported instead (see [`crate::k8s::diagnose`]).
const WAITING: &[&str] = &["PodsStarting", "NoLeader", "ReplicasStarting"];

/// The health to report: a waiting one explained by the pods' problem, if they show one.
pub fn explain(health: Health, trouble: Option<&Problem>) -> Health {
    diagnose::explain(health, trouble, WAITING)
}

/// Member pods whose Ready condition is True.
pub fn ready_count(pods: &[MemberPod]) -> i32 {
    let ready = pods.iter().filter(|m| is_ready(&m.pod)).count();
    i32::try_from(ready).unwrap_or(i32::MAX)
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
    // In synchronous mode the promise is that a commit is on two members: not kept until
    // Patroni has named a synchronous standby (it does so within a loop after the replicas
    // stream).
    let synchronous = pc.spec.patroni.synchronous_mode != SynchronousMode::Asynchronous;
    if synchronous && want_replicas > 0 && !cluster.members.iter().any(|m| m.role == SYNC_STANDBY) {
        return Health::progressing(
            "SyncStandbyPending",
            format!(
                "leader {}, {streaming}/{want_replicas} replicas streaming; Patroni has not chosen a synchronous standby yet",
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

/// The lag to report: the one already reported while the new reading is within [`LAG_STEP`]
/// of it, except that caught up (0) is always told: a reading taken mid-jump must not stay.
pub fn steady_lag(reported: Option<i64>, now: Option<i64>) -> Option<i64> {
    match (reported, now) {
        (Some(r), Some(n)) if n != 0 && (r - n).abs() <= LAG_STEP => Some(r),
        _ => now,
    }
}

/// Results of the cluster's Jobs, as last read from their pods.
#[derive(Default)]
pub struct JobResults {
    pub last_backup: Option<BackupStatus>,
    pub restore_check: Option<BackupStatus>,
    pub restore: Option<BackupStatus>,
}

/// The kind-specific status fields from one reconcile's observations.
pub fn fill(
    s: &mut PatroniClusterStatus,
    v: &Validated,
    ready: i32,
    cluster: Option<&Cluster>,
    leader: Option<&str>,
    jobs: JobResults,
) {
    // Job pods come and go with history limits: keep what was last read.
    s.last_successful_backup = backups::last_success(
        jobs.last_backup.as_ref(),
        s.last_successful_backup.take(),
        s.last_backup.as_ref(),
    );
    if jobs.last_backup.is_some() {
        s.last_backup = jobs.last_backup;
    }
    if jobs.restore_check.is_some() {
        s.last_restore_check = jobs.restore_check;
    }
    if let Some(r) = jobs.restore.filter(|r| r.succeeded == Some(true)) {
        s.restored_from.get_or_insert(r);
    }
    s.replicas = Some(ready);
    s.selector = Some(labels::selector_string(&labels::selector(
        APP,
        &v.owner.name,
        POSTGRES,
    )));
    if let Some(c) = cluster {
        s.leader = leader.map(str::to_string);
        let before = |name: &str| {
            s.members
                .iter()
                .find(|p| p.name == name)
                .and_then(|p| p.lag_bytes)
        };
        let mut members: Vec<PatroniMemberStatus> = c
            .members
            .iter()
            .map(|m| PatroniMemberStatus {
                name: m.name.clone(),
                role: Some(m.role.clone()),
                state: Some(m.state.clone()),
                lag_bytes: steady_lag(before(&m.name), m.lag),
                timeline: m.timeline,
            })
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        s.members = members;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::patroni_cluster::PatroniClusterSpec;
    use serde_json::json;

    fn cluster(sync: &str) -> PatroniCluster {
        let spec: PatroniClusterSpec =
            serde_json::from_value(json!({"members": 3, "patroni": {"synchronousMode": sync}}))
                .expect("spec");
        PatroniCluster::new("db", spec)
    }

    fn patroni(roles: &[&str]) -> Cluster {
        let members: Vec<_> = roles
            .iter()
            .enumerate()
            .map(|(i, role)| {
                let state = if *role == "leader" {
                    "running"
                } else {
                    "streaming"
                };
                json!({"name": format!("db-{i}"), "role": role, "state": state, "lag": 0})
            })
            .collect();
        serde_json::from_value(json!({ "members": members })).expect("cluster")
    }

    #[test]
    fn synchronous_mode_is_ready_only_once_patroni_names_a_sync_standby() {
        let pc = cluster("Synchronous");
        let pending = assess(&pc, 3, Some(&patroni(&["leader", "replica", "replica"])));
        assert_eq!(pending.reason(), "SyncStandbyPending");
        assert!(matches!(pending, Health::Progressing { .. }));
        let named = patroni(&["leader", "sync_standby", "replica"]);
        assert_eq!(assess(&pc, 3, Some(&named)).reason(), "Healthy");
        let asynchronous = cluster("Asynchronous");
        let plain = patroni(&["leader", "replica", "replica"]);
        assert_eq!(assess(&asynchronous, 3, Some(&plain)).reason(), "Healthy");
    }

    #[test]
    fn lag_is_rewritten_only_when_it_moves_by_more_than_a_step() {
        assert_eq!(steady_lag(Some(0), Some(312)), Some(0));
        assert_eq!(
            steady_lag(Some(0), Some(LAG_STEP - 1)),
            Some(0),
            "a segment switch"
        );
        assert_eq!(steady_lag(Some(312), Some(0)), Some(0), "caught up is told");
        assert_eq!(steady_lag(Some(312), Some(LAG_STEP)), Some(312));
        assert_eq!(steady_lag(Some(0), Some(LAG_STEP + 1)), Some(LAG_STEP + 1));
        assert_eq!(steady_lag(Some(10 << 20), Some(0)), Some(0));
        assert_eq!(steady_lag(None, Some(5)), Some(5));
        assert_eq!(steady_lag(Some(5), None), None);
    }
}
