//! PatroniCluster end to end, with real Patroni and PostgreSQL behind the pods and the test
//! API server as Patroni's DCS: a labelled leader behind the primary Service, streaming
//! replicas, a failover within Patroni's ttl when the leader's machine dies with no committed
//! row lost (strict synchronous mode, under write load), the old leader back as a replica, a
//! switch to asynchronous mode in place, a scale-down that moves the leader off the member it
//! removes, a scale-up, and deletion that removes the children and keeps the claims.

use crate::patroni_roll::{members, watch_replacement};
use crate::real::{endpoints, ip, name, pods, psql};
use crate::support::{Capability, apply_yaml, condition, require, start_with, wait_for};
use gbo_podrunner::fault;
use guestbook_operator::crd::PatroniCluster;
use guestbook_operator::crd::patroni_cluster::PatroniClusterStatus;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::{Api, Client};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const SPEC: &str = "apiVersion: guestbook-operator.dev/v1alpha1\nkind: PatroniCluster\nmetadata: {name: db}\nspec:\n  members: 3\n  storage: {size: 200Mi}\n  patroni: {ttl: 20, loopWait: 2, retryTimeout: 5}\n";
/// `members` members in replication mode `mode` (`Strict`: a commit returns only once a
/// standby has it).
fn cluster(members: i32, mode: &str) -> String {
    format!(
        "apiVersion: guestbook-operator.dev/v1alpha1\nkind: PatroniCluster\nmetadata: {{name: db}}\nspec:\n  members: {members}\n  storage: {{size: 200Mi}}\n  patroni: {{ttl: 20, loopWait: 2, retryTimeout: 5, synchronousMode: {mode}}}\n"
    )
}

/// Inserts numbered rows through whatever the primary Service selects until stopped; returns
/// the numbers whose COMMIT was acknowledged.
pub fn writer(
    c: &Client,
    ns: &str,
    pw: &str,
    table: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<u32>> {
    let (c, ns, pw) = (c.clone(), ns.to_string(), pw.to_string());
    tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut n = 0u32;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let primary = endpoints(&c, &ns, "db").await;
            let Some(addr) = primary.first().and_then(|a| a.parse::<Ipv4Addr>().ok()) else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            if psql(addr, &pw, &format!("INSERT INTO {table} VALUES ({n})"))
                .await
                .is_ok()
            {
                acked.push(n);
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        acked
    })
}

/// Every acknowledged number is in `table` on the member at `ip`; returns how many there were.
pub async fn none_lost(ip: Ipv4Addr, pw: &str, table: &str, acked: &[u32]) -> usize {
    let stored: BTreeSet<u32> = psql(ip, pw, &format!("SELECT n FROM {table}"))
        .await
        .expect("read back")
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    let lost: Vec<&u32> = acked.iter().filter(|n| !stored.contains(n)).collect();
    assert!(lost.is_empty(), "acknowledged commits lost: {lost:?}");
    acked.len()
}

pub const MEMBERS: &str = "app.kubernetes.io/name=patroni,app.kubernetes.io/instance=db";

/// The status of PatroniCluster `name`, once it has one.
pub async fn status(c: &Client, ns: &str, name: &str) -> Option<PatroniClusterStatus> {
    Api::<PatroniCluster>::namespaced(c.clone(), ns)
        .get(name)
        .await
        .ok()?
        .status
}

pub async fn leader(c: &Client, ns: &str) -> Option<String> {
    status(c, ns, "db").await?.leader
}

pub async fn ready(c: &Client, ns: &str) -> String {
    wait_for(
        "the PatroniCluster to be Ready",
        Duration::from_secs(240),
        || async {
            let (s, ..) = condition(c, ns, "PatroniCluster", "db", "Ready").await?;
            if s != "True" {
                return None;
            }
            leader(c, ns).await
        },
    )
    .await
}

pub async fn pod_ip(c: &Client, ns: &str, pod: &str) -> Ipv4Addr {
    pods(c, ns, MEMBERS)
        .await
        .into_iter()
        .find(|p| name(p) == pod)
        .and_then(|p| ip(&p))
        .expect("member address")
}

/// The generated superuser password of PatroniCluster `cluster`.
pub async fn superuser_password(c: &Client, ns: &str, cluster: &str) -> String {
    let secret = Api::<Secret>::namespaced(c.clone(), ns)
        .get(&format!("{cluster}-superuser"))
        .await
        .expect("generated superuser Secret");
    String::from_utf8(secret.data.expect("data")["password"].0.clone()).expect("utf-8")
}

#[tokio::test]
async fn a_strict_synchronous_cluster_fails_over_scales_and_is_deleted_without_losing_rows() {
    let Some(state) = require(&[Capability::Runner])
        .await
        .map(|g| g.runner_state())
    else {
        return;
    };
    let (c, ns, op) = start_with("pgc", &cluster(3, "Strict")).await;
    let ns = &ns.name;
    let first = ready(&c, ns).await;
    let first_ip = pod_ip(&c, ns, &first).await;

    // Patroni labelled its leader; the primary Service selects exactly it.
    let labelled: Vec<String> = pods(
        &c,
        ns,
        &format!("{MEMBERS},guestbook-operator.dev/role=primary"),
    )
    .await
    .iter()
    .map(name)
    .collect();
    assert_eq!(labelled, vec![first.clone()]);
    wait_for(
        "the primary Service to select the leader",
        Duration::from_secs(30),
        || async { (endpoints(&c, ns, "db").await == vec![first_ip.to_string()]).then_some(()) },
    )
    .await;
    // One synchronous standby, the other replica streaming asynchronously.
    let synced = wait_for(
        "a synchronous standby in status",
        Duration::from_secs(60),
        || async {
            let s = status(&c, ns, "db").await?;
            let roles: Vec<&str> = s.members.iter().filter_map(|m| m.role.as_deref()).collect();
            roles.contains(&"sync_standby").then_some(s.clone())
        },
    )
    .await;
    assert_eq!(synced.members.len(), 3, "{synced:?}");
    assert!(
        synced
            .members
            .iter()
            .filter(|m| m.name != first)
            .all(|m| m.state.as_deref() == Some("streaming")),
        "{synced:?}"
    );

    let pw = superuser_password(&c, ns, "db").await;
    psql(first_ip, &pw, "CREATE TABLE votes (n int PRIMARY KEY)")
        .await
        .expect("create table on the leader");

    // The leader's machine dies (killed and kept down) while a writer commits: the synchronous
    // standby takes over once the leader lock expires, the Service follows, and every
    // acknowledged commit is there.
    let stop = Arc::new(AtomicBool::new(false));
    let load = writer(&c, ns, &pw, "votes", stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = Instant::now();
    fault::kill(
        &state,
        ns,
        &first,
        Some("postgres"),
        Some(Duration::from_secs(40)),
    )
    .expect("kill the leader");
    let second = wait_for("a new leader", Duration::from_secs(90), || async {
        leader(&c, ns).await.filter(|l| *l != first)
    })
    .await;
    let second_ip = pod_ip(&c, ns, &second).await;
    wait_for(
        "the primary Service to follow",
        Duration::from_secs(30),
        || async { (endpoints(&c, ns, "db").await == vec![second_ip.to_string()]).then_some(()) },
    )
    .await;
    println!(
        "Patroni failover: {second} leads {:.1} s after {first} was killed (ttl 20 s)",
        t0.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = load.await.expect("writer");
    assert!(acked.len() > 5, "the writer barely ran: {acked:?}");
    let kept = none_lost(second_ip, &pw, "votes", &acked).await;
    println!("strict synchronous failover: {kept} acknowledged commits, none lost");

    // The old leader comes back and follows the new one.
    let back = ready(&c, ns).await;
    assert_eq!(back, second, "the leader stays where it moved");
    psql(second_ip, &pw, "INSERT INTO votes VALUES (0)")
        .await
        .expect("the new leader takes writes");
    wait_for(
        "the old leader to hold the new row",
        Duration::from_secs(60),
        || async {
            (psql(first_ip, &pw, "SELECT count(*) FROM votes WHERE n = 0")
                .await
                .ok()
                .as_deref()
                == Some("1"))
            .then_some(())
        },
    )
    .await;

    // Back to asynchronous replication (patched into Patroni's configuration), so that the
    // test may put the leader on any member.
    apply_yaml(&c, ns, &cluster(3, "Asynchronous"))
        .await
        .expect("asynchronous");
    wait_for(
        "Patroni to leave synchronous mode",
        Duration::from_secs(60),
        || async {
            let config = guestbook_operator::stores::patroni::config(&second_ip.to_string(), 8008)
                .await
                .ok()?;
            (config["synchronous_mode"] == serde_json::json!(false)).then_some(())
        },
    )
    .await;
    ready(&c, ns).await;

    // Scale down to two members while db-2 leads: the leader moves first.
    let now = members(&c, ns).await;
    if second != "db-2" {
        let body = serde_json::json!({"leader": second, "candidate": "db-2"});
        let resp = reqwest::Client::new()
            .post(format!("http://{second_ip}:8008/switchover"))
            .json(&body)
            .send()
            .await
            .expect("switchover request");
        assert!(
            resp.status().is_success(),
            "switchover to db-2: {:?}",
            resp.text().await
        );
        wait_for("db-2 to lead", Duration::from_secs(60), || async {
            (leader(&c, ns).await.as_deref() == Some("db-2")).then_some(())
        })
        .await;
        ready(&c, ns).await;
    }
    let watch = watch_replacement(&c, ns, "db-2", now["db-2"].0.clone());
    apply_yaml(&c, ns, &cluster(2, "Asynchronous"))
        .await
        .expect("scale down");
    let leader_when_removed = tokio::time::timeout(Duration::from_secs(120), watch)
        .await
        .expect("db-2 removed within 2 min")
        .expect("watcher");
    assert!(
        leader_when_removed.as_ref().is_some_and(|l| l != "db-2"),
        "db-2 was removed while it led (leader then: {leader_when_removed:?})"
    );
    let third = ready(&c, ns).await;
    let third_ip = pod_ip(&c, ns, &third).await;
    none_lost(third_ip, &pw, "votes", &acked).await;

    // And back up: the third member rejoins as a streaming replica.
    apply_yaml(&c, ns, &cluster(3, "Asynchronous"))
        .await
        .expect("scale up");
    wait_for(
        "three members, two streaming",
        Duration::from_secs(120),
        || async {
            let s = status(&c, ns, "db").await?;
            let streaming = s
                .members
                .iter()
                .filter(|m| m.state.as_deref() == Some("streaming"))
                .count();
            (s.members.len() == 3 && streaming == 2).then_some(())
        },
    )
    .await;

    op.assert_no_reconcile_errors().await;

    // Deleting the resource removes what it owns and keeps the data.
    Api::<PatroniCluster>::namespaced(c.clone(), ns)
        .delete("db", &Default::default())
        .await
        .expect("delete");
    wait_for(
        "the StatefulSet and Secrets to be garbage-collected",
        Duration::from_secs(60),
        || async {
            let sts = Api::<StatefulSet>::namespaced(c.clone(), ns)
                .get_opt("db")
                .await
                .ok()?;
            let secret = Api::<Secret>::namespaced(c.clone(), ns)
                .get_opt("db-superuser")
                .await
                .ok()?;
            (sts.is_none() && secret.is_none()).then_some(())
        },
    )
    .await;
    let claims: Vec<String> = Api::<PersistentVolumeClaim>::namespaced(c.clone(), ns)
        .list(&Default::default())
        .await
        .expect("claims")
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(
        claims,
        vec!["data-db-0", "data-db-1", "data-db-2"],
        "claims kept"
    );
}
