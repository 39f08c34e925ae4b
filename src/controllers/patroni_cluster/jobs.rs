//! What the cluster's Jobs (backup, restore check, restore, roles) report, read from their
//! pods and conditions, and the health a pending restore or roles Job means.

use super::names::{APP, KIND, ROLES};
use super::validate::Validated;
use crate::context::Context;
use crate::controllers::job_results;
use crate::crd::PatroniCluster;
use crate::crd::common::BackupStatus;
use crate::k8s::cache::ChildCache;
use crate::k8s::children::ChildKind;
use crate::k8s::conditions::Health;
use crate::k8s::pods::component_pods;
use k8s_openapi::api::core::v1::Pod;
use std::sync::Arc;

/// Pods of one component of the cluster: `postgres` (members) or a Job's (`backup`, `restore-check`, `restore`, `roles`).
pub fn job_pods(ctx: &Context, v: &Validated, component: &str) -> Vec<Arc<Pod>> {
    let store = ctx.caches.owned.pods(KIND);
    component_pods(&store, &v.owner.namespace, &v.owner.name, APP, component)
}

/// The newest finished attempt of one of the cluster's Jobs.
pub fn newest_result(ctx: &Context, v: &Validated, component: &str) -> Option<BackupStatus> {
    let pods = job_pods(ctx, v, component);
    job_results::newest(&pods.iter().map(AsRef::as_ref).collect::<Vec<_>>())
}

/// Whether a Job has condition `type` True (`Complete`, `Failed`).
fn job_condition(cache: &ChildCache, ns: &str, name: &str, type_: &str) -> bool {
    cache
        .get(ChildKind::Job, ns, name)
        .and_then(|j| j.data.get("status")?.get("conditions")?.as_array().cloned())
        .is_some_and(|c| {
            c.iter().any(|c| {
                c.get("type").and_then(|t| t.as_str()) == Some(type_)
                    && c.get("status").and_then(|t| t.as_str()) == Some("True")
            })
        })
}

/// Whether a Job gave up.
pub fn job_failed(cache: &ChildCache, ns: &str, name: &str) -> bool {
    job_condition(cache, ns, name, "Failed")
}

pub fn job_succeeded(cache: &ChildCache, ns: &str, name: &str) -> bool {
    job_condition(cache, ns, name, "Complete")
}

/// Health while `spec.bootstrap` has not been restored yet; `None` once it has (or without one).
pub fn restore_health(
    pc: &PatroniCluster,
    v: &Validated,
    done: bool,
    failed: Option<&BackupStatus>,
    leader: bool,
) -> Option<Health> {
    let from = &pc.spec.bootstrap.as_ref()?.from_backup;
    if done {
        return None;
    }
    let names = &v.names;
    if let Some(f) = failed {
        return Some(Health::stalled(
            "RestoreFailed",
            format!(
                "spec.bootstrap.fromBackup: restore Job {} failed: {}; fix the cause, then delete the Job to retry",
                names.restore,
                f.message.as_deref().unwrap_or("no message")
            ),
        ));
    }
    Some(Health::progressing(
        "Restoring",
        if leader {
            format!(
                "restoring {} from claim {} into the primary",
                from.file.as_deref().unwrap_or("the newest backup"),
                from.claim_name
            )
        } else {
            "waiting for a primary to restore spec.bootstrap.fromBackup into".to_string()
        },
    ))
}

/// Health while the roles Job has not completed; `None` once it has.
pub fn roles_health(
    ctx: &Context,
    v: &Validated,
    cache: &ChildCache,
    job: &str,
    health: &Health,
) -> Option<Health> {
    let ns = &v.owner.namespace;
    if job_succeeded(cache, ns, job) {
        return None;
    }
    if job_failed(cache, ns, job) {
        let why = newest_result(ctx, v, ROLES)
            .and_then(|r| r.message)
            .unwrap_or_else(|| "no message".into());
        return Some(Health::stalled(
            "RolesFailed",
            format!(
                "spec.users/spec.databases: Job {job} failed: {why}; fix the cause, then delete the Job to retry"
            ),
        ));
    }
    // Only a cluster that is otherwise ready waits on its roles.
    matches!(health, Health::Ready { .. }).then(|| {
        Health::progressing(
            "CreatingRoles",
            format!("Job {job} creates the roles and databases of the spec"),
        )
    })
}
