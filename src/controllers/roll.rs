//! Rolling updates of a replicated store (Redis, PostgreSQL), one driver for both. Replicas
//! first, one at a time and only while the set is healthy; then the store's own failover
//! machinery (Sentinel, Patroni) hands the primary role to an updated replica; the old
//! primary, now a replica, is updated last. A primary is never restarted while it is primary.
//! The stores differ only in how a replica is updated and how the primary role is handed over.

use super::{Managed, publish};
use crate::context::Context;
use crate::error::Result;
use crate::k8s::conditions::Health;
use crate::k8s::status::KStatus;
use kube::runtime::events::EventType;

/// One member, for the roll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RollPod {
    pub name: String,
    pub ordinal: i32,
    /// Runs an old pod template, or has settings waiting for a restart.
    pub outdated: bool,
    pub is_primary: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RollStep {
    /// Update this replica (recreate its pod, or restart its server).
    Update(String),
    /// Every replica is updated: hand the primary role to one of them.
    Handover,
}

/// `None` when every member is up to date, or while the set is not healthy.
pub fn next(pods: &[RollPod], healthy: bool) -> Option<RollStep> {
    let outdated: Vec<&RollPod> = pods.iter().filter(|p| p.outdated).collect();
    if outdated.is_empty() || !healthy {
        return None;
    }
    // Highest ordinal first, as a StatefulSet would, among replicas.
    if let Some(replica) = outdated
        .iter()
        .filter(|p| !p.is_primary)
        .max_by_key(|p| p.ordinal)
    {
        return Some(RollStep::Update(replica.name.clone()));
    }
    // Only the primary is left outdated.
    Some(RollStep::Handover)
}

/// (up to date, total) members.
pub fn progress(pods: &[RollPod]) -> (usize, usize) {
    (pods.iter().filter(|p| !p.outdated).count(), pods.len())
}

/// What a store's handover did.
pub enum Handover {
    /// The primary role moved (or is moving): what happened, for the event.
    Done(String),
    /// It cannot happen yet; why, for status.
    Waiting(String),
    /// Nothing to hand over to or from right now; the next look decides.
    NotNow,
}

/// Takes the next step of a rolling update of `obj`'s `pods` (called `what`: "Redis pods",
/// "members") when the set is `healthy`: `update` one outdated replica (returns what it did),
/// or, once only the primary is outdated, `handover`. Returns the health to report: a roll
/// under way is progress, not readiness; `health` as it was when there is nothing to do.
pub async fn drive<K>(
    ctx: &Context,
    obj: &K,
    what: &str,
    pods: &[RollPod],
    health: Health,
    update: impl AsyncFnOnce(&str) -> Result<String>,
    handover: impl AsyncFnOnce() -> Result<Handover>,
) -> Result<Health>
where
    K: Managed,
    K::Status: KStatus,
{
    let healthy = matches!(health, Health::Ready { .. });
    let (updated, total) = progress(pods);
    let done = match next(pods, healthy) {
        None => return Ok(health),
        Some(RollStep::Update(pod)) => update(&pod).await?,
        Some(RollStep::Handover) => match handover().await? {
            Handover::Done(note) => note,
            Handover::Waiting(why) => {
                return Ok(Health::progressing(
                    "RollingUpdate",
                    format!("{updated}/{total} {what} updated; {why}"),
                ));
            }
            Handover::NotNow => return Ok(health),
        },
    };
    let note = format!("{updated}/{total} {what} updated; {done}");
    tracing::info!(%note, "rolling update");
    publish(ctx, obj, EventType::Normal, "RollingUpdate", "Roll", &note).await;
    Ok(Health::progressing("RollingUpdate", note))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ordinal: i32, outdated: bool, primary: bool) -> RollPod {
        RollPod {
            name: format!("r-{ordinal}"),
            ordinal,
            outdated,
            is_primary: primary,
        }
    }

    #[test]
    fn replicas_go_first_highest_ordinal_first() {
        let pods = [pod(0, true, true), pod(1, true, false), pod(2, true, false)];
        assert_eq!(next(&pods, true), Some(RollStep::Update("r-2".into())));
    }

    #[test]
    fn the_primary_is_handed_over_not_restarted() {
        let pods = [
            pod(0, true, true),
            pod(1, false, false),
            pod(2, false, false),
        ];
        assert_eq!(next(&pods, true), Some(RollStep::Handover));
    }

    #[test]
    fn after_the_handover_the_old_primary_is_updated_as_a_replica() {
        let pods = [
            pod(0, true, false),
            pod(1, false, true),
            pod(2, false, false),
        ];
        assert_eq!(next(&pods, true), Some(RollStep::Update("r-0".into())));
    }

    #[test]
    fn nothing_moves_while_unhealthy_or_done() {
        let pods = [pod(0, true, true), pod(1, true, false)];
        assert_eq!(next(&pods, false), None);
        let done = [pod(0, false, true), pod(1, false, false)];
        assert_eq!(next(&done, true), None);
        assert_eq!(progress(&done), (2, 2));
    }
}
