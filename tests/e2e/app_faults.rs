//! The voting app under a steady vote load while its stores fail: kill -9 of the Redis master,
//! then of the Patroni primary. The `redis` and `db` Services must follow, the app must keep
//! taking votes, the result page must show the tally again after the primary moved (the
//! operator restarts the result tier, whose image never reconnects). Votes acknowledged vs
//! counted are printed per fault: the stock worker drops the vote it holds when its database
//! connection breaks, and Redis replicates asynchronously, so the figures are the finding.

use crate::apps::wait_ready;
use crate::apps_client;
use crate::real::{endpoints, psql};
use crate::standins::service_base;
use crate::support::{
    Capability, Operator, TestNamespace, apply_yaml, client, install_crds, require, wait_for,
};
use gbo_podrunner::fault;
use guestbook_operator::crd::{PatroniCluster, RedisSentinel};
use kube::{Api, Client};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const APP: &str = r#"apiVersion: guestbook-operator.dev/v1alpha1
kind: VoteApp
metadata: {name: polls}
spec:
  vote: {replicas: 2}
  result: {replicas: 1}
  worker: {replicas: 1}
  redis:
    spec:
      redis: {replicas: 3}
      sentinel: {replicas: 3}
      auth: {enabled: false}
  postgres:
    spec:
      members: 3
      patroni: {ttl: 20, loopWait: 5, retryTimeout: 5}
      auth: {stockAppCredentials: true}
"#;

/// Voter ids whose vote was acknowledged (HTTP 200), by phase, and failures seen.
#[derive(Default)]
struct Load {
    acked: Vec<BTreeSet<String>>,
    failed: Vec<u32>,
    phase: usize,
}

fn cast_votes(
    base: String,
    load: Arc<Mutex<Load>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0u64;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let choice = if i.is_multiple_of(2) { "a" } else { "b" };
            i += 1;
            let outcome = apps_client::vote(&base, None, choice).await;
            {
                let mut l = load.lock().unwrap_or_else(|p| p.into_inner());
                let phase = l.phase;
                match outcome {
                    Ok(id) => {
                        l.acked[phase].insert(id);
                    }
                    Err(_) => l.failed[phase] += 1,
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

async fn store_status(c: &Client, ns: &str) -> (Option<String>, Option<String>) {
    let rs = Api::<RedisSentinel>::namespaced(c.clone(), ns)
        .get("polls-redis")
        .await
        .ok();
    let pc = Api::<PatroniCluster>::namespaced(c.clone(), ns)
        .get("polls-db")
        .await
        .ok();
    (
        rs.and_then(|r| r.status?.master.map(|m| m.pod)),
        pc.and_then(|p| p.status?.leader),
    )
}

async fn counted_ids(c: &Client, ns: &str) -> Result<BTreeSet<String>, String> {
    let base = service_base(c, ns, "db").await;
    let host = base
        .trim_start_matches("http://")
        .split(':')
        .next()
        .unwrap_or_default();
    let host = host.parse().map_err(|e| format!("{host}: {e}"))?;
    let rows = psql(host, "postgres", "SELECT id FROM votes").await?;
    Ok(rows.lines().map(str::to_string).collect())
}

#[tokio::test]
async fn votes_keep_flowing_through_a_redis_and_a_postgres_failover() {
    let Some(state) = require(&[Capability::Runner, Capability::ClusterDns])
        .await
        .map(|g| g.runner_state())
    else {
        return;
    };
    let c = client().await;
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, "app-faults").await;
    let op = Operator::start(&ns.name, "solo", &["--leader-election=false"]);
    apply_yaml(&c, &ns.name, APP).await.expect("the app");
    wait_ready(&c, &ns.name, "VoteApp", "polls", Duration::from_secs(300)).await;

    let load = Arc::new(Mutex::new(Load {
        acked: vec![BTreeSet::new(); 3],
        failed: vec![0; 3],
        phase: 0,
    }));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let vote = service_base(&c, &ns.name, "polls-vote").await;
    let voter = cast_votes(vote, load.clone(), stop.clone());
    wait_for(
        "votes flowing before any fault",
        Duration::from_secs(60),
        || async {
            let l = load.lock().unwrap_or_else(|p| p.into_inner());
            (l.acked[0].len() >= 40).then_some(())
        },
    )
    .await;

    // Fault 1: the Redis master dies; Sentinel promotes a replica; `redis` follows.
    let (master, _) = store_status(&c, &ns.name).await;
    let master = master.expect("a Redis master");
    load.lock().unwrap_or_else(|p| p.into_inner()).phase = 1;
    let t0 = Instant::now();
    fault::kill(
        &state,
        &ns.name,
        &master,
        None,
        Some(Duration::from_secs(30)),
    )
    .expect("kill -9 the master");
    let new_master = wait_for("a new Redis master", Duration::from_secs(60), || async {
        let (m, _) = store_status(&c, &ns.name).await;
        m.filter(|m| *m != master)
    })
    .await;
    let ep = wait_for(
        "`redis` to select the new master only",
        Duration::from_secs(30),
        || async {
            let eps = endpoints(&c, &ns.name, "redis").await;
            (eps.len() == 1).then_some(eps)
        },
    )
    .await;
    println!(
        "figure: Redis master {master} killed; {new_master} master and `redis` → {ep:?} after {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(15)).await;

    // Fault 2: the Patroni primary's machine dies; Patroni elects another; `db` follows and
    // the operator restarts the result tier.
    let (_, leader) = store_status(&c, &ns.name).await;
    let leader = leader.expect("a Patroni leader");
    load.lock().unwrap_or_else(|p| p.into_inner()).phase = 2;
    let t1 = Instant::now();
    fault::kill(
        &state,
        &ns.name,
        &leader,
        None,
        Some(Duration::from_secs(40)),
    )
    .expect("kill -9 the primary");
    let new_leader = wait_for("a new Patroni leader", Duration::from_secs(90), || async {
        let (_, l) = store_status(&c, &ns.name).await;
        l.filter(|l| *l != leader)
    })
    .await;
    println!(
        "figure: Patroni primary {leader} killed; {new_leader} leads after {:.1}s",
        t1.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(15)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    voter.await.expect("the voter task");

    // Settle: the app Ready again (the killed members back), the queue drained.
    wait_ready(&c, &ns.name, "VoteApp", "polls", Duration::from_secs(240)).await;
    // The voter has stopped: the tally is final and no longer shared.
    let load = std::mem::take(&mut *load.lock().unwrap_or_else(|p| p.into_inner()));
    let all: BTreeSet<String> = load.acked.iter().flatten().cloned().collect();
    let counted = wait_for(
        "the queue to drain into PostgreSQL",
        Duration::from_secs(90),
        || async {
            let ids = counted_ids(&c, &ns.name).await.ok()?;
            let stable = ids.len() >= all.len() || {
                tokio::time::sleep(Duration::from_secs(5)).await;
                counted_ids(&c, &ns.name).await.ok()?.len() == ids.len()
            };
            stable.then_some(ids)
        },
    )
    .await;
    for (i, what) in ["no fault", "Redis master killed", "Patroni primary killed"]
        .iter()
        .enumerate()
    {
        let acked = &load.acked[i];
        let kept = acked.intersection(&counted).count();
        println!(
            "figure: {what}: {} votes acknowledged, {kept} counted, {} lost; {} refused",
            acked.len(),
            acked.len() - kept,
            load.failed[i]
        );
    }
    assert!(
        !load.acked[2].is_empty(),
        "votes were taken after the primary moved"
    );
    // The result page (restarted for the new primary) shows the database's tally.
    let want = crate::apps::counted(&c, &ns.name)
        .await
        .expect("the tally in PostgreSQL");
    let result = service_base(&c, &ns.name, "polls-result").await;
    apps_client::wait_for_tally(&result, &want, Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("the result page after the failover: {e}\n{}", op.log_text()));
}
