//! The pod runner, without the operator: real Redis and Patroni behind hand-written
//! StatefulSets, in their own network namespaces, reported back through pod status and
//! EndpointSlices; faults and deletions behave as on a real node.

use crate::real::{endpoints, ip, name, pods, psql, ready, redis};
use crate::support::{Capability, TestNamespace, apply_file, client, require, wait_for};
use gbo_podrunner::fault;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

const REDIS: &str = "app=redis-test";
const PG: &str = "application=patroni-test";
const PG_PASSWORD: &str = "super-secret-for-tests";

async fn all_ready(c: &kube::Client, ns: &str, selector: &str, n: usize) -> Vec<Pod> {
    wait_for(
        &format!("{n} ready pods {selector}"),
        Duration::from_secs(120),
        || async {
            let ps = pods(c, ns, selector).await;
            (ps.len() == n && ps.iter().all(ready)).then_some(ps)
        },
    )
    .await
}

async fn pod_named(c: &kube::Client, ns: &str, selector: &str, pod: &str) -> Pod {
    pods(c, ns, selector)
        .await
        .into_iter()
        .find(|p| name(p) == pod)
        .unwrap_or_else(|| panic!("no pod {pod}"))
}

#[tokio::test]
async fn redis_pods_run_for_real_replicate_and_survive_faults() {
    let Some(state) = require(&[Capability::Runner])
        .await
        .map(|g| g.runner_state())
    else {
        return;
    };
    let c = client().await;
    let ns = TestNamespace::new(&c, "runner-redis").await;
    apply_file(&c, &ns.name, "tests/fixtures/runner/redis.yaml").await;
    let ps = all_ready(&c, &ns.name, REDIS, 3).await;

    // Every pod has its own address, and the Service's EndpointSlice holds exactly those.
    let mut ips: Vec<String> = ps.iter().filter_map(ip).map(|i| i.to_string()).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 3, "distinct pod addresses: {ips:?}");
    assert_eq!(
        wait_for("EndpointSlice", Duration::from_secs(30), || async {
            let e = endpoints(&c, &ns.name, "redis").await;
            (e == ips).then_some(e)
        })
        .await,
        ips
    );

    // A pod's network namespace routes nowhere but the pod network.
    let uid = ps[0].metadata.uid.clone().expect("uid");
    let (netns, _) = gbo_podrunner::net::names(&uid);
    let routes = gbo_podrunner::net::ip(&["-n", &netns, "route", "show", "default"])
        .await
        .expect("ip route");
    assert!(
        routes.trim().is_empty(),
        "pod namespace has a default route: {routes}"
    );

    // The master replicates to the replicas, which found it by its headless-Service name.
    let master = ip(&pod_named(&c, &ns.name, REDIS, "redis-0").await).expect("master ip");
    // Retried: one request has 3 s, which a suite loading both cores can exceed once.
    wait_for(
        "the master to take a write",
        Duration::from_secs(30),
        || async {
            let reply = redis(master, &["SET", "greeting", "hello"]).await;
            (reply.as_deref() == Some("OK")).then_some(())
        },
    )
    .await;
    for replica in ["redis-1", "redis-2"] {
        let rip = ip(&pod_named(&c, &ns.name, REDIS, replica).await).expect("replica ip");
        wait_for(
            &format!("{replica} to replicate"),
            Duration::from_secs(30),
            || async {
                (redis(rip, &["GET", "greeting"]).await.as_deref() == Some("hello")).then_some(())
            },
        )
        .await;
    }
    let info = redis(master, &["INFO", "replication"])
        .await
        .unwrap_or_default();
    assert!(info.contains("connected_slaves:2"), "{info}");

    // Paused, a pod answers nothing; resumed, it answers again.
    fault::pause(&state, &ns.name, "redis-2").expect("pause");
    let rip = ip(&pod_named(&c, &ns.name, REDIS, "redis-2").await).expect("ip");
    assert_eq!(redis(rip, &["PING"]).await, None, "a paused pod answered");
    fault::resume(&state, &ns.name, "redis-2").expect("resume");
    wait_for(
        "redis-2 to answer again",
        Duration::from_secs(10),
        || async { (redis(rip, &["PING"]).await.as_deref() == Some("PONG")).then_some(()) },
    )
    .await;

    // Deleting a pod stops its process; the StatefulSet's new pod gets a fresh process on the
    // same claim and rejoins.
    let old = pod_named(&c, &ns.name, REDIS, "redis-1").await;
    let old_pid = fault::main_pids(&state, &ns.name, "redis-1", None).expect("pid")[0].1;
    let api: Api<Pod> = Api::namespaced(c.clone(), &ns.name);
    api.delete("redis-1", &DeleteParams::default())
        .await
        .expect("delete redis-1");
    wait_for(
        "the old process to stop",
        Duration::from_secs(30),
        || async { (!std::path::Path::new(&format!("/proc/{old_pid}")).exists()).then_some(()) },
    )
    .await;
    let new = wait_for("a new redis-1", Duration::from_secs(60), || async {
        let p = pods(&c, &ns.name, REDIS)
            .await
            .into_iter()
            .find(|p| name(p) == "redis-1" && p.metadata.uid != old.metadata.uid)?;
        ready(&p).then_some(p)
    })
    .await;
    let new_ip = ip(&new).expect("new ip");
    wait_for(
        "the new redis-1 to hold the data",
        Duration::from_secs(30),
        || async {
            (redis(new_ip, &["GET", "greeting"]).await.as_deref() == Some("hello")).then_some(())
        },
    )
    .await;

    // kill -9: the container restarts in place and the restart is reported.
    fault::kill(&state, &ns.name, "redis-0", None, None).expect("kill");
    let restarted = wait_for("redis-0 to restart", Duration::from_secs(60), || async {
        let p = pod_named(&c, &ns.name, REDIS, "redis-0").await;
        let cs = p
            .status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .first()?
            .clone();
        (cs.restart_count >= 1 && ready(&p)).then_some(cs)
    })
    .await;
    let last = restarted
        .last_state
        .and_then(|s| s.terminated)
        .expect("lastState.terminated");
    assert_eq!(last.exit_code, 137, "a SIGKILLed container reports 137");
    // Its data came back from the append-only file on its claim.
    assert_eq!(
        redis(master, &["GET", "greeting"]).await.as_deref(),
        Some("hello")
    );
}

#[tokio::test]
async fn patroni_elects_a_labelled_leader_and_fails_over() {
    let Some(state) = require(&[Capability::Runner])
        .await
        .map(|g| g.runner_state())
    else {
        return;
    };
    let c = client().await;
    let ns = TestNamespace::new(&c, "runner-pg").await;
    apply_file(&c, &ns.name, "tests/fixtures/runner/patroni.yaml").await;
    all_ready(&c, &ns.name, PG, 3).await;
    let leader = wait_for(
        "one pod labelled role=primary",
        Duration::from_secs(60),
        || async {
            let l = pods(&c, &ns.name, &format!("{PG},role=primary")).await;
            (l.len() == 1).then(|| l[0].clone())
        },
    )
    .await;
    let leader_ip = ip(&leader).expect("leader ip");
    wait_for(
        "the primary Service to select the leader",
        Duration::from_secs(30),
        || async {
            (endpoints(&c, &ns.name, "pg-primary").await == vec![leader_ip.to_string()])
                .then_some(())
        },
    )
    .await;

    psql(
        leader_ip,
        PG_PASSWORD,
        "CREATE TABLE votes (id text PRIMARY KEY); INSERT INTO votes VALUES ('a')",
    )
    .await
    .expect("write on the leader");
    for replica in pods(&c, &ns.name, &format!("{PG},role=replica")).await {
        let rip = ip(&replica).expect("replica ip");
        wait_for("the row on a replica", Duration::from_secs(30), || async {
            (psql(rip, PG_PASSWORD, "SELECT count(*) FROM votes")
                .await
                .ok()
                .as_deref()
                == Some("1"))
            .then_some(())
        })
        .await;
    }

    // The leader's machine dies: its process is killed and stays down. A replica takes over
    // once the leader lock expires (ttl 20 s, Patroni's minimum).
    let old = name(&leader);
    let t0 = Instant::now();
    fault::kill(&state, &ns.name, &old, None, Some(Duration::from_secs(45)))
        .expect("kill the leader");
    let new_leader = wait_for("a new leader", Duration::from_secs(60), || async {
        let l = pods(&c, &ns.name, &format!("{PG},role=primary")).await;
        l.into_iter().find(|p| name(p) != old)
    })
    .await;
    println!(
        "failover: {} took over from {old} {:.1} s after the kill",
        name(&new_leader),
        t0.elapsed().as_secs_f64()
    );
    let new_ip = ip(&new_leader).expect("new leader ip");
    wait_for(
        "the primary Service to follow",
        Duration::from_secs(30),
        || async {
            (endpoints(&c, &ns.name, "pg-primary").await == vec![new_ip.to_string()]).then_some(())
        },
    )
    .await;
    assert_eq!(
        psql(new_ip, PG_PASSWORD, "SELECT count(*) FROM votes")
            .await
            .as_deref(),
        Ok("1"),
        "committed row survives"
    );
    psql(new_ip, PG_PASSWORD, "INSERT INTO votes VALUES ('b')")
        .await
        .expect("the new leader takes writes");

    // The old leader comes back as a replica of the new one.
    wait_for(
        "the old leader to rejoin as a replica",
        Duration::from_secs(120),
        || async {
            let p = pod_named(&c, &ns.name, PG, &old).await;
            let role = p.metadata.labels.as_ref()?.get("role")?.clone();
            (role == "replica" && ready(&p)).then_some(())
        },
    )
    .await;
    let rejoined = ip(&pod_named(&c, &ns.name, PG, &old).await).expect("ip");
    wait_for(
        "the rejoined member to have the new row",
        Duration::from_secs(30),
        || async {
            (psql(rejoined, PG_PASSWORD, "SELECT count(*) FROM votes")
                .await
                .ok()
                .as_deref()
                == Some("2"))
            .then_some(())
        },
    )
    .await;
}

/// GET `http://ip:port/path` from this host: (status, body), or the error's words.
async fn http(ip: Ipv4Addr, port: u16, path: &str) -> Result<(u16, String), String> {
    assert!(
        ip.octets()[..2] == [10, 244],
        "{ip} is not on the local pod network; not sending there"
    );
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let resp = http
        .get(format!("http://{ip}:{port}{path}"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await.map_err(|e| e.to_string())?))
}

fn nginx_pod(name: &str, image: &str, conf_d: bool, port: u16) -> Pod {
    let mut pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "nginx",
                "image": image,
                "ports": [{"name": "http", "containerPort": port}],
                "readinessProbe": {"httpGet": {"path": "/", "port": port}, "periodSeconds": 1},
            }],
        },
    });
    if conf_d {
        pod["spec"]["containers"][0]["volumeMounts"] = serde_json::json!([{"name": "conf", "mountPath": "/etc/nginx/conf.d", "readOnly": true}]);
        pod["spec"]["volumes"] =
            serde_json::json!([{"name": "conf", "configMap": {"name": "proxy"}}]);
    }
    serde_json::from_value(pod).expect("a pod")
}

#[tokio::test]
async fn nginx_pods_serve_their_mounted_configuration_as_the_official_image_does() {
    let Some(state) = require(&[Capability::Runner])
        .await
        .map(|g| g.runner_state())
    else {
        return;
    };
    let c = client().await;
    let ns = TestNamespace::new(&c, "runner-nginx").await;
    let n = ns.name.as_str();
    let conf: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "proxy"},
        "data": {"proxy.conf": "limit_req_zone $binary_remote_addr zone=per_client:1m rate=1r/m;\nserver {\n  listen 8080;\n  location = /healthz { return 200 \"healthy\\n\"; }\n  location = /index.html { limit_req zone=per_client; limit_req_status 429; root /usr/share/nginx/html; }\n  location / { return 200 \"mounted configuration\\n\"; }\n}\n"},
    }))
    .expect("a ConfigMap");
    Api::<ConfigMap>::namespaced(c.clone(), n)
        .create(&PostParams::default(), &conf)
        .await
        .expect("create the ConfigMap");
    let pods_api: Api<Pod> = Api::namespaced(c.clone(), n);
    for pod in [
        nginx_pod("mounted", "docker.io/library/nginx:1.27", true, 8080),
        nginx_pod("plain", "nginx:1.27-alpine", false, 80),
    ] {
        pods_api
            .create(&PostParams::default(), &pod)
            .await
            .expect("create an nginx pod");
    }
    let ready_ip = |pod: &'static str| {
        let api = pods_api.clone();
        async move {
            wait_for(&format!("{pod} Ready"), Duration::from_secs(60), || async {
                let p = api.get(pod).await.ok()?;
                if ready(&p) { ip(&p) } else { None }
            })
            .await
        }
    };
    let mounted = ready_ip("mounted").await;
    let plain = ready_ip("plain").await;

    // Only the mounted conf.d applies: its server answers, Debian's default site does not.
    assert_eq!(
        http(mounted, 8080, "/").await,
        Ok((200, "mounted configuration\n".into()))
    );
    let port_80 = http(mounted, 80, "/").await;
    assert!(
        port_80.is_err(),
        "port 80 answered on a pod whose conf.d serves 8080: {port_80:?}"
    );
    // Its directives are really enforced: the second request within the minute is limited.
    assert_eq!(
        http(mounted, 8080, "/index.html").await.map(|r| r.0),
        Ok(200)
    );
    assert_eq!(
        http(mounted, 8080, "/index.html").await.map(|r| r.0),
        Ok(429)
    );
    // Nothing mounted: the image's default server on port 80.
    let (status, body) = http(plain, 80, "/").await.expect("the default server");
    assert_eq!(status, 200);
    assert!(body.contains("Welcome to nginx"), "{body}");
    // The access log is the container's output, as in the image.
    let log = wait_for(
        "the access log in the container output",
        Duration::from_secs(10),
        || async {
            let l = fault::log(&state, n, "mounted", "nginx", false).ok()?;
            l.contains("GET /index.html").then_some(l)
        },
    )
    .await;
    assert!(log.contains(" 429 "), "{log}");
}

/// The address of pod `name` once Ready; else a failure showing its status and what each of
/// its containers wrote.
async fn ready_or_explain(api: &Api<Pod>, state: &Path, ns: &str, name: &str) -> Ipv4Addr {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = None;
    while Instant::now() < deadline {
        if let Ok(p) = api.get(name).await {
            if ready(&p)
                && let Some(addr) = ip(&p)
            {
                return addr;
            }
            last = Some(p);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let containers = last.iter().filter_map(|p| p.spec.as_ref());
    let logs: Vec<String> = containers
        .flat_map(|spec| &spec.containers)
        .map(|c| {
            let out = fault::log(state, ns, name, &c.name, false).unwrap_or_else(|e| e.to_string());
            format!("--- {}:\n{out}", c.name)
        })
        .collect();
    let status = last
        .and_then(|p| p.status)
        .map(|s| serde_json::to_string_pretty(&s));
    panic!(
        "pod {name} not Ready in 90 s; status {status:?}\n{}",
        logs.join("\n")
    );
}

#[tokio::test]
async fn exporter_sidecars_answer_on_their_metrics_ports() {
    let Some(state) = require(&[Capability::Runner])
        .await
        .map(|g| g.runner_state())
    else {
        return;
    };
    let c = client().await;
    let ns = TestNamespace::new(&c, "runner-exporters").await;
    // The operator's sidecars, as its builders write them: env only, non-root. The Postgres
    // exporter has no server in this pod and says so in its metrics (pg_up 0).
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "store"},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 999, "runAsGroup": 999},
            "containers": [
                {
                    "name": "redis",
                    "image": "docker.io/library/redis:7.2",
                    "command": ["redis-server", "--save", "", "--appendonly", "no"],
                    "readinessProbe": {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 1},
                },
                {
                    "name": "redis-exporter",
                    "image": "docker.io/oliver006/redis_exporter:v1.67.0",
                    "env": [{"name": "REDIS_ADDR", "value": "redis://127.0.0.1:6379"}],
                    "ports": [{"name": "metrics", "containerPort": 9121}],
                    "readinessProbe": {"httpGet": {"path": "/metrics", "port": 9121}, "periodSeconds": 1},
                },
                {
                    "name": "pg-exporter",
                    "image": "quay.io/prometheuscommunity/postgres-exporter:v0.17.1",
                    "env": [
                        {"name": "DATA_SOURCE_URI", "value": "127.0.0.1:5432/postgres?sslmode=disable"},
                        {"name": "DATA_SOURCE_USER", "value": "postgres"},
                        {"name": "DATA_SOURCE_PASS", "value": "unused"},
                    ],
                    "ports": [{"name": "pg-metrics", "containerPort": 9187}],
                    "readinessProbe": {"httpGet": {"path": "/metrics", "port": 9187}, "periodSeconds": 1},
                },
            ],
        },
    }))
    .expect("a pod");
    let api: Api<Pod> = Api::namespaced(c.clone(), &ns.name);
    api.create(&PostParams::default(), &pod)
        .await
        .expect("create the pod");
    let addr = ready_or_explain(&api, &state, &ns.name, "store").await;
    let (status, redis_metrics) = http(addr, 9121, "/metrics").await.expect("redis_exporter");
    assert_eq!(status, 200);
    assert!(
        redis_metrics.lines().any(|l| l == "redis_up 1"),
        "redis_exporter does not see its Redis:\n{redis_metrics}"
    );
    let (status, pg_metrics) = http(addr, 9187, "/metrics")
        .await
        .expect("postgres_exporter");
    assert_eq!(status, 200);
    assert!(
        pg_metrics.lines().any(|l| l == "pg_up 0"),
        "postgres_exporter metrics:\n{pg_metrics}"
    );
}
