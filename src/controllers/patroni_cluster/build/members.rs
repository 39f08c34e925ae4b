//! Pure: the StatefulSet of a PatroniCluster's members — Patroni (with PostgreSQL) and, when
//! asked, the metrics exporter.

use super::super::names::{
    API_PORT, DEFAULT_EXPORTER_IMAGE, EXPORTER_PORT, PG_GID, PG_PORT, PG_UID, POSTGRES,
    ROLE_PRIMARY, ROLE_REPLICA,
};
use super::super::validate::Validated;
use crate::crd::PatroniCluster;
use crate::crd::common::ExporterSpec;
use crate::error::Result;
use crate::k8s::children::Child;
use crate::k8s::factory::{Factory, Members};
use crate::k8s::labels;
use crate::k8s::monitoring;
use crate::k8s::podspec::{
    self, Timing, config_map_volume, container_port, empty_dir, env, field_env, http_probe, mount,
    placement, pod_ip_env, read_only_mount, restricted_container, restricted_pod, secret_env,
    shell,
};
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

const DATA_MOUNT: &str = "/home/postgres/pgdata";
const DATA_DIR: &str = "/home/postgres/pgdata/pgroot/data";

/// The members' StatefulSet with `replicas` pods; `config_hash` rolls them when what they
/// read at start changes.
pub fn statefulset(
    f: &Factory,
    pc: &PatroniCluster,
    v: &Validated,
    config_hash: &str,
    replicas: i32,
) -> Result<Child> {
    let s = &pc.spec;
    let n = &v.names;
    let mut containers = vec![patroni(f, pc, v)];
    if let Some(x) = monitoring::exporter(s.exporter.as_ref(), s.monitoring.as_ref()) {
        containers.push(exporter(&x, &v.superuser_secret));
    }
    let mut pod = PodSpec {
        service_account_name: Some(n.account.clone()),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(30),
        security_context: Some(restricted_pod(PG_UID, PG_GID)),
        containers,
        volumes: Some(vec![
            config_map_volume("config", &n.config, &[]),
            empty_dir("tmp"),
            empty_dir("run"),
        ]),
        ..PodSpec::default()
    };
    placement(&mut pod, s.scheduling.as_ref(), &f.selector(POSTGRES));
    let members = Members {
        replicas,
        service: &n.headless,
        // The operator rolls members itself: replicas first, then a switchover, then the old
        // primary.
        update: "OnDelete",
        config_hash,
        pod,
        storage: Some(&s.storage),
    };
    f.stateful_set(&n.statefulset, POSTGRES, members)
}

fn patroni(f: &Factory, pc: &PatroniCluster, v: &Validated) -> Container {
    let s = &pc.spec;
    let parent = DATA_DIR.rsplit_once('/').map_or(DATA_MOUNT, |(p, _)| p);
    // The data directory's parent must exist for pg_basebackup (an image's entrypoint would
    // make it; we run Patroni directly), and PostgreSQL refuses a data directory a volume
    // plugin made group-writable.
    let start = format!(
        "mkdir -p {parent} && {{ [ ! -d {DATA_DIR} ] || chmod 0700 {DATA_DIR}; }} && exec patroni /etc/patroni/patroni.yml"
    );
    let api = || IntOrString::String("patroni".into());
    let timing = |period, timeout, failures, delay| Timing {
        period,
        timeout,
        failures,
        delay,
    };
    Container {
        name: POSTGRES.into(),
        image: Some(s.image.clone()),
        command: Some(shell(start)),
        env: Some(patroni_env(f, pc, v)),
        ports: Some(vec![
            container_port("postgresql", PG_PORT),
            container_port("patroni", API_PORT),
        ]),
        readiness_probe: Some(http_probe("/readiness", api(), timing(5, 3, 3, 0))),
        liveness_probe: Some(http_probe("/liveness", api(), timing(10, 5, 6, 30))),
        security_context: Some(restricted_container()),
        volume_mounts: Some(vec![
            mount("data", DATA_MOUNT),
            read_only_mount("config", "/etc/patroni"),
            mount("tmp", "/tmp"),
            mount("run", "/var/run/postgresql"),
        ]),
        resources: s.resources.clone(),
        ..Container::default()
    }
}

/// Patroni's per-pod settings and passwords (its configuration file holds the rest).
fn patroni_env(f: &Factory, pc: &PatroniCluster, v: &Validated) -> Vec<EnvVar> {
    let (superuser, replication) = (&v.superuser_secret, &v.replication_secret);
    // Serialising string pairs cannot fail.
    let patroni_labels = serde_json::to_string(&f.selector(POSTGRES)).unwrap_or_default();
    vec![
        pod_ip_env(),
        field_env("PATRONI_NAME", "metadata.name"),
        env("PATRONI_SCOPE", &f.instance),
        field_env("PATRONI_KUBERNETES_NAMESPACE", "metadata.namespace"),
        env("PATRONI_KUBERNETES_POD_IP", "$(POD_IP)"),
        // These select the members and are stamped on Patroni's own ConfigMaps.
        env("PATRONI_KUBERNETES_LABELS", patroni_labels),
        // Patroni also selects members by `<scope_label>=<cluster name>`; our instance label is that.
        env("PATRONI_KUBERNETES_SCOPE_LABEL", labels::INSTANCE),
        env("PATRONI_KUBERNETES_ROLE_LABEL", labels::ROLE),
        env("PATRONI_KUBERNETES_LEADER_LABEL_VALUE", ROLE_PRIMARY),
        env(
            "PATRONI_KUBERNETES_STANDBY_LEADER_LABEL_VALUE",
            ROLE_PRIMARY,
        ),
        env("PATRONI_KUBERNETES_FOLLOWER_LABEL_VALUE", ROLE_REPLICA),
        secret_env("PATRONI_SUPERUSER_USERNAME", superuser, "username"),
        secret_env("PATRONI_SUPERUSER_PASSWORD", superuser, "password"),
        secret_env("PATRONI_REPLICATION_USERNAME", replication, "username"),
        secret_env("PATRONI_REPLICATION_PASSWORD", replication, "password"),
        env("PATRONI_POSTGRESQL_DATA_DIR", DATA_DIR),
        env("PATRONI_POSTGRESQL_PGPASS", "/tmp/pgpass"),
        env(
            "PATRONI_POSTGRESQL_BIN_DIR",
            format!("/usr/lib/postgresql/{}/bin", pc.spec.postgresql.version),
        ),
        env("PATRONI_POSTGRESQL_LISTEN", format!("0.0.0.0:{PG_PORT}")),
        env(
            "PATRONI_POSTGRESQL_CONNECT_ADDRESS",
            format!("$(POD_IP):{PG_PORT}"),
        ),
        env("PATRONI_RESTAPI_LISTEN", format!("0.0.0.0:{API_PORT}")),
        env(
            "PATRONI_RESTAPI_CONNECT_ADDRESS",
            format!("$(POD_IP):{API_PORT}"),
        ),
    ]
}

fn exporter(x: &ExporterSpec, superuser: &str) -> Container {
    let env = vec![
        env(
            "DATA_SOURCE_URI",
            format!("127.0.0.1:{PG_PORT}/postgres?sslmode=disable"),
        ),
        secret_env("DATA_SOURCE_USER", superuser, "username"),
        secret_env("DATA_SOURCE_PASS", superuser, "password"),
    ];
    podspec::exporter(x, DEFAULT_EXPORTER_IMAGE, EXPORTER_PORT, env)
}
