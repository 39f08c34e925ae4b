//! Seed 003, Superbowl scale: `queue.mode: PerPod` on the local cluster, where the pod runner
//! plays the kubelet for native sidecars (init containers with `restartPolicy: Always`) and
//! preStop hooks as Kubernetes 1.29+ does.
//!
//! First the runner's part alone, on a pod of shell scripts that log every step to a claim:
//! sidecars start in order (a regular init container between them runs to completion, a
//! startup probe holds the main container back), a sidecar's readiness holds the pod's, a
//! sidecar that dies is restarted, and on deletion the preStop hooks start at once, the main
//! container stops first and the sidecars after it, in reverse order, each after its hook.
//!
//! Then the VoteApp: every vote pod queues into its own Redis sidecar (AOF on an emptyDir) and
//! drains it with its own worker sidecar. Under a steady vote load: kill -9 of one pod's Redis
//! keeps its queue (the AOF), and the vote tier scales 2 → 6 → 2 while the terminating pods'
//! preStop hooks hold their Redis until their worker has drained it; every acknowledged vote
//! is then counted in PostgreSQL.

use crate::apps::wait_ready;
use crate::apps_client;
use crate::real::{claim_dir, name, pods, psql, ready};
use crate::standins::service_base;
use crate::support::{
    Capability, Operator, TestNamespace, apply_yaml, client, install_crds, require, wait_for,
};
use gbo_podrunner::{exec, fault};
use guestbook_operator::crd::VoteApp;
use k8s_openapi::api::core::v1::{ContainerStatus, PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const IMAGE: &str = "docker.io/library/redis:7.2";

/// A shell step that appends `<ns since the epoch> <who> <what>` to the trace.
fn log(who: &str, what: &str) -> String {
    format!("echo \"$(date +%s%N) {who} {what}\" >> /trace/log")
}

/// Runs until SIGTERM (a handler, so the signal reaches PID 1), logging start and SIGTERM;
/// `on_term` runs before it exits.
fn looping(who: &str, before: &str, on_term: &str) -> String {
    format!(
        "{start}; {before} trap '{term}; {on_term} exit 0' TERM; while :; do sleep 0.1; done",
        start = log(who, "start"),
        term = log(who, "term").replace('\'', "'\\''"),
    )
}

fn sidecar_pod() -> Pod {
    let mount = serde_json::json!([{"name": "trace", "mountPath": "/trace"}]);
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "sidecars"},
        "spec": {
            "terminationGracePeriodSeconds": 30,
            "volumes": [{"name": "trace", "persistentVolumeClaim": {"claimName": "trace"}}],
            "initContainers": [
                {
                    "name": "first", "image": IMAGE, "restartPolicy": "Always",
                    "command": ["sh", "-c", looping("first", "", "")],
                    "volumeMounts": mount,
                },
                {
                    "name": "setup", "image": IMAGE,
                    "command": ["sh", "-c", format!("{}; sleep 1; {}", log("setup", "start"), log("setup", "end"))],
                    "volumeMounts": mount,
                },
                {
                    "name": "second", "image": IMAGE, "restartPolicy": "Always",
                    "command": ["sh", "-c", looping("second", "sleep 2; touch /tmp/up;", "")],
                    "startupProbe": {"exec": {"command": ["test", "-e", "/tmp/up"]}, "periodSeconds": 1, "failureThreshold": 30},
                    "readinessProbe": {"exec": {"command": ["test", "-e", "/trace/ready"]}, "periodSeconds": 1},
                    "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", format!("{}; sleep 3; {}", log("second", "prestop"), log("second", "prestop-end"))]}}},
                    "volumeMounts": mount,
                },
            ],
            "containers": [{
                "name": "app", "image": IMAGE,
                // A main container that takes a second to stop.
                "command": ["sh", "-c", looping("app", "", "sleep 1;")],
                "volumeMounts": mount,
            }],
        },
    }))
    .expect("a pod")
}

fn statuses(p: &Pod) -> BTreeMap<String, ContainerStatus> {
    let s = p.status.clone().unwrap_or_default();
    s.init_container_statuses
        .into_iter()
        .flatten()
        .chain(s.container_statuses.into_iter().flatten())
        .map(|c| (c.name.clone(), c))
        .collect()
}

fn running(c: &ContainerStatus) -> bool {
    c.state.as_ref().is_some_and(|s| s.running.is_some())
}

fn condition(p: &Pod, type_: &str) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

/// (ms since the first line, who, what) of every trace line.
fn trace(dir: &Path) -> Vec<(u64, String, String)> {
    let text = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
    let mut lines: Vec<(u128, String, String)> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((
                f.next()?.parse().ok()?,
                f.next()?.to_string(),
                f.next()?.to_string(),
            ))
        })
        .collect();
    lines.sort();
    let t0 = lines.first().map(|l| l.0).unwrap_or(0);
    lines
        .into_iter()
        .map(|(t, w, e)| (((t - t0) / 1_000_000) as u64, w, e))
        .collect()
}

fn at(t: &[(u64, String, String)], who: &str, what: &str, nth: usize) -> u64 {
    t.iter()
        .filter(|(_, w, e)| w == who && e == what)
        .nth(nth)
        .map(|l| l.0)
        .unwrap_or_else(|| panic!("no {who} {what} (#{nth}) in the trace {t:?}"))
}

#[tokio::test]
async fn native_sidecars_start_before_and_stop_after_the_main_container_as_the_kubelet_does() {
    let Some(state) = require(&[Capability::Runner])
        .await
        .map(|g| g.runner_state())
    else {
        return;
    };
    let t_test = Instant::now();
    let c = client().await;
    let ns = TestNamespace::new(&c, "sidecars").await;
    let n = ns.name.as_str();
    let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "trace"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}}},
    }))
    .expect("a claim");
    Api::<PersistentVolumeClaim>::namespaced(c.clone(), n)
        .create(&PostParams::default(), &claim)
        .await
        .expect("create the trace claim");
    let api: Api<Pod> = Api::namespaced(c.clone(), n);
    api.create(&PostParams::default(), &sidecar_pod())
        .await
        .expect("create the pod");

    // Up: the main container runs while the second sidecar is not ready yet; the pod is not.
    let p = wait_for(
        "the main container running",
        Duration::from_secs(60),
        || async {
            let p = api.get("sidecars").await.ok()?;
            statuses(&p).get("app").is_some_and(running).then_some(p)
        },
    )
    .await;
    let s = statuses(&p);
    assert_eq!(condition(&p, "Initialized").as_deref(), Some("True"));
    assert!(running(&s["first"]) && s["first"].started == Some(true) && s["first"].ready);
    let setup = s["setup"].state.clone().and_then(|s| s.terminated);
    assert_eq!(
        setup.map(|t| (t.exit_code, t.reason)),
        Some((0, Some("Completed".into())))
    );
    assert!(s["setup"].ready, "a completed init container reports ready");
    assert!(running(&s["second"]) && s["second"].started == Some(true));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let p = api.get("sidecars").await.expect("the pod");
    assert!(!statuses(&p)["second"].ready);
    assert_eq!(
        condition(&p, "Ready").as_deref(),
        Some("False"),
        "a sidecar that is not ready holds the pod back"
    );
    let argv: Vec<String> = ["touch", "/trace/ready"].map(String::from).to_vec();
    exec::run(
        &state,
        n,
        "sidecars",
        Some("app"),
        &argv,
        Duration::from_secs(10),
    )
    .await
    .expect("touch /trace/ready");
    wait_for("the pod Ready", Duration::from_secs(20), || async {
        let p = api.get("sidecars").await.ok()?;
        ready(&p).then_some(())
    })
    .await;

    // A sidecar that dies is restarted (after the back-off); nothing else is.
    fault::kill(&state, n, "sidecars", Some("first"), None).expect("kill -9 the first sidecar");
    let p = wait_for(
        "the first sidecar restarted",
        Duration::from_secs(40),
        || async {
            let p = api.get("sidecars").await.ok()?;
            let s = statuses(&p);
            (s["first"].restart_count == 1 && running(&s["first"]) && ready(&p)).then_some(p)
        },
    )
    .await;
    let s = statuses(&p);
    assert_eq!((s["app"].restart_count, s["second"].restart_count), (0, 0));
    assert!(
        s["first"]
            .last_state
            .as_ref()
            .and_then(|l| l.terminated.as_ref())
            .is_some_and(|t| t.exit_code == 137),
        "{:?}",
        s["first"].last_state
    );

    // Down: hooks at once, the main container first, then the sidecars in reverse order.
    let dir = claim_dir(&c, n, "trace").await;
    api.delete("sidecars", &DeleteParams::default())
        .await
        .expect("delete the pod");
    let t_del = Instant::now();
    wait_for("the pod gone", Duration::from_secs(40), || async {
        matches!(api.get_opt("sidecars").await, Ok(None)).then_some(())
    })
    .await;
    let gone = t_del.elapsed();
    let t = trace(&dir);
    println!("trace (ms, container, event):");
    for (ms, who, what) in &t {
        println!("  {ms:>6} {who} {what}");
    }
    // Start order.
    let (first, setup_start, setup_end) = (
        at(&t, "first", "start", 0),
        at(&t, "setup", "start", 0),
        at(&t, "setup", "end", 0),
    );
    let (second, app) = (at(&t, "second", "start", 0), at(&t, "app", "start", 0));
    assert!(first <= setup_start && setup_end <= second, "{t:?}");
    assert!(
        app >= second + 2000,
        "the main container waited for the sidecar's startup probe: {t:?}"
    );
    assert!(at(&t, "first", "start", 1) > app, "restarted: {t:?}");
    // Stop order.
    let app_term = at(&t, "app", "term", 0);
    let hook = at(&t, "second", "prestop", 0);
    let second_term = at(&t, "second", "term", 0);
    let first_term = at(&t, "first", "term", 0);
    assert!(
        hook.abs_diff(app_term) < 1000,
        "the preStop hook starts with the deletion, beside the main container's SIGTERM: {t:?}"
    );
    assert!(
        second_term >= hook + 3000,
        "a sidecar gets SIGTERM only after its preStop hook: {t:?}"
    );
    assert!(
        second_term >= app_term + 1000,
        "...and after the main container has exited: {t:?}"
    );
    assert!(
        first_term > second_term,
        "sidecars stop in reverse order: {t:?}"
    );
    println!(
        "figure: sidecars: main SIGTERM at {app_term} ms, the second sidecar's preStop {hook}–{} ms, its SIGTERM {second_term} ms, the first's {first_term} ms; pod gone {:.1}s after the delete; test {:.1}s",
        at(&t, "second", "prestop-end", 0),
        gone.as_secs_f64(),
        t_test.elapsed().as_secs_f64()
    );
}

const APP: &str = r#"apiVersion: guestbook-operator.dev/v1alpha1
kind: VoteApp
metadata: {name: polls}
spec:
  vote: {replicas: 2}
  result: {replicas: 0}
  queue: {mode: PerPod}
  postgres:
    spec:
      members: 1
      auth: {stockAppCredentials: true}
"#;

const VOTE_PODS: &str = "app.kubernetes.io/component=vote,app.kubernetes.io/instance=polls";

/// Voter ids whose vote was acknowledged (HTTP 200), and votes refused.
#[derive(Default, Clone)]
struct Load {
    acked: BTreeSet<String>,
    refused: u32,
}

fn cast_votes(
    base: String,
    load: Arc<Mutex<Load>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let choice = if i.is_multiple_of(2) { "a" } else { "b" };
            i += 1;
            let outcome = apps_client::vote(&base, None, choice).await;
            {
                let mut l = load.lock().unwrap_or_else(|p| p.into_inner());
                match outcome {
                    Ok(id) => {
                        l.acked.insert(id);
                    }
                    Err(_) => l.refused += 1,
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

fn acked(load: &Mutex<Load>) -> usize {
    load.lock().unwrap_or_else(|p| p.into_inner()).acked.len()
}

/// `redis-cli` against the pod's own Redis, in its queue-redis sidecar.
async fn queue_cli(state: &Path, ns: &str, pod: &str, args: &[&str]) -> Result<String, String> {
    let mut argv: Vec<String> = ["redis-cli", "-h", "127.0.0.1", "-p", "6379"]
        .map(String::from)
        .to_vec();
    argv.extend(args.iter().map(|s| s.to_string()));
    let out = exec::run(
        state,
        ns,
        pod,
        Some("queue-redis"),
        &argv,
        Duration::from_secs(10),
    )
    .await
    .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && !text.starts_with("Could not connect") {
        Ok(text)
    } else {
        Err(format!(
            "{text} {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

async fn queued(state: &Path, ns: &str, pod: &str) -> Option<u64> {
    queue_cli(state, ns, pod, &["llen", "votes"])
        .await
        .ok()?
        .parse()
        .ok()
}

/// SIGSTOP to the pod's worker sidecar, once it runs: the stock worker exits on errors (two
/// workers creating the votes table at once on a fresh database, say) and is restarted after
/// a back-off.
async fn stall_worker(state: &Path, ns: &str, pod: &str) {
    wait_for(
        &format!("{pod}'s queue-worker running, to stall it"),
        Duration::from_secs(60),
        || async { fault::pause_container(state, ns, pod, "queue-worker").ok() },
    )
    .await;
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

async fn scale(c: &Client, ns: &str, replicas: i32) {
    let patch = serde_json::json!({"spec": {"vote": {"replicas": replicas}}});
    Api::<VoteApp>::namespaced(c.clone(), ns)
        .patch("polls", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch spec.vote.replicas");
}

/// The vote pods not being deleted, once `n` of them are Ready.
async fn ready_vote_pods(c: &Client, ns: &str, n: usize, timeout: Duration) -> Vec<String> {
    wait_for(&format!("{n} vote pods Ready"), timeout, || async {
        let ps: Vec<Pod> = pods(c, ns, VOTE_PODS)
            .await
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        (ps.len() == n && ps.iter().all(ready)).then(|| ps.iter().map(name).collect())
    })
    .await
}

#[tokio::test]
async fn per_pod_queues_keep_every_acknowledged_vote_through_a_redis_kill_and_scaling_2_6_2() {
    let Some(state) = require(&[Capability::Runner, Capability::ClusterDns])
        .await
        .map(|g| g.runner_state())
    else {
        return;
    };
    let t_test = Instant::now();
    let c = client().await;
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, "perpod").await;
    let n = ns.name.as_str();
    let op = Operator::start(n, "solo", &["--leader-election=false"]);
    apply_yaml(&c, n, APP).await.expect("the app");
    wait_ready(&c, n, "VoteApp", "polls", Duration::from_secs(300)).await;
    let t_ready = t_test.elapsed();

    // Each vote pod runs its queue as two sidecars, reported as the kubelet reports them.
    let two = ready_vote_pods(&c, n, 2, Duration::from_secs(30)).await;
    for p in pods(&c, n, VOTE_PODS).await {
        let s = statuses(&p);
        for sidecar in ["queue-worker", "queue-redis"] {
            let st = &s[sidecar];
            assert!(
                running(st) && st.started == Some(true) && st.ready,
                "{}: {sidecar}: {st:?}",
                name(&p)
            );
        }
    }

    let load = Arc::new(Mutex::new(Load::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let vote = service_base(&c, n, "polls-vote").await;
    let voter = cast_votes(vote, load.clone(), stop.clone());
    wait_for("votes flowing", Duration::from_secs(60), || async {
        (acked(&load) >= 30).then_some(())
    })
    .await;

    // kill -9 of one pod's Redis while its worker is stalled, so that it holds a queue: the
    // AOF (appendfsync always) on the pod's emptyDir brings every queued vote back.
    let victim = two[0].clone();
    stall_worker(&state, n, &victim).await;
    wait_for(
        "a queue in the stalled pod",
        Duration::from_secs(60),
        || async { (queued(&state, n, &victim).await? >= 10).then_some(()) },
    )
    .await;
    let before = queue_cli(&state, n, &victim, &["lrange", "votes", "0", "-1"])
        .await
        .expect("the queue before");
    fault::kill(&state, n, &victim, Some("queue-redis"), None).expect("kill -9 queue-redis");
    let t_kill = Instant::now();
    let pods_api: Api<Pod> = Api::namespaced(c.clone(), n);
    let after = wait_for(
        "queue-redis restarted and answering",
        Duration::from_secs(60),
        || async {
            let p = pods_api.get(&victim).await.ok()?;
            let s = statuses(&p);
            if s["queue-redis"].restart_count < 1 || !running(&s["queue-redis"]) {
                return None;
            }
            queue_cli(&state, n, &victim, &["lrange", "votes", "0", "-1"])
                .await
                .ok()
        },
    )
    .await;
    let back_in = t_kill.elapsed();
    fault::resume_container(&state, n, &victim, "queue-worker").expect("resume the worker");
    let (before, after): (Vec<&str>, Vec<&str>) =
        (before.lines().collect(), after.lines().collect());
    assert!(
        after.starts_with(&before),
        "the AOF lost queued votes: {} before the kill, {} after, not a prefix",
        before.len(),
        after.len()
    );
    println!(
        "figure: PerPod: kill -9 of {victim}'s queue-redis with {} votes queued (worker stalled): back after {:.1}s with all {} (AOF on the emptyDir), {} queued by then",
        before.len(),
        back_in.as_secs_f64(),
        before.len(),
        after.len()
    );

    // 2 → 6.
    let t_up = Instant::now();
    scale(&c, n, 6).await;
    let six = ready_vote_pods(&c, n, 6, Duration::from_secs(180)).await;
    let up_in = t_up.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;

    // 6 → 2 with a backlog in every pod: each worker stalled for 3 s, then the scale-down, then
    // the workers resumed. The four pods that go must not stop their Redis before their worker
    // has drained it (their preStop hook holds it).
    for p in &six {
        stall_worker(&state, n, p).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut backlog = BTreeMap::new();
    for p in &six {
        backlog.insert(p.clone(), queued(&state, n, p).await.unwrap_or(0));
    }
    let t_down = Instant::now();
    scale(&c, n, 2).await;
    let going: Vec<String> = wait_for(
        "four vote pods terminating",
        Duration::from_secs(30),
        || async {
            let going: Vec<String> = pods(&c, n, VOTE_PODS)
                .await
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_some())
                .map(name)
                .collect();
            (going.len() == 4).then_some(going)
        },
    )
    .await;
    for p in &six {
        // A pod whose queue-worker the runner has already stopped has none to resume.
        let _ = fault::resume_container(&state, n, p, "queue-worker");
    }
    let held: u64 = going.iter().map(|p| backlog[p]).sum();
    wait_for(
        "the terminating vote pods gone",
        Duration::from_secs(120),
        || async {
            let left = pods(&c, n, VOTE_PODS)
                .await
                .iter()
                .filter(|p| going.contains(&name(p)))
                .count();
            (left == 0).then_some(())
        },
    )
    .await;
    let down_in = t_down.elapsed();
    ready_vote_pods(&c, n, 2, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::SeqCst);
    voter.await.expect("the voter task");

    // The two remaining queues drain; every acknowledged vote is a row.
    let remaining: Vec<String> = pods(&c, n, VOTE_PODS).await.iter().map(name).collect();
    wait_for(
        "the remaining queues empty",
        Duration::from_secs(60),
        || async {
            for p in &remaining {
                if queued(&state, n, p).await? != 0 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    // The load task has stopped; a copy keeps the lock out of the awaits below.
    let load = load.lock().unwrap_or_else(|p| p.into_inner()).clone();
    // Every acknowledged vote, or what the database holds after 30 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let counted = loop {
        let ids = counted_ids(&c, n).await.unwrap_or_default();
        if load.acked.is_subset(&ids) || Instant::now() > deadline {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let lost: Vec<&String> = load.acked.difference(&counted).collect();
    println!(
        "figure: PerPod 2 → 6 → 2 under load: {} votes acknowledged, {} counted ({} lost), {} refused; 6 pods Ready {:.1}s after the scale-up; the 4 terminating pods held {held} queued votes and were gone {:.1}s after the scale-down; app Ready after {:.1}s, test {:.1}s",
        load.acked.len(),
        load.acked.len() - lost.len(),
        lost.len(),
        load.refused,
        up_in.as_secs_f64(),
        down_in.as_secs_f64(),
        t_ready.as_secs_f64(),
        t_test.elapsed().as_secs_f64()
    );
    assert!(lost.is_empty(), "acknowledged votes not counted: {lost:?}");
    assert!(held > 0, "the scale-down found no queued vote to drain");
    op.assert_no_reconcile_errors().await;
}
