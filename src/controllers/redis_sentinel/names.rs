//! Names, ports, user ids and label values of a RedisSentinel's objects. Imports nothing else of
//! its controller, so anything may use it: the app controllers select the store's pods with it.

use crate::k8s::labels;
use std::collections::BTreeMap;

/// `app.kubernetes.io/name` of everything a RedisSentinel creates.
pub const APP: &str = "redis-sentinel";
pub const KIND: &str = "RedisSentinel";
pub const REDIS_PORT: i32 = 6379;
pub const SENTINEL_PORT: i32 = 26379;
pub const EXPORTER_PORT: i32 = 9121;
/// The second redis_exporter, in each Sentinel pod, talking to its Sentinel.
pub const SENTINEL_EXPORTER_PORT: i32 = 9355;
/// Names of the metrics ports on the Services (the Sentinel Service's differs from the
/// Redis one's so that each ServiceMonitor endpoint scrapes one kind of target).
pub const METRICS_PORT_NAME: &str = "metrics";
pub const SENTINEL_METRICS_PORT_NAME: &str = "sentinel-metrics";
/// The vote queue's key, checked by the exporter of a VoteApp's own Redis.
pub const VOTES_KEY: &str = "db0=votes";
/// The redis image's user and group.
pub const REDIS_UID: i64 = 999;
pub const DEFAULT_EXPORTER_IMAGE: &str = "docker.io/oliver006/redis_exporter:v1.67.0";
/// Values of [`labels::ROLE`] on Redis pods; the master Service selects the first.
pub const ROLE_MASTER: &str = "master";
pub const ROLE_REPLICA: &str = "replica";
/// Label on an app's pods that makes them clients a password-less store admits
/// (`<label>: <store name>`).
pub const CLIENT_LABEL: &str = "guestbook-operator.dev/redis-client";
/// Components (`app.kubernetes.io/component`).
pub const REDIS: &str = "redis";
pub const SENTINEL: &str = "sentinel";
pub const BACKUP: &str = "backup";

/// Names of the objects of one RedisSentinel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub redis: String,
    pub sentinel: String,
    pub master_service: String,
    pub replica_service: String,
    pub redis_headless: String,
    pub sentinel_service: String,
    pub sentinel_headless: String,
    pub config: String,
    pub auth_secret: String,
    pub backup: String,
}

impl Names {
    pub fn of(name: &str) -> Self {
        Self {
            redis: format!("{name}-redis"),
            sentinel: format!("{name}-sentinel"),
            master_service: format!("{name}-redis"),
            replica_service: format!("{name}-redis-replicas"),
            redis_headless: format!("{name}-redis-headless"),
            sentinel_service: format!("{name}-sentinel"),
            sentinel_headless: format!("{name}-sentinel-headless"),
            config: format!("{name}-redis-config"),
            auth_secret: format!("{name}-redis-auth"),
            backup: format!("{name}-backup"),
        }
    }
}

/// Labels selecting the Redis pods of `instance` that hold `role` ([`ROLE_MASTER`] or
/// [`ROLE_REPLICA`]): what a Service that must follow failovers selects on.
pub fn redis_role_selector(instance: &str, role: &str) -> BTreeMap<String, String> {
    let mut s = labels::selector(APP, instance, REDIS);
    s.insert(labels::ROLE.to_string(), role.to_string());
    s
}
