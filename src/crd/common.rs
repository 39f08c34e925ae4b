//! Types shared by the four kinds: storage, backups, exporters, scheduling, status.

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::KubeSchema;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The API group all four kinds live in.
pub const GROUP: &str = "guestbook-operator.dev";
/// `kubectl get guestbook-operator` lists every kind of ours.
pub const CATEGORY: &str = "guestbook-operator";

/// Persistent storage for a store's data directory. Admission refuses a smaller size or another
/// class; a larger size is accepted and the store's status says what growing the claims needs.
// The rules live at the root of each kind (crd::transitions), where the status tells a change
// the store could not follow from one it ran.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each member's PersistentVolumeClaim, as a Kubernetes quantity (for example `10Gi`).
    /// May grow (the operator reports what growing the running claims needs), never shrink.
    #[serde(default = "default_storage_size")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("must be a positive quantity such as 1Gi"))]
    pub size: String,
    /// StorageClass of the claims; the cluster's default class when omitted. Fixed once the
    /// claims exist (a claim's class cannot change; a StatefulSet cannot change its
    /// volumeClaimTemplates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub storage_class_name: Option<String>,
    /// What happens to the claims (and so the data) when the resource is deleted: `Retain`
    /// (default) keeps them, `Delete` removes them with the resource.
    #[serde(default)]
    pub when_deleted: ClaimRetention,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
            when_deleted: ClaimRetention::Retain,
        }
    }
}

fn default_storage_size() -> String {
    "1Gi".into()
}

/// Whether PersistentVolumeClaims outlive their owner.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ClaimRetention {
    /// Keep the claims and their data after the resource is deleted.
    #[default]
    Retain,
    /// Delete the claims together with the resource.
    Delete,
}

/// Scheduled logical backups of a store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// When to take a backup, in cron syntax (five fields, or a macro such as `@hourly`),
    /// evaluated in the controller-manager's time zone unless `timeZone` is set.
    #[serde(default = "default_backup_schedule")]
    #[schemars(length(max = 128))]
    #[x_kube(validation = Rule::new(CRON_RULE).message("must be a cron expression with five fields (for example '0 * * * *') or one of @yearly, @monthly, @weekly, @daily, @hourly"))]
    pub schedule: String,
    /// IANA time zone of the schedule (for example `Europe/Berlin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub time_zone: Option<String>,
    /// How many successful backups to keep; older ones are deleted after each new backup.
    #[serde(default = "default_retention")]
    #[schemars(range(min = 1, max = 1000))]
    pub retention: i32,
    /// Pause the schedule without deleting existing backups.
    #[serde(default)]
    pub suspend: bool,
    /// Where backups are written.
    #[serde(default)]
    pub destination: BackupDestination,
}

/// Cron sanity: five whitespace-separated fields of cron characters, or a standard macro.
pub const CRON_RULE: &str = r"self.matches('^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[0-9*,/?A-Za-z-]+(\\s+[0-9*,/?A-Za-z-]+){4})$')";

fn default_backup_schedule() -> String {
    "0 * * * *".into()
}

fn default_retention() -> i32 {
    24
}

/// A backup destination. Today a PersistentVolumeClaim; object storage comes later as a
/// sibling field.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupDestination {
    /// Keep backups on a PersistentVolumeClaim.
    #[serde(default)]
    pub volume: BackupVolume,
}

/// The claim backups are written to. No transition rules: the PersistentVolumeClaim API
/// refuses a smaller size or another class of the operator's own claim itself, and the
/// operator reports that refusal (the claim, the field, the server's words); a rule on the
/// spec would also refuse undoing an expansion the claim's class does not allow. `claimName`
/// may change: new backups then go to the other claim, and the old ones stay where they are
/// (the operator never moves backups).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupVolume {
    /// Use this existing claim instead of one the operator creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub claim_name: Option<String>,
    /// Size of the claim the operator creates (ignored with `claimName`).
    #[serde(default = "default_backup_size")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("must be a positive quantity such as 5Gi"))]
    pub size: String,
    /// StorageClass of the claim the operator creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub storage_class_name: Option<String>,
}

impl Default for BackupVolume {
    fn default() -> Self {
        Self {
            claim_name: None,
            size: default_backup_size(),
            storage_class_name: None,
        }
    }
}

fn default_backup_size() -> String {
    "5Gi".into()
}

/// A Prometheus exporter sidecar.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExporterSpec {
    /// Run the exporter next to each pod (store member or proxy) and expose its metrics port.
    #[serde(default)]
    pub enabled: bool,
    /// Exporter image; a well-known default per store when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub image: Option<String>,
    /// Compute resources of the exporter container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "resources_schema")]
    pub resources: Resources,
}

/// Prometheus Operator objects for the resource (`monitoring.coreos.com/v1`), so that
/// Prometheus scrapes its metrics ports and the chart's alerts see it. Created only where the
/// API server serves that group; elsewhere the operator records one `MonitoringAPIMissing`
/// event and the resource works as before.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Create a ServiceMonitor (stores) or PodMonitor (an app's proxy tier) for the metrics
    /// ports. An app's inline stores inherit this value unless they set their own.
    #[serde(default)]
    pub enabled: bool,
    /// Namespaces whose pods may scrape the metrics ports where a NetworkPolicy restricts the
    /// store (the Kubernetes label selector); any namespace when omitted. Only the metrics
    /// ports are opened to them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "label_selector_schema")]
    pub scraper_namespace_selector: Option<LabelSelector>,
}

impl MonitoringSpec {
    /// Whether `spec` asks for monitoring objects.
    pub fn wanted(spec: Option<&MonitoringSpec>) -> bool {
        spec.is_some_and(|m| m.enabled)
    }
}

/// Where pods may run. The operator adds zone and host topology spread by default; anything
/// given here is used as is.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// Node labels a pod's node must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate (the Pod field of the same name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "tolerations_schema")]
    pub tolerations: Vec<Toleration>,
    /// Node and pod (anti-)affinity (the Pod field of the same name; none by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "affinity_schema")]
    pub affinity: Option<Affinity>,
    /// Replaces the default spread (across `topology.kubernetes.io/zone`, then
    /// `kubernetes.io/hostname`) when non-empty (the Pod field of the same name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "topology_spread_schema")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub priority_class_name: Option<String>,
}

/// How many pods a tier runs, fixed or autoscaled.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas").field_path(".minReplicas"))]
pub struct AutoscalingSpec {
    /// Lower bound of the HorizontalPodAutoscaler.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// Upper bound of the HorizontalPodAutoscaler.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Average CPU utilisation (percent of requests) the autoscaler aims for.
    #[serde(
        default = "default_cpu_target",
        rename = "targetCPUUtilizationPercentage"
    )]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
}

fn one() -> i32 {
    1
}

fn default_cpu_target() -> i32 {
    70
}

/// How a tier is exposed inside or outside the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Service type.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Port the Service listens on.
    #[serde(default = "default_http_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Extra annotations for the Service (for example a cloud load balancer's settings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self {
            type_: ServiceType::ClusterIP,
            port: default_http_port(),
            annotations: BTreeMap::new(),
        }
    }
}

pub(crate) fn default_http_port() -> i32 {
    80
}

/// Kubernetes Service types we expose tiers with.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    /// Reachable inside the cluster only.
    #[default]
    ClusterIP,
    /// Also on a port of every node.
    NodePort,
    /// Also through the cloud's load balancer.
    LoadBalancer,
}

/// An Ingress rule for one tier.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// Host name the tier is served on.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(r"self.matches('^(\\*\\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("must be a lower-case DNS name such as vote.example.org"))]
    pub host: String,
    /// URL path prefix.
    #[serde(default = "default_path")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("must start with '/'"))]
    pub path: String,
    /// IngressClass to use; the cluster default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub class_name: Option<String>,
    /// Secret holding the TLS certificate for `host`; plain HTTP when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub tls_secret_name: Option<String>,
    /// Extra annotations for the Ingress.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn default_path() -> String {
    "/".into()
}

/// A Gateway API `HTTPRoute` for one tier (`gateway.networking.k8s.io/v1`): the route is
/// created only where the Gateway API is installed, else the condition `GatewayAPIMissing` says
/// so.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    /// Gateways (or their listeners) the route attaches to.
    #[schemars(length(min = 1, max = 32))]
    pub parent_refs: Vec<GatewayRef>,
    /// Host names the route answers for; all of the Gateway's when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub hostnames: Vec<String>,
    /// URL path prefix.
    #[serde(default = "default_path")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("must start with '/'"))]
    pub path: String,
}

/// A Gateway a route attaches to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRef {
    /// Name of the Gateway.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the Gateway; the route's own when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub namespace: Option<String>,
    /// One listener of the Gateway; all of them when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub section_name: Option<String>,
}

/// Pods of one tier of an app, from its Deployment's status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TierStatus {
    /// Pods wanted (the spec's count, or the autoscaler's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Pods available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_replicas: Option<i32>,
    /// Pods running the current template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_replicas: Option<i32>,
}

/// A store an app uses, as the app sees it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreStatus {
    /// Name of the store resource.
    pub name: String,
    /// Whether the app owns it (declared inline) or references it.
    #[serde(default)]
    pub owned: bool,
    /// Whether the store reports Ready.
    #[serde(default)]
    pub ready: bool,
    /// The store's own Ready reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A key in a Secret of the resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_password_key() -> String {
    "password".into()
}

/// The last backup the operator saw complete, read back from its Job.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// When the backup Job finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// Name of the Job that took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// File written, relative to the backup volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// Whether it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<bool>,
    /// Why it failed, as the Job reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Conditions as a list-map keyed by `type`, so server-side apply merges them per type.
pub fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["type"]),
    );
    schema
}

/// Schema of an embedded Kubernetes type without the upstream descriptions: they are
/// available from `kubectl explain pod.spec`, and repeating them in every place we embed
/// the type would push the CRDs past the 256 KiB client-side-apply annotation limit.
fn upstream_schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    let mut value = generator.subschema_for::<T>().to_value();
    strip_descriptions(&mut value);
    Schema::try_from(value).unwrap_or_else(|_| generator.subschema_for::<T>())
}

fn strip_descriptions(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove("description");
            map.values_mut().for_each(strip_descriptions);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_descriptions),
        _ => {}
    }
}

/// Schema of container resources (requests and limits).
pub fn resources_schema(generator: &mut SchemaGenerator) -> Schema {
    upstream_schema::<ResourceRequirements>(generator)
}
fn label_selector_schema(generator: &mut SchemaGenerator) -> Schema {
    upstream_schema::<Option<LabelSelector>>(generator)
}
fn affinity_schema(generator: &mut SchemaGenerator) -> Schema {
    upstream_schema::<Affinity>(generator)
}
fn tolerations_schema(generator: &mut SchemaGenerator) -> Schema {
    upstream_schema::<Vec<Toleration>>(generator)
}
fn topology_spread_schema(generator: &mut SchemaGenerator) -> Schema {
    upstream_schema::<Vec<TopologySpreadConstraint>>(generator)
}

/// A Kubernetes container image reference.
pub(crate) const IMAGE_RULE: &str = r"self.matches('^[^\\s]+$')";

/// Compute resources, shared shape for every container the operator runs.
pub type Resources = Option<ResourceRequirements>;
