//! Status writes: server-side apply of the whole status under our field manager, and only when
//! it differs from what the object already reports (a no-op reconcile writes nothing).

use super::FIELD_MANAGER;
use crate::error::{Error, Result};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use kube::core::object::HasStatus;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// The kstatus part every status of ours has.
pub trait KStatus: Clone + Default + PartialEq + Serialize + Debug {
    fn conditions(&self) -> &[Condition];
    fn set_kstatus(&mut self, observed_generation: Option<i64>, conditions: Vec<Condition>);
}

/// Implements [`KStatus`] for status structs with `observed_generation` and `conditions` fields.
#[macro_export]
macro_rules! impl_kstatus {
    ($($status:ty),+ $(,)?) => {$(
        impl $crate::k8s::status::KStatus for $status {
            fn conditions(&self) -> &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition] {
                &self.conditions
            }
            fn set_kstatus(
                &mut self,
                observed_generation: Option<i64>,
                conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
            ) {
                self.observed_generation = observed_generation;
                self.conditions = conditions;
            }
        }
    )+};
}

impl_kstatus!(
    crate::crd::redis_sentinel::RedisSentinelStatus,
    crate::crd::patroni_cluster::PatroniClusterStatus,
    crate::crd::guestbook::GuestbookStatus,
    crate::crd::vote_app::VoteAppStatus,
);

/// Writes `desired` as the status of `obj` unless it already is. Returns whether it wrote.
pub async fn apply_status<K>(api: &Api<K>, obj: &K, desired: &K::Status) -> Result<bool>
where
    K: Resource<DynamicType = ()> + HasStatus + Clone + DeserializeOwned + Debug,
    K::Status: KStatus,
{
    if obj.status() == Some(desired) {
        return Ok(false);
    }
    let name = obj.name_any();
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": desired,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch_status(&name, &params, &Patch::Apply(&body)).await {
        Ok(_) => {
            // What moved, by path: why a status was written is otherwise hard to tell
            // afterwards, and every write is a change a GitOps tool and the audit log see.
            let before = serde_json::to_value(obj.status()).unwrap_or_default();
            let after = serde_json::to_value(desired).unwrap_or_default();
            let mut moved = Vec::new();
            changed_paths(&before, &after, "status", &mut moved);
            tracing::info!(object = %name, changed = %moved.join(" "), "status written");
            Ok(true)
        }
        // Deleted since this reconcile began: there is no status left to report on.
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(false),
        Err(e) => Err(Error::from(e)),
    }
}

/// The paths (`status.members[1].role`) at which `before` and `after` differ, at most
/// [`MAX_PATHS`] of them; a value that appeared or went counts as one path.
fn changed_paths(
    before: &serde_json::Value,
    after: &serde_json::Value,
    at: &str,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    if before == after || out.len() >= MAX_PATHS {
        return;
    }
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            let keys: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
            for k in keys {
                let none = Value::Null;
                let (x, y) = (b.get(k).unwrap_or(&none), a.get(k).unwrap_or(&none));
                changed_paths(x, y, &format!("{at}.{k}"), out);
            }
        }
        (Value::Array(b), Value::Array(a)) if b.len() == a.len() => {
            for (i, (x, y)) in b.iter().zip(a).enumerate() {
                changed_paths(x, y, &format!("{at}[{i}]"), out);
            }
        }
        _ => out.push(at.to_string()),
    }
}

const MAX_PATHS: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changed_paths_name_what_moved() {
        let before = json!({"leader": "db-0", "members": [{"name": "db-1", "role": "replica"}]});
        let after = json!({"leader": "db-0", "members": [{"name": "db-1", "role": "sync_standby"}], "replicas": 2});
        let mut out = Vec::new();
        changed_paths(&before, &after, "status", &mut out);
        assert_eq!(out, ["status.members[0].role", "status.replicas"]);
        let mut out = Vec::new();
        changed_paths(
            &json!({"members": [1]}),
            &json!({"members": [1, 2]}),
            "status",
            &mut out,
        );
        assert_eq!(out, ["status.members"]);
    }
}
