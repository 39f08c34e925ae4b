//! Pure: a RedisSentinel in, every object it needs out. No client, no clock, no randomness
//! (the generated password is an input), so the same spec always builds the same objects.

use super::conf;
use crate::crd::RedisSentinel;
use crate::crd::common::ClaimRetention;
use crate::k8s::backup_jobs;
use crate::k8s::children::{Child, ChildKind};
use crate::k8s::factory::{
    self, Factory, placement, pod_ip_env, restricted_container, with_resources,
};
use crate::k8s::labels;
use serde_json::{Value, json};
use std::collections::BTreeMap;

use super::names::{APP, DEFAULT_EXPORTER_IMAGE, Names, REDIS_UID, ROLE_MASTER, ROLE_REPLICA};
use super::validate::Validated;

/// Everything a build needs besides the resource itself.
pub struct Inputs<'a> {
    /// Password for a generated auth Secret, used only if that Secret does not exist yet.
    pub generated_password: &'a str,
}

pub use crate::k8s::factory::fnv;

struct Ctx<'a> {
    rs: &'a RedisSentinel,
    v: &'a Validated,
    f: Factory,
    name: &'a str,
    names: &'a Names,
}

impl Ctx<'_> {
    fn labels(&self, component: &str) -> BTreeMap<String, String> {
        self.f.labels(component)
    }

    fn selector(&self, component: &str) -> BTreeMap<String, String> {
        self.f.selector(component)
    }

    fn meta(&self, name: &str, component: &str) -> Value {
        self.f.meta(name, component)
    }

    fn child(&self, kind: ChildKind, name: &str, object: Value) -> Child {
        self.f.child(kind, name, object)
    }

    fn password_env(&self) -> Vec<Value> {
        match &self.v.password {
            None => Vec::new(),
            Some((secret, key)) => ["REDIS_PASSWORD", "REDISCLI_AUTH"]
                .iter()
                .map(|var| json!({"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}))
                .collect(),
        }
    }
}

fn restricted_pod() -> Value {
    factory::restricted_pod(REDIS_UID, REDIS_UID)
}

fn ping_probe(port: i32, period: i32, timeout: i32, failures: i32, delay: i32) -> Value {
    json!({
        "exec": {"command": ["sh", "-c", format!("redis-cli -h 127.0.0.1 -p {port} ping | grep -q PONG")]},
        "initialDelaySeconds": delay,
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    })
}

fn services(c: &Ctx) -> Vec<Child> {
    let n = &c.names;
    let redis_sel = c.selector("redis");
    let mut master_sel = redis_sel.clone();
    master_sel.insert(labels::ROLE.into(), ROLE_MASTER.into());
    let mut replica_sel = redis_sel.clone();
    replica_sel.insert(labels::ROLE.into(), ROLE_REPLICA.into());
    let redis_port = json!([{"name": "redis", "port": conf::REDIS_PORT, "targetPort": "redis"}]);
    let sentinel_port =
        json!([{"name": "sentinel", "port": conf::SENTINEL_PORT, "targetPort": "sentinel"}]);
    let svc = |name: &str,
               component: &str,
               selector: &BTreeMap<String, String>,
               ports: &Value,
               headless: bool| {
        let mut spec = json!({"selector": selector, "ports": ports});
        if headless {
            // Members are addressed by name before they are ready (replication, Sentinel).
            spec["clusterIP"] = json!("None");
            spec["publishNotReadyAddresses"] = json!(true);
        }
        c.child(
            ChildKind::Service,
            name,
            json!({"metadata": c.meta(name, component), "spec": spec}),
        )
    };
    vec![
        svc(&n.master_service, "redis", &master_sel, &redis_port, false),
        svc(
            &n.replica_service,
            "redis",
            &replica_sel,
            &redis_port,
            false,
        ),
        svc(&n.redis_headless, "redis", &redis_sel, &redis_port, true),
        svc(
            &n.sentinel_service,
            "sentinel",
            &c.selector("sentinel"),
            &sentinel_port,
            false,
        ),
        svc(
            &n.sentinel_headless,
            "sentinel",
            &c.selector("sentinel"),
            &sentinel_port,
            true,
        ),
    ]
}

fn redis_statefulset(c: &Ctx, config_hash: &str) -> Child {
    let r = &c.rs.spec.redis;
    let n = &c.names;
    let mut env = vec![pod_ip_env()];
    env.extend(c.password_env());
    let mut containers = vec![with_resources(
        json!({
            "name": "redis",
            "image": r.image,
            "command": ["sh", "-c", conf::redis_start()],
            "env": env,
            "ports": [{"name": "redis", "containerPort": conf::REDIS_PORT}],
            "readinessProbe": ping_probe(conf::REDIS_PORT, 5, 2, 3, 0),
            "livenessProbe": ping_probe(conf::REDIS_PORT, 10, 5, 6, 15),
            "securityContext": restricted_container(),
            "volumeMounts": [
                {"name": "data", "mountPath": "/data"},
                {"name": "config", "mountPath": "/etc/redis", "readOnly": true},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
        }),
        &r.resources,
    )];
    if let Some(x) = c.rs.spec.exporter.as_ref().filter(|x| x.enabled) {
        let mut env = vec![
            json!({"name": "REDIS_ADDR", "value": format!("redis://127.0.0.1:{}", conf::REDIS_PORT)}),
        ];
        if let Some((secret, key)) = &c.v.password {
            env.push(json!({"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}));
        }
        containers.push(with_resources(
            json!({
                "name": "exporter",
                "image": x.image.clone().unwrap_or_else(|| DEFAULT_EXPORTER_IMAGE.into()),
                "env": env,
                "ports": [{"name": "metrics", "containerPort": conf::EXPORTER_PORT}],
                "securityContext": restricted_container(),
            }),
            &x.resources,
        ));
    }
    let mut volumes = vec![
        json!({"name": "config", "configMap": {"name": n.config, "items": [{"key": "redis.conf", "path": "redis.conf"}]}}),
        json!({"name": "tmp", "emptyDir": {}}),
    ];
    let storage = r.storage.as_ref();
    if storage.is_none() {
        volumes.push(json!({"name": "data", "emptyDir": {}}));
    }
    let selector = c.selector("redis");
    let mut pod_spec = json!({
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "terminationGracePeriodSeconds": 30,
        "securityContext": restricted_pod(),
        "containers": containers,
        "volumes": volumes,
    });
    if let Some(m) = pod_spec.as_object_mut() {
        placement(m, c.rs.spec.scheduling.as_ref(), &selector);
    }
    let mut spec = json!({
        "replicas": r.replicas,
        "serviceName": n.redis_headless,
        "podManagementPolicy": "Parallel",
        // The operator rolls Redis pods itself: replicas first, then a Sentinel failover,
        // then the old master.
        "updateStrategy": {"type": "OnDelete"},
        "selector": {"matchLabels": selector},
        "template": {
            "metadata": {"labels": c.labels("redis"), "annotations": {labels::CONFIG_HASH: config_hash}},
            "spec": pod_spec,
        },
    });
    if let Some(s) = storage {
        let mut claim = json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": s.size}}});
        if let Some(class) = &s.storage_class_name {
            claim["storageClassName"] = json!(class);
        }
        spec["volumeClaimTemplates"] =
            json!([{"metadata": {"name": "data", "labels": selector}, "spec": claim}]);
        let when_deleted = match s.when_deleted {
            ClaimRetention::Retain => "Retain",
            ClaimRetention::Delete => "Delete",
        };
        spec["persistentVolumeClaimRetentionPolicy"] =
            json!({"whenDeleted": when_deleted, "whenScaled": "Retain"});
    }
    c.child(
        ChildKind::StatefulSet,
        &n.redis,
        json!({"metadata": c.meta(&n.redis, "redis"), "spec": spec}),
    )
}

fn sentinel_statefulset(c: &Ctx, config_hash: &str) -> Child {
    let s = &c.rs.spec.sentinel;
    let n = &c.names;
    let mut env = vec![pod_ip_env()];
    env.extend(c.password_env());
    let image = s
        .image
        .clone()
        .unwrap_or_else(|| c.rs.spec.redis.image.clone());
    let container = with_resources(
        json!({
            "name": "sentinel",
            "image": image,
            "command": ["sh", "-c", conf::sentinel_start()],
            "env": env,
            "ports": [{"name": "sentinel", "containerPort": conf::SENTINEL_PORT}],
            "readinessProbe": ping_probe(conf::SENTINEL_PORT, 5, 2, 3, 0),
            "livenessProbe": ping_probe(conf::SENTINEL_PORT, 10, 5, 6, 15),
            "securityContext": restricted_container(),
            "volumeMounts": [
                {"name": "data", "mountPath": "/data"},
                {"name": "config", "mountPath": "/etc/redis", "readOnly": true},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
        }),
        &s.resources,
    );
    let selector = c.selector("sentinel");
    let mut pod_spec = json!({
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "terminationGracePeriodSeconds": 10,
        "securityContext": restricted_pod(),
        "containers": [container],
        "volumes": [
            {"name": "config", "configMap": {"name": n.config, "items": [{"key": "sentinel.conf", "path": "sentinel.conf"}]}},
            {"name": "data", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
        ],
    });
    if let Some(m) = pod_spec.as_object_mut() {
        placement(m, c.rs.spec.scheduling.as_ref(), &selector);
    }
    let spec = json!({
        "replicas": s.replicas,
        "serviceName": n.sentinel_headless,
        "podManagementPolicy": "Parallel",
        // One Sentinel at a time, each back and ready before the next goes.
        "updateStrategy": {"type": "RollingUpdate"},
        "selector": {"matchLabels": selector},
        "template": {
            "metadata": {"labels": c.labels("sentinel"), "annotations": {labels::CONFIG_HASH: config_hash}},
            "spec": pod_spec,
        },
    });
    c.child(
        ChildKind::StatefulSet,
        &n.sentinel,
        json!({"metadata": c.meta(&n.sentinel, "sentinel"), "spec": spec}),
    )
}

fn disruption_budgets(c: &Ctx) -> Vec<Child> {
    ["redis", "sentinel"]
        .iter()
        .map(|component| {
            factory::disruption_budget(&c.f, &format!("{}-{component}", c.name), component)
        })
        .collect()
}

/// Without a password, only the store's own pods, its declared clients (pods labelled
/// `guestbook-operator.dev/redis-client: <name>`) and the operator may connect.
fn network_policy(c: &Ctx) -> Child {
    let name = format!("{}-redis", c.name);
    let instance = BTreeMap::from([
        (labels::NAME.to_string(), APP.to_string()),
        (labels::INSTANCE.to_string(), c.name.to_string()),
    ]);
    let mut rules = vec![json!({"from": [
        {"podSelector": {"matchLabels": instance}},
        {"podSelector": {"matchLabels": {"guestbook-operator.dev/redis-client": c.name}}},
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {labels::NAME: "guestbook-operator"}}},
    ]})];
    if c.rs.spec.exporter.as_ref().is_some_and(|x| x.enabled) {
        rules.push(json!({"ports": [{"port": conf::EXPORTER_PORT}]}));
    }
    let spec = json!({"podSelector": {"matchLabels": instance}, "policyTypes": ["Ingress"], "ingress": rules});
    c.child(
        ChildKind::NetworkPolicy,
        &name,
        json!({"metadata": c.meta(&name, "redis"), "spec": spec}),
    )
}

fn backup(c: &Ctx) -> Vec<Child> {
    let Some(b) = &c.rs.spec.backup else {
        return Vec::new();
    };
    let (claim, new_claim) = backup_jobs::claim(&c.f, b, &c.names.backup);
    let mut env = vec![json!({"name": "RETENTION", "value": b.retention.to_string()})];
    if let Some((secret, key)) = &c.v.password {
        env.push(json!({"name": "REDISCLI_AUTH", "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}));
    }
    let pod = backup_jobs::ScriptPod {
        component: "backup",
        image: &c.rs.spec.redis.image,
        script: conf::backup_script(c.rs),
        env,
        claim: Some(&claim),
        security: restricted_pod(),
        read_only_claim: false,
    };
    let mut out: Vec<Child> = new_claim.into_iter().collect();
    out.push(backup_jobs::cron_job(
        &c.f,
        &c.names.backup,
        &b.schedule,
        b,
        &pod,
    ));
    out
}

/// Every child of `rs`.
pub fn build(rs: &RedisSentinel, v: &Validated, inputs: &Inputs) -> Vec<Child> {
    let c = Ctx {
        rs,
        v,
        f: Factory::new(&v.owner, APP),
        name: &v.owner.name,
        names: &v.names,
    };
    let (redis_conf, sentinel_conf) = (
        conf::redis_conf(rs, &v.owner),
        conf::sentinel_conf(&v.owner),
    );
    let mut out = Vec::new();
    if rs.spec.auth.enabled && rs.spec.auth.existing_secret.is_none() {
        out.push(c.f.generated_secret(
            &c.names.auth_secret,
            "redis",
            json!({"password": inputs.generated_password}),
        ));
    }
    out.push(c.child(
        ChildKind::ConfigMap,
        &c.names.config,
        json!({"metadata": c.meta(&c.names.config, "redis"), "data": {"redis.conf": redis_conf, "sentinel.conf": sentinel_conf}}),
    ));
    out.extend(services(&c));
    out.extend(disruption_budgets(&c));
    if !rs.spec.auth.enabled {
        out.push(network_policy(&c));
    }
    out.push(redis_statefulset(
        &c,
        &fnv(&format!("{redis_conf}{}", conf::redis_start())),
    ));
    out.push(sentinel_statefulset(
        &c,
        &fnv(&format!("{sentinel_conf}{}", conf::sentinel_start())),
    ));
    out.extend(backup(&c));
    out
}

/// Every child of `rs` as the controller applies it when everything `rs` references exists:
/// offline, for `render` and the builder tests.
pub fn build_offline(rs: &RedisSentinel, inputs: &Inputs) -> crate::error::Result<Vec<Child>> {
    use super::validate::{World, validate};
    let owner = crate::k8s::owner::Owner::of(rs, super::names::KIND)?;
    let v = validate(rs, owner, &World::assumed(rs)).map_err(|h| crate::error::Error::Invalid {
        kind: super::names::KIND,
        name: kube::ResourceExt::name_any(rs),
        message: h.message().to_string(),
    })?;
    Ok(build(rs, &v, inputs))
}
