//! Pure: the pieces every store's backups share — the claim backups land on, and a pod that
//! runs one script against it (non-root, no API token, its result in the termination
//! message) — wrapped in a CronJob (scheduled) or a Job (once).

use super::children::{Child, ChildKind};
use super::factory::{Factory, restricted_container};
use crate::crd::common::BackupSpec;
use serde_json::{Value, json};

/// The claim backups go to: `(claim name, the claim to create when the spec names none)`.
pub fn claim(f: &Factory, spec: &BackupSpec, name: &str) -> (String, Option<Child>) {
    let volume = &spec.destination.volume;
    if let Some(existing) = &volume.claim_name {
        return (existing.clone(), None);
    }
    let mut claim = json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": volume.size}}});
    if let Some(class) = &volume.storage_class_name {
        claim["storageClassName"] = json!(class);
    }
    // No owner reference: backups outlive the resource (deleting it, or dropping its backup
    // section, must not garbage-collect them), and pruning only touches owned objects.
    let mut meta = f.meta(name, "backup");
    if let Some(m) = meta.as_object_mut() {
        m.remove("ownerReferences");
    }
    let child = f.child(
        ChildKind::PersistentVolumeClaim,
        name,
        json!({"metadata": meta, "spec": claim}),
    );
    (name.to_string(), Some(child))
}

/// A pod template running `script` in `image` with a scratch `/tmp` and, when given, a claim
/// at `/backup`.
pub struct ScriptPod<'a> {
    pub component: &'a str,
    pub image: &'a str,
    pub script: String,
    pub env: Vec<Value>,
    pub claim: Option<&'a str>,
    pub security: Value,
    pub read_only_claim: bool,
}

impl ScriptPod<'_> {
    pub fn template(&self, f: &Factory) -> Value {
        let mut mounts = vec![json!({"name": "tmp", "mountPath": "/tmp"})];
        let mut volumes = vec![json!({"name": "tmp", "emptyDir": {}})];
        if let Some(claim) = self.claim {
            let mut backup = json!({"name": "backup", "mountPath": "/backup"});
            if self.read_only_claim {
                // Only when true: the API server drops a false, and the apply would never settle.
                backup["readOnly"] = json!(true);
            }
            mounts.insert(0, backup);
            volumes.insert(
                0,
                json!({"name": "backup", "persistentVolumeClaim": {"claimName": claim}}),
            );
        }
        json!({
            "metadata": {"labels": f.labels(self.component)},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "enableServiceLinks": false,
                "securityContext": self.security,
                "containers": [{
                    "name": self.component,
                    "image": self.image,
                    "command": ["sh", "-c", self.script],
                    "env": self.env,
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    "securityContext": restricted_container(),
                    "volumeMounts": mounts,
                }],
                "volumes": volumes,
            },
        })
    }
}

fn job_spec(f: &Factory, pod: &ScriptPod) -> Value {
    json!({"backoffLimit": 2, "activeDeadlineSeconds": 3600, "template": pod.template(f)})
}

/// A CronJob running `pod` on `schedule`: never two at once, bounded history.
pub fn cron_job(
    f: &Factory,
    name: &str,
    schedule: &str,
    spec: &BackupSpec,
    pod: &ScriptPod,
) -> Child {
    let mut cron = json!({
        "schedule": schedule,
        "suspend": spec.suspend,
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": 600,
        "successfulJobsHistoryLimit": 3,
        "failedJobsHistoryLimit": 3,
        "jobTemplate": {"metadata": {"labels": f.labels(pod.component)}, "spec": job_spec(f, pod)},
    });
    if let Some(tz) = &spec.time_zone {
        cron["timeZone"] = json!(tz);
    }
    f.child(
        ChildKind::CronJob,
        name,
        json!({"metadata": f.meta(name, pod.component), "spec": cron}),
    )
}

/// A Job running `pod` once.
pub fn job(f: &Factory, name: &str, pod: &ScriptPod) -> Child {
    f.child(
        ChildKind::Job,
        name,
        json!({"metadata": f.meta(name, pod.component), "spec": job_spec(f, pod)}),
    )
}
