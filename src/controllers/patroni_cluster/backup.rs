//! Pure: backups of a PatroniCluster (`pg_dump -Fc` per database on a schedule), the scheduled
//! restore check, and the one-off restore that fills a new cluster from a backup.

use super::names::{BACKUP, PG_GID, PG_UID, RESTORE, RESTORE_CHECK};
use super::scripts;
use super::validate::Validated;
use crate::crd::PatroniCluster;
use crate::error::Result;
use crate::k8s::backup_jobs::{self, ScriptPod};
use crate::k8s::children::Child;
use crate::k8s::factory::Factory;
use crate::k8s::podspec::{self, restricted_pod, secret_env};
use k8s_openapi::api::core::v1::EnvVar;

/// The superuser's name and password, from its Secret.
pub fn superuser_env(v: &Validated) -> Vec<EnvVar> {
    let superuser = &v.superuser_secret;
    vec![
        secret_env("PGUSER", superuser, "username"),
        secret_env("PGPASSWORD", superuser, "password"),
    ]
}

/// The backup claim, CronJob and, when scheduled, the restore-check CronJob.
pub fn scheduled(f: &Factory, pc: &PatroniCluster, v: &Validated) -> Result<Vec<Child>> {
    let n = &v.names;
    let Some(b) = &pc.spec.backup else {
        return Ok(Vec::new());
    };
    let (claim, new_claim) = backup_jobs::claim(f, &b.common, &n.backup)?;
    let mut env = superuser_env(v);
    env.push(podspec::env("RETENTION", b.common.retention.to_string()));
    let backup = ScriptPod {
        component: BACKUP,
        image: &pc.spec.image,
        script: scripts::backup(pc),
        env,
        claim: Some(&claim),
        security: restricted_pod(PG_UID, PG_GID),
        read_only_claim: false,
    };
    let mut out: Vec<Child> = new_claim.into_iter().collect();
    out.push(backup_jobs::cron_job(
        f,
        &n.backup,
        &b.common.schedule,
        &b.common,
        &backup,
    )?);
    if let Some(schedule) = &b.restore_check_schedule {
        // The check restores into a scratch server of its own: it needs no credentials and
        // only reads the claim.
        let check = ScriptPod {
            component: RESTORE_CHECK,
            image: &pc.spec.image,
            script: scripts::restore_check(pc),
            env: Vec::new(),
            claim: Some(&claim),
            security: restricted_pod(PG_UID, PG_GID),
            read_only_claim: true,
        };
        out.push(backup_jobs::cron_job(
            f,
            &n.restore_check,
            schedule,
            &b.common,
            &check,
        )?);
    }
    Ok(out)
}

/// The Job restoring `spec.bootstrap.fromBackup` into the new cluster's primary, when the
/// spec asks for one.
pub fn restore(f: &Factory, pc: &PatroniCluster, v: &Validated) -> Result<Option<Child>> {
    let Some(bootstrap) = &pc.spec.bootstrap else {
        return Ok(None);
    };
    let from = &bootstrap.from_backup;
    let mut env = superuser_env(v);
    env.push(podspec::env(
        "SOURCE",
        from.file.clone().unwrap_or_default(),
    ));
    let pod = ScriptPod {
        component: RESTORE,
        image: &pc.spec.image,
        script: scripts::restore(pc),
        env,
        claim: Some(&from.claim_name),
        security: restricted_pod(PG_UID, PG_GID),
        read_only_claim: true,
    };
    backup_jobs::job(f, &v.names.restore, &pod).map(Some)
}
