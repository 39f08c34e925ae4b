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
        Ok(_) => Ok(true),
        // Deleted since this reconcile began: there is no status left to report on.
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(false),
        Err(e) => Err(Error::from(e)),
    }
}
