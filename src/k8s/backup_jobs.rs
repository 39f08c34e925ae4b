//! Pure: the pieces every store's backups share — the claim backups land on, and a pod that
//! runs one script against it (non-root, no API token, its result in the termination
//! message) — wrapped in a CronJob (scheduled) or a Job (once).

use super::children::{Child, ChildKind};
use super::factory::{Factory, claim_spec};
use super::podspec::{empty_dir, mount, restricted_container, shell};
use crate::crd::common::BackupSpec;
use crate::error::Result;
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, PersistentVolumeClaim, PersistentVolumeClaimVolumeSource,
    PodSecurityContext, PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The claim backups go to: `(claim name, the claim to create when the spec names none)`.
pub fn claim(f: &Factory, spec: &BackupSpec, name: &str) -> Result<(String, Option<Child>)> {
    let volume = &spec.destination.volume;
    if let Some(existing) = &volume.claim_name {
        return Ok((existing.clone(), None));
    }
    let claim = PersistentVolumeClaim {
        // No owner reference: backups outlive the resource (deleting it, or dropping its
        // backup section, must not garbage-collect them), and pruning only touches owned
        // objects.
        metadata: ObjectMeta {
            owner_references: None,
            ..f.object_meta(name, "backup")
        },
        spec: Some(claim_spec(
            &volume.size,
            volume.storage_class_name.as_deref(),
        )),
        ..PersistentVolumeClaim::default()
    };
    let child = f.typed(ChildKind::PersistentVolumeClaim, &claim)?;
    Ok((name.to_string(), Some(child)))
}

/// A pod template running `script` in `image` with a scratch `/tmp` and, when given, a claim
/// at `/backup`.
pub struct ScriptPod<'a> {
    pub component: &'a str,
    pub image: &'a str,
    pub script: String,
    pub env: Vec<EnvVar>,
    pub claim: Option<&'a str>,
    pub security: PodSecurityContext,
    pub read_only_claim: bool,
}

impl ScriptPod<'_> {
    pub fn template(&self, f: &Factory) -> PodTemplateSpec {
        let mut mounts = vec![mount("tmp", "/tmp")];
        let mut volumes = vec![empty_dir("tmp")];
        if let Some(claim) = self.claim {
            mounts.insert(
                0,
                VolumeMount {
                    // Only when true: the API server drops a false, and the apply would never
                    // settle.
                    read_only: self.read_only_claim.then_some(true),
                    ..mount("backup", "/backup")
                },
            );
            let source = PersistentVolumeClaimVolumeSource {
                claim_name: claim.into(),
                ..PersistentVolumeClaimVolumeSource::default()
            };
            volumes.insert(
                0,
                Volume {
                    name: "backup".into(),
                    persistent_volume_claim: Some(source),
                    ..Volume::default()
                },
            );
        }
        let container = Container {
            name: self.component.into(),
            image: Some(self.image.into()),
            command: Some(shell(self.script.as_str())),
            env: Some(self.env.clone()),
            termination_message_policy: Some("FallbackToLogsOnError".into()),
            security_context: Some(restricted_container()),
            volume_mounts: Some(mounts),
            ..Container::default()
        };
        let pod = PodSpec {
            restart_policy: Some("Never".into()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            security_context: Some(self.security.clone()),
            containers: vec![container],
            volumes: Some(volumes),
            ..PodSpec::default()
        };
        f.pod_template(self.component, None, pod)
    }
}

fn job_spec(f: &Factory, pod: &ScriptPod) -> JobSpec {
    JobSpec {
        backoff_limit: Some(2),
        active_deadline_seconds: Some(3600),
        template: pod.template(f),
        ..JobSpec::default()
    }
}

/// A CronJob running `pod` on `schedule`: never two at once, bounded history.
pub fn cron_job(
    f: &Factory,
    name: &str,
    schedule: &str,
    spec: &BackupSpec,
    pod: &ScriptPod,
) -> Result<Child> {
    let job_template = JobTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(f.labels(pod.component)),
            ..ObjectMeta::default()
        }),
        spec: Some(job_spec(f, pod)),
    };
    let cron = CronJob {
        metadata: f.object_meta(name, pod.component),
        spec: CronJobSpec {
            schedule: schedule.into(),
            time_zone: spec.time_zone.clone(),
            suspend: Some(spec.suspend),
            concurrency_policy: Some("Forbid".into()),
            starting_deadline_seconds: Some(600),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            job_template,
        },
        ..CronJob::default()
    };
    f.typed(ChildKind::CronJob, &cron)
}

/// A Job running `pod` once.
pub fn job(f: &Factory, name: &str, pod: &ScriptPod) -> Result<Child> {
    let job = Job {
        metadata: f.object_meta(name, pod.component),
        spec: Some(job_spec(f, pod)),
        ..Job::default()
    };
    f.typed(ChildKind::Job, &job)
}
