//! Benchmark: how fast the master Service follows a Sentinel failover. Over a number of
//! forced failovers (SENTINEL FAILOVER), it measures from the moment a Sentinel announces
//! `+switch-master` (seen by our own subscriber) to the moment the master Service's
//! EndpointSlice holds exactly the new master, and prints the figures. Target: within 1 s.
//!
//! Needs the local cluster with its pod runner: `eval "$(e2e/cluster env)"`, then
//! `cargo bench --bench redis_failover` (hack/test-all runs it).

#[path = "../tests/e2e/real.rs"]
#[allow(dead_code)]
mod real;
#[path = "../tests/e2e/support.rs"]
#[allow(dead_code)]
mod support;

use futures::StreamExt;
use guestbook_operator::crd::RedisSentinel;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const FAILOVERS: usize = 12;
const SPEC: &str = "apiVersion: guestbook-operator.dev/v1alpha1\nkind: RedisSentinel\nmetadata: {name: bench}\nspec:\n  redis: {replicas: 3}\n  sentinel: {replicas: 3, downAfterMilliseconds: 2000, failoverTimeout: 4000}\n";

type Seen = Arc<Mutex<Vec<(String, Instant)>>>;

/// Records every `+switch-master` one Sentinel announces: (new master address, when).
async fn subscribe(ip: Ipv4Addr, password: String, seen: Seen) {
    let Ok(mut s) = tokio::net::TcpStream::connect((ip, 26379)).await else {
        return;
    };
    let cmd = format!(
        "*2\r\n$4\r\nAUTH\r\n${}\r\n{password}\r\n*2\r\n$9\r\nSUBSCRIBE\r\n$14\r\n+switch-master\r\n",
        password.len()
    );
    if s.write_all(cmd.as_bytes()).await.is_err() {
        return;
    }
    let mut lines = BufReader::new(s).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        // Payload: "<group> <old-ip> <old-port> <new-ip> <new-port>"
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.len() == 5 && parts[0] == "bench" {
            seen.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((parts[3].to_string(), Instant::now()));
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    if std::env::var_os("GBO_PODRUNNER_STATE").is_none() {
        println!(
            "redis_failover: skipped (no local cluster with the pod runner: eval \"$(e2e/cluster env)\")"
        );
        return;
    }
    let c = support::client().await;
    support::install_crds(&c).await;
    let ns = support::TestNamespace::new(&c, "bench-failover").await;
    let _op = support::Operator::start(&ns.name, "bench", &["--leader-election=false"]);
    support::apply_yaml(&c, &ns.name, SPEC)
        .await
        .expect("RedisSentinel accepted");
    let rs: Api<RedisSentinel> = Api::namespaced(c.clone(), &ns.name);
    let ready = || async {
        let (status, ..) =
            support::condition(&c, &ns.name, "RedisSentinel", "bench", "Ready").await?;
        let master = rs.get("bench").await.ok()?.status?.master?.address?;
        (status == "True").then_some(master)
    };
    support::wait_for("the set to be Ready", Duration::from_secs(120), ready).await;
    let secret = Api::<Secret>::namespaced(c.clone(), &ns.name)
        .get("bench-redis-auth")
        .await
        .expect("auth Secret");
    let password =
        String::from_utf8(secret.data.expect("data")["password"].0.clone()).expect("utf-8");

    // Our own subscribers on every Sentinel: the clock starts at the first announcement.
    let seen: Seen = Arc::default();
    let sentinels = real::pods(
        &c,
        &ns.name,
        "app.kubernetes.io/instance=bench,app.kubernetes.io/component=sentinel",
    )
    .await;
    for s in &sentinels {
        tokio::spawn(subscribe(
            real::ip(s).expect("sentinel ip"),
            password.clone(),
            seen.clone(),
        ));
    }
    // The clock stops when the master Service's EndpointSlice names the new master alone.
    let follows: Seen = Arc::default();
    {
        let follows = follows.clone();
        let api: Api<EndpointSlice> = Api::namespaced(c.clone(), &ns.name);
        let wc = watcher::Config::default().labels("kubernetes.io/service-name=bench-redis");
        tokio::spawn(async move {
            let mut events = watcher::watcher(api, wc).applied_objects().boxed();
            while let Some(Ok(slice)) = events.next().await {
                let ready: Vec<String> = slice
                    .endpoints
                    .iter()
                    .flatten()
                    .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
                    .flat_map(|e| e.addresses.clone())
                    .collect();
                if ready.len() == 1 {
                    follows
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((ready[0].clone(), Instant::now()));
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut latencies = Vec::new();
    for round in 0..FAILOVERS {
        let before =
            support::wait_for("the set to be Ready", Duration::from_secs(120), ready).await;
        // Sentinel refuses a new failover of the same master within twice failover-timeout
        // of the last one (-INPROG / -NOGOODSLAVE while it settles): ask again until it agrees.
        let sentinel_ip = real::ip(&sentinels[round % sentinels.len()]).expect("ip");
        support::wait_for(
            "Sentinel to accept a failover",
            Duration::from_secs(60),
            || async {
                let answer = real::resp(
                    sentinel_ip,
                    26379,
                    Some(&password),
                    &["SENTINEL", "FAILOVER", "bench"],
                )
                .await
                .unwrap_or_default();
                if answer == "OK" {
                    return Some(());
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                None
            },
        )
        .await;
        let (new_master, switched) =
            support::wait_for("+switch-master", Duration::from_secs(30), || async {
                seen.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .find(|(ip, _)| *ip != before)
                    .cloned()
            })
            .await;
        let followed =
            support::wait_for("the Service to follow", Duration::from_secs(30), || async {
                follows
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .find(|(ip, at)| *ip == new_master && *at >= switched)
                    .map(|(_, at)| *at)
            })
            .await;
        let ms = followed.duration_since(switched).as_secs_f64() * 1000.0;
        println!(
            "failover {:>2}: {before} -> {new_master}: Service followed {ms:7.1} ms after +switch-master",
            round + 1
        );
        latencies.push(ms);
        seen.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
    let mut sorted = latencies.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "redis_failover: {} failovers, +switch-master -> master Service EndpointSlice: min {:.1} ms, median {:.1} ms, p90 {:.1} ms, max {:.1} ms (target: within 1000 ms)",
        sorted.len(),
        sorted[0],
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.9),
        sorted[sorted.len() - 1]
    );
}
