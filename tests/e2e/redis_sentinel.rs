//! RedisSentinel end to end, with real redis-server and redis-sentinel behind the pods: the
//! operator elects a master, the master Service follows Sentinel's failovers, acknowledged
//! writes survive, and deleting the resource keeps the data's claims.

use crate::real::{claim_dir, endpoints, ip, name, pods, resp};
use crate::support::{
    Capability, Operator, TestNamespace, apply_yaml, client, condition, install_crds, require,
    run_job_from, start_with, wait_for,
};
use gbo_podrunner::fault;
use guestbook_operator::crd::RedisSentinel;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const SPEC: &str = r#"
apiVersion: guestbook-operator.dev/v1alpha1
kind: RedisSentinel
metadata: {name: cache}
spec:
  redis:
    replicas: 3
    storage: {size: 100Mi}
    durability: {minReplicasToWrite: 1, minReplicasMaxLag: 10, appendOnly: true}
  sentinel:
    replicas: 3
    downAfterMilliseconds: 2000
    failoverTimeout: 6000
"#;

const SELECTOR: &str = "app.kubernetes.io/name=redis-sentinel,app.kubernetes.io/instance=cache,app.kubernetes.io/component=redis";

async fn status(
    c: &Client,
    ns: &str,
) -> Option<guestbook_operator::crd::redis_sentinel::RedisSentinelStatus> {
    Api::<RedisSentinel>::namespaced(c.clone(), ns)
        .get("cache")
        .await
        .ok()?
        .status
}

async fn healthy(c: &Client, ns: &str) -> (String, Ipv4Addr) {
    wait_for(
        "the RedisSentinel to be Ready",
        Duration::from_secs(120),
        || async {
            let (st, reason, _) = condition(c, ns, "RedisSentinel", "cache", "Ready").await?;
            if st != "True" {
                let _ = reason;
                return None;
            }
            let m = status(c, ns).await?.master?;
            Some((m.pod, m.address?.parse().ok()?))
        },
    )
    .await
}

async fn password(c: &Client, ns: &str) -> String {
    let s = Api::<Secret>::namespaced(c.clone(), ns)
        .get("cache-redis-auth")
        .await
        .expect("generated auth Secret");
    String::from_utf8(s.data.expect("data")["password"].0.clone()).expect("utf-8 password")
}

async fn master_service_is(c: &Client, ns: &str, ip: Ipv4Addr) {
    wait_for(
        &format!("the master Service to select {ip}"),
        Duration::from_secs(30),
        || async { (endpoints(c, ns, "cache-redis").await == vec![ip.to_string()]).then_some(()) },
    )
    .await;
}

/// Writes keys `prefix-0..n` on the master, each acknowledged by at least one replica.
async fn write_acknowledged(master: Ipv4Addr, pw: &str, prefix: &str, n: usize) {
    for i in 0..n {
        let key = format!("{prefix}-{i}");
        assert_eq!(
            resp(master, 6379, Some(pw), &["SET", &key, "v"])
                .await
                .as_deref(),
            Some("OK"),
            "SET {key}"
        );
        let acked = resp(master, 6379, Some(pw), &["WAIT", "1", "2000"])
            .await
            .unwrap_or_default();
        assert!(
            acked.parse::<i64>().unwrap_or(0) >= 1,
            "{key} not acknowledged by a replica: {acked}"
        );
    }
}

async fn count_keys(ip: Ipv4Addr, pw: &str, prefix: &str, n: usize) -> usize {
    let mut found = 0;
    for i in 0..n {
        if resp(ip, 6379, Some(pw), &["EXISTS", &format!("{prefix}-{i}")])
            .await
            .as_deref()
            == Some("1")
        {
            found += 1;
        }
    }
    found
}

#[tokio::test]
async fn a_redis_sentinel_elects_a_master_and_follows_failovers_without_losing_writes() {
    let Some(state) = require(&[Capability::Runner])
        .await
        .map(|g| g.runner_state())
    else {
        return;
    };
    let (c, ns, op) = start_with("rsen", SPEC).await;
    let (master, master_ip) = healthy(&c, &ns.name).await;
    let pw = password(&c, &ns.name).await;

    // One master, labelled and behind the master Service; replicas linked to it; Sentinels agree.
    master_service_is(&c, &ns.name, master_ip).await;
    let redis_pods = pods(&c, &ns.name, SELECTOR).await;
    let masters: Vec<String> = redis_pods
        .iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("guestbook-operator.dev/role"))
                .map(String::as_str)
                == Some("master")
        })
        .map(name)
        .collect();
    assert_eq!(masters, vec![master.clone()]);
    for p in redis_pods.iter().filter(|p| name(p) != master) {
        let info = resp(
            ip(p).expect("ip"),
            6379,
            Some(&pw),
            &["INFO", "replication"],
        )
        .await
        .unwrap_or_default();
        assert!(
            info.contains("role:slave")
                && info.contains(&format!("master_host:{master_ip}"))
                && info.contains("master_link_status:up"),
            "{}: {info}",
            name(p)
        );
    }
    for s in pods(
        &c,
        &ns.name,
        "app.kubernetes.io/instance=cache,app.kubernetes.io/component=sentinel",
    )
    .await
    {
        let ok = resp(
            ip(&s).expect("ip"),
            26379,
            Some(&pw),
            &["SENTINEL", "CKQUORUM", "cache"],
        )
        .await
        .unwrap_or_default();
        assert!(ok.starts_with("OK"), "{}: {ok}", name(&s));
    }
    assert_eq!(
        resp(master_ip, 6379, None, &["PING"])
            .await
            .map(|r| r.starts_with("ERR NOAUTH")),
        Some(true),
        "auth is required"
    );

    // kill -9 of the master, kept down: Sentinel fails over, the Service follows, nothing
    // acknowledged is lost, and the old master comes back as a replica.
    write_acknowledged(master_ip, &pw, "before-kill", 50).await;
    let t0 = Instant::now();
    fault::kill(
        &state,
        &ns.name,
        &master,
        Some("redis"),
        Some(Duration::from_secs(20)),
    )
    .expect("kill the master");
    let (second, second_ip) = wait_for(
        "a new master after the kill",
        Duration::from_secs(60),
        || async {
            let m = status(&c, &ns.name).await?.master?;
            if m.pod == master {
                return None;
            }
            Some((m.pod, m.address?.parse::<Ipv4Addr>().ok()?))
        },
    )
    .await;
    master_service_is(&c, &ns.name, second_ip).await;
    println!(
        "kill -9: {second} is master and behind the Service {:.1} s after the kill",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(
        count_keys(second_ip, &pw, "before-kill", 50).await,
        50,
        "acknowledged writes lost in the failover"
    );
    let last_failover = status(&c, &ns.name)
        .await
        .and_then(|s| s.last_failover_time);
    assert!(last_failover.is_some(), "lastFailoverTime recorded");
    let (_, healed_master) = healthy(&c, &ns.name).await;
    assert_eq!(healed_master, second_ip);
    let old = pods(&c, &ns.name, SELECTOR)
        .await
        .into_iter()
        .find(|p| name(p) == master)
        .expect("old master pod");
    assert_eq!(
        old.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("guestbook-operator.dev/role"))
            .map(String::as_str),
        Some("replica")
    );

    // A partition of the new master (its processes frozen): the same, and once it is back
    // it follows the newest master.
    write_acknowledged(second_ip, &pw, "before-pause", 50).await;
    let t1 = Instant::now();
    fault::pause(&state, &ns.name, &second).expect("pause");
    let (third, third_ip) = wait_for(
        "a new master after the partition",
        Duration::from_secs(60),
        || async {
            let m = status(&c, &ns.name).await?.master?;
            if m.pod == second {
                return None;
            }
            Some((m.pod, m.address?.parse::<Ipv4Addr>().ok()?))
        },
    )
    .await;
    master_service_is(&c, &ns.name, third_ip).await;
    println!(
        "partition: {third} is master and behind the Service {:.1} s after the pause",
        t1.elapsed().as_secs_f64()
    );
    assert_eq!(
        count_keys(third_ip, &pw, "before-pause", 50).await,
        50,
        "acknowledged writes lost in the partition"
    );
    fault::resume(&state, &ns.name, &second).expect("resume");
    let second_pod_ip = second_ip;
    wait_for(
        "the partitioned master to rejoin as a replica",
        Duration::from_secs(60),
        || async {
            let info = resp(second_pod_ip, 6379, Some(&pw), &["INFO", "replication"]).await?;
            (info.contains("role:slave")
                && info.contains(&format!("master_host:{third_ip}"))
                && info.contains("master_link_status:up"))
            .then_some(())
        },
    )
    .await;
    healthy(&c, &ns.name).await;
    op.assert_no_reconcile_errors().await;
}

#[tokio::test]
async fn deleting_a_redis_sentinel_removes_its_objects_and_keeps_its_claims() {
    if require(&[Capability::Runner]).await.is_none() {
        return;
    }
    let (c, ns, _op) = start_with("rsen-delete", SPEC).await;
    let sts: Api<StatefulSet> = Api::namespaced(c.clone(), &ns.name);
    wait_for("the StatefulSets", Duration::from_secs(30), || async {
        (sts.list(&ListParams::default()).await.ok()?.items.len() == 2).then_some(())
    })
    .await;
    // Everything runs before the delete: the test must see real pods go, not none appear.
    wait_for("all six pods ready", Duration::from_secs(90), || async {
        let all = pods(&c, &ns.name, "app.kubernetes.io/instance=cache").await;
        (all.len() == 6 && all.iter().all(crate::real::ready)).then_some(())
    })
    .await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), &ns.name);
    wait_for("the data claims", Duration::from_secs(60), || async {
        (claims.list(&ListParams::default()).await.ok()?.items.len() == 3).then_some(())
    })
    .await;

    Api::<RedisSentinel>::namespaced(c.clone(), &ns.name)
        .delete("cache", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for(
        "the StatefulSets and pods to go",
        Duration::from_secs(90),
        || async {
            let left = sts.list(&ListParams::default()).await.ok()?.items.len();
            let pods = Api::<Pod>::namespaced(c.clone(), &ns.name)
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .len();
            (left == 0 && pods == 0).then_some(())
        },
    )
    .await;
    let kept = claims
        .list(&ListParams::default())
        .await
        .expect("claims")
        .items;
    assert_eq!(
        kept.len(),
        3,
        "data claims are kept when the resource is deleted"
    );
    assert!(kept.iter().all(|p| p.metadata.deletion_timestamp.is_none()));
}

/// Writes `roll-<n>` keys until told to stop; returns the keys a replica acknowledged.
async fn writer(
    c: Client,
    ns: String,
    pw: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<String> {
    let mut acked = Vec::new();
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let Some(master) = status(&c, &ns)
            .await
            .and_then(|s| s.master)
            .and_then(|m| m.address?.parse::<Ipv4Addr>().ok())
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let key = format!("roll-{n}");
        n += 1;
        if resp(master, 6379, Some(&pw), &["SET", &key, "v"])
            .await
            .as_deref()
            == Some("OK")
            && resp(master, 6379, Some(&pw), &["WAIT", "1", "1000"])
                .await
                .and_then(|a| a.parse::<i64>().ok())
                .unwrap_or(0)
                >= 1
        {
            acked.push(key);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    acked
}

#[tokio::test]
async fn a_configuration_change_rolls_replicas_first_and_never_restarts_a_master() {
    if require(&[Capability::Runner]).await.is_none() {
        return;
    }
    let (c, ns, op) = start_with("rsen-roll", SPEC).await;
    healthy(&c, &ns.name).await;
    let pw = password(&c, &ns.name).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writes = tokio::spawn(writer(c.clone(), ns.name.clone(), pw.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let changed = SPEC.replace(
        "appendOnly: true}",
        "appendOnly: true}\n    config: {maxmemory-policy: allkeys-lru}",
    );
    apply_yaml(&c, &ns.name, &changed)
        .await
        .expect("change accepted");

    // Watch the roll: a pod may only be replaced if, when last seen, it was not labelled master.
    let pods_api: Api<Pod> = Api::namespaced(c.clone(), &ns.name);
    let mut seen: std::collections::BTreeMap<String, (String, bool)> =
        std::collections::BTreeMap::new();
    let mut replaced = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        assert!(
            Instant::now() < deadline,
            "the roll did not finish in 180 s: replaced {replaced:?}\n{}",
            op.log_text()
        );
        let current = pods_api
            .list(&ListParams::default().labels(SELECTOR))
            .await
            .expect("pods")
            .items;
        for p in &current {
            let uid = p.metadata.uid.clone().unwrap_or_default();
            let is_master = p
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("guestbook-operator.dev/role"))
                .map(String::as_str)
                == Some("master");
            if let Some((old_uid, was_master)) = seen.insert(name(p), (uid.clone(), is_master))
                && old_uid != uid
            {
                assert!(
                    !was_master,
                    "{} was replaced while it was the master",
                    name(p)
                );
                replaced.push(name(p));
            }
        }
        let mut all_new = current.len() == 3;
        for p in &current {
            let got = resp(
                ip(p).unwrap_or(Ipv4Addr::UNSPECIFIED),
                6379,
                Some(&pw),
                &["CONFIG", "GET", "maxmemory-policy"],
            )
            .await
            .unwrap_or_default();
            all_new &= got.ends_with("allkeys-lru");
        }
        let ready = condition(&c, &ns.name, "RedisSentinel", "cache", "Ready")
            .await
            .map(|r| r.0 == "True")
            .unwrap_or(false);
        if all_new && ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    replaced.sort();
    replaced.dedup();
    assert_eq!(replaced.len(), 3, "every pod replaced once: {replaced:?}");

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let acked = writes.await.expect("writer");
    assert!(
        acked.len() > 20,
        "the writer kept writing through the roll: {} acknowledged",
        acked.len()
    );
    let (_, final_master) = healthy(&c, &ns.name).await;
    let mut missing = Vec::new();
    for key in &acked {
        if resp(final_master, 6379, Some(&pw), &["EXISTS", key])
            .await
            .as_deref()
            != Some("1")
        {
            missing.push(key.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "acknowledged writes lost in the roll: {missing:?}"
    );
    println!(
        "roll: {} acknowledged writes during the roll, none lost; replaced {replaced:?}",
        acked.len()
    );
}

#[tokio::test]
async fn a_backup_is_an_rdb_that_a_fresh_redis_server_loads_with_the_same_keys() {
    if require(&[Capability::Runner]).await.is_none() {
        return;
    }
    let c = client().await;
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, "rsen-backup").await;
    let op = Operator::start(&ns.name, "solo", &["--leader-election=false"]);
    let spec = format!("{SPEC}  backup: {{schedule: \"0 0 1 1 *\", retention: 2}}\n");
    apply_yaml(&c, &ns.name, &spec).await.expect("accepted");
    let (_, master_ip) = healthy(&c, &ns.name).await;
    let pw = password(&c, &ns.name).await;
    write_acknowledged(master_ip, &pw, "backed-up", 100).await;

    // Three backups with a retention of two: the oldest goes.
    for i in 0..3 {
        run_job_from(
            &c,
            &ns.name,
            "cache-backup",
            &format!("cache-backup-manual-{i}"),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(1100)).await; // file names have 1 s resolution
    }
    let last = wait_for(
        "status.lastBackup to report the newest backup",
        Duration::from_secs(30),
        || async {
            let b = status(&c, &ns.name).await?.last_backup?;
            (b.job.as_deref() == Some("cache-backup-manual-2")).then_some(b)
        },
    )
    .await;
    let file = last.file.clone().expect("file");
    assert!(last.size_bytes.unwrap_or(0) > 0, "{last:?}");
    assert_eq!(last.succeeded, Some(true));

    let dir = claim_dir(&c, &ns.name, "cache-backup").await;
    let mut kept: Vec<String> = std::fs::read_dir(&dir)
        .expect("backup dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".rdb"))
        .collect();
    kept.sort();
    assert_eq!(kept.len(), 2, "retention 2 keeps two backups: {kept:?}");
    assert_eq!(
        kept.last(),
        Some(&file),
        "the newest file is the one status reports"
    );
    let on_disk = std::fs::metadata(dir.join(&file))
        .expect("backup file")
        .len();
    assert_eq!(
        Some(i64::try_from(on_disk).unwrap_or(-1)),
        last.size_bytes,
        "status reports the file's real size"
    );

    // The round trip: a fresh redis-server, on loopback, loads the backup.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let mut server = tokio::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(&dir)
        .args(["--dbfilename", &file])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start redis-server");
    let keys = wait_for(
        "the restored server to answer",
        Duration::from_secs(20),
        || async {
            let n = resp(Ipv4Addr::LOCALHOST, port, None, &["DBSIZE"])
                .await?
                .parse::<i64>()
                .ok()?;
            (n > 0).then_some(n)
        },
    )
    .await;
    let mut missing = 0;
    for i in 0..100 {
        if resp(
            Ipv4Addr::LOCALHOST,
            port,
            None,
            &["EXISTS", &format!("backed-up-{i}")],
        )
        .await
        .as_deref()
            != Some("1")
        {
            missing += 1;
        }
    }
    let _ = server.kill().await;
    assert_eq!(
        missing, 0,
        "keys missing from the restored backup ({keys} keys in it)"
    );
    op.assert_no_reconcile_errors().await;
}
