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
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a written status is remembered (see [`Written`]).
const MEMO_TTL: Duration = Duration::from_secs(300);

/// The kstatus part every status of ours has.
pub trait KStatus: Clone + Default + PartialEq + Serialize + DeserializeOwned + Debug {
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

/// The status each object was last written with, and the resourceVersion that write
/// superseded. A reconcile that starts before the watch has delivered our own write sees the
/// superseded version: it must compare with (and compute conditions from) what was written,
/// or it writes the same status a second time (a request the audit log and a GitOps tool
/// see, and a lastTransitionTime moved).
#[derive(Debug, Default)]
pub struct Written(Mutex<HashMap<String, (String, serde_json::Value, Instant)>>);

impl Written {
    /// The freshest status known for `obj`: the one last written if `obj` is the version that
    /// write superseded, else its own.
    pub fn freshest<K>(&self, obj: &K) -> Option<K::Status>
    where
        K: Resource + HasStatus,
        K::Status: KStatus,
    {
        let mut memo = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let uid = obj.meta().uid.clone().unwrap_or_default();
        if let Some((superseded, status, _)) = memo.get(&uid) {
            if obj.meta().resource_version.as_ref() == Some(superseded) {
                if let Ok(s) = serde_json::from_value(status.clone()) {
                    return Some(s);
                }
            } else {
                // The cache has moved past our write: it knows best from here on.
                memo.remove(&uid);
            }
        }
        obj.status().cloned()
    }

    fn record<K: Resource>(&self, obj: &K, status: serde_json::Value) {
        let (Some(uid), Some(rv)) = (&obj.meta().uid, &obj.meta().resource_version) else {
            return;
        };
        let mut memo = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // A watch lags by far less than this; what is older belongs to deleted objects.
        memo.retain(|_, (_, _, at)| at.elapsed() < MEMO_TTL);
        memo.insert(uid.clone(), (rv.clone(), status, Instant::now()));
    }
}

/// Writes `desired` as the status of `obj` unless `current` (see [`Written::freshest`])
/// already is it. Returns whether it wrote.
pub async fn apply_status<K>(
    api: &Api<K>,
    obj: &K,
    current: Option<&K::Status>,
    desired: &K::Status,
    written: &Written,
) -> Result<bool>
where
    K: Resource<DynamicType = ()> + HasStatus + Clone + DeserializeOwned + Debug,
    K::Status: KStatus,
{
    if current == Some(desired) {
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
            let before = serde_json::to_value(current).unwrap_or_default();
            let after = serde_json::to_value(desired).unwrap_or_default();
            let mut moved = Vec::new();
            changed_paths(&before, &after, "status", &mut moved);
            tracing::info!(object = %name, changed = %moved.join(" "), "status written");
            written.record(obj, after);
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
    fn a_stale_copy_is_read_as_what_was_written_over_it() {
        use crate::crd::redis_sentinel::{RedisSentinel, RedisSentinelStatus};
        let at = |rv: &str, replicas: i32| {
            let mut o: RedisSentinel = serde_json::from_value(json!({
                "apiVersion": "guestbook-operator.dev/v1alpha1", "kind": "RedisSentinel",
                "metadata": {"name": "cache", "namespace": "ns", "uid": "u1", "resourceVersion": rv},
                "spec": {}
            }))
            .expect("an object");
            o.status = Some(RedisSentinelStatus {
                replicas: Some(replicas),
                ..RedisSentinelStatus::default()
            });
            o
        };
        let written = Written::default();
        let replicas = |s: Option<RedisSentinelStatus>| s.and_then(|s| s.replicas);
        assert_eq!(replicas(written.freshest(&at("1", 1))), Some(1));
        let ours = RedisSentinelStatus {
            replicas: Some(3),
            ..RedisSentinelStatus::default()
        };
        written.record(&at("1", 1), serde_json::to_value(&ours).expect("json"));
        assert_eq!(
            replicas(written.freshest(&at("1", 1))),
            Some(3),
            "stale: ours"
        );
        assert_eq!(
            replicas(written.freshest(&at("2", 2))),
            Some(2),
            "caught up: its own"
        );
        assert_eq!(
            replicas(written.freshest(&at("1", 1))),
            Some(1),
            "forgotten once caught up"
        );
    }

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
