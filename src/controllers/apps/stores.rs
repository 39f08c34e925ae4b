//! The stores an app uses, as the app sees them (ready or not, where the master is, whether
//! they want a password), and the owned store children an inline spec becomes: custom
//! resources the store controllers build from, so only they ever build stores.

use super::binding::Binding;
use crate::crd::common::{MonitoringSpec, StoreStatus};
use crate::crd::patroni_cluster::PatroniClusterSpec;
use crate::crd::redis_sentinel::RedisSentinelSpec;
use crate::crd::{PatroniCluster, RedisSentinel};
use crate::k8s::children::{Child, ChildKind};
use crate::k8s::conditions::{self, Health};
use crate::k8s::factory::Factory;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use std::time::Duration;

/// How soon an app looks again while a store it uses is on its way to Ready. The store's
/// changes wake the app, but through a watch of the app's own, which can run ahead of the cache
/// the app reads the store from: the store's last change before Ready could otherwise go
/// unseen for a minute.
pub const STORE_RECHECK: Duration = Duration::from_secs(5);

fn ready_condition(conditions: &[Condition]) -> Option<&Condition> {
    conditions::find(conditions, conditions::READY)
}

/// The store's status as the app reports it.
pub fn store_status(name: &str, owned: bool, conditions: Option<&[Condition]>) -> StoreStatus {
    let ready = conditions.and_then(ready_condition);
    StoreStatus {
        name: name.to_string(),
        owned,
        ready: ready.is_some_and(|c| c.status == "True"),
        reason: ready.map(|c| c.reason.clone()),
    }
}

/// `Some(progressing)` while the store does not exist yet or is not Ready: what the app waits
/// for, named with the store's own words.
pub fn waiting_for(
    kind: &str,
    field: &str,
    s: &StoreStatus,
    exists: bool,
    ns: &str,
) -> Option<Health> {
    if !exists {
        let what = if s.owned {
            format!("{kind} \"{}\" is being created", s.name)
        } else {
            format!(
                "{field}.name: {kind} \"{}\" does not exist in namespace \"{ns}\" yet",
                s.name
            )
        };
        return Some(Health::progressing("WaitingForStore", what));
    }
    (!s.ready).then(|| {
        Health::progressing(
            "WaitingForStore",
            format!(
                "{kind} \"{}\" is not Ready yet ({})",
                s.name,
                s.reason.as_deref().unwrap_or("no status yet")
            ),
        )
    })
}

/// What an app needs to know of its Redis store.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RedisView {
    pub status: StoreStatus,
    pub exists: bool,
    /// The Secret and key of the password, when the store requires one.
    pub password: Option<(String, String)>,
    /// Address of the current master, as the store reports it.
    pub master_address: Option<String>,
    /// Replicas in sync with the master: reads go to replicas only while there is one.
    pub replicas_in_sync: i32,
}

impl RedisView {
    pub fn of(b: &Binding<RedisSentinel>, inline: Option<&RedisSentinelSpec>) -> Self {
        let store = b.store.as_deref();
        let status = store.and_then(|s| s.status.as_ref());
        // An inline store not created yet will run with the inline spec.
        let spec = store.map(|s| &s.spec).or(inline);
        let password = spec
            .filter(|s| s.auth.enabled)
            .map(|s| match &s.auth.existing_secret {
                Some(r) => (r.name.clone(), r.key.clone()),
                None => (
                    crate::controllers::redis_sentinel::names::Names::of(&b.name).auth_secret,
                    "password".into(),
                ),
            });
        Self {
            status: store_status(&b.name, b.owned, status.map(|s| s.conditions.as_slice())),
            exists: store.is_some(),
            password,
            master_address: status.and_then(|s| s.master.as_ref()?.address.clone()),
            replicas_in_sync: status.and_then(|s| s.replicas_in_sync).unwrap_or(0),
        }
    }
}

/// What an app needs to know of its PostgreSQL store.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PostgresView {
    pub status: StoreStatus,
    pub exists: bool,
    /// The current Patroni leader, as the store reports it.
    pub leader: Option<String>,
    /// The store runs with the stock images' postgres/postgres.
    pub stock_credentials: bool,
    /// Its spec is known (the store exists, or the app declares it inline).
    pub spec_known: bool,
    /// The Secret with the superuser's `username` and `password`.
    pub superuser_secret: String,
}

impl PostgresView {
    /// Whether what the store will run is known, so its credentials can be judged.
    pub fn exists_or_inline(&self) -> bool {
        self.spec_known
    }
}

impl PostgresView {
    pub fn of(b: &Binding<PatroniCluster>, inline: Option<&PatroniClusterSpec>) -> Self {
        let store = b.store.as_deref();
        let status = store.and_then(|s| s.status.as_ref());
        let spec = store.map(|s| &s.spec).or(inline);
        let names = crate::controllers::patroni_cluster::names::Names::of(&b.name);
        Self {
            status: store_status(&b.name, b.owned, status.map(|s| s.conditions.as_slice())),
            exists: store.is_some(),
            leader: status.and_then(|s| s.leader.clone()),
            stock_credentials: spec.is_some_and(|s| s.auth.stock_app_credentials),
            spec_known: spec.is_some(),
            superuser_secret: spec
                .and_then(|s| s.auth.superuser_secret_name.clone())
                .unwrap_or(names.superuser),
        }
    }
}

/// An inline store's monitoring: its own when set, else the app's.
fn inherited(own: &Option<MonitoringSpec>, app: Option<&MonitoringSpec>) -> Option<MonitoringSpec> {
    own.clone().or_else(|| app.cloned())
}

/// An owned RedisSentinel built from an app's inline spec (monitored as the app is, unless
/// the inline spec says otherwise).
pub fn owned_redis(
    f: &Factory,
    name: &str,
    spec: &RedisSentinelSpec,
    monitoring: Option<&MonitoringSpec>,
) -> crate::error::Result<Child> {
    let mut spec = spec.clone();
    spec.monitoring = inherited(&spec.monitoring, monitoring);
    let mut rs = RedisSentinel::new(name, spec);
    rs.metadata = f.object_meta(name, "redis");
    f.typed(ChildKind::RedisSentinel, &rs)
}

/// An owned PatroniCluster built from an app's inline spec (monitored as the app is, unless
/// the inline spec says otherwise).
pub fn owned_postgres(
    f: &Factory,
    name: &str,
    spec: &PatroniClusterSpec,
    monitoring: Option<&MonitoringSpec>,
) -> crate::error::Result<Child> {
    let mut spec = spec.clone();
    spec.monitoring = inherited(&spec.monitoring, monitoring);
    let mut pc = PatroniCluster::new(name, spec);
    pc.metadata = f.object_meta(name, "postgres");
    f.typed(ChildKind::PatroniCluster, &pc)
}

/// [`STORE_RECHECK`] while a store (`status`, whether it exists) is not Ready but exists or is
/// the app's own; a referenced store that does not exist is left to the watch of its creation.
pub fn recheck(stores: &[(&StoreStatus, bool)]) -> Option<Duration> {
    let converging = |(s, exists): &(&StoreStatus, bool)| !s.ready && (*exists || s.owned);
    stores.iter().any(converging).then_some(STORE_RECHECK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(owned: bool, ready: bool) -> StoreStatus {
        StoreStatus {
            name: "s".into(),
            owned,
            ready,
            reason: None,
        }
    }

    #[test]
    fn apps_look_again_soon_only_while_a_store_converges() {
        let (ready, starting) = (store(false, true), store(false, false));
        assert_eq!(recheck(&[(&ready, true)]), None);
        assert_eq!(
            recheck(&[(&ready, true), (&starting, true)]),
            Some(STORE_RECHECK)
        );
        // Referenced and missing: its creation is a watch event; nothing to poll.
        assert_eq!(recheck(&[(&starting, false)]), None);
        assert_eq!(
            recheck(&[(&store(true, false), false)]),
            Some(STORE_RECHECK)
        );
    }
}
