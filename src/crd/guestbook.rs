//! `Guestbook`: the stateless guestbook front end on a Redis store.

use super::common::{
    AutoscalingSpec, HttpRouteSpec, IMAGE_RULE, IngressSpec, MonitoringSpec, Resources,
    SchedulingSpec, ServiceSpec, StoreStatus, TierStatus, conditions_schema,
};
use super::redis_sentinel::RedisSentinelSpec;
use super::transitions;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The guestbook web app: a frontend Deployment and Service, an optional rate-limiting proxy
/// tier, optional autoscaling and Ingress, and the Redis Services its image expects, backed by a
/// RedisSentinel it references or owns. One Guestbook per namespace, because the image
/// hard-codes its Redis host names.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "guestbook-operator.dev",
    version = "v1alpha1",
    kind = "Guestbook",
    plural = "guestbooks",
    singular = "guestbook",
    shortname = "gb",
    category = "guestbook-operator",
    namespaced,
    status = "GuestbookStatus",
    derive = "PartialEq",
    doc = "A highly available Guestbook web app on Redis with Sentinel, kept running by guestbook-operator.",
    scale(spec_replicas_path = ".spec.frontend.replicas", status_replicas_path = ".status.replicas", label_selector_path = ".status.selector"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.frontend.replicas"),
    printcolumn(name = "Available", type_ = "integer", json_path = ".status.availableReplicas"),
    printcolumn(name = "Store", type_ = "string", json_path = ".status.redisStore"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 40").message("metadata.name must be at most 40 characters: it prefixes the names of the objects the operator creates"),
    validation = transitions::fixed_storage("spec.redis.spec.redis", &transitions::app_undo("redis")),
    validation = transitions::no_shrink("spec.redis.spec.redis.storage", &transitions::app_undo("redis")),
    validation = transitions::fixed_class("spec.redis.spec.redis.storage", &transitions::app_undo("redis"))
)]
#[serde(rename_all = "camelCase")]
pub struct GuestbookSpec {
    /// The PHP frontend tier.
    #[serde(default)]
    pub frontend: FrontendSpec,
    /// An nginx tier in front of the frontend that limits connections and request rate per client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxySpec>,
    /// Expose the app (the proxy when enabled, else the frontend) through an Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// Expose the app (the proxy when enabled, else the frontend) through a Gateway API
    /// HTTPRoute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_route: Option<HttpRouteSpec>,
    /// A PodMonitor for the proxy tier (with an nginx exporter sidecar), inherited by an inline store; none when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringSpec>,
    /// The Redis store: a reference to an existing RedisSentinel, or an inline one the Guestbook owns.
    pub redis: RedisStoreBinding,
    /// Names of the Services the frontend image connects to.
    #[serde(default)]
    pub redis_service_names: RedisServiceNames,
    /// Placement of the app's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<SchedulingSpec>,
}

/// The frontend Deployment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FrontendSpec {
    /// Frontend image; it must speak the guestbook's Redis contract (host names below, no password).
    #[serde(default = "default_frontend_image")]
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new(IMAGE_RULE).message("must be an image reference without spaces"))]
    pub image: String,
    /// Pod count when not autoscaled.
    #[serde(default = "default_frontend_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Port the container listens on.
    #[serde(default = "super::common::default_http_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub container_port: i32,
    /// Compute resources of the frontend container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::common::resources_schema")]
    pub resources: Resources,
    /// Scale with a HorizontalPodAutoscaler instead of a fixed `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// The frontend Service.
    #[serde(default)]
    pub service: ServiceSpec,
}

impl Default for FrontendSpec {
    fn default() -> Self {
        Self {
            image: default_frontend_image(),
            replicas: default_frontend_replicas(),
            container_port: super::common::default_http_port(),
            resources: None,
            autoscaling: None,
            service: ServiceSpec::default(),
        }
    }
}

fn default_frontend_image() -> String {
    "us-docker.pkg.dev/google-samples/containers/gke/gb-frontend:v5".into()
}

fn default_frontend_replicas() -> i32 {
    3
}

/// The rate-limiting reverse proxy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxySpec {
    /// nginx image.
    #[serde(default = "default_nginx_image")]
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new(IMAGE_RULE).message("must be an image reference without spaces"))]
    pub image: String,
    /// Proxy pod count.
    #[serde(default = "default_proxy_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: i32,
    /// Concurrent connections allowed per client address.
    #[serde(default = "default_connections")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_connections_per_client: i32,
    /// Sustained requests per second allowed per client address.
    #[serde(default = "default_rps")]
    #[schemars(range(min = 1, max = 100000))]
    pub requests_per_second: i32,
    /// Requests above the rate a client may burst before being refused.
    #[serde(default = "default_burst")]
    #[schemars(range(min = 0, max = 100000))]
    pub burst: i32,
    /// Scale with a HorizontalPodAutoscaler instead of a fixed `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// Compute resources of the proxy container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::common::resources_schema")]
    pub resources: Resources,
    /// The nginx exporter beside each proxy pod (`nginx_connections_*` from `stub_status`, on
    /// the port named `metrics`): run when `enabled` or when `spec.monitoring` is; the image
    /// defaults to nginx/nginx-prometheus-exporter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter: Option<super::common::ExporterSpec>,
}

fn default_nginx_image() -> String {
    "docker.io/library/nginx:1.27".into()
}
fn default_proxy_replicas() -> i32 {
    2
}
fn default_connections() -> i32 {
    20
}
fn default_rps() -> i32 {
    10
}
fn default_burst() -> i32 {
    20
}

/// A Redis store for an app: exactly one of `name` (use an existing RedisSentinel in the same
/// namespace) or `spec` (the app owns a RedisSentinel built from this spec).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.name) != has(self.spec)").message("set exactly one of name (reference an existing RedisSentinel) or spec (an inline one)"))]
pub struct RedisStoreBinding {
    /// Name of an existing RedisSentinel in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 40))]
    pub name: Option<String>,
    /// Spec of a RedisSentinel the app creates and owns (named `<app>-redis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<Box<RedisSentinelSpec>>,
}

/// Service names the frontend image hard-codes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.leader != self.follower").message("leader and follower must be different Service names").field_path(".follower"))]
pub struct RedisServiceNames {
    /// Service that always selects the Redis master (writes).
    #[serde(default = "default_leader")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(DNS_LABEL_RULE).message("must be a DNS label (lower-case letters, digits, '-')"))]
    pub leader: String,
    /// Service that selects the replicas (reads).
    #[serde(default = "default_follower")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(DNS_LABEL_RULE).message("must be a DNS label (lower-case letters, digits, '-')"))]
    pub follower: String,
}

impl Default for RedisServiceNames {
    fn default() -> Self {
        Self {
            leader: default_leader(),
            follower: default_follower(),
        }
    }
}

const DNS_LABEL_RULE: &str = "self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')";

fn default_leader() -> String {
    "redis-leader".into()
}
fn default_follower() -> String {
    "redis-follower".into()
}

/// Observed state of a Guestbook.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuestbookStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Stalled` (kstatus).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Frontend pods that exist (scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Frontend pods available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_replicas: Option<i32>,
    /// Label selector of the frontend pods (scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Name of the RedisSentinel in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_store: Option<String>,
    /// The frontend tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontend: Option<TierStatus>,
    /// The proxy tier, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<TierStatus>,
    /// The Redis store, as the app sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<StoreStatus>,
    /// The Service the app is reached through (the proxy's when there is one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_service: Option<String>,
}
