//! Pure: the spec's application roles and databases — a Secret per role (generated when the
//! spec names none) and a Job that creates or updates them on the primary. The Job's name
//! carries a hash of everything it applies, so a change runs it again and an unchanged spec
//! never does.

use super::backup::superuser_env;
use super::names::{Names, PG_GID, PG_UID, POSTGRES, ROLES};
use super::scripts;
use super::validate::Validated;
use crate::crd::PatroniCluster;
use crate::error::Result;
use crate::k8s::backup_jobs::{self, ScriptPod};
use crate::k8s::children::Child;
use crate::k8s::factory::{Factory, fnv};
use crate::k8s::podspec::{restricted_pod, secret_env};
use serde_json::json;

/// Generated Secrets of the roles that name none; `passwords[i]` is used only at creation.
pub fn secrets(
    f: &Factory,
    pc: &PatroniCluster,
    v: &Validated,
    passwords: &[String],
) -> Result<Vec<Child>> {
    pc.spec
        .users
        .iter()
        .enumerate()
        .filter(|(_, u)| u.secret_name.is_none())
        .filter_map(|(i, u)| {
            let name = v.user_secrets.get(i)?;
            let password = passwords.get(i)?;
            Some(f.generated_secret(
                name,
                POSTGRES,
                &[("username", &u.name), ("password", password)],
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
pub fn job(
    f: &Factory,
    pc: &PatroniCluster,
    v: &Validated,
    fingerprint: &str,
) -> Result<Option<Child>> {
    if pc.spec.users.is_empty() && pc.spec.databases.is_empty() {
        return Ok(None);
    }
    let mut env = superuser_env(v);
    for (i, secret) in v.user_secrets.iter().enumerate() {
        env.push(secret_env(&format!("PW_{i}"), secret, "password"));
    }
    let pod = ScriptPod {
        component: ROLES,
        image: &pc.spec.image,
        script: scripts::roles(pc),
        env,
        claim: None,
        security: restricted_pod(PG_UID, PG_GID),
        read_only_claim: false,
    };
    backup_jobs::job(f, &job_name(&v.names, fingerprint), &pod).map(Some)
}
