//! Pure helpers every builder uses: metadata of a child (labels, owner reference), and the pod
//! settings all our store pods share (restricted security, placement, resources).

use super::children::{Child, ChildKind};
use super::labels;
use super::owner::Owner;
use crate::crd::common::SchedulingSpec;
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::{Value, json};
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

    pub fn meta(&self, name: &str, component: &str) -> Value {
        json!({
            "name": name,
            "namespace": self.ns,
            "labels": self.labels(component),
            "ownerReferences": self.owner,
        })
    }

    /// A child from a JSON object without apiVersion/kind (added from `kind`).
    pub fn child(&self, kind: ChildKind, name: &str, object: Value) -> Child {
        let ar = kind.api_resource();
        let mut object = object;
        if let Some(m) = object.as_object_mut() {
            m.insert("apiVersion".into(), json!(ar.api_version));
            m.insert("kind".into(), json!(ar.kind));
        }
        Child {
            kind,
            name: name.to_string(),
            object,
            initial: None,
        }
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
    pub fn typed<T>(&self, kind: ChildKind, obj: &T) -> crate::error::Result<Child>
    where
        T: serde::Serialize + kube::Resource<DynamicType = ()>,
    {
        Child::new(kind, obj).map_err(|source| crate::error::Error::Serialize {
            what: format!("{kind:?}/{}", obj.meta().name.as_deref().unwrap_or_default()),
            source,
        })
    }

    /// A Secret created once with `data` (string values) and afterwards only labelled and
    /// owned: a generated value must never change.
    pub fn generated_secret(&self, name: &str, component: &str, data: Value) -> Child {
        let mut secret = self.child(
            ChildKind::Secret,
            name,
            json!({"metadata": self.meta(name, component), "type": "Opaque"}),
        );
        let mut initial = secret.object.clone();
        initial["stringData"] = data;
        secret.initial = Some(initial);
        secret
    }
}

/// Container security of the restricted Pod Security Standard.
pub fn restricted_container() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "capabilities": {"drop": ["ALL"]},
    })
}

/// Pod security of the restricted Pod Security Standard, running as `uid`/`gid`.
pub fn restricted_pod(uid: i64, gid: i64) -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": uid,
        "runAsGroup": gid,
        "fsGroup": gid,
        // Only on first mount: a database's data directory must keep its own modes.
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

pub fn pod_ip_env() -> Value {
    json!({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
}

/// Pod placement: the user's settings, or by default a spread across zones, then hosts
/// (preferred, so a small cluster still schedules every pod).
pub fn placement(
    spec: &mut serde_json::Map<String, Value>,
    scheduling: Option<&SchedulingSpec>,
    selector: &BTreeMap<String, String>,
) {
    let s = scheduling.cloned().unwrap_or_default();
    if !s.node_selector.is_empty() {
        spec.insert("nodeSelector".into(), json!(s.node_selector));
    }
    if !s.tolerations.is_empty() {
        spec.insert("tolerations".into(), json!(s.tolerations));
    }
    if let Some(a) = &s.affinity {
        spec.insert("affinity".into(), json!(a));
    }
    if let Some(p) = &s.priority_class_name {
        spec.insert("priorityClassName".into(), json!(p));
    }
    let spread = if s.topology_spread_constraints.is_empty() {
        ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
            .iter()
            .map(|key| json!({"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": selector}}))
            .collect()
    } else {
        s.topology_spread_constraints
            .iter()
            .map(|t| json!(t))
            .collect::<Vec<_>>()
    };
    spec.insert("topologySpreadConstraints".into(), json!(spread));
}

pub fn with_resources(mut container: Value, resources: &Option<ResourceRequirements>) -> Value {
    if let (Some(r), Some(m)) = (resources, container.as_object_mut()) {
        m.insert("resources".into(), json!(r));
    }
    container
}

/// A PodDisruptionBudget that lets one pod go at a time and never holds a drain up for an
/// unhealthy pod.
pub fn disruption_budget(f: &Factory, name: &str, component: &str) -> Child {
    let spec = json!({
        "maxUnavailable": 1,
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
        "selector": {"matchLabels": f.selector(component)},
    });
    f.child(
        ChildKind::PodDisruptionBudget,
        name,
        json!({"metadata": f.meta(name, component), "spec": spec}),
    )
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
