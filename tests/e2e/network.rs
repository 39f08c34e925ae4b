//! Services and names as a pod on any cluster meets them, on the local cluster: ClusterIPs
//! through kube-proxy from the host and from inside real pods (following endpoint changes,
//! refusing at once without endpoints), the cluster DNS (CoreDNS as kube-dns) from inside
//! pods, each pod's own hostname and hostAliases, and the network rule: pods route nowhere
//! but the pod network and the Service range, and the host forwards only on the pod bridge.
//!
//! Every address these tests send to is checked first to be in the pod network or the
//! Service range (both on this machine); the only other traffic is the local DNS server's.

use crate::real::{endpoints, ip, pods, ready};
use crate::support::{Capability, TestNamespace, client, repo, require, wait_for};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use serde_json::json;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const POD_NETWORK: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 244, 0, 0), 16);
const SERVICE_RANGE: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 96, 0, 0), 16);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
const CLUSTER_DNS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const BRIDGE: &str = "gbo0";
const OUR_TABLE: &str = "gbo-cluster";
/// A refused connection or a failed lookup must come back at least this fast.
const FAST: Duration = Duration::from_secs(1);

fn within((net, len): (Ipv4Addr, u8), a: Ipv4Addr) -> bool {
    let mask = u32::MAX << (32 - u32::from(len));
    u32::from(a) & mask == u32::from(net) & mask
}

/// `a`, after checking it is an address on this machine's pod network or Service range.
fn local(a: Ipv4Addr) -> Ipv4Addr {
    assert!(
        within(POD_NETWORK, a) || within(SERVICE_RANGE, a),
        "{a} is neither a pod nor a Service address of the local cluster; not sending there"
    );
    a
}

async fn create<K>(c: &Client, ns: &str, obj: serde_json::Value) -> K
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned
        + serde::Serialize,
{
    let obj: K = serde_json::from_value(obj).expect("a valid object");
    Api::<K>::namespaced(c.clone(), ns)
        .create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("creating {obj:?}: {e}"))
}

/// A real Redis pod; `spec` is merged into its pod spec.
fn redis_pod(name: &str, labels: serde_json::Value, spec: serde_json::Value) -> serde_json::Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "redis",
                "image": "docker.io/library/redis:7.2",
                "command": ["redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no"],
                "ports": [{"name": "redis", "containerPort": 6379}],
                "readinessProbe": {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 1},
            }],
        },
    });
    if let (Some(p), Some(extra)) = (pod["spec"].as_object_mut(), spec.as_object()) {
        p.extend(extra.clone());
    }
    pod
}

fn service(name: &str, selector: serde_json::Value, headless: bool) -> serde_json::Value {
    let mut svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": selector, "ports": [{"name": "redis", "port": 6379, "targetPort": "redis"}]},
    });
    if headless {
        svc["spec"]["clusterIP"] = json!("None");
        svc["spec"]["publishNotReadyAddresses"] = json!(true);
    }
    svc
}

async fn ready_pod(c: &Client, ns: &str, name: &str) -> Pod {
    wait_for(
        &format!("pod {name} Ready"),
        Duration::from_secs(90),
        || async {
            let p = Api::<Pod>::namespaced(c.clone(), ns).get(name).await.ok()?;
            ready(&p).then_some(p)
        },
    )
    .await
}

async fn cluster_ip(c: &Client, ns: &str, name: &str) -> Ipv4Addr {
    let svc = Api::<Service>::namespaced(c.clone(), ns)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("Service {name}: {e}"));
    let addr = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("Service {name} has no ClusterIP"));
    local(addr)
}

/// A command's outcome inside a pod: (exit code, stdout, stderr, how long it took).
struct Ran {
    code: Option<i32>,
    out: String,
    err: String,
    took: Duration,
}

async fn exec(state: &Path, ns: &str, pod: &str, argv: &[&str]) -> Ran {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let t0 = Instant::now();
    let out = gbo_podrunner::exec::run(state, ns, pod, None, &argv, Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("exec in {ns}/{pod}: {e}"));
    Ran {
        code: out.status.code(),
        out: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        err: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        took: t0.elapsed(),
    }
}

/// GET `key` over a new connection to `addr:6379`, with the redis crate.
async fn redis_get(addr: Ipv4Addr, key: &str) -> Result<Option<String>, String> {
    let client =
        redis::Client::open(format!("redis://{}:6379/", local(addr))).map_err(|e| e.to_string())?;
    let io = async {
        let mut con = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        redis::cmd("GET")
            .arg(key)
            .query_async::<Option<String>>(&mut con)
            .await
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(3), io)
        .await
        .map_err(|_| format!("{addr}:6379 did not answer within 3 s"))?
}

async fn redis_set(addr: Ipv4Addr, key: &str, value: &str) {
    let client = redis::Client::open(format!("redis://{}:6379/", local(addr))).expect("client");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async::<()>(&mut con)
        .await
        .unwrap_or_else(|e| panic!("SET on {addr}: {e}"));
}

/// Who answers `GET whoami` through the client pod, by Service name.
async fn whoami_in_pod(state: &Path, ns: &str, client_pod: &str, host: &str) -> String {
    let r = exec(
        state,
        ns,
        client_pod,
        &["redis-cli", "-h", host, "GET", "whoami"],
    )
    .await;
    assert_eq!(
        r.code,
        Some(0),
        "redis-cli -h {host} in {client_pod}: {}",
        r.err
    );
    r.out
}

#[tokio::test]
async fn service_ips_reach_their_pods_follow_endpoints_and_refuse_without_them() {
    let Some(state) = require(&[Capability::Runner])
        .await
        .map(|g| g.runner_state())
    else {
        return;
    };
    let c = client().await;
    let ns = TestNamespace::new(&c, "net-svc").await;
    let n = ns.name.as_str();
    for (name, serve) in [("server-a", "yes"), ("server-b", "no")] {
        create::<Pod>(
            &c,
            n,
            redis_pod(name, json!({"app": "server", "serve": serve}), json!({})),
        )
        .await;
    }
    create::<Pod>(
        &c,
        n,
        // On node c: kube-proxy plays node a, so its own rules for hairpin traffic do not
        // cover this pod (the cluster's do).
        redis_pod(
            "client",
            json!({"app": "client"}),
            json!({"nodeName": "gbo-worker-c"}),
        ),
    )
    .await;
    create::<Service>(
        &c,
        n,
        service("backend", json!({"app": "server", "serve": "yes"}), false),
    )
    .await;
    create::<Service>(
        &c,
        n,
        service("nobody", json!({"app": "no-such-pod"}), false),
    )
    .await;
    let a = ip(&ready_pod(&c, n, "server-a").await).expect("server-a ip");
    let b = ip(&ready_pod(&c, n, "server-b").await).expect("server-b ip");
    ready_pod(&c, n, "client").await;
    redis_set(a, "whoami", "a").await;
    redis_set(b, "whoami", "b").await;
    create::<Service>(&c, n, service("myself", json!({"app": "client"}), false)).await;
    let vip = cluster_ip(&c, n, "backend").await;
    wait_for("backend's endpoints", Duration::from_secs(30), || async {
        (endpoints(&c, n, "backend").await == vec![a.to_string()]).then_some(())
    })
    .await;

    // The ClusterIP reaches the selected pod, from this host and from inside a pod by name.
    let from_host = wait_for(
        "backend's ClusterIP to answer",
        Duration::from_secs(15),
        || async { redis_get(vip, "whoami").await.ok().flatten() },
    )
    .await;
    assert_eq!(from_host, "a");
    assert_eq!(whoami_in_pod(&state, n, "client", "backend").await, "a");

    // A pod reaches itself through its own Service (hairpin).
    wait_for("myself's endpoints", Duration::from_secs(30), || async {
        (endpoints(&c, n, "myself").await.len() == 1).then_some(())
    })
    .await;
    let hairpin = wait_for(
        "the client through its own Service",
        Duration::from_secs(10),
        || async {
            let r = exec(&state, n, "client", &["redis-cli", "-h", "myself", "PING"]).await;
            (r.out == "PONG").then_some(r)
        },
    )
    .await;
    assert!(hairpin.took < FAST, "hairpin took {:?}", hairpin.took);

    // The endpoints move to the other pod: new connections follow.
    let api: Api<Pod> = Api::namespaced(c.clone(), n);
    for (name, serve) in [("server-a", "no"), ("server-b", "yes")] {
        let patch = json!({"metadata": {"labels": {"serve": serve}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("relabel {name}: {e}"));
    }
    // Polled every 20 ms: when the EndpointSlice holds only server-b, then when a new
    // connection to the ClusterIP first reaches it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while endpoints(&c, n, "backend").await != vec![b.to_string()] {
        assert!(
            Instant::now() < deadline,
            "backend's endpoints did not move"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let moved = Instant::now();
    while redis_get(vip, "whoami").await.ok().flatten().as_deref() != Some("b") {
        assert!(
            moved.elapsed() < Duration::from_secs(10),
            "new connections still do not reach server-b"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "ClusterIP followed the EndpointSlice in {:.0} ms (host, 20 ms polls)",
        moved.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(whoami_in_pod(&state, n, "client", "backend").await, "b");
    for _ in 0..5 {
        assert_eq!(
            redis_get(vip, "whoami").await,
            Ok(Some("b".into())),
            "a new connection went elsewhere"
        );
    }

    // A Service without endpoints is refused at once, from the host and from the pod.
    let none = cluster_ip(&c, n, "nobody").await;
    let t0 = Instant::now();
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((local(none), 6379)),
    )
    .await
    .expect("a connection to a Service without endpoints hung");
    assert_eq!(
        refused.map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused)
    );
    assert!(t0.elapsed() < FAST, "refused after {:?}", t0.elapsed());
    let r = exec(&state, n, "client", &["redis-cli", "-h", "nobody", "PING"]).await;
    assert!(
        r.err.contains("Connection refused") || r.out.contains("Connection refused"),
        "{}{}",
        r.out,
        r.err
    );
    assert!(r.took < FAST, "refused inside the pod after {:?}", r.took);
}

#[tokio::test]
async fn cluster_dns_resolves_services_and_headless_members_inside_pods() {
    let Some(state) = require(&[Capability::Runner])
        .await
        .map(|g| g.runner_state())
    else {
        return;
    };
    let c = client().await;
    let ns = TestNamespace::new(&c, "net-dns").await;
    let n = ns.name.as_str();
    create::<Service>(&c, n, service("members", json!({"app": "member"}), true)).await;
    create::<Service>(&c, n, service("front", json!({"app": "member"}), false)).await;
    let sts = json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "m"},
        "spec": {
            "serviceName": "members",
            "replicas": 2,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "member"}},
            "template": redis_template(),
        },
    });
    create::<k8s_openapi::api::apps::v1::StatefulSet>(&c, n, sts).await;
    let members = wait_for("2 ready members", Duration::from_secs(90), || async {
        let ps = pods(&c, n, "app=member").await;
        (ps.len() == 2 && ps.iter().all(ready)).then_some(ps)
    })
    .await;
    let ip_of = |name: &str| {
        members
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .and_then(ip)
            .unwrap_or_else(|| panic!("{name} has no address"))
            .to_string()
    };
    let vip = cluster_ip(&c, n, "front").await.to_string();
    let lookup = |name: String| {
        let state = state.clone();
        async move {
            let r = exec(&state, n, "m-0", &["getent", "hosts", &name]).await;
            (
                r.code,
                r.out
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                r.took,
            )
        }
    };
    let fqdn = format!("front.{n}.svc.cluster.local");
    for name in ["front".to_string(), format!("front.{n}"), fqdn.clone()] {
        let (code, got, _) = wait_for(
            &format!("{name} to resolve"),
            Duration::from_secs(40),
            || async {
                let r = lookup(name.clone()).await;
                (r.0 == Some(0)).then_some(r)
            },
        )
        .await;
        assert_eq!((code, got), (Some(0), vip.clone()), "{name} inside m-0");
    }
    // Members by their DNS names (the pod's own name is in its hosts file; its peer's is not).
    for (name, want) in [
        ("m-1.members".to_string(), ip_of("m-1")),
        (format!("m-1.members.{n}.svc.cluster.local"), ip_of("m-1")),
        (format!("m-0.members.{n}"), ip_of("m-0")),
    ] {
        let got = wait_for(
            &format!("{name} to resolve"),
            Duration::from_secs(40),
            || async {
                let r = lookup(name.clone()).await;
                (r.0 == Some(0)).then_some(r.1)
            },
        )
        .await;
        assert_eq!(got, want, "{name}");
    }
    let hosts = exec(&state, n, "m-0", &["cat", "/etc/hosts"]).await.out;
    assert!(
        !hosts.contains(&ip_of("m-1")),
        "a peer in m-0's hosts file:\n{hosts}"
    );
    let all = exec(&state, n, "m-0", &["getent", "ahostsv4", "members"])
        .await
        .out;
    for m in ["m-0", "m-1"] {
        assert!(all.contains(&ip_of(m)), "members lists every member: {all}");
    }

    // Unknown names fail at once: a cluster name that does not exist, and a name outside the
    // cluster (which CoreDNS refuses instead of asking anyone else).
    for name in ["no-such-service", "no-such-host.example"] {
        let (code, _, took) = lookup(name.to_string()).await;
        assert_eq!(code, Some(2), "{name} resolved");
        assert!(took < FAST, "{name} failed only after {took:?}");
        println!(
            "{name}: not found in {:.0} ms inside the pod",
            took.as_secs_f64() * 1000.0
        );
    }
    // The same seen from this host, with the answer codes.
    let rcode = |name: String| async move {
        let out = tokio::process::Command::new("dig")
            .args([
                &format!("@{}", local(CLUSTER_DNS)),
                "+time=1",
                "+tries=1",
                &name,
            ])
            .output()
            .await
            .expect("dig (bind9-dnsutils, installed by e2e/cluster)");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split("status: ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap_or("no answer")
            .to_string()
    };
    assert_eq!(rcode(fqdn).await, "NOERROR");
    assert_eq!(
        rcode(format!("no-such-service.{n}.svc.cluster.local")).await,
        "NXDOMAIN"
    );
    assert_eq!(rcode("no-such-host.example".into()).await, "REFUSED");
}

fn redis_template() -> serde_json::Value {
    let pod = redis_pod("unused", json!({"app": "member"}), json!({}));
    json!({"metadata": {"labels": pod["metadata"]["labels"]}, "spec": pod["spec"]})
}

#[tokio::test]
async fn pods_have_their_own_hostname_and_host_aliases() {
    let Some(state) = require(&[Capability::Runner])
        .await
        .map(|g| g.runner_state())
    else {
        return;
    };
    let c = client().await;
    let ns = TestNamespace::new(&c, "net-host").await;
    let n = ns.name.as_str();
    // An exec probe that needs the pod's hostname to resolve to itself (common in charts).
    let extra = json!({
        "hostAliases": [{"ip": "127.0.0.1", "hostnames": ["redis", "queue.local"]}],
    });
    let mut pod = redis_pod("vote-7f9c", json!({"app": "vote"}), extra);
    pod["spec"]["containers"][0]["readinessProbe"] = json!({"exec": {"command": ["sh", "-c", "redis-cli -h \"$(hostname)\" ping | grep -q PONG"]}, "periodSeconds": 1});
    create::<Pod>(&c, n, pod).await;
    create::<Pod>(
        &c,
        n,
        redis_pod(
            "named",
            json!({"app": "named"}),
            json!({"hostname": "db-1", "subdomain": "dbs"}),
        ),
    )
    .await;
    let vote = ready_pod(&c, n, "vote-7f9c").await;
    let own = ip(&vote).expect("vote ip").to_string();
    assert_eq!(
        exec(&state, n, "vote-7f9c", &["hostname"]).await.out,
        "vote-7f9c"
    );
    assert_eq!(
        exec(&state, n, "vote-7f9c", &["cat", "/etc/hostname"])
            .await
            .out,
        "vote-7f9c"
    );
    let resolved = exec(&state, n, "vote-7f9c", &["getent", "hosts", "vote-7f9c"])
        .await
        .out;
    assert!(resolved.starts_with(&own), "own name: {resolved}");
    // hostAliases: `redis` is the pod's own loopback, where its Redis answers.
    let alias = exec(&state, n, "vote-7f9c", &["getent", "hosts", "redis"])
        .await
        .out;
    assert!(alias.starts_with("127.0.0.1"), "redis alias: {alias}");
    let queue = exec(&state, n, "vote-7f9c", &["getent", "hosts", "queue.local"])
        .await
        .out;
    assert!(queue.starts_with("127.0.0.1"), "queue.local alias: {queue}");
    assert_eq!(
        exec(
            &state,
            n,
            "vote-7f9c",
            &["redis-cli", "-h", "redis", "PING"]
        )
        .await
        .out,
        "PONG"
    );

    // spec.hostname and subdomain: the name and the FQDN the kubelet gives.
    let named = ready_pod(&c, n, "named").await;
    assert_eq!(exec(&state, n, "named", &["hostname"]).await.out, "db-1");
    let fqdn = format!("db-1.dbs.{n}.svc.cluster.local");
    let line = exec(&state, n, "named", &["getent", "hosts", &fqdn])
        .await
        .out;
    assert!(
        line.starts_with(&ip(&named).expect("ip").to_string()),
        "{fqdn}: {line}"
    );
}

fn try_run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The cluster's state directory (beside the runner's), where `up` recorded the host's
/// sysctls before it changed anything.
fn cluster_state(runner: &Path) -> PathBuf {
    runner
        .parent()
        .expect("the runner's state is in the cluster's")
        .to_path_buf()
}

#[tokio::test]
async fn network_rule_pods_route_only_locally_and_forwarding_stays_on_the_bridge() {
    let Some(state) = require(&[Capability::Runner])
        .await
        .map(|g| g.runner_state())
    else {
        return;
    };
    let c = client().await;
    let ns = TestNamespace::new(&c, "net-rule").await;
    create::<Pod>(
        &c,
        &ns.name,
        redis_pod("probe", json!({"app": "probe"}), json!({})),
    )
    .await;
    ready_pod(&c, &ns.name, "probe").await;

    // Every pod namespace: no default route; the pod network on eth0, the Service range via
    // the gateway, nothing else.
    let namespaces: Vec<String> = run("ip", &["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(gbo_podrunner::net::PREFIX))
        .map(str::to_string)
        .collect();
    assert!(!namespaces.is_empty(), "no pod namespaces at all");
    for netns in &namespaces {
        // Other tests' pods come and go meanwhile: a namespace that vanished is skipped.
        let Some(routes) = try_run("ip", &["-n", netns, "-4", "route", "show", "table", "all"])
        else {
            continue;
        };
        for r in routes.lines().filter(|l| !l.trim().is_empty()) {
            let allowed = r.starts_with("10.244.0.0/16 dev eth0")
                || r.starts_with(&format!("10.96.0.0/16 via {GATEWAY} dev eth0"))
                || r.contains("table local");
            assert!(allowed, "pod namespace {netns} has the route `{r}`");
        }
        for family in ["-4", "-6"] {
            let default = try_run("ip", &["-n", netns, family, "route", "show", "default"]);
            assert!(
                default.unwrap_or_default().trim().is_empty(),
                "pod namespace {netns} has a default route"
            );
        }
    }

    // The host: the Service range goes onto the bridge (no default route for it), and only
    // packets arriving on the bridge may be forwarded.
    let svc_route = run("ip", &["route", "show", "10.96.0.0/16"]);
    assert!(
        svc_route
            .trim()
            .starts_with(&format!("10.96.0.0/16 dev {BRIDGE}")),
        "{svc_route}"
    );
    let forwarding = |iface: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{iface}/forwarding"))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    assert_eq!(forwarding(BRIDGE), "1");
    // Machine-wide settings are as they were before `up` (kube-proxy changed none either).
    let baseline = std::fs::read_to_string(cluster_state(&state).join("host-sysctls"))
        .expect("up records the host's sysctls");
    for line in baseline.lines() {
        let (key, before) = line.split_once('=').expect("key=value");
        let now = std::fs::read_to_string(format!("/proc/sys/{key}"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "absent".into());
        assert_eq!(now, before, "{key} changed while the cluster runs");
    }
    for iface in std::fs::read_dir("/proc/sys/net/ipv4/conf")
        .expect("conf")
        .flatten()
    {
        let name = iface.file_name().to_string_lossy().to_string();
        if name == BRIDGE || ["all", "default"].contains(&name.as_str()) {
            continue;
        }
        let was_global = baseline.contains("net/ipv4/conf/all/forwarding=1");
        assert!(
            forwarding(&name) == "0" || was_global,
            "forwarding is on for {name}, which is not the pod bridge"
        );
    }

    // Our rules, as nftables reports them: forwarded traffic stays on the bridge, traffic to a
    // Service IP kube-proxy did not translate is refused, pod addresses never leave by another
    // interface.
    let table = run("nft", &["list", "table", "inet", OUR_TABLE]);
    for rule in [
        format!("iifname \"{BRIDGE}\" oifname != \"{BRIDGE}\" drop"),
        format!("oifname \"{BRIDGE}\" iifname != \"{BRIDGE}\" drop"),
        "ip daddr 10.96.0.0/16 reject".to_string(),
        "ip saddr 10.244.0.0/16 drop".to_string(),
    ] {
        assert!(table.contains(&rule), "missing `{rule}` in:\n{table}");
    }
    // Our only NAT: a pod's traffic back to itself through a Service, on the bridge.
    let nat_rules = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.contains(" masquerade") && !l.trim_start().starts_with("chain "))
            .map(str::to_string)
            .collect()
    };
    for line in nat_rules(&table) {
        assert!(
            line.contains(&format!("oifname \"{BRIDGE}\"")) && line.contains("@hairpin"),
            "a masquerade beyond the bridge's hairpin traffic: {line}"
        );
    }
    // kube-proxy's table, in nftables mode; its only NAT is the masquerade of marked (hairpin
    // and off-cluster-source) Service traffic, which our postrouting keeps on the bridge.
    let proxy = run("nft", &["list", "table", "ip", "kube-proxy"]);
    assert!(proxy.contains("chain nat-prerouting"), "{proxy}");
    for line in nat_rules(&proxy) {
        assert!(
            line.contains("mark") || line.contains("@hairpin-connections"),
            "unmarked masquerade in kube-proxy's table: {line}"
        );
    }
    // iptables is not used by this cluster; where it exists, nothing of ours is in it.
    if let Ok(out) = std::process::Command::new("iptables").args(["-S"]).output() {
        let rules = String::from_utf8_lossy(&out.stdout);
        assert!(
            !rules.contains(BRIDGE),
            "iptables rules on the pod bridge:\n{rules}"
        );
    }

    // `e2e/cluster down` ends with verify-clean; with the cluster up it must see all of the
    // above (or it would pass after a down that left them).
    let out = std::process::Command::new(repo("e2e/cluster"))
        .arg("verify-clean")
        .output()
        .expect("e2e/cluster verify-clean");
    assert!(
        !out.status.success(),
        "verify-clean passed with the cluster up"
    );
    let listed = String::from_utf8_lossy(&out.stderr);
    for item in [
        format!("link {BRIDGE}"),
        "route 10.96.0.0/16".to_string(),
        format!("nftables table inet {OUR_TABLE}"),
        "nftables table ip kube-proxy".to_string(),
        format!("netns {}", gbo_podrunner::net::PREFIX),
        "process".to_string(),
    ] {
        assert!(
            listed.contains(&item),
            "verify-clean did not list `{item}`:\n{listed}"
        );
    }
}
