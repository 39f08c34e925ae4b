//! `RedisSentinel`: a Redis master with replicas and a Sentinel quorum that fails over.

use super::common::{
    BackupSpec, BackupStatus, ExporterSpec, IMAGE_RULE, MonitoringSpec, Resources, SchedulingSpec,
    SecretKeyRef, StorageSpec, conditions_schema,
};
use super::transitions;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Redis directives the operator owns: setting them through `redis.config` would break
/// replication, failover or secret handling, so the API server rejects them.
pub const RESERVED_REDIS_DIRECTIVES: &[&str] = &[
    "replicaof",
    "slaveof",
    "requirepass",
    "masterauth",
    "masteruser",
    "port",
    "bind",
    "dir",
    "daemonize",
    "replica-announce-ip",
    "replica-announce-port",
    "min-replicas-to-write",
    "min-replicas-max-lag",
    "appendonly",
    "appendfsync",
    "include",
    "aclfile",
];

/// A Redis master with replicas, watched by a Sentinel quorum that promotes a replica when the
/// master fails. The operator creates the StatefulSets, ConfigMaps, auth Secret, Services
/// (one always selecting the current master), PodDisruptionBudgets and backup CronJob, and
/// moves the master Service to follow every failover.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "guestbook-operator.dev",
    version = "v1alpha1",
    kind = "RedisSentinel",
    plural = "redissentinels",
    singular = "redissentinel",
    shortname = "rsen",
    category = "guestbook-operator",
    namespaced,
    status = "RedisSentinelStatus",
    derive = "PartialEq",
    doc = "A Redis master/replica set with a Sentinel quorum, kept healthy by guestbook-operator.",
    scale(spec_replicas_path = ".spec.redis.replicas", status_replicas_path = ".status.replicas", label_selector_path = ".status.selector"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Master", type_ = "string", json_path = ".status.master.pod"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.redis.replicas"),
    printcolumn(name = "In-Sync", type_ = "integer", json_path = ".status.replicasInSync"),
    printcolumn(name = "Sentinels", type_ = "integer", json_path = ".status.sentinelsAgreeing"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 40").message("metadata.name must be at most 40 characters: it prefixes the names of the objects the operator creates"),
    validation = transitions::fixed_storage("spec.redis", &transitions::store_undo()),
    validation = transitions::no_shrink("spec.redis.storage", &transitions::store_undo()),
    validation = transitions::fixed_class("spec.redis.storage", &transitions::store_undo())
)]
#[serde(rename_all = "camelCase")]
pub struct RedisSentinelSpec {
    /// The Redis servers: one master and its replicas.
    #[serde(default)]
    pub redis: RedisSpec,
    /// The Sentinels that watch the master and elect a new one.
    #[serde(default)]
    pub sentinel: SentinelSpec,
    /// Password protection for Redis and Sentinel.
    #[serde(default)]
    pub auth: RedisAuthSpec,
    /// A redis_exporter sidecar (port 9121) on every Redis pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter: Option<ExporterSpec>,
    /// ServiceMonitor/PodMonitor objects for Prometheus; none when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringSpec>,
    /// Scheduled RDB backups taken from a replica; none when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,
    /// Placement of the Redis and Sentinel pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<SchedulingSpec>,
}

/// The Redis StatefulSet. `storage` is chosen once: admission refuses adding or removing it later.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.durability.minReplicasToWrite < self.replicas").message("durability.minReplicasToWrite must be less than replicas, or the master could never accept a write").field_path(".durability.minReplicasToWrite"))]
pub struct RedisSpec {
    /// Number of Redis servers, master included (3 = a master and two replicas).
    #[serde(default = "default_redis_replicas")]
    #[schemars(range(min = 1, max = 15))]
    pub replicas: i32,
    /// Redis server image.
    #[serde(default = "default_redis_image")]
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new(IMAGE_RULE).message("must be an image reference without spaces"))]
    pub image: String,
    /// Compute resources of the Redis container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::common::resources_schema")]
    pub resources: Resources,
    /// Persistence of the data directory; an emptyDir (data lost with the pod) when omitted.
    /// Chosen once: it cannot be added or removed later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
    /// Durability settings that decide how many acknowledged writes a failover may lose.
    #[serde(default)]
    pub durability: DurabilitySpec,
    /// Extra redis.conf directives (name to value). Directives the operator manages
    /// (replication, auth, ports, persistence) are rejected.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    // Values: single lines (a newline would smuggle in another directive), checked by plain
    // OpenAPI, which costs the API server's CEL budget nothing.
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 1024, "pattern": "^[^\\r\\n]*$"}))]
    #[x_kube(validation = Rule::new(reserved_directives_rule()).message(kube::core::Message::Message(reserved_directives_message())))]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[a-z][a-z0-9-]*$'))").message("keys must be redis.conf directive names (lower-case letters, digits, '-')"))]
    pub config: BTreeMap<String, String>,
}

impl Default for RedisSpec {
    fn default() -> Self {
        Self {
            replicas: default_redis_replicas(),
            image: default_redis_image(),
            resources: None,
            storage: None,
            durability: DurabilitySpec::default(),
            config: BTreeMap::new(),
        }
    }
}

fn reserved_directives_rule() -> String {
    let list = RESERVED_REDIS_DIRECTIVES
        .iter()
        .map(|d| format!("'{d}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("self.all(k, !(k.lowerAscii() in [{list}]))")
}

fn reserved_directives_message() -> String {
    format!(
        "must not set directives the operator manages: {}",
        RESERVED_REDIS_DIRECTIVES.join(", ")
    )
}

fn default_redis_replicas() -> i32 {
    3
}

/// Default Redis image: the last BSD-licensed major line.
pub fn default_redis_image() -> String {
    "docker.io/library/redis:7.2".into()
}

/// How writes survive a failover.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DurabilitySpec {
    /// The master refuses writes unless at least this many replicas are connected and no more
    /// than `minReplicasMaxLag` seconds behind (`min-replicas-to-write`). 0 turns it off.
    #[serde(default)]
    #[schemars(range(min = 0, max = 14))]
    pub min_replicas_to_write: i32,
    /// Lag bound in seconds for `minReplicasToWrite` (`min-replicas-max-lag`).
    #[serde(default = "default_max_lag")]
    #[schemars(range(min = 1, max = 3600))]
    pub min_replicas_max_lag: i32,
    /// Append-only file persistence in addition to RDB snapshots.
    #[serde(default)]
    pub append_only: bool,
    /// fsync policy of the append-only file.
    #[serde(default)]
    pub append_fsync: AppendFsync,
}

impl Default for DurabilitySpec {
    fn default() -> Self {
        Self {
            min_replicas_to_write: 0,
            min_replicas_max_lag: default_max_lag(),
            append_only: false,
            append_fsync: AppendFsync::EverySec,
        }
    }
}

fn default_max_lag() -> i32 {
    10
}

/// `appendfsync` policies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AppendFsync {
    /// fsync after every write: slowest, loses nothing on a crash.
    Always,
    /// fsync once a second: loses at most a second of writes on a crash.
    #[default]
    EverySec,
    /// Never fsync explicitly; the operating system flushes when it likes (`appendfsync no`;
    /// not `No`, which YAML 1.1 parsers read as a boolean).
    Never,
}

/// The Sentinel StatefulSet.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.quorum) || self.quorum <= self.replicas").message("quorum must not exceed the number of sentinels").field_path(".quorum"))]
pub struct SentinelSpec {
    /// Number of Sentinels: odd and at least 3, so a majority survives the loss of one.
    #[serde(default = "default_sentinels")]
    #[schemars(range(min = 3, max = 9))]
    #[x_kube(validation = Rule::new("self % 2 == 1").message("must be odd (3, 5, 7 or 9) so that a majority exists"))]
    pub replicas: i32,
    /// Sentinels that must agree the master is down before a failover starts; a majority
    /// (replicas/2+1) when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 9))]
    pub quorum: Option<i32>,
    /// Sentinel image; the Redis image when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new(IMAGE_RULE).message("must be an image reference without spaces"))]
    pub image: Option<String>,
    /// How long the master must be unreachable before a Sentinel calls it down.
    #[serde(default = "default_down_after")]
    #[schemars(range(min = 100, max = 600000))]
    pub down_after_milliseconds: i32,
    /// Bound on a failover attempt (`failover-timeout`).
    #[serde(default = "default_failover_timeout")]
    #[schemars(range(min = 1000, max = 3600000))]
    pub failover_timeout: i32,
    /// Replicas that resynchronise with a new master at the same time.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 14))]
    pub parallel_syncs: i32,
    /// Compute resources of the Sentinel container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::common::resources_schema")]
    pub resources: Resources,
}

impl Default for SentinelSpec {
    fn default() -> Self {
        Self {
            replicas: default_sentinels(),
            quorum: None,
            image: None,
            down_after_milliseconds: default_down_after(),
            failover_timeout: default_failover_timeout(),
            parallel_syncs: 1,
            resources: None,
        }
    }
}

impl SentinelSpec {
    /// The quorum in effect: the explicit one, or a majority.
    pub fn effective_quorum(&self) -> i32 {
        self.quorum.unwrap_or(self.replicas / 2 + 1)
    }
}

fn default_sentinels() -> i32 {
    3
}
fn default_down_after() -> i32 {
    5000
}
fn default_failover_timeout() -> i32 {
    10000
}
fn one() -> i32 {
    1
}

/// Password protection. On by default; turn it off only for stock images that cannot send a
/// password, and then the operator restricts network access to the app's own pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisAuthSpec {
    /// Require a password on Redis and Sentinel.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Use the password in this Secret; the operator generates one in `<name>-redis-auth`
    /// when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing_secret: Option<SecretKeyRef>,
}

impl Default for RedisAuthSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            existing_secret: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// Observed state of a RedisSentinel.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisSentinelStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Stalled` (kstatus), plus warnings such as `AuthDisabled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Redis pods that are ready (scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Label selector of the Redis pods (scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The current master as the operator last confirmed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<RedisMasterStatus>,
    /// Replicas connected to the master with a replication link up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas_in_sync: Option<i32>,
    /// Sentinels that monitor the current master with a reachable quorum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinels_agreeing: Option<i32>,
    /// When the master last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover_time: Option<Time>,
    /// The last backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<BackupStatus>,
    /// Completion time of the last successful backup (what the `BackupTooOld` alert
    /// measures, through the operator's metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_backup: Option<Time>,
    /// resourceVersion of the auth Secret whose password every Redis and Sentinel uses. When
    /// the Secret's password changes, the operator rolls it out to every member without a
    /// restart (`Reconciling`, reason `RotatingCredentials`, meanwhile) and then sets this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_version: Option<String>,
}

/// Where the master is.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisMasterStatus {
    /// Pod name.
    pub pod: String,
    /// Pod IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}
