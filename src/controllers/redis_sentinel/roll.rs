//! Pure: the next step of a rolling update of the Redis pods. Replicas first, one at a time
//! and only while the set is healthy; then a Sentinel failover moves the master to an updated
//! replica; the old master, now a replica, is replaced last. A master is never restarted
//! while it is master.

/// One Redis pod, for the roll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RollPod {
    pub name: String,
    pub ordinal: i32,
    /// `controller-revision-hash` of the pod.
    pub revision: Option<String>,
    pub is_master: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RollStep {
    /// Delete this replica; its StatefulSet recreates it at the new revision.
    Replace(String),
    /// Every replica is updated: ask Sentinel to hand the master role to one of them.
    Failover,
}

/// `None` when every pod runs `update_revision` (or there is nothing to do yet).
pub fn next(update_revision: Option<&str>, pods: &[RollPod], healthy: bool) -> Option<RollStep> {
    let target = update_revision?;
    let outdated: Vec<&RollPod> = pods
        .iter()
        .filter(|p| p.revision.as_deref() != Some(target))
        .collect();
    if outdated.is_empty() || !healthy {
        return None;
    }
    // Highest ordinal first, as a StatefulSet would, among replicas.
    if let Some(replica) = outdated
        .iter()
        .filter(|p| !p.is_master)
        .max_by_key(|p| p.ordinal)
    {
        return Some(RollStep::Replace(replica.name.clone()));
    }
    // Only the master is left on the old revision.
    Some(RollStep::Failover)
}

/// (updated, total) pods.
pub fn progress(update_revision: Option<&str>, pods: &[RollPod]) -> (usize, usize) {
    let updated = pods
        .iter()
        .filter(|p| update_revision.is_some() && p.revision.as_deref() == update_revision)
        .count();
    (updated, pods.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ordinal: i32, rev: &str, master: bool) -> RollPod {
        RollPod {
            name: format!("r-{ordinal}"),
            ordinal,
            revision: Some(rev.into()),
            is_master: master,
        }
    }

    #[test]
    fn replicas_go_first_highest_ordinal_first() {
        let pods = [
            pod(0, "old", true),
            pod(1, "old", false),
            pod(2, "old", false),
        ];
        assert_eq!(
            next(Some("new"), &pods, true),
            Some(RollStep::Replace("r-2".into()))
        );
    }

    #[test]
    fn the_master_is_failed_over_not_restarted() {
        let pods = [
            pod(0, "old", true),
            pod(1, "new", false),
            pod(2, "new", false),
        ];
        assert_eq!(next(Some("new"), &pods, true), Some(RollStep::Failover));
    }

    #[test]
    fn after_the_failover_the_old_master_is_replaced_as_a_replica() {
        let pods = [
            pod(0, "old", false),
            pod(1, "new", true),
            pod(2, "new", false),
        ];
        assert_eq!(
            next(Some("new"), &pods, true),
            Some(RollStep::Replace("r-0".into()))
        );
    }

    #[test]
    fn nothing_moves_while_unhealthy_or_done() {
        let pods = [pod(0, "old", true), pod(1, "old", false)];
        assert_eq!(next(Some("new"), &pods, false), None);
        let done = [pod(0, "new", true), pod(1, "new", false)];
        assert_eq!(next(Some("new"), &done, true), None);
        assert_eq!(progress(Some("new"), &done), (2, 2));
    }
}
