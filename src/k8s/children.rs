//! The kinds of object the operator creates, and a desired child as the apply path sees it.

use kube::api::ApiResource;
use serde_json::Value;

/// Every kind a controller may create. The order is the apply order: configuration before
/// the workloads that read it (StatefulSets after their ConfigMaps and Secrets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChildKind {
    ServiceAccount,
    Role,
    RoleBinding,
    Secret,
    ConfigMap,
    PersistentVolumeClaim,
    Service,
    NetworkPolicy,
    PodDisruptionBudget,
    /// An app's own stores: custom resources the store controllers build from.
    RedisSentinel,
    PatroniCluster,
    StatefulSet,
    Deployment,
    HorizontalPodAutoscaler,
    Ingress,
    CronJob,
    Job,
    /// Prometheus Operator objects (`monitoring.coreos.com/v1`): watched and applied only
    /// where the API server serves them (see [`super::monitoring`]).
    ServiceMonitor,
    PodMonitor,
}

impl ChildKind {
    pub const ALL: [ChildKind; 19] = [
        ChildKind::ServiceAccount,
        ChildKind::Role,
        ChildKind::RoleBinding,
        ChildKind::Secret,
        ChildKind::ConfigMap,
        ChildKind::PersistentVolumeClaim,
        ChildKind::Service,
        ChildKind::NetworkPolicy,
        ChildKind::PodDisruptionBudget,
        ChildKind::RedisSentinel,
        ChildKind::PatroniCluster,
        ChildKind::StatefulSet,
        ChildKind::Deployment,
        ChildKind::HorizontalPodAutoscaler,
        ChildKind::Ingress,
        ChildKind::CronJob,
        ChildKind::Job,
        ChildKind::ServiceMonitor,
        ChildKind::PodMonitor,
    ];

    pub fn api_resource(self) -> ApiResource {
        use k8s_openapi::api::{
            apps::v1 as apps, autoscaling::v2 as autoscaling, batch::v1 as batch, core::v1 as core,
        };
        use k8s_openapi::api::{
            networking::v1 as networking, policy::v1 as policy, rbac::v1 as rbac,
        };
        match self {
            ChildKind::ServiceAccount => ApiResource::erase::<core::ServiceAccount>(&()),
            ChildKind::Role => ApiResource::erase::<rbac::Role>(&()),
            ChildKind::RoleBinding => ApiResource::erase::<rbac::RoleBinding>(&()),
            ChildKind::Secret => ApiResource::erase::<core::Secret>(&()),
            ChildKind::ConfigMap => ApiResource::erase::<core::ConfigMap>(&()),
            ChildKind::PersistentVolumeClaim => {
                ApiResource::erase::<core::PersistentVolumeClaim>(&())
            }
            ChildKind::Service => ApiResource::erase::<core::Service>(&()),
            ChildKind::NetworkPolicy => ApiResource::erase::<networking::NetworkPolicy>(&()),
            ChildKind::PodDisruptionBudget => {
                ApiResource::erase::<policy::PodDisruptionBudget>(&())
            }
            ChildKind::RedisSentinel => ApiResource::erase::<crate::crd::RedisSentinel>(&()),
            ChildKind::PatroniCluster => ApiResource::erase::<crate::crd::PatroniCluster>(&()),
            ChildKind::StatefulSet => ApiResource::erase::<apps::StatefulSet>(&()),
            ChildKind::Deployment => ApiResource::erase::<apps::Deployment>(&()),
            ChildKind::HorizontalPodAutoscaler => {
                ApiResource::erase::<autoscaling::HorizontalPodAutoscaler>(&())
            }
            ChildKind::Ingress => ApiResource::erase::<networking::Ingress>(&()),
            ChildKind::CronJob => ApiResource::erase::<batch::CronJob>(&()),
            ChildKind::Job => ApiResource::erase::<batch::Job>(&()),
            ChildKind::ServiceMonitor => {
                ApiResource::erase::<super::monitoring::ServiceMonitor>(&())
            }
            ChildKind::PodMonitor => ApiResource::erase::<super::monitoring::PodMonitor>(&()),
        }
    }

    /// A Prometheus Operator kind: an add-on API the cluster may not serve.
    pub fn is_monitoring(self) -> bool {
        matches!(self, ChildKind::ServiceMonitor | ChildKind::PodMonitor)
    }

    pub fn of(kind: &str) -> Option<ChildKind> {
        ChildKind::ALL
            .into_iter()
            .find(|k| k.api_resource().kind == kind)
    }
}

/// One object a controller wants to exist, exactly as it would be applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Child {
    pub kind: ChildKind,
    pub name: String,
    /// The full object (apiVersion, kind, metadata, spec/data): what server-side apply gets.
    pub object: Value,
    /// Created once with this content when absent, then only `object` is applied (for
    /// Secrets whose generated value must never change).
    pub initial: Option<Value>,
}

impl Child {
    /// A child from a typed Kubernetes object.
    pub fn new<T: serde::Serialize + kube::Resource<DynamicType = ()>>(
        kind: ChildKind,
        obj: &T,
    ) -> Result<Self, serde_json::Error> {
        let mut object = serde_json::to_value(obj)?;
        if let Some(map) = object.as_object_mut() {
            map.insert(
                "apiVersion".into(),
                Value::String(T::api_version(&()).into_owned()),
            );
            map.insert("kind".into(), Value::String(T::kind(&()).into_owned()));
        }
        let name = obj.meta().name.clone().unwrap_or_default();
        Ok(Self {
            kind,
            name,
            object,
            initial: None,
        })
    }
}
