//! Pure helpers every builder uses: the metadata of a child (labels, owner reference), a typed
//! object as a child, and the children every store has alike (generated Secrets, Services,
//! disruption budgets, data claims).

use super::children::{Child, ChildKind};
use super::labels;
use super::owner::Owner;
use super::podspec::match_labels;
use crate::crd::common::{ClaimRetention, StorageSpec};
use crate::error::Result;
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Secret, Service,
    ServicePort, ServiceSpec, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// Builds children of one custom resource: `app` names the store or app kind
/// (`redis-sentinel`, `patroni`...), `owner_kind` the custom resource's kind.
pub struct Factory {
    pub app: &'static str,
    pub owner_kind: &'static str,
    pub instance: String,
    pub ns: String,
    pub part_of: String,
    owner: Vec<OwnerReference>,
}

impl Factory {
    pub fn new(owner: &Owner, app: &'static str) -> Self {
        Self {
            app,
            owner_kind: owner.kind,
            instance: owner.name.clone(),
            ns: owner.namespace.clone(),
            part_of: owner.part_of.clone(),
            owner: vec![owner.reference.clone()],
        }
    }

    pub fn labels(&self, component: &str) -> BTreeMap<String, String> {
        labels::child(
            self.app,
            &self.instance,
            component,
            self.owner_kind,
            &self.part_of,
        )
    }

    pub fn selector(&self, component: &str) -> BTreeMap<String, String> {
        labels::selector(self.app, &self.instance, component)
    }

    /// Typed metadata of a child: name, namespace, labels, the owner reference.
    pub fn object_meta(&self, name: &str, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(self.ns.clone()),
            labels: Some(self.labels(component)),
            owner_references: Some(self.owner.clone()),
            ..ObjectMeta::default()
        }
    }

    /// A child from a typed Kubernetes object.
    pub fn typed<T>(&self, kind: ChildKind, obj: &T) -> Result<Child>
    where
        T: serde::Serialize + kube::Resource<DynamicType = ()>,
    {
        Child::new(kind, obj).map_err(|source| crate::error::Error::Serialize {
            what: format!(
                "{kind:?}/{}",
                obj.meta().name.as_deref().unwrap_or_default()
            ),
            source,
        })
    }

    /// The template of `component`'s pods: their labels and, when given, the hash of the
    /// configuration they read at start (so that a configuration change is a template change).
    pub fn pod_template(
        &self,
        component: &str,
        config_hash: Option<&str>,
        spec: PodSpec,
    ) -> PodTemplateSpec {
        let annotations =
            config_hash.map(|h| BTreeMap::from([(labels::CONFIG_HASH.to_string(), h.to_string())]));
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(self.labels(component)),
                annotations,
                ..ObjectMeta::default()
            }),
            spec: Some(spec),
        }
    }

    /// A Secret created once with `data` (string values) and afterwards only labelled and
    /// owned: a generated value must never change.
    pub fn generated_secret(
        &self,
        name: &str,
        component: &str,
        data: &[(&str, &str)],
    ) -> Result<Child> {
        let mut secret = Secret {
            metadata: self.object_meta(name, component),
            type_: Some("Opaque".into()),
            ..Secret::default()
        };
        let mut child = self.typed(ChildKind::Secret, &secret)?;
        let data = data.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        secret.string_data = Some(data.collect());
        child.initial = Some(self.typed(ChildKind::Secret, &secret)?.object);
        Ok(child)
    }

    /// A Service on `ports` (name, port; each to the container port of the same name) of the
    /// pods `selector` picks.
    pub fn service(
        &self,
        name: &str,
        component: &str,
        selector: BTreeMap<String, String>,
        ports: &[(&str, i32)],
        headless: bool,
    ) -> Result<Child> {
        let ports = ports.iter().map(|(n, p)| service_port(n, *p, n)).collect();
        self.service_on(name, component, selector, ports, headless)
    }

    /// [`Self::service`] with ports as given.
    pub fn service_on(
        &self,
        name: &str,
        component: &str,
        selector: BTreeMap<String, String>,
        ports: Vec<ServicePort>,
        headless: bool,
    ) -> Result<Child> {
        let mut spec = ServiceSpec {
            selector: Some(selector),
            ports: Some(ports),
            ..ServiceSpec::default()
        };
        if headless {
            // Members are addressed by name before they are ready (replication, Sentinel,
            // Patroni's cloning replicas).
            spec.cluster_ip = Some("None".into());
            spec.publish_not_ready_addresses = Some(true);
        }
        let svc = Service {
            metadata: self.object_meta(name, component),
            spec: Some(spec),
            ..Service::default()
        };
        self.typed(ChildKind::Service, &svc)
    }

    /// The StatefulSet `name` of `component`'s members, all started at once: members find
    /// each other by name, not by start order.
    pub fn stateful_set(&self, name: &str, component: &str, m: Members) -> Result<Child> {
        let selector = self.selector(component);
        let (claim, retention) = m.storage.map(|s| data_claim(s, &selector)).unzip();
        let sts = StatefulSet {
            metadata: self.object_meta(name, component),
            spec: Some(StatefulSetSpec {
                replicas: Some(m.replicas),
                service_name: Some(m.service.into()),
                pod_management_policy: Some("Parallel".into()),
                update_strategy: Some(StatefulSetUpdateStrategy {
                    type_: Some(m.update.into()),
                    ..StatefulSetUpdateStrategy::default()
                }),
                selector: match_labels(&selector),
                template: self.pod_template(component, Some(m.config_hash), m.pod),
                volume_claim_templates: claim.map(|c| vec![c]),
                persistent_volume_claim_retention_policy: retention,
                ..StatefulSetSpec::default()
            }),
            ..StatefulSet::default()
        };
        self.typed(ChildKind::StatefulSet, &sts)
    }
}

/// What a store's StatefulSet is made of.
pub struct Members<'a> {
    pub replicas: i32,
    /// The headless Service that gives each member its DNS name.
    pub service: &'a str,
    /// `OnDelete` (the operator rolls the pods itself) or `RollingUpdate`.
    pub update: &'a str,
    /// Hash of the configuration the pods read at start: a change rolls them.
    pub config_hash: &'a str,
    pub pod: PodSpec,
    /// A `data` claim per member, or none (the pod's volumes then hold `data`).
    pub storage: Option<&'a StorageSpec>,
}

/// A PodDisruptionBudget that lets one pod go at a time and never holds a drain up for an
/// unhealthy pod.
pub fn disruption_budget(f: &Factory, name: &str, component: &str) -> Result<Child> {
    let pdb = PodDisruptionBudget {
        metadata: f.object_meta(name, component),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            selector: Some(match_labels(&f.selector(component))),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    };
    f.typed(ChildKind::PodDisruptionBudget, &pdb)
}

/// A ReadWriteOnce claim of `size` (a quantity) in storage class `class`, the cluster's
/// default when `None`.
pub fn claim_spec(size: &str, class: Option<&str>) -> PersistentVolumeClaimSpec {
    PersistentVolumeClaimSpec {
        access_modes: Some(vec!["ReadWriteOnce".into()]),
        resources: Some(VolumeResourceRequirements {
            requests: Some(BTreeMap::from([("storage".into(), Quantity(size.into()))])),
            ..VolumeResourceRequirements::default()
        }),
        storage_class_name: class.map(Into::into),
        ..PersistentVolumeClaimSpec::default()
    }
}

/// The `data` claim template of a StatefulSet's members (labelled with their `selector`), and
/// what happens to the claims when the StatefulSet is deleted (the spec's choice) or scaled
/// down (kept: a member that comes back finds its data).
fn data_claim(
    storage: &StorageSpec,
    selector: &BTreeMap<String, String>,
) -> (
    PersistentVolumeClaim,
    StatefulSetPersistentVolumeClaimRetentionPolicy,
) {
    let template = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            labels: Some(selector.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(claim_spec(
            &storage.size,
            storage.storage_class_name.as_deref(),
        )),
        ..PersistentVolumeClaim::default()
    };
    let when_deleted = match storage.when_deleted {
        ClaimRetention::Retain => "Retain",
        ClaimRetention::Delete => "Delete",
    };
    let policy = StatefulSetPersistentVolumeClaimRetentionPolicy {
        when_deleted: Some(when_deleted.into()),
        when_scaled: Some("Retain".into()),
    };
    (template, policy)
}

/// A stable 64-bit FNV-1a hash, printed in hex: pod templates carry the hash of their
/// configuration so that a configuration change is a template change.
pub fn fnv(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// A Service port `name` on `port`, to the container port named `target`.
pub fn service_port(name: &str, port: i32, target: &str) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port,
        target_port: Some(IntOrString::String(target.to_string())),
        ..ServicePort::default()
    }
}
