//! Pure: what backup, restore and restore-check pods report in their termination message (a
//! JSON report on success, the reason on failure) — results are read, never assumed from a
//! schedule.

use crate::crd::common::BackupStatus;
use crate::k8s::conditions::Extra;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// What a backup pod wrote to its termination log.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    file: String,
    #[serde(default)]
    size_bytes: Option<i64>,
}

struct Finished<'a> {
    pod: &'a Pod,
    succeeded: bool,
    at: Time,
    message: String,
}

fn finished(pod: &Pod) -> Option<Finished<'_>> {
    let state = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .terminated
        .as_ref()?;
    Some(Finished {
        pod,
        succeeded: state.exit_code == 0,
        at: state.finished_at.clone()?,
        message: state.message.clone().unwrap_or_default(),
    })
}

fn job_of(pod: &Pod) -> Option<String> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.kind == "Job")
        .map(|r| r.name.clone())
}

fn finished_pods<'a>(pods: &[&'a Pod]) -> Vec<Finished<'a>> {
    let mut done: Vec<Finished> = pods.iter().filter_map(|p| finished(p)).collect();
    done.sort_by_key(|f| f.at.0);
    done
}

/// The last line of a failure message, bounded.
fn reason(f: &Finished) -> String {
    f.message
        .lines()
        .last()
        .unwrap_or("no message")
        .chars()
        .take(300)
        .collect()
}

fn status(f: &Finished) -> Option<BackupStatus> {
    let report: Report = serde_json::from_str(f.message.trim()).ok()?;
    Some(BackupStatus {
        time: Some(f.at.clone()),
        job: job_of(f.pod),
        file: Some(report.file),
        size_bytes: report.size_bytes,
        succeeded: Some(true),
        message: None,
    })
}

/// The newest successful backup, and a warning condition if the newest attempt failed.
pub fn last(backup_pods: &[&Pod]) -> (Option<BackupStatus>, Option<Extra>) {
    let done = finished_pods(backup_pods);
    let success = done.iter().rev().find(|f| f.succeeded).and_then(status);
    let failing = done.last().filter(|f| !f.succeeded).map(|f| Extra {
        type_: "BackupFailed",
        status: true,
        reason: "LastBackupFailed".into(),
        message: format!(
            "backup Job {} failed: {}",
            job_of(f.pod).unwrap_or_default(),
            reason(f)
        ),
    });
    (success, failing)
}

/// The newest finished attempt, successful or not (a restore check, a restore).
pub fn newest(pods: &[&Pod]) -> Option<BackupStatus> {
    let done = finished_pods(pods);
    let f = done.last()?;
    if f.succeeded
        && let Some(s) = status(f)
    {
        return Some(s);
    }
    Some(BackupStatus {
        time: Some(f.at.clone()),
        job: job_of(f.pod),
        file: None,
        size_bytes: None,
        succeeded: Some(false),
        message: Some(if f.succeeded {
            format!("unreadable report: {}", reason(f))
        } else {
            reason(f)
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(job: &str, code: i32, at: &str, message: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{job}-x"), "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": "u"}]},
            "status": {"containerStatuses": [{"name": "backup", "image": "r", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "finishedAt": at, "message": message}}}]}
        }))
        .expect("pod")
    }

    #[test]
    fn the_newest_success_is_reported_with_what_it_wrote() {
        let a = pod(
            "b-1",
            0,
            "2026-01-01T01:00:00Z",
            r#"{"file":"cache-1.rdb","sizeBytes":100,"source":"x"}"#,
        );
        let b = pod(
            "b-2",
            0,
            "2026-01-01T02:00:00Z",
            r#"{"file":"cache-2.rdb","sizeBytes":200,"source":"x"}"#,
        );
        let (last, warn) = last(&[&b, &a]);
        let last = last.expect("a backup");
        assert_eq!(last.file.as_deref(), Some("cache-2.rdb"));
        assert_eq!(last.size_bytes, Some(200));
        assert!(last.message.is_none());
        assert_eq!(last.job.as_deref(), Some("b-2"));
        assert!(warn.is_none());
    }

    #[test]
    fn a_failed_newest_attempt_warns_but_keeps_the_last_good_one() {
        let ok = pod(
            "b-1",
            0,
            "2026-01-01T01:00:00Z",
            r#"{"file":"cache-1.rdb","sizeBytes":100}"#,
        );
        let bad = pod(
            "b-2",
            1,
            "2026-01-01T02:00:00Z",
            "no reachable Redis member",
        );
        let (last, warn) = last(&[&ok, &bad]);
        assert_eq!(last.and_then(|l| l.file).as_deref(), Some("cache-1.rdb"));
        assert!(
            warn.expect("warning")
                .message
                .contains("no reachable Redis member")
        );
    }

    #[test]
    fn an_unreadable_report_is_not_a_backup() {
        let odd = pod("b-1", 0, "2026-01-01T01:00:00Z", "done");
        assert!(last(&[&odd]).0.is_none());
        assert_eq!(newest(&[&odd]).and_then(|s| s.succeeded), Some(false));
    }

    #[test]
    fn the_newest_check_is_reported_whether_it_passed_or_not() {
        let ok = pod(
            "c-1",
            0,
            "2026-01-01T01:00:00Z",
            r#"{"file":"db-1","databases":["postgres"],"tables":3}"#,
        );
        let bad = pod(
            "c-2",
            1,
            "2026-01-01T02:00:00Z",
            "pg_restore: error\ndb-2/postgres.dump does not restore",
        );
        let passed = newest(&[&ok]).expect("a check");
        assert_eq!(
            (passed.succeeded, passed.file.as_deref()),
            (Some(true), Some("db-1"))
        );
        let failed = newest(&[&ok, &bad]).expect("a check");
        assert_eq!(failed.succeeded, Some(false));
        assert_eq!(
            failed.message.as_deref(),
            Some("db-2/postgres.dump does not restore")
        );
        assert_eq!(failed.job.as_deref(), Some("c-2"));
    }
}
