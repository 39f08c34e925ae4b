//! Pure: a RedisSentinel in, every object it needs out. No client, no clock, no randomness
//! (the generated password is an input), so the same spec always builds the same objects.

use super::conf;
use super::names::{
    APP, BACKUP, CLIENT_LABEL, METRICS_PORT_NAME, Names, REDIS, REDIS_UID, ROLE_MASTER,
    ROLE_REPLICA, SENTINEL, SENTINEL_EXPORTER_PORT, SENTINEL_METRICS_PORT_NAME,
    redis_role_selector,
};
use super::validate::Validated;
use crate::crd::RedisSentinel;
use crate::crd::common::{ExporterSpec, MonitoringSpec};
use crate::error::Result;
use crate::k8s::backup_jobs;
use crate::k8s::children::{Child, ChildKind};
use crate::k8s::factory::{self, Factory, fnv, service_port};
use crate::k8s::monitoring;
use crate::k8s::podspec::{self, restricted_pod, secret_env};
use crate::k8s::policy;
use k8s_openapi::api::core::v1::{ConfigMap, EnvVar};
use std::collections::BTreeMap;

mod pods;

/// Everything a build needs besides the resource itself.
pub struct Inputs<'a> {
    /// Password for a generated auth Secret, used only if that Secret does not exist yet.
    pub generated_password: &'a str,
}

struct Ctx<'a> {
    rs: &'a RedisSentinel,
    v: &'a Validated,
    f: Factory,
    name: &'a str,
    names: &'a Names,
    /// The exporter sidecars (Redis and Sentinel pods), when asked for or monitored.
    exporter: Option<ExporterSpec>,
}

impl Ctx<'_> {
    /// The password, from its Secret, as each of `vars` (none without auth).
    fn password_env(&self, vars: &[&str]) -> Vec<EnvVar> {
        match &self.v.password {
            None => Vec::new(),
            Some((secret, key)) => vars.iter().map(|v| secret_env(v, secret, key)).collect(),
        }
    }
}

fn services(c: &Ctx) -> Result<Vec<Child>> {
    let (f, n) = (&c.f, c.names);
    let redis = [("redis", conf::REDIS_PORT)];
    let sentinel = [("sentinel", conf::SENTINEL_PORT)];
    let master = redis_role_selector(c.name, ROLE_MASTER);
    let replica = redis_role_selector(c.name, ROLE_REPLICA);
    let (redises, sentinels) = (f.selector(REDIS), f.selector(SENTINEL));
    // The metrics ports go on one Service each, so every exporter is scraped once: the Redis
    // one on the headless Service (every member, master or not), the Sentinel one on the
    // Sentinel Service.
    let mut headless = vec![service_port("redis", conf::REDIS_PORT, "redis")];
    let mut sentinel_ports = vec![service_port("sentinel", conf::SENTINEL_PORT, "sentinel")];
    if c.exporter.is_some() {
        headless.push(service_port(
            METRICS_PORT_NAME,
            conf::EXPORTER_PORT,
            "metrics",
        ));
        sentinel_ports.push(service_port(
            SENTINEL_METRICS_PORT_NAME,
            SENTINEL_EXPORTER_PORT,
            "metrics",
        ));
    }
    Ok(vec![
        f.service(&n.master_service, REDIS, master, &redis, false)?,
        f.service(&n.replica_service, REDIS, replica, &redis, false)?,
        f.service_on(&n.redis_headless, REDIS, redises, headless, true)?,
        f.service_on(
            &n.sentinel_service,
            SENTINEL,
            sentinels.clone(),
            sentinel_ports,
            false,
        )?,
        f.service(&n.sentinel_headless, SENTINEL, sentinels, &sentinel, true)?,
    ])
}

/// The ServiceMonitor over both exporters, when monitoring is wanted.
fn service_monitor(c: &Ctx) -> Result<Option<Child>> {
    if !MonitoringSpec::wanted(c.rs.spec.monitoring.as_ref()) {
        return Ok(None);
    }
    let ports = [METRICS_PORT_NAME, SENTINEL_METRICS_PORT_NAME];
    monitoring::service_monitor(&c.f, c.name, REDIS, &ports).map(Some)
}

fn disruption_budgets(c: &Ctx) -> Result<Vec<Child>> {
    [(&c.names.redis, REDIS), (&c.names.sentinel, SENTINEL)]
        .into_iter()
        .map(|(name, component)| factory::disruption_budget(&c.f, name, component))
        .collect()
}

/// Without a password, only the store's own pods, its declared clients (pods labelled
/// `guestbook-operator.dev/redis-client: <name>`) and the operator may connect.
fn network_policy(c: &Ctx) -> Result<Child> {
    let metrics = policy::MetricsPorts {
        ports: match c.exporter {
            Some(_) => vec![conf::EXPORTER_PORT, SENTINEL_EXPORTER_PORT],
            None => Vec::new(),
        },
        scrapers: c
            .rs
            .spec
            .monitoring
            .as_ref()
            .and_then(|m| m.scraper_namespace_selector.clone()),
    };
    policy::store_clients_only(&c.f, &c.names.redis, REDIS, CLIENT_LABEL, &metrics)
}

fn backup(c: &Ctx) -> Result<Vec<Child>> {
    let Some(b) = &c.rs.spec.backup else {
        return Ok(Vec::new());
    };
    let (claim, new_claim) = backup_jobs::claim(&c.f, b, &c.names.backup)?;
    let mut env = vec![podspec::env("RETENTION", b.retention.to_string())];
    env.extend(c.password_env(&["REDISCLI_AUTH"]));
    let pod = backup_jobs::ScriptPod {
        component: BACKUP,
        image: &c.rs.spec.redis.image,
        script: conf::backup_script(c.rs),
        env,
        claim: Some(&claim),
        security: restricted_pod(REDIS_UID, REDIS_UID),
        read_only_claim: false,
    };
    let mut out: Vec<Child> = new_claim.into_iter().collect();
    out.push(backup_jobs::cron_job(
        &c.f,
        &c.names.backup,
        &b.schedule,
        b,
        &pod,
    )?);
    Ok(out)
}

/// Every child of `rs`.
pub fn build(rs: &RedisSentinel, v: &Validated, inputs: &Inputs) -> Result<Vec<Child>> {
    let c = Ctx {
        rs,
        v,
        f: Factory::new(&v.owner, APP),
        name: &v.owner.name,
        names: &v.names,
        exporter: monitoring::exporter(rs.spec.exporter.as_ref(), rs.spec.monitoring.as_ref()),
    };
    let (redis_conf, sentinel_conf) = (
        conf::redis_conf(rs, &v.owner),
        conf::sentinel_conf(&v.owner),
    );
    let redis_hash = fnv(&format!("{redis_conf}{}", conf::redis_start()));
    let sentinel_hash = fnv(&format!("{sentinel_conf}{}", conf::sentinel_start()));
    let mut out = Vec::new();
    if rs.spec.auth.enabled && rs.spec.auth.existing_secret.is_none() {
        out.push(c.f.generated_secret(
            &c.names.auth_secret,
            REDIS,
            &[("password", inputs.generated_password)],
        )?);
    }
    let config = ConfigMap {
        metadata: c.f.object_meta(&c.names.config, REDIS),
        data: Some(BTreeMap::from([
            ("redis.conf".into(), redis_conf),
            ("sentinel.conf".into(), sentinel_conf),
        ])),
        ..ConfigMap::default()
    };
    out.push(c.f.typed(ChildKind::ConfigMap, &config)?);
    out.extend(services(&c)?);
    out.extend(disruption_budgets(&c)?);
    if !rs.spec.auth.enabled {
        out.push(network_policy(&c)?);
    }
    out.push(pods::redis(&c, &redis_hash)?);
    out.push(pods::sentinel(&c, &sentinel_hash)?);
    out.extend(backup(&c)?);
    out.extend(service_monitor(&c)?);
    Ok(out)
}

/// Every child of `rs` as the controller applies it when everything `rs` references exists:
/// offline, for `render` and the builder tests.
pub fn build_offline(rs: &RedisSentinel, inputs: &Inputs) -> Result<Vec<Child>> {
    use super::validate::{World, validate};
    let owner = crate::k8s::owner::Owner::of(rs, super::names::KIND)?;
    let v = validate(rs, owner, &World::assumed(rs)).map_err(|h| crate::error::Error::Invalid {
        kind: super::names::KIND,
        name: kube::ResourceExt::name_any(rs),
        message: h.message().to_string(),
    })?;
    build(rs, &v, inputs)
}
