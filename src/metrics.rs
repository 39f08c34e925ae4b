//! Prometheus metrics served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: &'static str,
    pub reason: &'static str,
}

/// One custom resource of ours.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ObjectLabels {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

/// What a store's status says of its backups, as the backup alerts need it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Backups {
    /// Completion of the last successful backup, in Unix seconds.
    pub last_success: Option<i64>,
    /// Seconds between the next two fire times of the schedule.
    pub interval: Option<i64>,
    /// The last restore check (PatroniCluster), once there was one.
    pub restore_check: Option<bool>,
}

/// Tells whether an object still exists: series of objects that are gone are dropped.
type Exists = Box<dyn Fn(&ObjectLabels) -> bool + Send + Sync>;

/// The operator's metrics and the registry that exposes them.
pub struct Metrics {
    pub registry: Registry,
    reconciles: Family<KindLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<KindLabels, Histogram>,
    /// 1 while this replica holds the leader Lease (or runs without election).
    pub leader: Gauge,
    follow: Histogram,
    backup_last_success: Family<ObjectLabels, Gauge>,
    backup_interval: Family<ObjectLabels, Gauge>,
    restore_check: Family<ObjectLabels, Gauge>,
    /// The objects with backup series: a Family cannot list its own label sets.
    backed_up: Mutex<BTreeSet<ObjectLabels>>,
    exists: OnceLock<Exists>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("guestbook_operator");
        let reconciles = Family::<KindLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        let leader = Gauge::default();
        let follow = Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]);
        registry.register("reconciles", "Reconciles run, by kind", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by kind and reason",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time a reconcile takes, by kind",
            duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica is the active leader",
            leader.clone(),
        );
        let backup_last_success = Family::<ObjectLabels, Gauge>::default();
        let backup_interval = Family::<ObjectLabels, Gauge>::default();
        let restore_check = Family::<ObjectLabels, Gauge>::default();
        registry.register(
            "backup_last_success_timestamp_seconds",
            "Completion time of the last successful scheduled backup (status.lastSuccessfulBackup)",
            backup_last_success.clone(),
        );
        registry.register(
            "backup_schedule_interval_seconds",
            "Seconds between the next two fire times of spec.backup.schedule, in its time zone",
            backup_interval.clone(),
        );
        registry.register(
            "restore_check_success",
            "1 when the last restore check of the newest backup succeeded, 0 when it failed",
            restore_check.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            leader,
            follow,
            backup_last_success,
            backup_interval,
            restore_check,
            backed_up: Mutex::default(),
            exists: OnceLock::new(),
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, kind: &'static str, took: Duration) {
        self.reconciles.get_or_create(&KindLabels { kind }).inc();
        self.duration
            .get_or_create(&KindLabels { kind })
            .observe(took.as_secs_f64());
    }

    pub fn master_followed(&self, took: Duration) {
        self.follow.observe(took.as_secs_f64());
    }

    pub fn failed(&self, kind: &'static str, reason: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels { kind, reason })
            .inc();
    }

    /// Sets the backup series of `object`; `None` (no backups, or suspended) removes them.
    pub fn backups(&self, object: ObjectLabels, backups: Option<Backups>) {
        let b = backups.unwrap_or_default();
        let set = |family: &Family<ObjectLabels, Gauge>, value: Option<i64>| match value {
            Some(v) => {
                family.get_or_create(&object).set(v);
            }
            None => {
                family.remove(&object);
            }
        };
        set(&self.backup_last_success, b.last_success);
        set(&self.backup_interval, b.interval);
        set(&self.restore_check, b.restore_check.map(i64::from));
        let mut known = self.backed_up.lock().unwrap_or_else(|p| p.into_inner());
        match backups {
            Some(_) => known.insert(object),
            None => known.remove(&object),
        };
    }

    /// How to tell that an object still exists (the controllers' caches): set once, when
    /// they are built. Before, no series is dropped.
    pub fn set_exists(&self, exists: Exists) {
        let _ = self.exists.set(exists);
    }

    /// Drops the backup series of objects that are gone: a deleted store reconciles no more.
    fn forget_deleted(&self) {
        let Some(exists) = self.exists.get() else {
            return;
        };
        let gone: Vec<ObjectLabels> = {
            let known = self.backed_up.lock().unwrap_or_else(|p| p.into_inner());
            known.iter().filter(|o| !exists(o)).cloned().collect()
        };
        for object in gone {
            self.backups(object, None);
        }
    }

    /// The registry in the Prometheus text format.
    pub fn encode(&self) -> String {
        self.forget_deleted();
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn store(name: &str) -> ObjectLabels {
        ObjectLabels {
            kind: "PatroniCluster",
            namespace: "shop".into(),
            name: name.into(),
        }
    }

    #[test]
    fn backup_series_follow_the_status_and_go_with_the_object() {
        let m = Metrics::default();
        let alive = Arc::new(AtomicBool::new(true));
        let a = alive.clone();
        m.set_exists(Box::new(move |o| {
            o.name != "db" || a.load(Ordering::SeqCst)
        }));
        let labels = r#"{kind="PatroniCluster",namespace="shop",name="db"}"#;
        m.backups(
            store("db"),
            Some(Backups {
                last_success: Some(1_700_000_000),
                interval: Some(3600),
                restore_check: None,
            }),
        );
        let text = m.encode();
        assert!(
            text.contains(&format!(
                "guestbook_operator_backup_last_success_timestamp_seconds{labels} 1700000000"
            )),
            "{text}"
        );
        assert!(text.contains(&format!(
            "guestbook_operator_backup_schedule_interval_seconds{labels} 3600"
        )));
        assert!(
            !text.contains("guestbook_operator_restore_check_success{"),
            "absent before the first check"
        );
        m.backups(
            store("db"),
            Some(Backups {
                last_success: Some(1_700_000_000),
                interval: Some(3600),
                restore_check: Some(false),
            }),
        );
        assert!(m.encode().contains(&format!(
            "guestbook_operator_restore_check_success{labels} 0"
        )));
        // Suspended: no series at all.
        m.backups(store("db"), None);
        assert!(!m.encode().contains(labels));
        // Deleted: dropped at the next scrape.
        m.backups(
            store("db"),
            Some(Backups {
                interval: Some(60),
                ..Backups::default()
            }),
        );
        assert!(m.encode().contains(labels));
        alive.store(false, Ordering::SeqCst);
        assert!(!m.encode().contains(labels));
    }
}
