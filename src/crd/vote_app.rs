//! `VoteApp`: the voting app (vote, result, worker) on Redis and PostgreSQL stores.

use super::common::{
    AutoscalingSpec, HttpRouteSpec, IMAGE_RULE, IngressSpec, MonitoringSpec, Resources,
    SchedulingSpec, ServiceSpec, StoreStatus, TierStatus, conditions_schema,
};
use super::guestbook::RedisStoreBinding;
use super::patroni_cluster::PatroniClusterSpec;
use super::transitions;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The voting app: vote, result and worker Deployments, their Services, optional autoscaling
/// and Ingress, and the `redis` and `db` Services the stock images hard-code, backed by a
/// RedisSentinel and a PatroniCluster it references or owns. One VoteApp per namespace, because
/// those Service names are fixed.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "guestbook-operator.dev",
    version = "v1alpha1",
    kind = "VoteApp",
    plural = "voteapps",
    singular = "voteapp",
    shortname = "va",
    category = "guestbook-operator",
    namespaced,
    status = "VoteAppStatus",
    derive = "PartialEq",
    doc = "The voting app (vote, result, worker) on Redis with Sentinel and Patroni PostgreSQL, kept running by guestbook-operator.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Vote", type_ = "integer", json_path = ".status.vote.availableReplicas"),
    printcolumn(name = "Result", type_ = "integer", json_path = ".status.result.availableReplicas"),
    printcolumn(name = "Worker", type_ = "integer", json_path = ".status.worker.availableReplicas"),
    printcolumn(name = "Redis", type_ = "string", json_path = ".status.redisStore", priority = 1),
    printcolumn(name = "Postgres", type_ = "string", json_path = ".status.postgresStore", priority = 1),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 40").message("metadata.name must be at most 40 characters: it prefixes the names of the objects the operator creates"),
    validation = Rule::new("has(self.spec.redis) || (has(self.spec.queue) && self.spec.queue.mode == 'PerPod')").message("spec.redis is required unless spec.queue.mode is PerPod (votes then queue in each vote pod)"),
    validation = transitions::fixed_storage("spec.redis.spec.redis", &transitions::app_undo("redis")),
    validation = transitions::no_shrink("spec.redis.spec.redis.storage", &transitions::app_undo("redis")),
    validation = transitions::fixed_class("spec.redis.spec.redis.storage", &transitions::app_undo("redis")),
    validation = transitions::no_downgrade("spec.postgres.spec.postgresql", &transitions::app_undo("postgres")),
    validation = transitions::no_shrink("spec.postgres.spec.storage", &transitions::app_undo("postgres")),
    validation = transitions::fixed_class("spec.postgres.spec.storage", &transitions::app_undo("postgres"))
)]
#[serde(rename_all = "camelCase")]
pub struct VoteAppSpec {
    /// The Flask front end that takes votes and queues them in Redis.
    #[serde(default)]
    pub vote: VoteTierSpec,
    /// The Node.js page that shows the tally from PostgreSQL.
    #[serde(default)]
    pub result: WebTierSpec,
    /// The .NET worker that moves votes from Redis to PostgreSQL.
    #[serde(default)]
    pub worker: WorkerSpec,
    /// The Redis store that queues votes (not needed when `queue.mode` is `PerPod`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisStoreBinding>,
    /// Where votes wait between the vote tier and the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueSpec>,
    /// The PostgreSQL store that keeps the tally.
    pub postgres: PostgresStoreBinding,
    /// Monitoring of the app's stores: inherited by its inline stores unless they set their
    /// own (the vote queue's length is then exported as `redis_key_size{key="votes"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringSpec>,
    /// Placement of the app's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<SchedulingSpec>,
}

/// The vote tier.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VoteTierSpec {
    /// Image, replicas, autoscaling, Service and Ingress of the tier.
    #[serde(flatten)]
    pub web: WebTierSpec,
    /// Label of the first option.
    #[serde(default = "default_option_a")]
    #[schemars(length(min = 1, max = 64))]
    pub option_a: String,
    /// Label of the second option.
    #[serde(default = "default_option_b")]
    #[schemars(length(min = 1, max = 64))]
    pub option_b: String,
}

impl Default for VoteTierSpec {
    fn default() -> Self {
        Self {
            web: WebTierSpec {
                image: default_vote_image(),
                replicas: 2,
                ..WebTierSpec::default()
            },
            option_a: default_option_a(),
            option_b: default_option_b(),
        }
    }
}

fn default_vote_image() -> String {
    "docker.io/dockersamples/examplevotingapp_vote:latest".into()
}
fn default_result_image() -> String {
    "docker.io/dockersamples/examplevotingapp_result:latest".into()
}
fn default_worker_image() -> String {
    "docker.io/dockersamples/examplevotingapp_worker:latest".into()
}
fn default_option_a() -> String {
    "Cats".into()
}
fn default_option_b() -> String {
    "Dogs".into()
}

/// A web tier (vote or result).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebTierSpec {
    /// Image of the tier; the stock dockersamples image when omitted (the vote tier's default
    /// is the vote image, the result tier's the result image).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 512))]
    #[x_kube(validation = Rule::new(IMAGE_RULE).message("must be an image reference without spaces"))]
    pub image: String,
    /// Pod count when not autoscaled. More than one result pod gets ClientIP session
    /// affinity, which socket.io needs.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Port the container listens on (the stock images use 80).
    #[serde(default = "super::common::default_http_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub container_port: i32,
    /// Compute resources of the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::common::resources_schema")]
    pub resources: Resources,
    /// Scale with a HorizontalPodAutoscaler instead of a fixed `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// The tier's Service.
    #[serde(default)]
    pub service: ServiceSpec,
    /// Expose the tier through an Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// Expose the tier through a Gateway API HTTPRoute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_route: Option<HttpRouteSpec>,
}

impl Default for WebTierSpec {
    fn default() -> Self {
        Self {
            image: String::new(),
            replicas: 1,
            container_port: super::common::default_http_port(),
            resources: None,
            autoscaling: None,
            service: ServiceSpec::default(),
            ingress: None,
            http_route: None,
        }
    }
}

impl WebTierSpec {
    /// The vote tier's image, defaulted.
    pub fn vote_image(&self) -> String {
        if self.image.is_empty() {
            default_vote_image()
        } else {
            self.image.clone()
        }
    }
    /// The result tier's image, defaulted.
    pub fn result_image(&self) -> String {
        if self.image.is_empty() {
            default_result_image()
        } else {
            self.image.clone()
        }
    }
}

fn one() -> i32 {
    1
}

/// The worker tier.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerSpec {
    /// Worker image.
    #[serde(default = "default_worker_image")]
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new(IMAGE_RULE).message("must be an image reference without spaces"))]
    pub image: String,
    /// Worker pod count when not scaled on the queue. Votes are upserted by voter id, so
    /// several workers are safe.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Scale the workers on the length of the `votes` queue instead of a fixed `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<QueueAutoscalingSpec>,
    /// Compute resources of the worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::common::resources_schema")]
    pub resources: Resources,
}

impl Default for WorkerSpec {
    fn default() -> Self {
        Self {
            image: default_worker_image(),
            replicas: 1,
            autoscaling: None,
            resources: None,
        }
    }
}

/// Worker replicas from the queue's length, read by the operator from the Redis master:
/// `ceil(length / targetQueueLength)` within the bounds, up at once, down one step at a time
/// once the queue has fallen well below what one fewer worker would handle.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas").field_path(".minReplicas"))]
pub struct QueueAutoscalingSpec {
    /// Fewest workers.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 100))]
    pub min_replicas: i32,
    /// Most workers.
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: i32,
    /// Queued votes one worker is expected to keep up with.
    #[serde(default = "default_target_queue")]
    #[schemars(range(min = 1, max = 1000000))]
    pub target_queue_length: i64,
}

fn default_target_queue() -> i64 {
    100
}

/// Where votes wait for the worker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueSpec {
    /// `Shared`: every vote pod queues into the Redis store's master (the `redis` Service).
    /// `PerPod`: each vote pod carries its own Redis and worker sidecars and drains into
    /// PostgreSQL itself, so vote pods scale to any number with no central queue.
    #[serde(default)]
    pub mode: QueueMode,
    /// Image of the per-pod Redis sidecar (`PerPod` only).
    #[serde(default = "default_queue_redis_image")]
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new(IMAGE_RULE).message("must be an image reference without spaces"))]
    pub redis_image: String,
    /// Compute resources of each sidecar (`PerPod` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::common::resources_schema")]
    pub resources: Resources,
}

impl Default for QueueSpec {
    fn default() -> Self {
        Self {
            mode: QueueMode::Shared,
            redis_image: default_queue_redis_image(),
            resources: None,
        }
    }
}

fn default_queue_redis_image() -> String {
    "docker.io/library/redis:7.2".into()
}

/// See [`QueueSpec::mode`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum QueueMode {
    /// One queue in the Redis store, shared by every vote pod.
    #[default]
    Shared,
    /// A queue in every vote pod.
    PerPod,
}

/// A PostgreSQL store for an app: exactly one of `name` (an existing PatroniCluster in the same
/// namespace) or `spec` (the app owns a PatroniCluster built from this spec).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.name) != has(self.spec)").message("set exactly one of name (reference an existing PatroniCluster) or spec (an inline one)"))]
pub struct PostgresStoreBinding {
    /// Name of an existing PatroniCluster in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 40))]
    pub name: Option<String>,
    /// Spec of a PatroniCluster the app creates and owns (named `<app>-db`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<Box<PatroniClusterSpec>>,
}

/// Observed state of a VoteApp.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VoteAppStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Stalled` (kstatus).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The vote tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vote: Option<TierStatus>,
    /// The result tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TierStatus>,
    /// The worker tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<TierStatus>,
    /// Name of the RedisSentinel in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_store: Option<String>,
    /// Name of the PatroniCluster in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_store: Option<String>,
    /// The Redis store, as the app sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<StoreStatus>,
    /// The PostgreSQL store, as the app sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<StoreStatus>,
    /// Votes waiting in the shared queue when last read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_length: Option<i64>,
    /// The PostgreSQL primary the result tier was last started against: the stock result
    /// image never reconnects, so the operator restarts it when the primary changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_primary: Option<String>,
}
