//! The heal loop's edges: observe every Redis and Sentinel by pod address, then carry out a
//! plan from [`super::topology`].

use super::names::{APP, KIND, REDIS, REDIS_PORT, ROLE_REPLICA, SENTINEL, SENTINEL_PORT};
use super::topology::{self, Plan, RedisNode, SentinelNode, Step};
use super::validate::Validated;
use crate::context::Context;
use crate::crd::RedisSentinel;
use crate::error::Result;
use crate::k8s::labels;
use crate::k8s::pods::{component_pods, ordinal};
use crate::stores::redis::{self as store, Endpoint};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use std::sync::Arc;

/// The pod's address and whether a container runs now. A pod whose process is down still
/// counts: it exists, it is just unreachable (Sentinel, not we, decides what that means).
pub(crate) fn address(p: &Pod) -> Option<(String, bool)> {
    if p.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = p.status.as_ref()?;
    let up = status
        .container_statuses
        .iter()
        .flatten()
        .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()));
    Some((status.pod_ip.clone()?, up))
}

/// Pods of one component of the RedisSentinel, from the controller's pod cache.
pub fn pods(ctx: &Context, v: &Validated, component: &str) -> Vec<Arc<Pod>> {
    let store = ctx.caches.owned.pods(KIND);
    component_pods(&store, &v.owner.namespace, &v.owner.name, APP, component)
}

/// Members that answered but refused the password: (pod, the server's words).
pub type Refused = Vec<(String, String)>;

/// Logs why a member did not answer, and keeps it when the reason is the password: a member
/// refusing the password is not unreachable, and status must say which it is.
fn note(pod: &str, what: &str, e: &store::StoreError, refused: &std::sync::Mutex<Refused>) {
    if e.is_auth() {
        tracing::info!(pod, error = %e, "{what} refuses the password");
        refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((pod.to_string(), e.to_string()));
    } else {
        tracing::debug!(pod, error = %e, "{what} not reachable");
    }
}

/// Asks every Redis and Sentinel pod what it knows, all at once. Pods whose process is down
/// are kept, as unreachable; pods that refuse the password are also listed apart.
pub async fn observe(
    ctx: &Context,
    v: &Validated,
    password: &Option<String>,
) -> (Vec<RedisNode>, Vec<SentinelNode>, Refused) {
    let group = v.owner.name.clone();
    let refused = std::sync::Mutex::new(Refused::new());
    let refused = &refused;
    let redis = futures::future::join_all(pods(ctx, v, REDIS).into_iter().filter_map(|p| {
        let (ip, up) = address(&p)?;
        let ep = Endpoint {
            ip: ip.clone(),
            port: REDIS_PORT as u16,
            password: password.clone(),
        };
        Some(async move {
            let reached = match up {
                true => store::replication(&ep)
                    .await
                    .map_err(|e| note(&p.name_any(), "Redis", &e, refused))
                    .ok(),
                false => None,
            };
            let (replication, keys) = match reached {
                Some((r, k)) => (Some(r), k),
                None => (None, 0),
            };
            RedisNode {
                pod: p.name_any(),
                ordinal: ordinal(&p.name_any()),
                ip,
                replication,
                keys,
                role_label: p.labels().get(labels::ROLE).cloned(),
            }
        })
    }))
    .await;
    let sentinels = futures::future::join_all(pods(ctx, v, SENTINEL).into_iter().filter_map(|p| {
        let (ip, up) = address(&p)?;
        let ep = Endpoint {
            ip: ip.clone(),
            port: SENTINEL_PORT as u16,
            password: password.clone(),
        };
        let group = group.clone();
        Some(async move {
            let view = match up {
                true => store::sentinel_view(&ep, &group)
                    .await
                    .map_err(|e| note(&p.name_any(), "Sentinel", &e, refused))
                    .ok(),
                false => None,
            };
            SentinelNode {
                pod: p.name_any(),
                ip,
                view,
            }
        })
    }))
    .await;
    let mut refused = std::mem::take(&mut *refused.lock().unwrap_or_else(|p| p.into_inner()));
    refused.sort();
    (redis, sentinels, refused)
}

/// Sets a pod's role label; the master Service selects on it.
pub async fn label(ctx: &Context, ns: &str, pod: &str, role: &str) -> Result<()> {
    let api: Api<Pod> = ctx.namespaced(ns);
    let patch = serde_json::json!({"metadata": {"labels": {labels::ROLE: role}}});
    api.patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Carries out `plan`; returns what it did, for events and logs.
pub async fn execute(
    ctx: &Context,
    rs: &RedisSentinel,
    v: &Validated,
    plan: &Plan,
    redis: &[RedisNode],
    sentinels: &[SentinelNode],
    password: &Option<String>,
) -> Result<Vec<String>> {
    let ns = &v.owner.namespace;
    let group = v.owner.name.clone();
    let Some(master) = plan
        .master
        .as_ref()
        .and_then(|m| redis.iter().find(|n| &n.pod == m))
    else {
        return Ok(Vec::new());
    };
    let redis_ep = |pod: &str| {
        redis.iter().find(|n| n.pod == pod).map(|n| Endpoint {
            ip: n.ip.clone(),
            port: REDIS_PORT as u16,
            password: password.clone(),
        })
    };
    let sentinel_ep = |pod: &str| {
        sentinels.iter().find(|n| n.pod == pod).map(|n| Endpoint {
            ip: n.ip.clone(),
            port: SENTINEL_PORT as u16,
            password: password.clone(),
        })
    };
    let monitor = |ep: Endpoint| {
        let (group, ip) = (group.clone(), master.ip.clone());
        let quorum = rs.spec.sentinel.effective_quorum().to_string();
        let mut settings = topology::sentinel_settings(&rs.spec);
        settings.retain(|(k, _)| k != "quorum");
        let auth = password.clone();
        async move {
            store::sentinel(
                &ep,
                &["MONITOR", &group, &ip, &REDIS_PORT.to_string(), &quorum],
            )
            .await?;
            if let Some(pw) = &auth {
                store::sentinel(&ep, &["SET", &group, "auth-pass", pw]).await?;
            }
            for (k, v) in &settings {
                store::sentinel(&ep, &["SET", &group, k, v]).await?;
            }
            Ok::<(), store::StoreError>(())
        }
    };
    // Order matters: the new master first, then the Service moves (old label off before the
    // new one on, so it never selects two masters), then replicas, then Sentinels.
    let mut steps = plan.steps.clone();
    steps.sort_by_key(|s| match s {
        Step::Promote { .. } => 0,
        Step::Label {
            role: ROLE_REPLICA, ..
        } => 1,
        Step::Label { .. } => 2,
        Step::Follow { .. } => 3,
        _ => 4,
    });
    let mut done = Vec::new();
    for step in &steps {
        match step {
            Step::Promote { pod } => {
                if let Some(ep) = redis_ep(pod) {
                    store::replicaof(&ep, None).await?;
                    done.push(format!("promoted {pod} to master"));
                }
            }
            Step::Follow { pod } => {
                if let Some(ep) = redis_ep(pod) {
                    store::replicaof(&ep, Some((&master.ip, REDIS_PORT as u16))).await?;
                    done.push(format!("pointed {pod} at master {}", master.pod));
                }
            }
            Step::Label { pod, role } => {
                label(ctx, ns, pod, role).await?;
                done.push(format!("labelled {pod} {role}"));
            }
            Step::Monitor { sentinel } => {
                if let Some(ep) = sentinel_ep(sentinel) {
                    monitor(ep).await?;
                    done.push(format!("Sentinel {sentinel} now monitors {}", master.pod));
                }
            }
            Step::Remonitor { sentinel } => {
                if let Some(ep) = sentinel_ep(sentinel) {
                    store::sentinel(&ep, &["REMOVE", &group]).await?;
                    monitor(ep).await?;
                    done.push(format!(
                        "Sentinel {sentinel} watched a stale address; now monitors {}",
                        master.pod
                    ));
                }
            }
            Step::Configure { sentinel, settings } => {
                if let Some(ep) = sentinel_ep(sentinel) {
                    for (k, v) in settings {
                        store::sentinel(&ep, &["SET", &group, k, v]).await?;
                    }
                    done.push(format!("Sentinel {sentinel} settings updated"));
                }
            }
            Step::Reset { sentinel } => {
                if let Some(ep) = sentinel_ep(sentinel) {
                    store::sentinel(&ep, &["RESET", &group]).await?;
                    done.push(format!(
                        "Sentinel {sentinel} reset to forget gone replicas and Sentinels"
                    ));
                }
            }
        }
    }
    Ok(done)
}
