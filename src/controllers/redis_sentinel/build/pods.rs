//! Pure: the StatefulSets of a RedisSentinel — the Redis servers (with the metrics exporter,
//! when asked) and the Sentinels.

use super::super::conf;
use super::super::names::{
    DEFAULT_EXPORTER_IMAGE, REDIS, REDIS_UID, SENTINEL, SENTINEL_EXPORTER_PORT, VOTES_KEY,
};
use super::Ctx;
use crate::controllers::vote_app::names::KIND as VOTE_APP;
use crate::crd::common::{ExporterSpec, Resources};
use crate::error::Result;
use crate::k8s::children::Child;
use crate::k8s::factory::Members;
use crate::k8s::labels::OWNER_KIND;
use crate::k8s::podspec::{
    self, Timing, config_map_volume, container_port, empty_dir, exec_probe, mount, placement,
    pod_ip_env, read_only_mount, restricted_container, restricted_pod, shell,
};
use k8s_openapi::api::core::v1::{Container, PodSpec, Probe, Volume};

/// The Redis servers' StatefulSet; `config_hash` rolls them when what they read at start
/// changes.
pub(super) fn redis(c: &Ctx, config_hash: &str) -> Result<Child> {
    let r = &c.rs.spec.redis;
    let n = c.names;
    let mut containers = vec![server(
        c,
        REDIS,
        &r.image,
        conf::redis_start(),
        conf::REDIS_PORT,
        &r.resources,
    )];
    if let Some(x) = &c.exporter {
        containers.push(exporter(c, x));
    }
    let mut volumes = vec![
        config_map_volume("config", &n.config, &["redis.conf"]),
        empty_dir("tmp"),
    ];
    if r.storage.is_none() {
        volumes.push(empty_dir("data"));
    }
    let members = Members {
        replicas: r.replicas,
        service: &n.redis_headless,
        // The operator rolls Redis pods itself: replicas first, then a Sentinel failover,
        // then the old master.
        update: "OnDelete",
        config_hash,
        pod: pod(c, REDIS, 30, containers, volumes),
        storage: r.storage.as_ref(),
    };
    c.f.stateful_set(&n.redis, REDIS, members)
}

/// The Sentinels' StatefulSet; `config_hash` rolls them when what they read at start changes.
pub(super) fn sentinel(c: &Ctx, config_hash: &str) -> Result<Child> {
    let s = &c.rs.spec.sentinel;
    let n = c.names;
    let image = s.image.as_deref().unwrap_or(&c.rs.spec.redis.image);
    let container = server(
        c,
        SENTINEL,
        image,
        conf::sentinel_start(),
        conf::SENTINEL_PORT,
        &s.resources,
    );
    let volumes = vec![
        config_map_volume("config", &n.config, &["sentinel.conf"]),
        empty_dir("data"),
        empty_dir("tmp"),
    ];
    let mut containers = vec![container];
    if let Some(x) = &c.exporter {
        containers.push(sentinel_exporter(c, x));
    }
    let members = Members {
        replicas: s.replicas,
        service: &n.sentinel_headless,
        // One Sentinel at a time, each back and ready before the next goes.
        update: "RollingUpdate",
        config_hash,
        pod: pod(c, SENTINEL, 10, containers, volumes),
        storage: None,
    };
    c.f.stateful_set(&n.sentinel, SENTINEL, members)
}

/// A pod of `component`, without an API token, placed by the spec's scheduling settings.
fn pod(
    c: &Ctx,
    component: &str,
    grace_seconds: i64,
    containers: Vec<Container>,
    volumes: Vec<Volume>,
) -> PodSpec {
    let mut pod = PodSpec {
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(grace_seconds),
        security_context: Some(restricted_pod(REDIS_UID, REDIS_UID)),
        containers,
        volumes: Some(volumes),
        ..PodSpec::default()
    };
    placement(
        &mut pod,
        c.rs.spec.scheduling.as_ref(),
        &c.f.selector(component),
    );
    pod
}

/// A Redis server or a Sentinel (`name`), started by the shell script `start` from the
/// configuration in /etc/redis, serving on the port of the same name.
fn server(
    c: &Ctx,
    name: &str,
    image: &str,
    start: String,
    port: i32,
    resources: &Resources,
) -> Container {
    let mut env = vec![pod_ip_env()];
    env.extend(c.password_env(&["REDIS_PASSWORD", "REDISCLI_AUTH"]));
    let readiness = Timing {
        period: 5,
        timeout: 2,
        failures: 3,
        delay: 0,
    };
    let liveness = Timing {
        period: 10,
        timeout: 5,
        failures: 6,
        delay: 15,
    };
    Container {
        name: name.into(),
        image: Some(image.into()),
        command: Some(shell(start)),
        env: Some(env),
        ports: Some(vec![container_port(name, port)]),
        readiness_probe: Some(ping_probe(port, readiness)),
        liveness_probe: Some(ping_probe(port, liveness)),
        security_context: Some(restricted_container()),
        volume_mounts: Some(vec![
            mount("data", "/data"),
            read_only_mount("config", "/etc/redis"),
            mount("tmp", "/tmp"),
        ]),
        resources: resources.clone(),
        ..Container::default()
    }
}

fn ping_probe(port: i32, timing: Timing) -> Probe {
    let ping = format!("redis-cli -h 127.0.0.1 -p {port} ping | grep -q PONG");
    exec_probe(&["sh", "-c", &ping], timing)
}

fn exporter(c: &Ctx, x: &ExporterSpec) -> Container {
    let address = format!("redis://127.0.0.1:{}", conf::REDIS_PORT);
    let mut env = vec![podspec::env("REDIS_ADDR", address)];
    env.extend(c.password_env(&["REDIS_PASSWORD"]));
    // A VoteApp's own Redis queues votes: the queue's length feeds the VoteQueueGrowing alert
    // (`redis_key_size{key="votes"}`).
    let labels = c.rs.metadata.labels.as_ref();
    if labels.and_then(|l| l.get(OWNER_KIND)).map(String::as_str) == Some(VOTE_APP) {
        env.push(podspec::env("REDIS_EXPORTER_CHECK_SINGLE_KEYS", VOTES_KEY));
    }
    podspec::exporter(x, DEFAULT_EXPORTER_IMAGE, conf::EXPORTER_PORT, env)
}

/// The same exporter against the pod's Sentinel: redis_exporter reports `redis_sentinel_*`
/// (masters, their addresses, the Sentinels it sees) when the address is a Sentinel's.
fn sentinel_exporter(c: &Ctx, x: &ExporterSpec) -> Container {
    let address = format!("redis://127.0.0.1:{}", conf::SENTINEL_PORT);
    let listen = format!(":{SENTINEL_EXPORTER_PORT}");
    let mut env = vec![
        podspec::env("REDIS_ADDR", address),
        podspec::env("REDIS_EXPORTER_WEB_LISTEN_ADDRESS", listen),
    ];
    env.extend(c.password_env(&["REDIS_PASSWORD"]));
    podspec::exporter(x, DEFAULT_EXPORTER_IMAGE, SENTINEL_EXPORTER_PORT, env)
}
