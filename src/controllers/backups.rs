//! The operator's backup metrics (`guestbook_operator_backup_*`, `..._restore_check_success`),
//! set from what a store's status records, for the `BackupTooOld` and `RestoreCheckFailed`
//! alerts. Not exported while backups are suspended: a paused schedule is no alert.

use crate::context::Context;
use crate::crd::common::{BackupSpec, BackupStatus};
use crate::metrics::{Backups, ObjectLabels};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The completion of the last successful backup: `new`'s when it succeeded, else what the
/// status held (`previous`, or a successful `previous_last` from before that field existed).
pub fn last_success(
    new: Option<&BackupStatus>,
    previous: Option<Time>,
    previous_last: Option<&BackupStatus>,
) -> Option<Time> {
    let succeeded = |b: &BackupStatus| (b.succeeded == Some(true)).then(|| b.time.clone())?;
    new.and_then(succeeded)
        .or(previous)
        .or_else(|| previous_last.and_then(succeeded))
}

/// Pure: the series for a store with `spec` (none without backups or while suspended).
pub fn series(
    spec: Option<&BackupSpec>,
    last_success: Option<&Time>,
    restore_check: Option<&BackupStatus>,
    now: jiff::Timestamp,
) -> Option<Backups> {
    let spec = spec.filter(|b| !b.suspend)?;
    Some(Backups {
        last_success: last_success.map(|t| t.0.as_second()),
        interval: crate::cron::interval_seconds(&spec.schedule, spec.time_zone.as_deref(), now),
        restore_check: restore_check.and_then(|c| c.succeeded),
    })
}

/// Sets the series of one store.
pub fn observe(
    ctx: &Context,
    kind: &'static str,
    namespace: &str,
    name: &str,
    backups: Option<Backups>,
) {
    let object = ObjectLabels {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    ctx.metrics.backups(object, backups);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(succeeded: bool, at: &str) -> BackupStatus {
        BackupStatus {
            time: Some(Time(at.parse().expect("a timestamp"))),
            succeeded: Some(succeeded),
            ..BackupStatus::default()
        }
    }

    fn time(at: &str) -> Time {
        Time(at.parse().expect("a timestamp"))
    }

    #[test]
    fn a_failed_backup_keeps_the_last_success() {
        let ok = backup(true, "2026-03-04T10:00:00Z");
        let failed = backup(false, "2026-03-04T11:00:00Z");
        let earlier = time("2026-03-04T09:00:00Z");
        assert_eq!(
            last_success(Some(&ok), Some(earlier.clone()), None),
            ok.time
        );
        assert_eq!(
            last_success(Some(&failed), Some(earlier.clone()), None),
            Some(earlier)
        );
        assert_eq!(last_success(Some(&failed), None, Some(&ok)), ok.time);
        assert_eq!(last_success(None, None, Some(&failed)), None);
    }

    #[test]
    fn series_follow_the_spec() {
        let now: jiff::Timestamp = "2026-03-04T10:17:00Z".parse().expect("now");
        let spec: BackupSpec =
            serde_json::from_value(serde_json::json!({"schedule": "*/30 * * * *"})).expect("spec");
        let done = time("2026-03-04T10:00:00Z");
        let failed_check = backup(false, "2026-03-04T10:05:00Z");
        assert_eq!(
            series(Some(&spec), Some(&done), Some(&failed_check), now),
            Some(Backups {
                last_success: Some(done.0.as_second()),
                interval: Some(1800),
                restore_check: Some(false),
            })
        );
        assert_eq!(series(None, Some(&done), None, now), None);
        let suspended = BackupSpec {
            suspend: true,
            ..spec
        };
        assert_eq!(series(Some(&suspended), Some(&done), None, now), None);
    }
}
