//! Why a component's pods are not running, in the cluster's own words. A store or app that
//! only knows "not ready" or "not reachable" asks here for the most telling problem of its
//! pods (and of the claims they wait for), so the user is sent to the right object.
//! [`diagnose`] is pure; [`read_claims`] fetches the few claims it may need.

use super::conditions::Health;
use k8s_openapi::api::core::v1::{ContainerStatus, Event, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

/// Reasons this module reports, most telling first: a claim that is not bound keeps its pod
/// from being scheduled, so it explains the pod's own condition.
pub const CLAIM_PENDING: &str = "ClaimPending";
pub const IMAGE_PULL_FAILED: &str = "ImagePullFailed";
pub const CONTAINER_CONFIG_ERROR: &str = "ContainerConfigError";
pub const UNSCHEDULABLE: &str = "Unschedulable";

/// Whether `reason` is one of this module's: the object waits on the cluster or on the user,
/// and watch events (the pod, the claim) say when that changes, so it needs no fast polling.
pub fn is_diagnosis(reason: &str) -> bool {
    [
        CLAIM_PENDING,
        IMAGE_PULL_FAILED,
        CONTAINER_CONFIG_ERROR,
        UNSCHEDULABLE,
    ]
    .contains(&reason)
}

/// The health to report: one of `replaceable` (a "starting" or "not reachable" reason, which
/// would send the user to the wrong place) becomes the problem the pods show, with the
/// original message as context. Anything else stands.
pub fn explain(health: Health, trouble: Option<&Problem>, replaceable: &[&str]) -> Health {
    match (&health, trouble) {
        (Health::Progressing { reason, message }, Some(p))
            if replaceable.contains(&reason.as_str()) =>
        {
            Health::progressing(p.reason, format!("{}; {message}", p.message))
        }
        _ => health,
    }
}

/// Messages are quoted into a condition and an event note: long enough for the server's
/// words, short enough to read in `kubectl get -o wide`.
const MAX_QUOTE: usize = 400;

/// What was found, ready to become a condition: the reason and a message naming the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

/// A claim a pod waits for, as read from the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClaimSeen {
    pub name: String,
    /// `status.phase`: `Pending`, `Bound`, `Lost`; `None` when the claim does not exist.
    pub phase: Option<String>,
    pub storage_class: Option<String>,
    /// The provisioner of that class, when the class could be read.
    pub provisioner: Option<String>,
    /// The newest event about the claim (the provisioner's words), when it could be read.
    pub event: Option<String>,
}

/// The claims of pods the scheduler could not place: the only ones worth reading, since a
/// scheduled pod's claims are bound.
pub fn claims_to_check(pods: &[&Pod]) -> Vec<String> {
    let mut out: Vec<String> = pods
        .iter()
        .filter(|p| unschedulable(p).is_some())
        .flat_map(|p| p.spec.iter().flat_map(|s| s.volumes.iter().flatten()))
        .filter_map(|v| Some(v.persistent_volume_claim.as_ref()?.claim_name.clone()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// At most this many claims are read per reconcile: the first one stuck says enough.
const MAX_CLAIMS: usize = 3;

/// The claims [`claims_to_check`] names; for each Pending one its class's provisioner and the
/// newest event about it (events are a courtesy: the chart's role does not grant listing
/// them, and then the claim, its class and provisioner are reported).
pub async fn read_claims(client: &Client, ns: &str, names: &[String]) -> Vec<ClaimSeen> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let classes: Api<StorageClass> = Api::all(client.clone());
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let mut out = Vec::new();
    for name in names.iter().take(MAX_CLAIMS) {
        let claim = match claims.get_opt(name).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(claim = %name, error = %e, "could not read a claim to diagnose");
                continue;
            }
        };
        let mut seen = ClaimSeen {
            name: name.clone(),
            phase: claim.as_ref().map(|c| {
                c.status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_else(|| "Pending".into())
            }),
            storage_class: claim
                .as_ref()
                .and_then(|c| c.spec.as_ref()?.storage_class_name.clone()),
            provisioner: None,
            event: None,
        };
        if seen.phase.as_deref() == Some("Pending") {
            if let Some(class) = &seen.storage_class {
                match classes.get_opt(class).await {
                    Ok(found) => seen.provisioner = found.map(|c| c.provisioner),
                    Err(e) => tracing::debug!(%class, error = %e, "could not read a claim's class"),
                }
            }
            let fields =
                format!("involvedObject.kind=PersistentVolumeClaim,involvedObject.name={name}");
            match events.list(&ListParams::default().fields(&fields)).await {
                Ok(list) => seen.event = newest_message(&list.items),
                Err(e) => {
                    tracing::debug!(claim = %name, error = %e, "could not list the claim's events")
                }
            }
        }
        out.push(seen);
    }
    out
}

/// The message of the newest event, by the time it was last seen.
fn newest_message(events: &[Event]) -> Option<String> {
    events
        .iter()
        .filter(|e| e.message.is_some())
        .max_by_key(|e| {
            let last = e.last_timestamp.as_ref().map(|t| t.0);
            let created = e.metadata.creation_timestamp.as_ref().map(|t| t.0);
            last.or(created)
        })
        .and_then(|e| e.message.clone())
}

/// The most telling problem of `pods` and the `claims` they wait for, if there is one.
pub fn diagnose(pods: &[&Pod], claims: &[ClaimSeen]) -> Option<Problem> {
    claims
        .iter()
        .find_map(claim_problem)
        .or_else(|| {
            pods.iter()
                .find_map(|p| waiting(p, is_pull_failure, IMAGE_PULL_FAILED))
        })
        .or_else(|| {
            pods.iter()
                .find_map(|p| waiting(p, is_config_error, CONTAINER_CONFIG_ERROR))
        })
        .or_else(|| {
            pods.iter().find_map(|p| {
                let why = unschedulable(p)?;
                Some(Problem {
                    reason: UNSCHEDULABLE,
                    message: format!("Pod {} cannot be scheduled: {}", p.name_any(), quote(why)),
                })
            })
        })
}

fn claim_problem(c: &ClaimSeen) -> Option<Problem> {
    let message = match c.phase.as_deref() {
        None => format!("PersistentVolumeClaim {} does not exist", c.name),
        Some("Pending") => {
            let why = match (&c.event, &c.storage_class, &c.provisioner) {
                (Some(e), _, _) => quote(e),
                (None, Some(class), Some(p)) => format!(
                    "no volume bound yet: StorageClass \"{class}\" (provisioner {p}) has not provided one"
                ),
                (None, Some(class), None) => {
                    format!("no volume bound yet (StorageClass \"{class}\")")
                }
                (None, None, _) => "no volume bound yet (no StorageClass)".to_string(),
            };
            format!("PersistentVolumeClaim {} is Pending: {why}", c.name)
        }
        Some("Lost") => format!(
            "PersistentVolumeClaim {} is Lost: its PersistentVolume is gone",
            c.name
        ),
        Some(_) => return None,
    };
    Some(Problem {
        reason: CLAIM_PENDING,
        message,
    })
}

/// The scheduler's message while the pod's `PodScheduled` condition is False.
fn unschedulable(pod: &Pod) -> Option<&str> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let c = conditions
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
    Some(
        c.message
            .as_deref()
            .or(c.reason.as_deref())
            .unwrap_or("Unschedulable"),
    )
}

fn is_pull_failure(reason: &str) -> bool {
    matches!(
        reason,
        "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull"
    )
}

fn is_config_error(reason: &str) -> bool {
    matches!(
        reason,
        "CreateContainerConfigError" | "CreateContainerError"
    )
}

/// The first container (init containers first) of `pod` waiting with a reason `matches`.
fn waiting(pod: &Pod, matches: fn(&str) -> bool, reason: &'static str) -> Option<Problem> {
    let status = pod.status.as_ref()?;
    let containers: Vec<&ContainerStatus> = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .collect();
    containers.into_iter().find_map(|c| {
        let w = c.state.as_ref()?.waiting.as_ref()?;
        let why = w.reason.as_deref().filter(|r| matches(r))?;
        let detail = w
            .message
            .as_deref()
            .map(|m| format!(": {}", quote(m)))
            .unwrap_or_default();
        Some(Problem {
            reason,
            message: format!(
                "Pod {} container {} is waiting ({why}){detail}",
                pod.name_any(),
                c.name
            ),
        })
    })
}

/// `text` on one line, cut at [`MAX_QUOTE`] characters.
fn quote(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(MAX_QUOTE) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).expect("a pod")
    }

    fn pending_pod(name: &str, claim: &str) -> Pod {
        pod(json!({
            "metadata": {"name": name},
            "spec": {
                "containers": [{"name": "redis"}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
            },
            "status": {"phase": "Pending", "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
            }]}
        }))
    }

    #[test]
    fn a_pending_claim_explains_the_unschedulable_pod() {
        let p = pending_pod("cache-redis-0", "data-cache-redis-0");
        assert_eq!(claims_to_check(&[&p]), vec!["data-cache-redis-0"]);
        let claim = ClaimSeen {
            name: "data-cache-redis-0".into(),
            phase: Some("Pending".into()),
            storage_class: Some("slow".into()),
            provisioner: None,
            event: Some("waiting for a volume to be created either by the external provisioner 'example.com/none' or manually by the system administrator".into()),
        };
        let found = diagnose(&[&p], std::slice::from_ref(&claim)).expect("a problem");
        assert_eq!(found.reason, CLAIM_PENDING);
        assert!(
            found.message.starts_with(
                "PersistentVolumeClaim data-cache-redis-0 is Pending: waiting for a volume"
            ),
            "{}",
            found.message
        );
        // Without the event: the class and its provisioner are named.
        let quiet = ClaimSeen {
            event: None,
            provisioner: Some("example.com/none".into()),
            ..claim
        };
        let found = diagnose(&[&p], &[quiet]).expect("a problem");
        assert!(
            found
                .message
                .contains("StorageClass \"slow\" (provisioner example.com/none)"),
            "{}",
            found.message
        );
        // Without the claims: the scheduler's words.
        let found = diagnose(&[&p], &[]).expect("a problem");
        assert_eq!(found.reason, UNSCHEDULABLE);
        assert!(
            found
                .message
                .starts_with("Pod cache-redis-0 cannot be scheduled: 0/3 nodes")
        );
    }

    #[test]
    fn a_bound_claim_is_no_problem() {
        let claim = ClaimSeen {
            name: "data-0".into(),
            phase: Some("Bound".into()),
            ..ClaimSeen::default()
        };
        assert_eq!(diagnose(&[], &[claim]), None);
    }

    #[test]
    fn image_pull_failures_and_config_errors_quote_the_kubelet() {
        let pulling = pod(json!({
            "metadata": {"name": "web-1"},
            "status": {"phase": "Pending", "containerStatuses": [{
                "name": "frontend", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"registry.invalid/nope:1\""}}
            }]}
        }));
        let config = pod(json!({
            "metadata": {"name": "web-2"},
            "status": {"phase": "Pending", "initContainerStatuses": [{
                "name": "init", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "CreateContainerConfigError", "message": "couldn't find key password in Secret ns/auth"}}
            }]}
        }));
        let found = diagnose(&[&config, &pulling], &[]).expect("a problem");
        assert_eq!(found.reason, IMAGE_PULL_FAILED);
        assert_eq!(
            found.message,
            "Pod web-1 container frontend is waiting (ImagePullBackOff): Back-off pulling image \"registry.invalid/nope:1\""
        );
        let found = diagnose(&[&config], &[]).expect("a problem");
        assert_eq!(found.reason, CONTAINER_CONFIG_ERROR);
        assert!(
            found.message.contains(
                "init is waiting (CreateContainerConfigError): couldn't find key password"
            )
        );
    }

    #[test]
    fn running_and_crashing_pods_are_left_to_their_owners() {
        let running = pod(json!({
            "metadata": {"name": "ok"},
            "status": {"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [{"name": "c", "image": "x", "imageID": "", "ready": false, "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
        }));
        assert_eq!(diagnose(&[&running], &[]), None);
        assert!(claims_to_check(&[&running]).is_empty());
    }

    #[test]
    fn only_waiting_reasons_are_explained() {
        let trouble = Problem {
            reason: UNSCHEDULABLE,
            message: "Pod db-0 cannot be scheduled: 0/3 nodes are available".into(),
        };
        let starting = Health::progressing("PodsStarting", "0/1 members ready");
        let h = explain(starting.clone(), Some(&trouble), &["PodsStarting"]);
        assert_eq!(h.reason(), UNSCHEDULABLE);
        assert_eq!(
            h.message(),
            "Pod db-0 cannot be scheduled: 0/3 nodes are available; 0/1 members ready"
        );
        assert_eq!(explain(starting.clone(), None, &["PodsStarting"]), starting);
        let rolling = Health::progressing("RollingUpdate", "db-1 next");
        assert_eq!(
            explain(rolling.clone(), Some(&trouble), &["PodsStarting"]),
            rolling
        );
        let stalled = Health::stalled("PodsStarting", "odd");
        assert_eq!(
            explain(stalled.clone(), Some(&trouble), &["PodsStarting"]),
            stalled
        );
    }

    #[test]
    fn quotes_are_one_bounded_line() {
        let long = "a\nb ".repeat(400);
        let q = quote(&long);
        assert!(!q.contains('\n'));
        assert_eq!(q.chars().count(), MAX_QUOTE + 3);
    }
}
