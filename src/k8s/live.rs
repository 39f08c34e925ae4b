//! Pure: what a store's live StatefulSet runs with, and the spec changes it cannot follow.
//! The claims and the data on them were made by the live object, not by the spec as it reads
//! now: growing or adding storage, or a PostgreSQL major upgrade, needs a procedure the operator
//! does not implement yet, and applying the spec regardless fails on every reconcile (the
//! StatefulSet API refuses a new claim template) or starts new binaries on old data. The
//! reasons reported here are also what lets the CRDs' transition rules accept undoing such a
//! change (see `crd::transitions`).

use super::conditions::Health;
use crate::crd::common::StorageSpec;
use crate::crd::transitions::{
    CHANGE_IMPOSSIBLE, DOWNGRADE_IMPOSSIBLE, GROWTH_NOT_IMPLEMENTED, UPGRADE_NOT_IMPLEMENTED,
};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::DynamicObject;

/// What the live StatefulSet of a store's members says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Members {
    pub name: String,
    /// The `data` claim template: `None` when the members keep their data on emptyDirs.
    pub claim: Option<ClaimTemplate>,
    /// The PostgreSQL major version its binaries are (from `PATRONI_POSTGRESQL_BIN_DIR`).
    pub postgres_major: Option<i32>,
}

/// A claim template as the StatefulSet holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClaimTemplate {
    pub size: Option<String>,
    pub class: Option<String>,
}

/// The environment variable whose value names PostgreSQL's binaries: `/usr/lib/postgresql/<major>/bin`.
pub const BIN_DIR_ENV: &str = "PATRONI_POSTGRESQL_BIN_DIR";

impl Members {
    /// Reads a cached StatefulSet; `None` when it does not parse as one.
    pub fn of(obj: &DynamicObject) -> Option<Self> {
        let sts: StatefulSet = obj.clone().try_parse().ok()?;
        let spec = sts.spec?;
        let claim = spec
            .volume_claim_templates
            .iter()
            .flatten()
            .find(|c| c.metadata.name.as_deref() == Some("data"))
            .map(|c| {
                let s = c.spec.as_ref();
                ClaimTemplate {
                    size: s
                        .and_then(|s| s.resources.as_ref()?.requests.as_ref()?.get("storage"))
                        .map(|q| q.0.clone()),
                    class: s.and_then(|s| s.storage_class_name.clone()),
                }
            });
        let postgres_major = spec
            .template
            .spec
            .iter()
            .flat_map(|p| p.containers.iter())
            .flat_map(|c| c.env.iter().flatten())
            .find(|e| e.name == BIN_DIR_ENV)
            .and_then(|e| major_of_bin_dir(e.value.as_deref()?));
        Some(Self {
            name: obj.metadata.name.clone().unwrap_or_default(),
            claim,
            postgres_major,
        })
    }
}

/// `/usr/lib/postgresql/17/bin` → 17.
fn major_of_bin_dir(dir: &str) -> Option<i32> {
    let mut parts = dir.split('/').skip_while(|p| *p != "postgresql");
    parts.next()?;
    parts.next()?.parse().ok()
}

/// A Kubernetes quantity in bytes (`1Gi`, `1536Mi`, `2G`, `1e9`); `None` if it is not one.
pub fn quantity_bytes(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let n: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * factor)
}

/// The `Stalled` health for a storage spec the live members cannot follow, naming the field
/// (`field` is the spec path of the storage, such as `spec.redis.storage`) and what it needs.
pub fn storage_change(field: &str, spec: Option<&StorageSpec>, live: &Members) -> Option<Health> {
    let sts = &live.name;
    let (spec, claim) = match (spec, &live.claim) {
        (None, None) => return None,
        (Some(_), None) => {
            return Some(Health::stalled(
                CHANGE_IMPOSSIBLE,
                format!(
                    "{field}: set on a store whose members run on emptyDirs (StatefulSet {sts}); a StatefulSet cannot add claims: remove {field}, or create a new resource with storage and move the data"
                ),
            ));
        }
        (None, Some(_)) => {
            return Some(Health::stalled(
                CHANGE_IMPOSSIBLE,
                format!(
                    "{field}: removed from a store whose members keep their data on claims (StatefulSet {sts}); a StatefulSet cannot drop them: put {field} back"
                ),
            ));
        }
        (Some(s), Some(c)) => (s, c),
    };
    if spec.storage_class_name != claim.class {
        let show = |c: &Option<String>| c.clone().unwrap_or_else(|| "the default".into());
        return Some(Health::stalled(
            CHANGE_IMPOSSIBLE,
            format!(
                "{field}.storageClassName: {} but the claims of StatefulSet {sts} were made with {}; a claim's class never changes: set it back",
                show(&spec.storage_class_name),
                show(&claim.class)
            ),
        ));
    }
    let live_size = claim.size.as_deref()?;
    let (want, have) = (quantity_bytes(&spec.size)?, quantity_bytes(live_size)?);
    let size = &spec.size;
    if want > have {
        return Some(Health::stalled(
            GROWTH_NOT_IMPLEMENTED,
            format!(
                "{field}.size: {size} is larger than the {live_size} the claims of StatefulSet {sts} were made with; growing them is not implemented by the operator yet (a StatefulSet's claim template cannot change): set it back to {live_size}, or grow by hand: raise spec.resources.requests.storage of each claim data-{sts}-N (its StorageClass must allow volume expansion), then delete StatefulSet {sts} with --cascade=orphan so that the operator recreates it"
            ),
        ));
    }
    (want < have).then(|| {
        Health::stalled(
            CHANGE_IMPOSSIBLE,
            format!(
                "{field}.size: {size} is smaller than the {live_size} the claims of StatefulSet {sts} were made with; a claim cannot shrink: set it back to {live_size}"
            ),
        )
    })
}

/// The `Stalled` health for a PostgreSQL major version the live members' data is not, naming
/// `field` (the spec path of the version) and what a change needs.
pub fn postgres_major_change(field: &str, want: i32, live: &Members) -> Option<Health> {
    let have = live.postgres_major?;
    let sts = &live.name;
    if want > have {
        return Some(Health::stalled(
            UPGRADE_NOT_IMPLEMENTED,
            format!(
                "{field}: {want} but the cluster's data is PostgreSQL {have} (StatefulSet {sts} runs its binaries); a major upgrade (pg_upgrade, or a dump restored into the new version) is not implemented by the operator yet: set it back to {have}, or restore a backup into a new cluster of version {want} with spec.bootstrap"
            ),
        ));
    }
    (want < have).then(|| {
        Health::stalled(
            DOWNGRADE_IMPOSSIBLE,
            format!(
                "{field}: {want} but the cluster's data is PostgreSQL {have} (StatefulSet {sts}); an older PostgreSQL cannot read it: set it back to {have}"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sts(claim: Option<(&str, Option<&str>)>, bin_dir: &str) -> DynamicObject {
        let templates = claim.map(|(size, class)| {
            json!([{"metadata": {"name": "data"}, "spec": {
                "storageClassName": class,
                "resources": {"requests": {"storage": size}}
            }}])
        });
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db"},
            "spec": {
                "selector": {},
                "serviceName": "db",
                "volumeClaimTemplates": templates,
                "template": {"spec": {"containers": [{"name": "postgres", "env": [
                    {"name": "PATRONI_NAME", "value": "x"},
                    {"name": BIN_DIR_ENV, "value": bin_dir}
                ]}]}}
            }
        }))
        .expect("a StatefulSet")
    }

    fn storage(size: &str, class: Option<&str>) -> StorageSpec {
        StorageSpec {
            size: size.into(),
            storage_class_name: class.map(Into::into),
            ..StorageSpec::default()
        }
    }

    #[test]
    fn reads_the_claim_template_and_the_major_version() {
        let m = Members::of(&sts(
            Some(("1Gi", Some("fast"))),
            "/usr/lib/postgresql/17/bin",
        ))
        .expect("members");
        assert_eq!(m.name, "db");
        assert_eq!(m.postgres_major, Some(17));
        assert_eq!(
            m.claim,
            Some(ClaimTemplate {
                size: Some("1Gi".into()),
                class: Some("fast".into())
            })
        );
        assert_eq!(
            Members::of(&sts(None, "/opt/bin")).expect("members").claim,
            None
        );
    }

    #[test]
    fn quantities_compare_in_bytes() {
        assert_eq!(quantity_bytes("1Gi"), quantity_bytes("1024Mi"));
        assert!(quantity_bytes("1536Mi") > quantity_bytes("1Gi"));
        assert_eq!(quantity_bytes("2G"), Some(2e9));
        assert_eq!(quantity_bytes("1e3"), Some(1000.0));
        assert_eq!(quantity_bytes("1.5Gi"), quantity_bytes("1536Mi"));
        assert_eq!(quantity_bytes("lots"), None);
    }

    #[test]
    fn storage_changes_name_the_field_and_what_they_need() {
        let live = Members::of(&sts(Some(("1Gi", None)), "")).expect("members");
        let field = "spec.redis.storage";
        assert_eq!(
            storage_change(field, Some(&storage("1024Mi", None)), &live),
            None
        );
        let grow = storage_change(field, Some(&storage("2Gi", None)), &live).expect("stalled");
        assert_eq!(grow.reason(), "StorageGrowthNotImplemented");
        assert!(
            grow.message()
                .starts_with("spec.redis.storage.size: 2Gi is larger than the 1Gi")
        );
        assert!(grow.message().contains("--cascade=orphan"));
        let shrink = storage_change(field, Some(&storage("512Mi", None)), &live).expect("stalled");
        assert_eq!(shrink.reason(), "StorageChangeImpossible");
        let class = storage_change(field, Some(&storage("1Gi", Some("fast"))), &live);
        assert!(
            class
                .expect("stalled")
                .message()
                .starts_with("spec.redis.storage.storageClassName: fast")
        );
        let removed = storage_change(field, None, &live).expect("stalled");
        assert!(removed.message().starts_with("spec.redis.storage: removed"));
        let ephemeral = Members::of(&sts(None, "")).expect("members");
        let added = storage_change(field, Some(&storage("1Gi", None)), &ephemeral);
        assert!(
            added
                .expect("stalled")
                .message()
                .starts_with("spec.redis.storage: set on")
        );
        assert_eq!(storage_change(field, None, &ephemeral), None);
    }

    #[test]
    fn major_versions_only_stay() {
        let live = Members::of(&sts(None, "/usr/lib/postgresql/17/bin")).expect("members");
        let field = "spec.postgresql.version";
        assert_eq!(postgres_major_change(field, 17, &live), None);
        let up = postgres_major_change(field, 18, &live).expect("stalled");
        assert_eq!(up.reason(), "MajorUpgradeNotImplemented");
        assert!(
            up.message()
                .starts_with("spec.postgresql.version: 18 but the cluster's data is PostgreSQL 17")
        );
        let down = postgres_major_change(field, 16, &live).expect("stalled");
        assert_eq!(down.reason(), "MajorDowngradeImpossible");
        let unknown = Members::default();
        assert_eq!(postgres_major_change(field, 18, &unknown), None);
    }
}
