//! PatroniCluster changes, end to end: dynamic settings are patched in place (no pod
//! replaced), settings that need a restart restart replicas first and switch over before the
//! old primary's turn, and a new pod template rolls replicas, switches over, and only then
//! replaces the old primary — while a writer commits rows, none of which is lost.

use crate::patroni_cluster::{MEMBERS, SPEC, leader, none_lost, ready, superuser_password, writer};
use crate::real::{ip, name, pods, psql};
use crate::support::{Capability, apply_yaml, require, start_with, wait_for};
use guestbook_operator::stores::patroni;
use kube::Client;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Pod name → (uid, address) of every member.
pub async fn members(c: &Client, ns: &str) -> BTreeMap<String, (String, Ipv4Addr)> {
    pods(c, ns, MEMBERS)
        .await
        .iter()
        .filter_map(|p| Some((name(p), (p.metadata.uid.clone()?, ip(p)?))))
        .collect()
}

/// `SHOW setting` on every member, once all three agree on `want`.
async fn everywhere(c: &Client, ns: &str, pw: &str, setting: &str, want: &str) {
    wait_for(
        &format!("{setting} = {want} on every member"),
        Duration::from_secs(180),
        || async {
            let m = members(c, ns).await;
            if m.len() != 3 {
                return None;
            }
            for (_, ip) in m.values() {
                if psql(*ip, pw, &format!("SHOW {setting}"))
                    .await
                    .ok()?
                    .as_str()
                    != want
                {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}

/// The leader as any member's Patroni reports it.
pub async fn patroni_leader(c: &Client, ns: &str) -> Option<String> {
    for (_, ip) in members(c, ns).await.values() {
        if let Ok(cl) = patroni::cluster(&ip.to_string(), 8008).await {
            return cl.leader().map(|m| m.name.clone());
        }
    }
    None
}

/// Watches pod `pod` (uid `uid`) and Patroni's leader; returns the leader last seen before
/// the pod was deleted or replaced.
pub fn watch_replacement(
    c: &Client,
    ns: &str,
    pod: &str,
    uid: String,
) -> tokio::task::JoinHandle<Option<String>> {
    let (c, ns, pod) = (c.clone(), ns.to_string(), pod.to_string());
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let now = members(&c, &ns).await;
            if now.get(&pod).is_none_or(|(u, _)| *u != uid) {
                return last;
            }
            if let Some(l) = patroni_leader(&c, &ns).await {
                last = Some(l);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

#[tokio::test]
async fn settings_apply_in_place_and_a_roll_switches_over_before_the_primary_without_losing_rows() {
    if require(&[Capability::Runner]).await.is_none() {
        return;
    }
    let (c, ns, op) = start_with("pgc-roll", SPEC).await;
    let ns = &ns.name;
    let first = ready(&c, ns).await;
    let pw = superuser_password(&c, ns, "db").await;
    let first_ip = members(&c, ns).await[&first].1;
    psql(first_ip, &pw, "CREATE TABLE ledger (n int PRIMARY KEY)")
        .await
        .expect("create table");
    let before = members(&c, ns).await;

    // A reloadable setting: patched into Patroni's configuration, no pod touched.
    apply_yaml(
        &c,
        ns,
        &format!("{SPEC}  postgresql: {{parameters: {{work_mem: 8MB}}}}\n"),
    )
    .await
    .expect("apply");
    everywhere(&c, ns, &pw, "work_mem", "8MB").await;
    assert_eq!(members(&c, ns).await, before, "a reload replaced pods");

    // A setting that needs a restart: PostgreSQL restarts on the replicas, then the primary
    // role moves, and no pod is replaced.
    apply_yaml(
        &c,
        ns,
        &format!("{SPEC}  postgresql: {{parameters: {{work_mem: 8MB, max_connections: '150'}}}}\n"),
    )
    .await
    .expect("apply");
    everywhere(&c, ns, &pw, "max_connections", "150").await;
    let second = ready(&c, ns).await;
    assert_ne!(
        second, first,
        "the primary was restarted in place instead of switched over"
    );
    assert_eq!(members(&c, ns).await, before, "a restart replaced pods");

    // A new pod template, under write load.
    let stop = Arc::new(AtomicBool::new(false));
    let load = writer(&c, ns, &pw, "ledger", stop.clone());
    let old_primary_uid = before[&second].0.clone();
    let watch = watch_replacement(&c, ns, &second, old_primary_uid);
    apply_yaml(
        &c,
        ns,
        &format!("{SPEC}  postgresql: {{parameters: {{work_mem: 8MB, max_connections: '150'}}}}\n  resources: {{requests: {{cpu: 50m}}}}\n"),
    )
    .await
    .expect("apply");
    let leader_when_replaced = tokio::time::timeout(Duration::from_secs(300), watch)
        .await
        .expect("the old primary is replaced within 5 min")
        .expect("watcher");
    assert!(
        leader_when_replaced.as_ref().is_some_and(|l| *l != second),
        "{second} was replaced while it led (leader then: {leader_when_replaced:?})"
    );
    wait_for(
        "every member on the new template",
        Duration::from_secs(300),
        || async {
            let now = members(&c, ns).await;
            (now.len() == 3
                && now
                    .iter()
                    .all(|(n, (uid, _))| before.get(n).is_some_and(|(old, _)| old != uid)))
            .then_some(())
        },
    )
    .await;
    let third = ready(&c, ns).await;
    stop.store(true, Ordering::Relaxed);
    let acked = load.await.expect("writer");
    let third_ip = members(&c, ns).await[&third].1;
    none_lost(third_ip, &pw, "ledger", &acked).await;
    println!(
        "Patroni rolling update: {} commits acknowledged during the roll, leader {first} → {second} → {third}",
        acked.len()
    );
    assert!(acked.len() > 10, "the writer barely ran: {acked:?}");
    assert_eq!(leader(&c, ns).await.as_deref(), Some(third.as_str()));
    op.assert_no_reconcile_errors().await;
}
