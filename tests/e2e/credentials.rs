//! Credentials end to end: a deleted generated Secret comes back with the same data (the
//! store stays Ready, one Warning event), a Secret gone for good stalls the store instead of
//! being regenerated, a member refusing the password is named as such, and a password changed
//! in a user's Secret is rolled out to every member under a writer.

use crate::patroni_cluster::MEMBERS;
use crate::real::{endpoints, ip, name, pods, psql, resp};
use crate::support::{
    CREDENTIALS_FINALIZER as FINALIZER, Capability, Operator, TestNamespace, apply_yaml, client,
    condition, install_crds, require, start_with, wait_for,
};
use guestbook_operator::crd::{PatroniCluster, RedisSentinel};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(120);

const REDIS: &str = "apiVersion: guestbook-operator.dev/v1alpha1\nkind: RedisSentinel\nmetadata: {name: cache}\nspec:\n  redis: {replicas: 3}\n  sentinel: {replicas: 3, downAfterMilliseconds: 2000, failoverTimeout: 6000}\n";
const REDIS_PODS: &str = "app.kubernetes.io/name=redis-sentinel,app.kubernetes.io/instance=cache";

/// Two asynchronous members: enough for a roll with a switchover, quick to start.
const PATRONI: &str = "apiVersion: guestbook-operator.dev/v1alpha1\nkind: PatroniCluster\nmetadata: {name: db}\nspec:\n  members: 2\n  storage: {size: 200Mi}\n  patroni: {ttl: 20, loopWait: 2, retryTimeout: 5, synchronousMode: Asynchronous}\n";

/// Deletes a credentials Secret for good, as a user who lifts the finalizer by hand does. The
/// operator puts its finalizer back on any change it sees, so the delete is conditional on the
/// version without it, and tried again when the operator got there first.
async fn delete_for_good(c: &Client, ns: &str, name: &str) {
    let api: Api<Secret> = Api::namespaced(c.clone(), ns);
    for _ in 0..20 {
        let s = api.get_metadata(name).await.expect("the Secret");
        let rest: Vec<String> = s
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        let patch = serde_json::json!({"metadata": {"finalizers": rest}});
        let lifted = api
            .patch_metadata(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("lift the finalizer");
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: lifted.resource_version(),
                uid: lifted.uid(),
            }),
            ..DeleteParams::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => panic!("delete Secret {name}: {e}"),
        }
    }
    panic!("Secret {name}: the finalizer came back before every one of 20 deletes");
}

async fn secret(c: &Client, ns: &str, name: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(c.clone(), ns)
        .get_opt(name)
        .await
        .ok()?
}

fn value(s: &Secret, key: &str) -> String {
    let v = s
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .expect("key in the Secret");
    String::from_utf8(v.0.clone()).expect("utf-8")
}

/// A user's Secret with `username` (when given) and `password`, created or replaced.
async fn put_secret(c: &Client, ns: &str, name: &str, username: Option<&str>, pw: &str) {
    let mut data = BTreeMap::from([("password".to_string(), ByteString(pw.into()))]);
    if let Some(u) = username {
        data.insert("username".into(), ByteString(u.into()));
    }
    let mut s = Secret {
        data: Some(data),
        ..Secret::default()
    };
    s.metadata.name = Some(name.into());
    let api: Api<Secret> = Api::namespaced(c.clone(), ns);
    api.patch(
        name,
        &PatchParams::apply(crate::support::MANAGER).force(),
        &Patch::Apply(&s),
    )
    .await
    .unwrap_or_else(|e| panic!("Secret {name}: {e}"));
}

/// Messages of the events about `object` with `reason`.
async fn events(c: &Client, ns: &str, object: &str, reason: &str) -> Vec<String> {
    let fields = format!("involvedObject.name={object},reason={reason}");
    Api::<Event>::namespaced(c.clone(), ns)
        .list(&ListParams::default().fields(&fields))
        .await
        .map(|l| l.items.into_iter().filter_map(|e| e.message).collect())
        .unwrap_or_default()
}

/// Samples the Ready condition of `kind/name` until stopped; returns every observation that
/// was not `True`.
fn watch_ready(
    c: &Client,
    ns: &str,
    kind: &'static str,
    name: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<String>> {
    let (c, ns) = (c.clone(), ns.to_string());
    tokio::spawn(async move {
        let mut bad = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            match condition(&c, &ns, kind, name, "Ready").await {
                Some((s, _, _)) if s == "True" => {}
                other => bad.push(format!("{other:?}")),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bad
    })
}

async fn ready_is(c: &Client, ns: &str, kind: &str, name: &str, reason: &str) -> String {
    let deadline = Instant::now() + T;
    loop {
        let seen = condition(c, ns, kind, name, "Ready").await;
        if let Some((_, r, m)) = &seen
            && r == reason
        {
            return m.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{kind} {name}: no Ready reason {reason} within {T:?}; last seen {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Deletes Secret `name` as `kubectl delete` does and waits for the operator's copy: a new
/// object with the same data, our finalizer and the owner reference. Returns it.
async fn delete_and_see_restored(c: &Client, ns: &str, name: &str, owner: &str) -> Secret {
    let before = secret(c, ns, name).await.expect("the Secret");
    assert!(
        before.finalizers().iter().any(|f| f == FINALIZER),
        "{name} is protected"
    );
    Api::<Secret>::namespaced(c.clone(), ns)
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete");
    let after = wait_for(&format!("{name} restored"), T, || async {
        let s = secret(c, ns, name).await?;
        (s.uid() != before.uid() && s.metadata.deletion_timestamp.is_none()).then_some(s)
    })
    .await;
    assert_eq!(after.data, before.data, "{name}: the same data");
    assert!(after.finalizers().iter().any(|f| f == FINALIZER));
    let controller = after
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.name.clone());
    assert_eq!(controller.as_deref(), Some(owner), "{name}: owned");
    assert_eq!(after.labels(), before.labels(), "{name}: the same labels");
    after
}

/// Exactly one Warning event names `secret` (waits for it to arrive, then for a second).
async fn one_restore_event(c: &Client, ns: &str, owner: &str, secret: &str) {
    let named = |all: Vec<String>| all.into_iter().filter(|m| m.contains(secret)).count();
    wait_for(&format!("the event about {secret}"), T, || async {
        (named(events(c, ns, owner, "CredentialsRestored").await) >= 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        named(events(c, ns, owner, "CredentialsRestored").await),
        1,
        "one event names {secret}"
    );
}

async fn redis_members(c: &Client, ns: &str) -> Vec<(String, Ipv4Addr, u16)> {
    pods(c, ns, REDIS_PODS)
        .await
        .iter()
        .filter_map(|p| {
            let sentinel = name(p).contains("-sentinel-");
            Some((name(p), ip(p)?, if sentinel { 26379 } else { 6379 }))
        })
        .collect()
}

#[tokio::test]
async fn redis_credentials_are_restored_never_regenerated_and_refusals_named() {
    if require(&[Capability::Runner]).await.is_none() {
        return;
    }
    let (c, ns, op) = start_with("cred-redis", REDIS).await;
    let ns = &ns.name;
    ready_is(&c, ns, "RedisSentinel", "cache", "Healthy").await;
    let pw = value(
        &secret(&c, ns, "cache-redis-auth").await.expect("Secret"),
        "password",
    );
    let copy = secret(&c, ns, "cache-credentials-in-use")
        .await
        .expect("the in-use copy");
    assert_eq!(value(&copy, "password"), pw);
    assert!(copy.finalizers().iter().any(|f| f == FINALIZER));

    // kubectl delete: back with the same data, Ready all along, one Warning event.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = watch_ready(&c, ns, "RedisSentinel", "cache", stop.clone());
    let t0 = Instant::now();
    delete_and_see_restored(&c, ns, "cache-redis-auth", "cache").await;
    eprintln!(
        "figure: generated Redis auth Secret restored {:?} after its deletion",
        t0.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::SeqCst);
    let not_ready = sampler.await.expect("sampler");
    assert!(not_ready.is_empty(), "Ready left True: {not_ready:?}");
    one_restore_event(&c, ns, "cache", "cache-redis-auth").await;
    for (pod, ip, port) in redis_members(&c, ns).await {
        assert_eq!(
            resp(ip, port, Some(&pw), &["PING"]).await.as_deref(),
            Some("PONG"),
            "{pod}"
        );
    }

    // A member that refuses the password is named as such, not as unreachable.
    let replica = pods(
        &c,
        ns,
        &format!("{REDIS_PODS},guestbook-operator.dev/role=replica"),
    )
    .await
    .into_iter()
    .next()
    .expect("a replica");
    let rip = ip(&replica).expect("address");
    assert_eq!(
        resp(
            rip,
            6379,
            Some(&pw),
            &["CONFIG", "SET", "requirepass", "someone-else"]
        )
        .await
        .as_deref(),
        Some("OK")
    );
    let why = ready_is(&c, ns, "RedisSentinel", "cache", "AuthenticationFailed").await;
    assert!(
        why.contains(&name(&replica)) && why.contains("cache-redis-auth"),
        "{why}"
    );
    resp(
        rip,
        6379,
        Some("someone-else"),
        &["CONFIG", "SET", "requirepass", &pw],
    )
    .await;
    ready_is(&c, ns, "RedisSentinel", "cache", "Healthy").await;

    // Gone for good (finalizer lifted by hand, then deleted): Stalled, nothing regenerated.
    delete_for_good(&c, ns, "cache-redis-auth").await;
    let why = ready_is(&c, ns, "RedisSentinel", "cache", "CredentialsLost").await;
    assert!(why.contains("Secret cache-redis-auth"), "{why}");
    let (stalled, ..) = condition(&c, ns, "RedisSentinel", "cache", "Stalled")
        .await
        .expect("Stalled");
    assert_eq!(stalled, "True");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        secret(&c, ns, "cache-redis-auth").await.is_none(),
        "no new password generated"
    );
    for (pod, ip, port) in redis_members(&c, ns).await {
        assert_eq!(
            resp(ip, port, Some(&pw), &["PING"]).await.as_deref(),
            Some("PONG"),
            "{pod}"
        );
    }
    // The way out the message names: the Secret again, with the password Redis runs with.
    put_secret(&c, ns, "cache-redis-auth", None, &pw).await;
    ready_is(&c, ns, "RedisSentinel", "cache", "Healthy").await;
    let adopted = secret(&c, ns, "cache-redis-auth").await.expect("Secret");
    assert!(
        adopted.finalizers().iter().any(|f| f == FINALIZER),
        "protected again"
    );
    assert!(!adopted.owner_references().is_empty(), "owned again");
    for (pod, ip, port) in redis_members(&c, ns).await {
        let pong = resp(ip, port, Some(&pw), &["PING"]).await;
        assert_eq!(
            pong.as_deref(),
            Some("PONG"),
            "{pod}: still the same password"
        );
    }
    let copy = secret(&c, ns, "cache-credentials-in-use")
        .await
        .expect("copy");
    assert_eq!(value(&copy, "password"), pw, "nothing was rotated");
    drop(op);
}

#[tokio::test]
async fn patroni_credentials_are_restored_and_replicas_still_rejoin() {
    if require(&[Capability::Runner]).await.is_none() {
        return;
    }
    let (c, ns, op) = start_with("cred-pg", PATRONI).await;
    let ns = &ns.name;
    wait_for(
        "the PatroniCluster Ready",
        Duration::from_secs(240),
        || async {
            let (s, ..) = condition(&c, ns, "PatroniCluster", "db", "Ready").await?;
            (s == "True").then_some(())
        },
    )
    .await;
    let su = value(
        &secret(&c, ns, "db-superuser").await.expect("Secret"),
        "password",
    );

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = watch_ready(&c, ns, "PatroniCluster", "db", stop.clone());
    for s in ["db-superuser", "db-replication"] {
        delete_and_see_restored(&c, ns, s, "db").await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::SeqCst);
    let not_ready = sampler.await.expect("sampler");
    assert!(not_ready.is_empty(), "Ready left True: {not_ready:?}");
    for s in ["db-superuser", "db-replication"] {
        one_restore_event(&c, ns, "db", s).await;
    }

    // The proof that matters: a replica that restarts still authenticates and streams.
    let replica = pods(
        &c,
        ns,
        &format!("{MEMBERS},guestbook-operator.dev/role=replica"),
    )
    .await
    .into_iter()
    .next()
    .expect("a replica");
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(c.clone(), ns)
        .delete(&name(&replica), &DeleteParams::default())
        .await
        .expect("delete the replica");
    wait_for(
        "the new replica streaming",
        Duration::from_secs(180),
        || async {
            let s = crate::patroni_cluster::status(&c, ns, "db").await?;
            let streaming = s
                .members
                .iter()
                .filter(|m| m.state.as_deref() == Some("streaming"))
                .count();
            let (ready, ..) = condition(&c, ns, "PatroniCluster", "db", "Ready").await?;
            (streaming == 1 && ready == "True").then_some(())
        },
    )
    .await;
    let primary = endpoints(&c, ns, "db").await;
    let primary: Ipv4Addr = primary.first().expect("primary").parse().expect("ip");
    psql(primary, &su, "SELECT 1")
        .await
        .expect("the same superuser password");

    // Gone for good: Stalled, nothing regenerated; recreated by hand, Ready again.
    let repl = secret(&c, ns, "db-replication").await.expect("Secret");
    delete_for_good(&c, ns, "db-replication").await;
    let why = ready_is(&c, ns, "PatroniCluster", "db", "CredentialsLost").await;
    assert!(why.contains("Secret db-replication"), "{why}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        secret(&c, ns, "db-replication").await.is_none(),
        "not regenerated"
    );
    put_secret(
        &c,
        ns,
        "db-replication",
        Some("standby"),
        &value(&repl, "password"),
    )
    .await;
    wait_for("Ready again", T, || async {
        let (s, ..) = condition(&c, ns, "PatroniCluster", "db", "Ready").await?;
        (s == "True").then_some(())
    })
    .await;
    drop(op);
}

/// One write through the master Service's endpoint: the new password first, else the old
/// one. `Ok(true)` when the new one worked.
async fn redis_write(
    c: &Client,
    ns: &str,
    key: &str,
    new: &str,
    old: &str,
) -> Result<bool, String> {
    let master = endpoints(c, ns, "cache-redis").await;
    let Some(ip) = master.first().and_then(|a| a.parse::<Ipv4Addr>().ok()) else {
        return Err("no master endpoint".into());
    };
    let first = resp(ip, 6379, Some(new), &["SET", key, "v"]).await;
    if first.as_deref() == Some("OK") {
        return Ok(true);
    }
    match resp(ip, 6379, Some(old), &["SET", key, "v"]).await {
        Some(r) if r == "OK" => Ok(false),
        other => Err(format!("{key}: new {first:?}, old {other:?}")),
    }
}

#[tokio::test]
async fn a_redis_password_changed_in_the_users_secret_is_rolled_out_under_a_writer() {
    if require(&[Capability::Runner]).await.is_none() {
        return;
    }
    let (old, new) = ("first-password-1", "second-password-2");
    let c = client().await;
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, "cred-redis-rot").await;
    let ns = &ns.name;
    put_secret(&c, ns, "redis-pw", None, old).await;
    let _op = Operator::start(ns, "solo", &["--leader-election=false"]);
    let spec = REDIS.replace(
        "  sentinel:",
        "  auth: {existingSecret: {name: redis-pw, key: password}}\n  sentinel:",
    );
    apply_yaml(&c, ns, &spec).await.expect("accepted");
    ready_is(&c, ns, "RedisSentinel", "cache", "Healthy").await;
    let status = |c: Client, ns: String| async move {
        Api::<RedisSentinel>::namespaced(c, &ns)
            .get("cache")
            .await
            .ok()?
            .status
    };
    let first = status(c.clone(), ns.clone())
        .await
        .and_then(|s| s.credentials_version);
    assert!(first.is_some(), "a credentials version once Ready");

    // A writer that knows both passwords: there must never be a moment neither works.
    let stop = Arc::new(AtomicBool::new(false));
    let rolled_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let writer = {
        let (c, ns, stop, rolled_at) = (c.clone(), ns.clone(), stop.clone(), rolled_at.clone());
        tokio::spawn(async move {
            let (mut with_new, mut with_old, mut failed, mut old_after) = (0, 0, Vec::new(), 0);
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let done = *rolled_at.lock().expect("lock");
                match redis_write(&c, &ns, &format!("k{n}"), new, old).await {
                    Ok(true) => with_new += 1,
                    Ok(false) => {
                        with_old += 1;
                        if done.is_some() {
                            old_after += 1;
                        }
                    }
                    Err(e) => failed.push(e),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (with_new, with_old, failed, old_after)
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = Instant::now();
    put_secret(&c, ns, "redis-pw", None, new).await;
    let version = secret(&c, ns, "redis-pw")
        .await
        .and_then(|s| s.metadata.resource_version);
    wait_for("the new password rolled out", T, || async {
        let s = status(c.clone(), ns.clone()).await?;
        (s.credentials_version == version).then_some(())
    })
    .await;
    let took = t0.elapsed();
    *rolled_at.lock().expect("lock") = Some(Instant::now());
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    let (with_new, with_old, failed, old_after) = writer.await.expect("writer");
    eprintln!(
        "figure: Redis password rolled out {took:?} after the Secret changed; writes: {with_new} with the new password, {with_old} with the old, {} failed",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "writes failed during the rotation: {failed:?}"
    );
    assert_eq!(
        old_after, 0,
        "the old password still worked after the rollout"
    );
    assert!(
        with_new > 0 && with_old > 0,
        "the writer ran across the rotation"
    );

    // Every member answers the new password and refuses the old one.
    let members = redis_members(&c, ns).await;
    assert_eq!(members.len(), 6);
    for (pod, ip, port) in &members {
        assert_eq!(
            resp(*ip, *port, Some(new), &["PING"]).await.as_deref(),
            Some("PONG"),
            "{pod}"
        );
        let refused = resp(*ip, *port, Some(old), &["PING"])
            .await
            .unwrap_or_default();
        assert!(
            refused.contains("WRONGPASS"),
            "{pod} still takes the old password: {refused}"
        );
    }
    let rotated = events(&c, ns, "cache", "CredentialsRotated").await;
    assert_eq!(rotated.len(), 1, "{rotated:?}");

    // Sentinel authenticates with the new password too: a failover elects a new master whose
    // replicas follow it (masterauth), and the store is Ready again.
    let before = status(c.clone(), ns.clone())
        .await
        .and_then(|s| s.master)
        .expect("master")
        .pod;
    let sentinel = members.iter().find(|m| m.2 == 26379).expect("a Sentinel");
    assert_eq!(
        resp(
            sentinel.1,
            26379,
            Some(new),
            &["SENTINEL", "FAILOVER", "cache"]
        )
        .await
        .as_deref(),
        Some("OK")
    );
    wait_for("a new master, Ready", T, || async {
        let s = status(c.clone(), ns.clone()).await?;
        let (ready, ..) = condition(&c, ns, "RedisSentinel", "cache", "Ready").await?;
        (s.master?.pod != before && ready == "True").then_some(())
    })
    .await;
}

#[tokio::test]
async fn patroni_passwords_changed_in_the_users_secrets_are_rolled_out_under_a_writer() {
    if require(&[Capability::Runner]).await.is_none() {
        return;
    }
    let (old, new) = ("first-superuser-pw", "second-superuser-pw");
    let (old_repl, new_repl) = ("first-standby-pw", "second-standby-pw");
    let c = client().await;
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, "cred-pg-rot").await;
    let ns = &ns.name;
    put_secret(&c, ns, "su", Some("postgres"), old).await;
    put_secret(&c, ns, "repl", Some("standby"), old_repl).await;
    let _op = Operator::start(ns, "solo", &["--leader-election=false"]);
    let spec = PATRONI.replace(
        "  patroni:",
        "  auth: {superuserSecretName: su, replicationSecretName: repl}\n  patroni:",
    );
    apply_yaml(&c, ns, &spec).await.expect("accepted");
    wait_for(
        "the PatroniCluster Ready",
        Duration::from_secs(240),
        || async {
            let (s, ..) = condition(&c, ns, "PatroniCluster", "db", "Ready").await?;
            (s == "True").then_some(())
        },
    )
    .await;
    let status = |c: Client, ns: String| async move {
        Api::<PatroniCluster>::namespaced(c, &ns)
            .get("db")
            .await
            .ok()?
            .status
    };
    let primary = || async {
        let e = endpoints(&c, ns, "db").await;
        e.first().and_then(|a| a.parse::<Ipv4Addr>().ok())
    };
    let p = primary().await.expect("a primary");
    psql(p, old, "CREATE TABLE rot (n int)")
        .await
        .expect("table");

    // A writer that knows both passwords; failures are counted (a switchover interrupts
    // writes for a moment), acknowledged rows must all be there at the end.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (c, ns, stop) = (c.clone(), ns.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut acked, mut failed) = (Vec::new(), 0);
            let mut n = 0u32;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let e = endpoints(&c, &ns, "db").await;
                let Some(ip) = e.first().and_then(|a| a.parse::<Ipv4Addr>().ok()) else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let sql = format!("INSERT INTO rot VALUES ({n})");
                if psql(ip, new, &sql).await.is_ok() || psql(ip, old, &sql).await.is_ok() {
                    acked.push(n);
                } else {
                    failed += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            (acked, failed)
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = Instant::now();
    put_secret(&c, ns, "su", Some("postgres"), new).await;
    put_secret(&c, ns, "repl", Some("standby"), new_repl).await;
    let version = format!(
        "{},{}",
        secret(&c, ns, "su")
            .await
            .and_then(|s| s.metadata.resource_version)
            .expect("rv"),
        secret(&c, ns, "repl")
            .await
            .and_then(|s| s.metadata.resource_version)
            .expect("rv"),
    );
    let rotating = ready_is(&c, ns, "PatroniCluster", "db", "RotatingCredentials").await;
    eprintln!("while rotating: {rotating}");
    wait_for(
        "the new passwords rolled out",
        Duration::from_secs(420),
        || async {
            let s = status(c.clone(), ns.clone()).await?;
            let (ready, ..) = condition(&c, ns, "PatroniCluster", "db", "Ready").await?;
            (s.credentials_version.as_deref() == Some(version.as_str()) && ready == "True")
                .then_some(())
        },
    )
    .await;
    let took = t0.elapsed();
    stop.store(true, Ordering::SeqCst);
    let (acked, failed) = writer.await.expect("writer");
    eprintln!(
        "figure: PatroniCluster passwords rolled out {took:?} after the Secrets changed (every member restarted); {} rows acknowledged, {failed} writes failed meanwhile",
        acked.len()
    );

    // After the rollout: a client with the new password sees no error, every member takes
    // the new password and refuses the old one, and every replica streams (with the new
    // replication password: each member restarted).
    let p = primary().await.expect("a primary");
    for n in 0..50 {
        psql(p, new, &format!("INSERT INTO rot VALUES ({})", 100_000 + n))
            .await
            .expect("a write with the new password");
    }
    crate::patroni_cluster::none_lost(p, new, "rot", &acked).await;
    let members = pods(&c, ns, MEMBERS).await;
    assert_eq!(members.len(), 2);
    for m in &members {
        let ip = ip(m).expect("address");
        psql(ip, new, "SELECT 1")
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", name(m)));
        let refused = psql(ip, old, "SELECT 1")
            .await
            .expect_err("the old password refused");
        assert!(
            refused.contains("password authentication failed"),
            "{refused}"
        );
    }
    let s = status(c.clone(), ns.clone()).await.expect("status");
    let streaming = s
        .members
        .iter()
        .filter(|m| m.state.as_deref() == Some("streaming"))
        .count();
    assert_eq!(streaming, 1, "{:?}", s.members);
    let rotated = events(&c, ns, "db", "CredentialsRotated").await;
    assert_eq!(rotated.len(), 1, "{rotated:?}");
    let restarted = events(&c, ns, "db", "RollingUpdate").await;
    assert!(
        !restarted.is_empty(),
        "members were restarted through the roll driver"
    );
}
