//! Monitoring of the stores and apps (docs/monitoring.md), on the local cluster:
//!
//! - the exporters run for real behind the pods (Debian's redis, postgres and nginx exporters,
//!   Patroni's own `/metrics`): every metrics port is scraped the way Prometheus would, through
//!   the EndpointSlices of the Service a ServiceMonitor selects (the proxy's through its pods,
//!   as its PodMonitor does), and serves every series the chart's alerts use
//!   (charts/guestbook-operator/files/prometheus-rules.yaml); the operator's own backup series
//!   follow status;
//! - discovery: without the Prometheus Operator's CRDs no ServiceMonitor/PodMonitor is made
//!   and each object gets one `MonitoringAPIMissing` event per generation, nothing else; with
//!   them (installed by the test from `GBO_PROMETHEUS_OPERATOR_CRDS`, the `e2e/cluster build`
//!   cache, and removed at its end, so every other test sees the default: not served), the API
//!   server's own schema accepts the objects the operator applies, and they go when monitoring
//!   is turned off.

use crate::real::{ip, pods, redis};
use crate::support::{
    Capability, MANAGER, Operator, TestNamespace, apply_yaml, client, install_crds, require,
    run_job_from, skip, wait_for,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use std::time::Duration;

use guestbook_operator::controllers::redis_sentinel::names::Names as RedisNames;

const GROUP: &str = "monitoring.coreos.com";

fn redis_names(store: &str) -> RedisNames {
    RedisNames::of(store)
}

/// Applies each document of `yaml`.
async fn apply_all(c: &Client, ns: &str, yaml: &str) {
    for doc in yaml.split("\n---\n") {
        apply_yaml(c, ns, doc)
            .await
            .unwrap_or_else(|e| panic!("applying {doc}: {e}"));
    }
}

/// GET `http://addr/metrics`: the body, or `None` when nothing answers.
async fn metrics(addr: &str) -> Option<String> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .build()
        .ok()?;
    let resp = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .ok()?;
    resp.status().is_success().then_some(())?;
    resp.text().await.ok()
}

/// What Prometheus scrapes for the port named `port` of Service `service`: every endpoint of
/// its EndpointSlices, on the port number the slice gives that name. One body per endpoint;
/// `None` until every endpoint answers.
async fn scrape_service(c: &Client, ns: &str, service: &str, port: &str) -> Option<Vec<String>> {
    let api: Api<EndpointSlice> = Api::namespaced(c.clone(), ns);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    let slices = api.list(&lp).await.ok()?.items;
    let mut bodies = Vec::new();
    for s in &slices {
        let number = s
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(port))?
            .port?;
        for a in s.endpoints.iter().flatten().flat_map(|e| &e.addresses) {
            bodies.push(metrics(&format!("{a}:{number}")).await?);
        }
    }
    (!bodies.is_empty()).then_some(bodies)
}

/// Whether `body` has a sample of `name` whose labels contain each of `labels`.
fn has(body: &str, name: &str, labels: &[&str]) -> bool {
    body.lines().any(|l| {
        l.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with([' ', '{']))
            && labels.iter().all(|want| l.contains(want))
    })
}

/// Waits until the endpoints of `service`'s `port` all serve, and some of them every series
/// of `want` (name, label fragments); returns what they served.
async fn serves(c: &Client, ns: &str, service: &str, port: &str, want: &[(&str, &[&str])]) {
    let what = format!("{service}:{port} serving {want:?}");
    wait_for(&what, Duration::from_secs(120), || async {
        let bodies = scrape_service(c, ns, service, port).await?;
        let all = bodies.join("\n");
        want.iter()
            .all(|(name, labels)| has(&all, name, labels))
            .then_some(())
    })
    .await;
    println!("{what}: ok");
}

fn apps_yaml(monitored: &str) -> String {
    format!(
        r#"apiVersion: guestbook-operator.dev/v1alpha1
kind: VoteApp
metadata: {{name: vote}}
spec:
  vote: {{replicas: 1}}
  result: {{replicas: 1}}
  # No worker: votes stay queued, so the queue length is there to be reported.
  worker: {{replicas: 0}}
  monitoring: {{enabled: {monitored}}}
  redis:
    spec:
      redis: {{replicas: 2}}
      sentinel: {{replicas: 3}}
      auth: {{enabled: false}}
  postgres:
    spec:
      members: 2
      storage: {{size: 200Mi}}
      auth: {{stockAppCredentials: true}}
      backup: {{schedule: '0 3 1 1 *', restoreCheckSchedule: '0 4 1 1 *', destination: {{volume: {{size: 200Mi}}}}}}
---
apiVersion: guestbook-operator.dev/v1alpha1
kind: Guestbook
metadata: {{name: book}}
spec:
  frontend: {{replicas: 1}}
  proxy: {{replicas: 1}}
  monitoring: {{enabled: {monitored}}}
  redis:
    spec:
      redis: {{replicas: 1}}
      sentinel: {{replicas: 3}}
      auth: {{enabled: false}}
"#
    )
}

#[tokio::test]
async fn every_metrics_port_serves_the_series_the_alerts_use() {
    let c = client().await;
    if require(&[Capability::Runner, Capability::ClusterDns])
        .await
        .is_none()
    {
        return;
    }
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, "monitoring").await;
    let ns = &ns.name;
    let op = Operator::start(ns, "solo", &["--leader-election=false"]);
    apply_all(&c, ns, &apps_yaml("true")).await;
    crate::apps::wait_ready(&c, ns, "VoteApp", "vote", Duration::from_secs(300)).await;
    crate::apps::wait_ready(&c, ns, "Guestbook", "book", Duration::from_secs(300)).await;

    // Votes waiting in the queue (no worker takes them).
    let master = pods(
        &c,
        ns,
        "app.kubernetes.io/instance=vote-redis,guestbook-operator.dev/role=master",
    )
    .await;
    let master = master
        .first()
        .and_then(ip)
        .expect("the Redis master's address");
    for i in 0..3 {
        redis(
            master,
            &[
                "RPUSH",
                "votes",
                &format!("{{\"voter_id\":\"v{i}\",\"vote\":\"a\"}}"),
            ],
        )
        .await
        .expect("a queued vote");
    }

    // RedisNoMaster, RedisReplicaLag, VoteQueueGrowing: the Redis exporters on the headless
    // Service; RedisSentinelsDisagree: the Sentinel exporters on the Sentinel Service.
    serves(
        &c,
        ns,
        &redis_names("vote-redis").redis_headless,
        "metrics",
        &[
            ("redis_up", &[]),
            ("redis_instance_info", &["role=\"master\""]),
            ("redis_instance_info", &["role=\"slave\""]),
            ("redis_connected_slave_lag_seconds", &["slave_ip="]),
            ("redis_key_size", &["key=\"votes\""]),
        ],
    )
    .await;
    serves(
        &c,
        ns,
        &redis_names("vote-redis").sentinel_service,
        "sentinel-metrics",
        &[("redis_sentinel_master_status", &["master_address="])],
    )
    .await;
    // Only a VoteApp's Redis is asked for the queue's length.
    serves(
        &c,
        ns,
        &redis_names("book-redis").redis_headless,
        "metrics",
        &[("redis_up", &[])],
    )
    .await;
    let book = scrape_service(&c, ns, &redis_names("book-redis").redis_headless, "metrics")
        .await
        .expect("the Guestbook's Redis exporter")
        .join("\n");
    assert!(!has(&book, "redis_key_size", &[]), "{book}");

    // PatroniNoLeader, PatroniReplicationLag: Patroni's REST API; pg_up from the exporter.
    serves(
        &c,
        ns,
        "vote-db-headless",
        "patroni",
        &[
            ("patroni_cluster_unlocked", &[]),
            ("patroni_xlog_location", &[]),
            ("patroni_xlog_replayed_location", &[]),
        ],
    )
    .await;
    serves(&c, ns, "vote-db-headless", "metrics", &[("pg_up", &[])]).await;

    // ProxyRejecting: the nginx exporter beside the proxy, on the pods' `metrics` port (the
    // PodMonitor's path: the proxy Service carries no metrics port).
    proxy_exporter(&c, ns).await;

    // BackupTooOld, RestoreCheckFailed: the operator's own series, from status.
    let object = format!("kind=\"PatroniCluster\",namespace=\"{ns}\",name=\"vote-db\"");
    let interval = "guestbook_operator_backup_schedule_interval_seconds";
    let last = "guestbook_operator_backup_last_success_timestamp_seconds";
    let check = "guestbook_operator_restore_check_success";
    wait_for(
        "the schedule's interval",
        Duration::from_secs(60),
        || async { (op.metric(interval, &object).await == 365.0 * 86400.0).then_some(()) },
    )
    .await;
    assert_eq!(op.metric(last, &object).await, 0.0, "no backup yet");
    run_job_from(&c, ns, "vote-db-backup", "vote-db-backup-manual-1").await;
    wait_for(
        "the last backup's time",
        Duration::from_secs(120),
        || async { (op.metric(last, &object).await > 1.7e9).then_some(()) },
    )
    .await;
    run_job_from(&c, ns, "vote-db-restore-check", "vote-db-restore-check-1").await;
    wait_for(
        "the restore check's result",
        Duration::from_secs(120),
        || async { (op.metric(check, &object).await == 1.0).then_some(()) },
    )
    .await;
    // Suspended backups raise no alert: no series.
    let suspend = json!({"spec": {"postgres": {"spec": {"backup": {"suspend": true}}}}});
    let apps: Api<DynamicObject> =
        Api::namespaced_with(c.clone(), ns, &crate::support::api_resource("VoteApp"));
    apps.patch("vote", &PatchParams::default(), &Patch::Merge(&suspend))
        .await
        .expect("suspend the backups");
    wait_for(
        "no backup series while suspended",
        Duration::from_secs(60),
        || async {
            let (200, body) = op.get("/metrics").await? else {
                return None;
            };
            (!body.contains(&object)).then_some(())
        },
    )
    .await;
    op.assert_no_reconcile_errors().await;
}

/// The proxy's exporter, scraped at the proxy pods' `metrics` port. A pod runner started
/// before it ran `nginx-prometheus-exporter` images (e2e/podrunner, e2e/lib/common.sh)
/// simulates the container: that part is then a visible skip, never a pass.
async fn proxy_exporter(c: &Client, ns: &str) {
    let proxies = pods(
        c,
        ns,
        "app.kubernetes.io/instance=book,app.kubernetes.io/component=proxy",
    )
    .await;
    let addr = proxies.first().and_then(ip).expect("a proxy pod");
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Some(body) = metrics(&format!("{addr}:9113")).await
                && has(&body, "nginx_connections_accepted", &[])
                && has(&body, "nginx_connections_handled", &[])
            {
                return body;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await;
    match found {
        Ok(_) => println!("{addr}:9113 serving nginx_connections_accepted/handled: ok"),
        Err(_) => skip(
            Some("nginx exporter"),
            "nothing serves the proxy's metrics port: this cluster's pod runner does not run \
             nginx-prometheus-exporter images (restart the cluster with e2e/cluster from this tree)",
        ),
    }
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: "v1".into(),
        api_version: format!("{GROUP}/v1"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

async fn served(c: &Client) -> bool {
    c.list_api_groups().await.is_ok_and(|g| {
        g.groups
            .iter()
            .any(|g| g.name == GROUP && g.versions.iter().any(|v| v.version == "v1"))
    })
}

/// Label on the CRDs this test installs: it removes only those.
const OURS: (&str, &str) = ("guestbook-operator.dev/e2e", "monitoring");
const CRD_NAMES: [&str; 2] = [
    "servicemonitors.monitoring.coreos.com",
    "podmonitors.monitoring.coreos.com",
];

async fn install_monitoring_crds(c: &Client, dir: &std::path::Path) {
    let api: Api<CustomResourceDefinition> = Api::all(c.clone());
    for file in ["servicemonitors", "podmonitors"] {
        let path = dir.join(format!("monitoring.coreos.com_{file}.yaml"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let mut crd: CustomResourceDefinition = serde_yaml_ng::from_str(&text).expect("a CRD");
        crd.metadata.managed_fields = None;
        crd.metadata
            .labels
            .get_or_insert_default()
            .insert(OURS.0.into(), OURS.1.into());
        let name = crd.metadata.name.clone().expect("named");
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("installing CRD {name}: {e}"));
    }
    wait_for(
        "monitoring.coreos.com/v1 served",
        Duration::from_secs(60),
        || async { served(c).await.then_some(()) },
    )
    .await;
}

/// Removes the monitoring CRDs if this test installed them; `false` when others did (a real
/// Prometheus Operator): those stay.
async fn remove_monitoring_crds(c: &Client) -> bool {
    let api: Api<CustomResourceDefinition> = Api::all(c.clone());
    for name in CRD_NAMES {
        let Ok(Some(crd)) = api.get_opt(name).await else {
            continue;
        };
        let ours = crd.metadata.labels.as_ref().and_then(|l| l.get(OURS.0));
        if ours.map(String::as_str) != Some(OURS.1) {
            return false;
        }
        let _ = api.delete(name, &DeleteParams::default()).await;
    }
    wait_for(
        "monitoring.coreos.com/v1 gone",
        Duration::from_secs(60),
        || async { (!served(c).await).then_some(()) },
    )
    .await;
    true
}

/// Removes the CRDs when the test ends, passed or not.
struct CrdGuard;

impl Drop for CrdGuard {
    fn drop(&mut self) {
        let _ = std::thread::spawn(|| {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(c) = Client::try_default().await {
                    remove_monitoring_crds(&c).await;
                }
            });
        })
        .join();
    }
}

/// Times `reason` was recorded about `kind/name`: events and their repeats (series).
async fn occurrences(c: &Client, ns: &str, kind: &str, name: &str, reason: &str) -> i32 {
    let api: Api<Event> = Api::namespaced(c.clone(), ns);
    let list = api.list(&ListParams::default()).await.expect("events");
    list.items
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name))
        })
        .map(|e| e.series.as_ref().map_or(1, |s| s.count))
        .sum()
}

const STORE: &str = r#"apiVersion: guestbook-operator.dev/v1alpha1
kind: RedisSentinel
metadata: {name: cache}
spec:
  redis: {replicas: 1}
  sentinel: {replicas: 3}
  auth: {enabled: false}
  monitoring: {enabled: true}
---
apiVersion: guestbook-operator.dev/v1alpha1
kind: Guestbook
metadata: {name: book}
spec:
  proxy: {replicas: 1}
  monitoring: {enabled: true}
  redis: {name: cache}
"#;

#[tokio::test]
async fn monitoring_objects_only_where_the_prometheus_operator_api_is_served() {
    let c = client().await;
    let Some(dir) = std::env::var_os("GBO_PROMETHEUS_OPERATOR_CRDS") else {
        skip(
            None,
            "GBO_PROMETHEUS_OPERATOR_CRDS is not set (e2e/cluster build fetches the CRDs; eval \"$(e2e/cluster env)\")",
        );
        return;
    };
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, "monitoring-discovery").await;
    let ns = &ns.name;
    let _cleanup = CrdGuard;

    // One operator throughout, asking every 2 s which APIs are served: it follows the CRDs
    // coming and going without a restart.
    let real_prometheus_operator = served(&c).await && !remove_monitoring_crds(&c).await;
    let op = Operator::start(
        ns,
        "solo",
        &[
            "--leader-election=false",
            "--api-discovery-interval-seconds=2",
        ],
    );
    apply_all(&c, ns, STORE).await;

    // Not served: the objects work, each says once per generation that it goes unmonitored.
    if real_prometheus_operator {
        skip(
            Some("not served"),
            "this cluster runs the Prometheus Operator: its CRDs are not the test's to remove",
        );
    } else {
        for (kind, name) in [("RedisSentinel", "cache"), ("Guestbook", "book")] {
            wait_for(
                &format!("{kind} {name}'s MonitoringAPIMissing event"),
                Duration::from_secs(60),
                || async {
                    (occurrences(&c, ns, kind, name, "MonitoringAPIMissing").await > 0)
                        .then_some(())
                },
            )
            .await;
        }
        // The children are there: the store's metrics ports, the proxy's exporter.
        wait_for(
            "the store's metrics ports",
            Duration::from_secs(60),
            || async {
                let svc = Api::<k8s_openapi::api::core::v1::Service>::namespaced(c.clone(), ns)
                    .get_opt(&redis_names("cache").redis_headless)
                    .await
                    .ok()??;
                let ports = svc.spec?.ports?;
                ports
                    .iter()
                    .any(|p| p.name.as_deref() == Some("metrics"))
                    .then_some(())
            },
        )
        .await;
        // Reconciles go on (the store converges, polled every 2 s): still one event each.
        tokio::time::sleep(Duration::from_secs(8)).await;
        for (kind, name) in [("RedisSentinel", "cache"), ("Guestbook", "book")] {
            assert_eq!(
                occurrences(&c, ns, kind, name, "MonitoringAPIMissing").await,
                1,
                "{kind} {name}\n{}",
                op.log_text()
            );
            let conditions = crate::support::condition(&c, ns, kind, name, "Stalled").await;
            assert!(
                conditions.as_ref().is_none_or(|(_, reason, message)| {
                    !reason.contains("onitoring") && !message.contains("onitoring")
                }),
                "{kind} {name} stalled for monitoring: {conditions:?}"
            );
        }
        // A new generation is told once more.
        let bump = json!({"spec": {"monitoring": {"scraperNamespaceSelector": {"matchLabels": {"team": "obs"}}}}});
        let stores: Api<DynamicObject> = Api::namespaced_with(
            c.clone(),
            ns,
            &crate::support::api_resource("RedisSentinel"),
        );
        stores
            .patch("cache", &PatchParams::default(), &Patch::Merge(&bump))
            .await
            .expect("a new generation");
        wait_for(
            "a second event for generation 2",
            Duration::from_secs(60),
            || async {
                (occurrences(&c, ns, "RedisSentinel", "cache", "MonitoringAPIMissing").await == 2)
                    .then_some(())
            },
        )
        .await;
    }

    // Served: the same operator creates them once it finds the API, valid under the
    // Prometheus Operator's own schema.
    install_monitoring_crds(&c, std::path::Path::new(&dir)).await;
    let sms: Api<DynamicObject> = Api::namespaced_with(
        c.clone(),
        ns,
        &resource("ServiceMonitor", "servicemonitors"),
    );
    let pms: Api<DynamicObject> =
        Api::namespaced_with(c.clone(), ns, &resource("PodMonitor", "podmonitors"));
    let sm = wait_for("ServiceMonitor cache", Duration::from_secs(60), || async {
        sms.get_opt("cache").await.ok()?
    })
    .await;
    let pm = wait_for("PodMonitor book-proxy", Duration::from_secs(60), || async {
        pms.get_opt("book-proxy").await.ok()?
    })
    .await;
    let ports = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| Some(e["port"].as_str()?.to_string()))
            .collect()
    };
    assert_eq!(
        ports(&sm.data["spec"]["endpoints"]),
        ["metrics", "sentinel-metrics"]
    );
    assert_eq!(ports(&pm.data["spec"]["podMetricsEndpoints"]), ["metrics"]);
    for m in [&sm, &pm] {
        assert_eq!(
            m.data["spec"]["podTargetLabels"],
            json!(["app.kubernetes.io/instance", "app.kubernetes.io/component"])
        );
    }
    // Monitoring turned off: the ServiceMonitor goes, the store stays.
    let off = json!({"spec": {"monitoring": {"enabled": false}}});
    let stores: Api<DynamicObject> = Api::namespaced_with(
        c.clone(),
        ns,
        &crate::support::api_resource("RedisSentinel"),
    );
    stores
        .patch("cache", &PatchParams::default(), &Patch::Merge(&off))
        .await
        .expect("monitoring off");
    wait_for(
        "ServiceMonitor cache pruned",
        Duration::from_secs(60),
        || async { sms.get_opt("cache").await.ok()?.is_none().then_some(()) },
    )
    .await;
    if real_prometheus_operator {
        op.assert_no_reconcile_errors().await;
        return;
    }

    // The API goes again (CRDs deleted) while a store wants monitoring: the store is withheld
    // its monitors and told so, never failed (whether discovery or a refused apply notices
    // first).
    let on = json!({"spec": {"monitoring": {"enabled": true}}});
    stores
        .patch("cache", &PatchParams::default(), &Patch::Merge(&on))
        .await
        .expect("monitoring on");
    wait_for(
        "ServiceMonitor cache again",
        Duration::from_secs(60),
        || async { sms.get_opt("cache").await.ok()? },
    )
    .await;
    let told = occurrences(&c, ns, "RedisSentinel", "cache", "MonitoringAPIMissing").await;
    assert!(remove_monitoring_crds(&c).await, "the test's own CRDs");
    let bump = json!({"spec": {"monitoring": {"scraperNamespaceSelector": {"matchLabels": {"team": "ops"}}}}});
    stores
        .patch("cache", &PatchParams::default(), &Patch::Merge(&bump))
        .await
        .expect("a new generation");
    wait_for(
        "MonitoringAPIMissing for the new generation",
        Duration::from_secs(60),
        || async {
            (occurrences(&c, ns, "RedisSentinel", "cache", "MonitoringAPIMissing").await > told)
                .then_some(())
        },
    )
    .await;
    crate::apps::wait_ready(&c, ns, "RedisSentinel", "cache", Duration::from_secs(120)).await;
    op.assert_no_reconcile_errors().await;
}
