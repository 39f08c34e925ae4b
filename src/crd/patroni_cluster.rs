//! `PatroniCluster`: PostgreSQL made highly available by Patroni, with Kubernetes as its DCS.

use super::common::{
    BackupSpec, BackupStatus, CRON_RULE, ExporterSpec, IMAGE_RULE, MonitoringSpec, Resources,
    SchedulingSpec, StorageSpec, conditions_schema,
};
use super::transitions;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A PostgreSQL cluster run by Patroni, which keeps its leader lock in ConfigMaps. The
/// operator creates Patroni's ServiceAccount and Role, credential Secrets, configuration,
/// StatefulSet, primary and replica Services, PodDisruptionBudget and backup CronJob, switches
/// over before restarting a primary, and reports each member in status.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "guestbook-operator.dev",
    version = "v1alpha1",
    kind = "PatroniCluster",
    plural = "patroniclusters",
    singular = "patronicluster",
    shortname = "pgc",
    category = "guestbook-operator",
    namespaced,
    status = "PatroniClusterStatus",
    derive = "PartialEq",
    doc = "A highly available PostgreSQL cluster run by Patroni, kept healthy by guestbook-operator.",
    scale(spec_replicas_path = ".spec.members", status_replicas_path = ".status.replicas", label_selector_path = ".status.selector"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Leader", type_ = "string", json_path = ".status.leader"),
    printcolumn(name = "Members", type_ = "integer", json_path = ".spec.members"),
    printcolumn(name = "Version", type_ = "integer", json_path = ".spec.postgresql.version"),
    printcolumn(name = "Last-Backup", type_ = "date", json_path = ".status.lastBackup.time", priority = 1),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 40").message("metadata.name must be at most 40 characters: it prefixes the names of the objects the operator creates"),
    validation = transitions::no_downgrade("spec.postgresql", &transitions::store_undo()),
    validation = transitions::no_shrink("spec.storage", &transitions::store_undo()),
    validation = transitions::fixed_class("spec.storage", &transitions::store_undo())
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.databases) || self.databases.all(d, !has(d.owner) || d.owner == 'postgres' || (has(self.users) && self.users.exists(u, u.name == d.owner)))").message("every database owner must be 'postgres' or one of spec.users").field_path(".databases"))]
#[x_kube(validation = Rule::new("self.patroni.synchronousMode == 'Asynchronous' || self.members >= 2").message("synchronous replication needs at least 2 members").field_path(".patroni.synchronousMode"))]
pub struct PatroniClusterSpec {
    /// Number of PostgreSQL members (one primary, the rest streaming replicas).
    #[serde(default = "default_members")]
    #[schemars(range(min = 1, max = 9))]
    pub members: i32,
    /// Image with Patroni and PostgreSQL (Spilo by default).
    #[serde(default = "default_patroni_image")]
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new(IMAGE_RULE).message("must be an image reference without spaces"))]
    pub image: String,
    /// PostgreSQL settings.
    #[serde(default)]
    pub postgresql: PostgresqlSpec,
    /// Patroni's own settings.
    #[serde(default)]
    pub patroni: PatroniSpec,
    /// Compute resources of the PostgreSQL container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::common::resources_schema")]
    pub resources: Resources,
    /// Persistence of the data directory.
    #[serde(default)]
    pub storage: StorageSpec,
    /// Superuser and replication credentials.
    #[serde(default)]
    pub auth: PostgresAuthSpec,
    /// Application roles; each gets a Secret with its password.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(u, self.exists_one(v, v.name == u.name))").message("user names must be unique"))]
    pub users: Vec<PostgresUser>,
    /// Application databases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(d, self.exists_one(e, e.name == d.name))").message("database names must be unique"))]
    pub databases: Vec<PostgresDatabase>,
    /// A postgres_exporter sidecar (port 9187) on every member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter: Option<ExporterSpec>,
    /// ServiceMonitor/PodMonitor objects for Prometheus; none when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringSpec>,
    /// Scheduled `pg_dump -Fc` backups of every database, taken from a healthy replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<PostgresBackupSpec>,
    /// Create the cluster from a backup instead of an empty database. Only read at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapSpec>,
    /// Placement of the members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<SchedulingSpec>,
}

fn default_members() -> i32 {
    3
}

/// Default image: Spilo ships Patroni and PostgreSQL together.
pub fn default_patroni_image() -> String {
    "ghcr.io/zalando/spilo-17:4.0-p3".into()
}

/// PostgreSQL settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresqlSpec {
    /// Major version; must match the binaries in `image`. Never lowered (admission refuses it):
    /// an older PostgreSQL cannot read a newer one's data directory. Raising it needs a major
    /// upgrade of the data, which the operator does not do yet: it reports the cluster
    /// `Stalled` instead of starting the new binaries on the old data.
    #[serde(default = "default_pg_version")]
    #[schemars(range(min = 13, max = 18))]
    pub version: i32,
    /// postgresql.conf parameters, applied through Patroni's dynamic configuration (restarts
    /// only where PostgreSQL needs one, replicas first).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 128))]
    #[x_kube(validation = Rule::new("self.all(k, !(k in ['listen_addresses', 'port', 'data_directory', 'hba_file', 'ident_file', 'hot_standby', 'wal_level', 'archive_command', 'restore_command']))").message("must not set parameters Patroni or the operator manage: listen_addresses, port, data_directory, hba_file, ident_file, hot_standby, wal_level, archive_command, restore_command"))]
    pub parameters: BTreeMap<String, String>,
}

impl Default for PostgresqlSpec {
    fn default() -> Self {
        Self {
            version: default_pg_version(),
            parameters: BTreeMap::new(),
        }
    }
}

fn default_pg_version() -> i32 {
    17
}

/// Patroni's timing and replication mode.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.loopWait + 2 * self.retryTimeout <= self.ttl").message("ttl must be at least loopWait + 2 * retryTimeout, or the leader loses its lock between two loops").field_path(".ttl"))]
pub struct PatroniSpec {
    /// Seconds the leader lock lives without renewal; a replica takes over after it expires.
    #[serde(default = "default_ttl")]
    #[schemars(range(min = 10, max = 3600))]
    pub ttl: i32,
    /// Seconds between Patroni's loops.
    #[serde(default = "default_loop_wait")]
    #[schemars(range(min = 1, max = 600))]
    pub loop_wait: i32,
    /// Seconds Patroni retries the DCS and PostgreSQL before giving up a loop.
    #[serde(default = "default_retry_timeout")]
    #[schemars(range(min = 1, max = 600))]
    pub retry_timeout: i32,
    /// Bytes a replica may lag and still be promoted automatically.
    #[serde(default = "default_max_lag")]
    #[schemars(range(min = 0))]
    pub maximum_lag_on_failover: i64,
    /// Replication mode: `Asynchronous`, `Synchronous` (a synchronous standby while one is
    /// healthy), or `Strict` (writes wait for a synchronous standby; no committed transaction
    /// is lost on failover).
    #[serde(default)]
    pub synchronous_mode: SynchronousMode,
}

impl Default for PatroniSpec {
    fn default() -> Self {
        Self {
            ttl: default_ttl(),
            loop_wait: default_loop_wait(),
            retry_timeout: default_retry_timeout(),
            maximum_lag_on_failover: default_max_lag(),
            synchronous_mode: SynchronousMode::Asynchronous,
        }
    }
}

fn default_ttl() -> i32 {
    30
}
fn default_loop_wait() -> i32 {
    10
}
fn default_retry_timeout() -> i32 {
    10
}
fn default_max_lag() -> i64 {
    1_048_576
}

/// Patroni's replication modes. (Not `Off`/`On`: YAML 1.1 parsers, the API server's among
/// them, read those as booleans.)
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SynchronousMode {
    /// Asynchronous replication (Patroni `synchronous_mode: off`).
    #[default]
    Asynchronous,
    /// Synchronous while a standby is healthy; falls back to asynchronous otherwise.
    Synchronous,
    /// Never falls back: writes wait until a synchronous standby exists.
    Strict,
}

/// Credentials of the built-in roles.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.stockAppCredentials || !has(self.superuserSecretName)").message("stockAppCredentials fixes the superuser password to 'postgres'; it cannot be combined with superuserSecretName").field_path(".stockAppCredentials"))]
pub struct PostgresAuthSpec {
    /// Secret with `username` and `password` of the superuser; generated in
    /// `<name>-superuser` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub superuser_secret_name: Option<String>,
    /// Secret with `username` and `password` of the replication role; generated in
    /// `<name>-replication` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub replication_secret_name: Option<String>,
    /// INSECURE: use the stock voting app's hard-coded `postgres`/`postgres` superuser. Only for
    /// images that cannot be configured otherwise; the operator reports a warning condition and
    /// restricts network access to the app's own pods.
    #[serde(default)]
    pub stock_app_credentials: bool,
}

/// An application role.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresUser {
    /// Role name.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z_][a-z0-9_]*$') && !(self in ['postgres', 'standby', 'replicator'])").message("must be a lower-case SQL identifier (letters, digits, underscore) and not a built-in role"))]
    pub name: String,
    /// Secret (keys `username`, `password`) holding the role's password; generated in
    /// `<cluster>-user-<name>` (underscores as dashes) when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
    /// Allow the role to create databases.
    #[serde(default)]
    pub create_db: bool,
}

/// An application database.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresDatabase {
    /// Database name.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z_][a-z0-9_]*$') && !(self in ['template0', 'template1'])").message("must be a lower-case SQL identifier (letters, digits, underscore) and not a template database"))]
    pub name: String,
    /// Owning role; the superuser when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub owner: Option<String>,
}

/// Backups plus a scheduled proof that they restore.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresBackupSpec {
    /// Schedule, retention and destination.
    #[serde(flatten)]
    pub common: BackupSpec,
    /// Restore the latest backup into a scratch database on this schedule and record the
    /// result in status; off when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    #[x_kube(validation = Rule::new(CRON_RULE).message("must be a cron expression with five fields (for example '30 3 * * *') or one of @yearly, @monthly, @weekly, @daily, @hourly"))]
    pub restore_check_schedule: Option<String>,
}

/// Where a new cluster's data comes from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapSpec {
    /// Restore from a `pg_dump -Fc` backup file on a claim.
    pub from_backup: BackupSource,
}

/// A backup file on a PersistentVolumeClaim.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSource {
    /// Claim holding the backups.
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: String,
    /// File (relative to the claim) to restore; the newest backup when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("!self.startsWith('/') && !self.contains('..')").message("must be a path relative to the claim, without '..'"))]
    pub file: Option<String>,
}

/// Observed state of a PatroniCluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatroniClusterStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Stalled` (kstatus), plus warnings such as
    /// `InsecureCredentials`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Member pods that are ready (scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Label selector of the member pods (scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Pod name of the current leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Every member as Patroni reports it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<PatroniMemberStatus>,
    /// The last backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<BackupStatus>,
    /// Completion time of the last successful backup (what the `BackupTooOld` alert
    /// measures, through the operator's metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_backup: Option<Time>,
    /// The last restore check: the newest backup restored into a scratch server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restore_check: Option<BackupStatus>,
    /// The backup `spec.bootstrap` restored into this cluster, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<BackupStatus>,
    /// resourceVersions of the superuser and replication Secrets (in that order, comma
    /// separated) whose passwords every member uses. When a password changes, the operator
    /// changes it on the primary and restarts the members one by one (`Reconciling`, reason
    /// `RotatingCredentials`, meanwhile), then sets this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_version: Option<String>,
}

/// One member as Patroni's `GET /cluster` reports it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatroniMemberStatus {
    /// Pod name.
    pub name: String,
    /// `leader`, `sync_standby` or `replica`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// `running`, `streaming`, `starting`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Replication lag in bytes, rewritten when it moves by more than a WAL segment (16 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<i64>,
    /// Timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<i64>,
}
