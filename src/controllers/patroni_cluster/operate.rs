//! The data-plane steps of a reconcile, through Patroni's REST API: bring the dynamic
//! configuration to the spec, and take the next step of a rolling update — a new pod template
//! or settings waiting for a restart. Replicas go first; the primary hands its role over with
//! a switchover and is only then updated, as a replica.

use super::config;
use super::names::{API_PORT, APP, POSTGRES};
use super::validate::Validated;
use crate::context::Context;
use crate::controllers::publish;
use crate::controllers::roll::{self, Handover, RollPod};
use crate::crd::PatroniCluster;
use crate::error::Result;
use crate::k8s::conditions::Health;
use crate::k8s::pods::ordinal;
use crate::k8s::{cache::ChildCache, children::ChildKind, labels};
use crate::stores::patroni::{self, Cluster, Member};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use std::sync::Arc;

const PORT: u16 = API_PORT as u16;

/// A member pod with its address.
pub struct MemberPod {
    pub pod: Arc<Pod>,
    pub ip: String,
}

/// Patches Patroni's dynamic configuration when it differs from the spec; true when it did.
pub async fn configure(ctx: &Context, pc: &PatroniCluster, leader_ip: &str) -> Result<bool> {
    let live = patroni::config(leader_ip, PORT).await?;
    let Some(patch) = config::patch(&config::desired(pc), &live) else {
        return Ok(false);
    };
    patroni::patch_config(leader_ip, PORT, &patch).await?;
    let note = format!("Patroni's dynamic configuration patched: {patch}");
    tracing::info!(%note, "configuration");
    publish(
        ctx,
        pc,
        EventType::Normal,
        "ConfigurationChanged",
        "Configure",
        &note,
    )
    .await;
    Ok(true)
}

/// The replica to hand the primary role to: one of `allowed`, streaming, least behind — and
/// in synchronous mode the synchronous standby (Patroni refuses any other).
pub fn candidate<'a>(
    cluster: &'a Cluster,
    allowed: &[&str],
    synchronous: bool,
) -> Option<&'a Member> {
    cluster
        .members
        .iter()
        .filter(|m| m.is_replica() && m.state == "streaming")
        .filter(|m| !synchronous || m.role == "sync_standby")
        .filter(|m| allowed.contains(&m.name.as_str()))
        .min_by_key(|m| (m.lag.unwrap_or(i64::MAX), m.name.clone()))
}

fn synchronous(pc: &PatroniCluster) -> bool {
    pc.spec.patroni.synchronous_mode != crate::crd::patroni_cluster::SynchronousMode::Asynchronous
}

/// Before a cluster's StatefulSet first exists: Patroni's DCS ConfigMaps left by an earlier
/// cluster of the same name whose data claims are gone (`whenDeleted: Delete`, or deleted by
/// hand) are deleted — otherwise the new members find an initialised DCS and wait forever for a
/// leader whose data no longer exists. With the claims still there they are kept, and the new
/// resource resumes the old cluster. `Some(reason)` while members of the earlier cluster are
/// still stopping: nothing must be created before they are gone.
pub async fn clear_stale_dcs(
    ctx: &Context,
    pc: &PatroniCluster,
    v: &Validated,
    cache: &ChildCache,
) -> Result<Option<String>> {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim};
    use kube::api::{DeleteParams, ListParams};
    let (ns, name, uid) = (&v.owner.namespace, &v.owner.name, &v.owner.uid);
    let sts = &v.names.statefulset;
    // The cache answers for a running cluster; only its absence is confirmed with the API (the
    // cache may not have seen a StatefulSet created a moment ago).
    if cache.get(ChildKind::StatefulSet, ns, sts).is_some() {
        return Ok(None);
    }
    if ctx
        .namespaced::<StatefulSet>(ns)
        .get_metadata_opt(sts)
        .await?
        .is_some()
    {
        return Ok(None);
    }
    let selector = labels::selector_string(&labels::selector(APP, name, POSTGRES));
    let lp = ListParams::default().labels(&selector);
    let claims = ctx
        .namespaced::<PersistentVolumeClaim>(ns)
        .list_metadata(&lp)
        .await?;
    if !claims.items.is_empty() {
        return Ok(None);
    }
    if !ctx
        .namespaced::<Pod>(ns)
        .list_metadata(&lp)
        .await?
        .items
        .is_empty()
    {
        return Ok(Some(format!(
            "members of an earlier cluster named {name} are still stopping; waiting before creating new ones"
        )));
    }
    let api = ctx.namespaced::<ConfigMap>(ns);
    for cm in api.list_metadata(&lp).await?.items {
        let ours = cm
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.uid == *uid);
        if ours {
            continue;
        }
        let cm_name = cm.name_any();
        api.delete(&cm_name, &DeleteParams::default()).await?;
        let note = format!(
            "deleted Patroni's ConfigMap {cm_name}, left by an earlier cluster whose data claims are gone"
        );
        tracing::info!(%note, "stale DCS");
        publish(
            ctx,
            pc,
            EventType::Normal,
            "StaleDCSRemoved",
            "Delete",
            &note,
        )
        .await;
    }
    Ok(None)
}

/// Whether a scale-down to `members` must wait: the StatefulSet removes the highest ordinals,
/// and the leader must never be one of them.
pub fn leader_in_the_way(members: i32, leader: Option<&str>) -> bool {
    leader.is_some_and(|l| ordinal(l) >= members)
}

/// Moves the leader onto a member a scale-down to `members` keeps.
pub async fn make_room(
    ctx: &Context,
    pc: &PatroniCluster,
    pods: &[MemberPod],
    cluster: &Cluster,
) -> Result<Health> {
    let members = pc.spec.members;
    let keep: Vec<String> = pods
        .iter()
        .map(|m| m.pod.name_any())
        .filter(|n| ordinal(n) < members)
        .collect();
    let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
    let leader = cluster.leader();
    let ip = leader
        .and_then(|l| pods.iter().find(|m| m.pod.name_any() == l.name))
        .map(|m| m.ip.clone());
    let (Some(leader), Some(next), Some(ip)) =
        (leader, candidate(cluster, &keep, synchronous(pc)), ip)
    else {
        return Ok(Health::progressing(
            "Scaling",
            format!(
                "scaling down to {members} members waits for a streaming replica among the members kept"
            ),
        ));
    };
    patroni::switchover(&ip, PORT, &leader.name, &next.name).await?;
    let note = format!(
        "switched over from {} to {} before scaling down to {members} members",
        leader.name, next.name
    );
    tracing::info!(%note, "scaling");
    publish(ctx, pc, EventType::Normal, "Scaling", "Switchover", &note).await;
    Ok(Health::progressing("Scaling", note))
}

/// Takes the next step of a rolling update while the cluster is healthy; returns the health
/// to report (a roll under way is progress, not readiness).
pub async fn roll_forward(
    ctx: &Context,
    pc: &PatroniCluster,
    v: &Validated,
    revision: Option<&str>,
    pods: &[MemberPod],
    cluster: &Cluster,
    health: Health,
) -> Result<Health> {
    if !matches!(health, Health::Ready { .. }) {
        return Ok(health);
    }
    let member = |pod: &str| cluster.members.iter().find(|m| m.name == pod);
    // Asked of each member itself: the DCS copy of the flag lags a restart by a loop.
    let mut pending = Vec::new();
    for m in pods {
        match patroni::member_state(&m.ip, PORT).await {
            Ok(state) if state.pending_restart => pending.push(m.pod.name_any()),
            Ok(_) => {}
            // Going away or restarting: the next look decides.
            Err(e) => {
                tracing::debug!(error = %e, "member not answering; no rolling step now");
                return Ok(health);
            }
        }
    }
    let stale_template = |p: &Pod| {
        revision.is_some_and(|r| {
            p.labels()
                .get("controller-revision-hash")
                .map(String::as_str)
                != Some(r)
        })
    };
    let roll_pods: Vec<RollPod> = pods
        .iter()
        .map(|m| {
            let name = m.pod.name_any();
            RollPod {
                ordinal: ordinal(&name),
                outdated: stale_template(&m.pod) || pending.contains(&name),
                is_primary: member(&name).is_some_and(|x| x.role == "leader"),
                name,
            }
        })
        .collect();
    let update = async |name: &str| -> Result<String> {
        let Some(m) = pods.iter().find(|m| m.pod.name_any() == name) else {
            return Ok(format!("replica {name} is gone; the next look decides"));
        };
        if stale_template(&m.pod) {
            Api::<Pod>::namespaced(ctx.client.clone(), &v.owner.namespace)
                .delete(name, &kube::api::DeleteParams::default())
                .await?;
            Ok(format!("replacing replica {name}"))
        } else {
            patroni::restart(&m.ip, PORT).await?;
            Ok(format!(
                "restarted PostgreSQL on replica {name} for pending settings"
            ))
        }
    };
    let up_to_date: Vec<&str> = roll_pods
        .iter()
        .filter(|p| !p.outdated)
        .map(|p| p.name.as_str())
        .collect();
    let handover = async || -> Result<Handover> {
        let (Some(leader), Some(next)) = (
            cluster.leader(),
            candidate(cluster, &up_to_date, synchronous(pc)),
        ) else {
            return Ok(Handover::Waiting(
                "waiting for an up-to-date streaming replica to switch over to".into(),
            ));
        };
        let Some(ip) = pods
            .iter()
            .find(|m| m.pod.name_any() == leader.name)
            .map(|m| m.ip.clone())
        else {
            return Ok(Handover::NotNow);
        };
        patroni::switchover(&ip, PORT, &leader.name, &next.name).await?;
        Ok(Handover::Done(format!(
            "switched over from {} to {} before updating the old primary",
            leader.name, next.name
        )))
    };
    roll::drive(ctx, pc, "members", &roll_pods, health, update, handover).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, role: &str, state: &str, lag: Option<i64>) -> Member {
        Member {
            name: name.into(),
            role: role.into(),
            state: state.into(),
            lag,
            ..Member::default()
        }
    }

    #[test]
    fn a_scale_down_waits_while_the_leader_would_be_removed() {
        assert!(leader_in_the_way(2, Some("db-2")));
        assert!(!leader_in_the_way(2, Some("db-1")));
        assert!(!leader_in_the_way(3, None));
    }

    #[test]
    fn the_candidate_is_the_closest_up_to_date_streaming_replica() {
        let c = Cluster {
            members: vec![
                member("db-0", "leader", "running", None),
                member("db-1", "replica", "streaming", Some(4096)),
                member("db-2", "replica", "streaming", Some(0)),
                member("db-3", "replica", "starting", Some(0)),
            ],
        };
        let sync = Cluster {
            members: vec![
                member("db-1", "replica", "streaming", Some(0)),
                member("db-2", "sync_standby", "streaming", Some(100)),
            ],
        };
        let both = ["db-1", "db-2"];
        assert_eq!(
            candidate(&sync, &both, true).map(|m| m.name.as_str()),
            Some("db-2")
        );
        assert!(
            candidate(&sync, &["db-1"], true).is_none(),
            "only the synchronous standby"
        );
        let all = ["db-1", "db-2", "db-3"];
        assert_eq!(
            candidate(&c, &all, false).map(|m| m.name.as_str()),
            Some("db-2")
        );
        assert_eq!(
            candidate(&c, &["db-1"], false).map(|m| m.name.as_str()),
            Some("db-1")
        );
        assert!(candidate(&c, &["db-3"], false).is_none(), "not streaming");
    }
}
