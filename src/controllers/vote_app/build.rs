//! Pure: a validated VoteApp in, every object it needs out — its owned stores, the `redis` and
//! `db` Services the stock images hard-code, the vote, result and worker tiers (with the
//! per-pod queue's sidecars in `PerPod` mode), Ingresses and HTTPRoutes.

use super::names::{
    APP, DB, DB_PORT, DB_SERVICE, PRIMARY_ANNOTATION, QUEUE_KEY, REDIS, REDIS_PORT, REDIS_SERVICE,
    RESULT, VOTE, WORKER,
};
use super::validate::Validated;
use crate::controllers::apps::tier::{self, Http, PodExtras, Tier};
use crate::controllers::apps::{POSTGRES_CLIENT_LABEL, REDIS_CLIENT_LABEL, glue, route, stores};
use crate::controllers::patroni_cluster::names::{ROLE_PRIMARY, member_role_selector};
use crate::controllers::redis_sentinel::names::{ROLE_MASTER, redis_role_selector};
use crate::crd::VoteApp;
use crate::crd::vote_app::{QueueMode, QueueSpec, WebTierSpec};
use crate::error::Result;
use crate::k8s::children::Child;
use crate::k8s::factory::Factory;
use crate::k8s::podspec::{self, Timing, env, secret_env};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, ExecAction, HostAlias, Lifecycle, LifecycleHandler,
    Volume, VolumeMount,
};
use serde_json::Value;
use std::collections::BTreeMap;

/// What the cluster's state decides about this build.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inputs {
    /// Worker pods (the spec's, or the queue-driven count).
    pub workers: i32,
}

/// Everything a VoteApp needs, and its HTTPRoutes (applied apart: see [`route`]).
pub struct Built {
    pub children: Vec<Child>,
    pub routes: Vec<(String, Value)>,
}

fn store_clients(v: &Validated) -> BTreeMap<String, String> {
    let mut pairs = vec![(POSTGRES_CLIENT_LABEL, v.postgres_store.name.as_str())];
    if let Some(r) = &v.redis_store {
        pairs.push((REDIS_CLIENT_LABEL, r.name.as_str()));
    }
    tier::client_labels(&pairs)
}

/// Credentials for images that read them; the stock images hard-code theirs.
fn redis_env(v: &Validated, stock: bool) -> Vec<EnvVar> {
    match (stock, v.redis.as_ref().and_then(|r| r.password.as_ref())) {
        (false, Some((secret, key))) => vec![secret_env("REDIS_PASSWORD", secret, key)],
        _ => Vec::new(),
    }
}

fn postgres_env(v: &Validated, stock: bool) -> Vec<EnvVar> {
    if stock {
        return Vec::new();
    }
    let secret = &v.postgres.superuser_secret;
    vec![
        secret_env("POSTGRES_USER", secret, "username"),
        secret_env("POSTGRES_PASSWORD", secret, "password"),
    ]
}

fn web<'a>(
    v: &Validated,
    component: &'a str,
    name: &str,
    image: &'a str,
    w: &'a WebTierSpec,
    env: Vec<EnvVar>,
    client_affinity: bool,
) -> Tier<'a> {
    Tier {
        component,
        name: name.to_string(),
        image,
        replicas: w.replicas,
        autoscaling: w.autoscaling.as_ref(),
        resources: &w.resources,
        env,
        http: Some(Http {
            container_port: w.container_port,
            probe_path: "/",
            service: Some(&w.service),
            client_affinity,
        }),
        pod_labels: store_clients(v),
        pod_annotations: BTreeMap::new(),
        extra: PodExtras::default(),
    }
}

/// The per-pod queue (`PerPod`): a Redis and a worker as native sidecars, `redis` resolving
/// to the pod itself. Sidecars stop after the vote container, in reverse order: the Redis
/// sidecar (last) first, and its preStop hook holds it until the worker (still running) has
/// drained the queue — bounded by the grace period. Redis keeps an AOF on an emptyDir, so a
/// container restart loses nothing either.
fn per_pod_queue(app: &VoteApp, v: &Validated, q: &QueueSpec) -> PodExtras {
    let mut worker_env = redis_env(v, v.stock_worker);
    worker_env.extend(postgres_env(v, v.stock_worker));
    let always = Some("Always".to_string());
    let worker = Container {
        name: "queue-worker".into(),
        image: Some(app.spec.worker.image.clone()),
        restart_policy: always.clone(),
        env: (!worker_env.is_empty()).then_some(worker_env),
        resources: q.resources.clone(),
        ..Container::default()
    };
    // Until the worker has drained the queue, then a second more: the worker may still be
    // writing the last vote it popped, and the kubelet stops the worker sidecar the moment
    // Redis has exited.
    let drained = format!(
        "until [ \"$(redis-cli -h 127.0.0.1 -p {REDIS_PORT} llen {QUEUE_KEY})\" = 0 ]; do sleep 1; done; sleep 1"
    );
    let timing = Timing {
        period: 5,
        timeout: 2,
        failures: 3,
        delay: 0,
    };
    let redis = Container {
        name: "queue-redis".into(),
        image: Some(q.redis_image.clone()),
        restart_policy: always,
        command: Some(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                "6379",
                "--dir",
                "/data",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ]
            .map(String::from)
            .to_vec(),
        ),
        readiness_probe: Some(podspec::exec_probe(
            &["redis-cli", "-h", "127.0.0.1", "ping"],
            timing,
        )),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec!["sh".into(), "-c".into(), drained]),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "queue".into(),
            mount_path: "/data".into(),
            ..VolumeMount::default()
        }]),
        resources: q.resources.clone(),
        ..Container::default()
    };
    PodExtras {
        sidecars: vec![worker, redis],
        volumes: vec![Volume {
            name: "queue".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        }],
        host_aliases: vec![HostAlias {
            ip: "127.0.0.1".into(),
            hostnames: Some(vec![REDIS_SERVICE.into()]),
        }],
        termination_grace_seconds: Some(120),
        main: None,
    }
}

pub fn build(app: &VoteApp, v: &Validated, inputs: &Inputs) -> Result<Built> {
    let f = Factory::new(&v.owner, APP);
    let spec = &app.spec;
    let mut out = Vec::new();
    let inline_redis = spec.redis.as_ref().and_then(|r| r.spec.as_deref());
    if let (Some(b), Some(inline)) = (&v.redis_store, inline_redis) {
        out.push(stores::owned_redis(
            &f,
            &b.name,
            inline,
            app.spec.monitoring.as_ref(),
        )?);
    }
    if let Some(inline) = spec.postgres.spec.as_deref() {
        out.push(stores::owned_postgres(
            &f,
            &v.postgres_store.name,
            inline,
            app.spec.monitoring.as_ref(),
        )?);
    }
    if let Some(b) = &v.redis_store {
        let selector = redis_role_selector(&b.name, ROLE_MASTER);
        out.push(glue::service(
            &f,
            REDIS_SERVICE,
            REDIS,
            selector,
            REDIS_PORT,
            "redis",
        )?);
    }
    let primary = member_role_selector(&v.postgres_store.name, ROLE_PRIMARY);
    out.push(glue::service(
        &f,
        DB_SERVICE,
        DB,
        primary,
        DB_PORT,
        "postgresql",
    )?);

    let sched = spec.scheduling.as_ref();
    let vote_image = spec.vote.web.vote_image();
    let mut vote_env = vec![
        env("OPTION_A", &spec.vote.option_a),
        env("OPTION_B", &spec.vote.option_b),
    ];
    let mut vote = web(
        v,
        VOTE,
        &v.names.vote,
        &vote_image,
        &spec.vote.web,
        Vec::new(),
        false,
    );
    match (v.mode, &spec.queue) {
        (QueueMode::PerPod, q) => {
            let q = q.clone().unwrap_or_default();
            vote.extra = per_pod_queue(app, v, &q);
        }
        (QueueMode::Shared, _) => vote_env.extend(redis_env(v, v.stock_vote)),
    }
    vote.env = vote_env;
    out.extend(tier::objects(&f, &vote, sched)?);

    let result_image = spec.result.result_image();
    let r = &spec.result;
    // socket.io keeps a session per pod: with more than one pod a client must stay on one.
    let most = r
        .autoscaling
        .as_ref()
        .map(|a| a.max_replicas)
        .unwrap_or(r.replicas);
    let mut result_env = vec![env("PORT", r.container_port.to_string())];
    result_env.extend(postgres_env(v, v.stock_result));
    let mut result = web(
        v,
        RESULT,
        &v.names.result,
        &result_image,
        r,
        result_env,
        most > 1,
    );
    // The stock result image keeps one PostgreSQL client for ever: a new primary means new pods.
    if let Some(leader) = &v.postgres.leader {
        result.pod_annotations = tier::roll_annotation(PRIMARY_ANNOTATION, leader);
    }
    out.extend(tier::objects(&f, &result, sched)?);

    if v.mode == QueueMode::Shared {
        let w = &spec.worker;
        let mut worker_env = redis_env(v, v.stock_worker);
        worker_env.extend(postgres_env(v, v.stock_worker));
        let worker = Tier {
            component: WORKER,
            name: v.names.worker.clone(),
            image: &w.image,
            replicas: inputs.workers,
            autoscaling: None,
            resources: &w.resources,
            env: worker_env,
            http: None,
            pod_labels: store_clients(v),
            pod_annotations: BTreeMap::new(),
            extra: PodExtras::default(),
        };
        out.extend(tier::objects(&f, &worker, sched)?);
    }

    let mut routes = Vec::new();
    for (component, name, w) in [
        (VOTE, &v.names.vote, &spec.vote.web),
        (RESULT, &v.names.result, r),
    ] {
        if let Some(ing) = &w.ingress {
            out.push(tier::ingress(
                &f,
                name,
                component,
                ing,
                name,
                w.service.port,
            )?);
        }
        if let Some(rt) = &w.http_route {
            routes.push((
                name.clone(),
                route::build(&f, name, component, rt, name, w.service.port),
            ));
        }
    }
    Ok(Built {
        children: out,
        routes,
    })
}

/// Every object of `app` as the controller applies it in a namespace holding nothing else
/// (inline stores as declared, referenced ones not found, no queue read): offline, for
/// `render` and the builder tests.
pub fn build_offline(app: &VoteApp) -> Result<Built> {
    use crate::context::Caches;
    let owner = crate::k8s::owner::Owner::of(app, super::names::KIND)?;
    let caches = Caches::from_objects(vec![], vec![], vec![], vec![app.clone()]);
    let v = super::validate::validate(app, owner, &caches).map_err(|h| {
        crate::error::Error::Invalid {
            kind: super::names::KIND,
            name: kube::ResourceExt::name_any(app),
            message: h.message().to_string(),
        }
    })?;
    let w = &app.spec.worker;
    let workers = w
        .autoscaling
        .as_ref()
        .map(|a| a.min_replicas)
        .unwrap_or(w.replicas);
    build(app, &v, &Inputs { workers })
}
