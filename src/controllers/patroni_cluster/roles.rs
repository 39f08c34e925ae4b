//! Pure: the spec's application roles and databases — a Secret per role (generated when the
//! spec names none) and a Job that creates or updates them on the primary. The Job's name
//! carries a hash of everything it applies, so a change runs it again and an unchanged spec
//! never does.

use super::build::{Names, PG_GID, PG_UID, credential_secrets};
use super::scripts;
use crate::crd::PatroniCluster;
use crate::k8s::backup_jobs::{self, ScriptPod};
use crate::k8s::children::Child;
use crate::k8s::factory::{Factory, fnv, restricted_pod};
use kube::ResourceExt;
use serde_json::json;

/// The Secret holding role `user`'s password: the spec's, or `<cluster>-user-<role>`.
pub fn user_secret(pc: &PatroniCluster, index: usize) -> Option<String> {
    let u = pc.spec.users.get(index)?;
    Some(
        u.secret_name
            .clone()
            .unwrap_or_else(|| format!("{}-user-{}", pc.name_any(), u.name.replace('_', "-"))),
    )
}

/// Generated Secrets of the roles that name none; `passwords[i]` is used only at creation.
pub fn secrets(f: &Factory, pc: &PatroniCluster, passwords: &[String]) -> Vec<Child> {
    pc.spec
        .users
        .iter()
        .enumerate()
        .filter(|(_, u)| u.secret_name.is_none())
        .filter_map(|(i, u)| {
            let name = user_secret(pc, i)?;
            let password = passwords.get(i)?;
            Some(f.generated_secret(
                &name,
                "postgres",
                json!({"username": u.name, "password": password}),
            ))
        })
        .collect()
}

/// What the roles Job applies, hashed: the spec's roles and databases, and the versions of
/// the Secrets it reads passwords from (`secret_versions`, in spec order).
pub fn fingerprint(pc: &PatroniCluster, secret_versions: &[String]) -> String {
    let text = json!([pc.spec.users, pc.spec.databases, secret_versions]).to_string();
    fnv(&text)[..8].to_string()
}

pub fn job_name(n: &Names, fingerprint: &str) -> String {
    format!("{}-{fingerprint}", n.roles)
}

/// The Job creating the roles and databases, or `None` when the spec declares neither.
pub fn job(f: &Factory, pc: &PatroniCluster, n: &Names, fingerprint: &str) -> Option<Child> {
    if pc.spec.users.is_empty() && pc.spec.databases.is_empty() {
        return None;
    }
    let (superuser, _) = credential_secrets(pc);
    let mut env = vec![
        json!({"name": "PGUSER", "valueFrom": {"secretKeyRef": {"name": superuser, "key": "username"}}}),
        json!({"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": superuser, "key": "password"}}}),
    ];
    for i in 0..pc.spec.users.len() {
        let secret = user_secret(pc, i)?;
        env.push(json!({"name": format!("PW_{i}"), "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}}));
    }
    let pod = ScriptPod {
        component: "roles",
        image: &pc.spec.image,
        script: scripts::roles(pc),
        env,
        claim: None,
        security: restricted_pod(PG_UID, PG_GID),
        read_only_claim: false,
    };
    Some(backup_jobs::job(f, &job_name(n, fingerprint), &pod))
}
