//! `VoteApp`: the voting app (vote, result, worker) on Redis and PostgreSQL stores.

use super::common::{
    AutoscalingSpec, IMAGE_RULE, IngressSpec, Resources, SchedulingSpec, ServiceSpec,
    conditions_schema,
};
use super::guestbook::RedisStoreBinding;
use super::patroni_cluster::PatroniClusterSpec;
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
    validation = Rule::new("size(self.metadata.name) <= 40").message("metadata.name must be at most 40 characters: it prefixes the names of the objects the operator creates")
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
    /// The Redis store that queues votes.
    pub redis: RedisStoreBinding,
    /// The PostgreSQL store that keeps the tally.
    pub postgres: PostgresStoreBinding,
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
    /// Worker pod count. Votes are upserted by voter id, so several workers are safe.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
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
            resources: None,
        }
    }
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
}

/// Replica counts of one tier.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TierStatus {
    /// Pods wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Pods available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_replicas: Option<i32>,
}
