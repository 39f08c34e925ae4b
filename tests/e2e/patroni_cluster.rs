//! PatroniCluster end to end, with real Patroni and PostgreSQL behind the pods and the test
//! API server as Patroni's DCS: a labelled leader behind the primary Service, streaming
//! replicas, a failover within Patroni's ttl when the leader's machine dies, no committed row
//! lost, and the old leader back as a replica.

use crate::real::{endpoints, ip, name, pods, psql, runner_state};
use crate::support::{condition, start_with, wait_for};
use gbo_podrunner::fault;
use guestbook_operator::crd::PatroniCluster;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

pub const SPEC: &str = "apiVersion: guestbook-operator.dev/v1alpha1\nkind: PatroniCluster\nmetadata: {name: db}\nspec:\n  members: 3\n  storage: {size: 200Mi}\n  patroni: {ttl: 20, loopWait: 2, retryTimeout: 5}\n";
pub const MEMBERS: &str = "app.kubernetes.io/name=patroni,app.kubernetes.io/instance=db";

pub async fn leader(c: &Client, ns: &str) -> Option<String> {
    Api::<PatroniCluster>::namespaced(c.clone(), ns)
        .get("db")
        .await
        .ok()?
        .status?
        .leader
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
async fn a_patroni_cluster_elects_a_labelled_leader_and_fails_over_without_losing_rows() {
    let Some(state) = runner_state() else { return };
    let (c, ns, op) = start_with("pgc", SPEC).await;
    let first = ready(&c, &ns.name).await;
    let first_ip = pod_ip(&c, &ns.name, &first).await;

    // Patroni labelled its leader; the primary Service selects exactly it.
    let labelled: Vec<String> = pods(
        &c,
        &ns.name,
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
        || async {
            (endpoints(&c, &ns.name, "db").await == vec![first_ip.to_string()]).then_some(())
        },
    )
    .await;
    let status = Api::<PatroniCluster>::namespaced(c.clone(), &ns.name)
        .get("db")
        .await
        .expect("db")
        .status
        .expect("status");
    assert_eq!(status.members.len(), 3, "{status:?}");
    assert!(
        status
            .members
            .iter()
            .filter(|m| m.name != first)
            .all(|m| m.state.as_deref() == Some("streaming")),
        "{status:?}"
    );

    let pw = superuser_password(&c, &ns.name, "db").await;
    psql(first_ip, &pw, "CREATE TABLE votes (id text PRIMARY KEY); INSERT INTO votes SELECT 'v' || g FROM generate_series(1, 100) g").await.expect("write on the leader");

    // The leader's machine dies (killed and kept down): a replica takes over once the leader
    // lock expires, the Service follows, and every committed row is there.
    let t0 = Instant::now();
    fault::kill(
        &state,
        &ns.name,
        &first,
        Some("postgres"),
        Some(Duration::from_secs(40)),
    )
    .expect("kill the leader");
    let second = wait_for("a new leader", Duration::from_secs(90), || async {
        leader(&c, &ns.name).await.filter(|l| *l != first)
    })
    .await;
    let second_ip = pod_ip(&c, &ns.name, &second).await;
    wait_for(
        "the primary Service to follow",
        Duration::from_secs(30),
        || async {
            (endpoints(&c, &ns.name, "db").await == vec![second_ip.to_string()]).then_some(())
        },
    )
    .await;
    println!(
        "Patroni failover: {second} leads {:.1} s after {first} was killed (ttl 20 s)",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(
        psql(second_ip, &pw, "SELECT count(*) FROM votes")
            .await
            .as_deref(),
        Ok("100"),
        "committed rows lost"
    );
    psql(
        second_ip,
        &pw,
        "INSERT INTO votes VALUES ('after-failover')",
    )
    .await
    .expect("the new leader takes writes");

    // The old leader comes back and follows the new one.
    let back = ready(&c, &ns.name).await;
    assert_eq!(back, second, "the leader stays where it moved");
    wait_for(
        "the old leader to hold the new row",
        Duration::from_secs(60),
        || async {
            (psql(first_ip, &pw, "SELECT count(*) FROM votes")
                .await
                .ok()
                .as_deref()
                == Some("101"))
            .then_some(())
        },
    )
    .await;
    assert_eq!(
        op.metric("guestbook_operator_reconcile_errors_total", "")
            .await,
        0.0,
        "{}",
        op.log_text()
    );
}
