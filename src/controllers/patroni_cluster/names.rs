//! Names, ports, user ids and label values of a PatroniCluster's objects. Imports nothing else
//! of its controller, so anything may use it: the app controllers select the primary with it.

use crate::k8s::labels;
use std::collections::BTreeMap;

/// `app.kubernetes.io/name` of everything a PatroniCluster creates.
pub const APP: &str = "patroni";
pub const KIND: &str = "PatroniCluster";
/// The Spilo image's postgres user and group.
pub const PG_UID: i64 = 101;
pub const PG_GID: i64 = 103;
pub const PG_PORT: i32 = 5432;
/// Patroni's REST API.
pub const API_PORT: i32 = 8008;
pub const EXPORTER_PORT: i32 = 9187;
pub const DEFAULT_EXPORTER_IMAGE: &str = "quay.io/prometheuscommunity/postgres-exporter:v0.17.1";
/// Values Patroni writes into [`labels::ROLE`] (set explicitly: Patroni 4's default leader
/// value is `primary`, older tooling used `master`).
pub const ROLE_PRIMARY: &str = "primary";
pub const ROLE_REPLICA: &str = "replica";
/// Label on an app's pods that makes them clients a store with the stock credentials admits
/// (`<label>: <cluster name>`).
pub const CLIENT_LABEL: &str = "guestbook-operator.dev/postgres-client";
/// Components (`app.kubernetes.io/component`) of members and Job pods.
pub const POSTGRES: &str = "postgres";
pub const BACKUP: &str = "backup";
pub const RESTORE: &str = "restore";
pub const RESTORE_CHECK: &str = "restore-check";
pub const ROLES: &str = "roles";

/// Names of the objects of one PatroniCluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub statefulset: String,
    pub primary: String,
    pub replica: String,
    pub headless: String,
    /// Not `<name>-config`: Patroni keeps its own DCS configuration under that name.
    pub config: String,
    pub account: String,
    pub superuser: String,
    pub replication: String,
    pub backup: String,
    pub restore_check: String,
    pub restore: String,
    /// Prefix of the roles Job (a fingerprint follows).
    pub roles: String,
}

impl Names {
    pub fn of(name: &str) -> Self {
        Self {
            statefulset: name.to_string(),
            primary: name.to_string(),
            replica: format!("{name}-replica"),
            headless: format!("{name}-headless"),
            config: format!("{name}-patroni"),
            account: format!("{name}-patroni"),
            superuser: format!("{name}-superuser"),
            replication: format!("{name}-replication"),
            backup: format!("{name}-backup"),
            restore_check: format!("{name}-restore-check"),
            restore: format!("{name}-restore"),
            roles: format!("{name}-roles"),
        }
    }
}

/// Labels selecting the members of `instance` that Patroni labelled `role`
/// ([`ROLE_PRIMARY`] or [`ROLE_REPLICA`]).
pub fn member_role_selector(instance: &str, role: &str) -> BTreeMap<String, String> {
    let mut s = labels::selector(APP, instance, POSTGRES);
    s.insert(labels::ROLE.to_string(), role.to_string());
    s
}
