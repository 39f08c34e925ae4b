//! Pure: where a PatroniCluster stands — from its members' pods and what Patroni reports —
//! and the status written from it.

use super::names::{APP, POSTGRES};
use super::operate::MemberPod;
use super::validate::Validated;
use crate::controllers::backups;
use crate::crd::PatroniCluster;
use crate::crd::common::BackupStatus;
use crate::crd::patroni_cluster::{PatroniClusterStatus, PatroniMemberStatus};
use crate::k8s::conditions::Health;
use crate::k8s::diagnose::{self, Problem};
use crate::k8s::labels;
use crate::k8s::pods::is_ready;
use crate::stores::patroni::Cluster;

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
    Health::Ready {
        reason: "Healthy".into(),
        message: format!(
            "leader {}, {streaming}/{want_replicas} replicas streaming",
            leader.name
        ),
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
        let mut members: Vec<PatroniMemberStatus> = c
            .members
            .iter()
            .map(|m| PatroniMemberStatus {
                name: m.name.clone(),
                role: Some(m.role.clone()),
                state: Some(m.state.clone()),
                lag_bytes: m.lag,
                timeline: m.timeline,
            })
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        s.members = members;
    }
}
