//! Guestbook and VoteApp end to end: the apps' tiers run as real processes behind their pods
//! (the stand-ins of e2e/standins on the local cluster, the stock images on kind), reaching
//! their stores by Service name through cluster DNS and kube-proxy, exactly as the stock images
//! do. Votes, entries and the tally go through the apps' Services as a browser's would.

use crate::apps_client::{self, Tally};
use crate::real::{ip, pods, psql, ready};
use crate::standins::service_base;
use crate::support::{
    Capability, Operator, TestNamespace, apply_file, apply_yaml, client, condition, install_crds,
    kstatus, require, wait_for,
};
use kube::Client;
use std::collections::BTreeMap;
use std::time::Duration;

/// Waits until `kind/name` reports Ready=True for its current generation.
pub async fn wait_ready(c: &Client, ns: &str, kind: &str, name: &str, timeout: Duration) {
    let what = format!("{kind} {name} Ready");
    let mut last = None;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let s = kstatus(c, ns, kind, name).await;
        if let Some((status, _, observed, generation)) = &s
            && status == "True"
            && observed == generation
        {
            return;
        }
        if s != last {
            eprintln!("{what}: now {s:?}");
            last = s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}; last {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The tally as PostgreSQL has it, through the `db` Service.
pub async fn counted(c: &Client, ns: &str) -> Result<Tally, String> {
    let rows = db_query(
        c,
        ns,
        "SELECT vote, count(id) FROM votes GROUP BY vote ORDER BY vote",
    )
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(v, n)| Some((v, n.parse().ok()?)))
        .collect())
}

/// Each voter's recorded choice, through the `db` Service.
async fn ballots(c: &Client, ns: &str) -> Result<BTreeMap<String, String>, String> {
    Ok(db_query(c, ns, "SELECT id, vote FROM votes")
        .await?
        .into_iter()
        .collect())
}

/// Rows of two columns from the app's database, as the stock images reach it (`db`).
async fn db_query(c: &Client, ns: &str, sql: &str) -> Result<Vec<(String, String)>, String> {
    let base = service_base(c, ns, "db").await;
    let host = base
        .trim_start_matches("http://")
        .split(':')
        .next()
        .unwrap_or_default()
        .parse()
        .map_err(|e| format!("{base}: {e}"))?;
    let rows = psql(host, "postgres", sql).await?;
    Ok(rows
        .lines()
        .filter_map(|l| {
            let (a, b) = l.split_once('|')?;
            Some((a.to_string(), b.to_string()))
        })
        .collect())
}

#[tokio::test]
async fn the_example_vote_app_counts_every_voter_once() {
    let c = client().await;
    if require(&[Capability::Runner, Capability::ClusterDns])
        .await
        .is_none()
    {
        return;
    }
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, "voteapp").await;
    let op = Operator::start(&ns.name, "solo", &["--leader-election=false"]);
    apply_file(&c, &ns.name, "manifests/examples/voteapp.yaml").await;
    wait_ready(&c, &ns.name, "VoteApp", "vote", Duration::from_secs(300)).await;
    for (kind, store) in [
        ("RedisSentinel", "vote-redis"),
        ("PatroniCluster", "vote-db"),
    ] {
        let (status, ..) = kstatus(&c, &ns.name, kind, store)
            .await
            .expect("store status");
        assert_eq!(status, "True", "{kind} {store} Ready with the app");
    }
    let real = pods(&c, &ns.name, "app.kubernetes.io/component=vote").await;
    assert!(
        real.iter()
            .filter(|p| ready(p))
            .all(|p| ip(p).is_some_and(|a| a.octets()[2] > 128)),
        "vote pods run for real"
    );

    // K voters, some changing their mind: each voter counts once, with their last choice.
    let vote = service_base(&c, &ns.name, "vote-vote").await;
    let mut want = Tally::new();
    let mut voters = Vec::new();
    for i in 0..30 {
        let choice = if i % 3 == 0 { "b" } else { "a" };
        let id = apps_client::vote(&vote, None, choice)
            .await
            .expect("vote accepted");
        voters.push((id, choice));
    }
    for (id, choice) in voters.iter_mut().take(10) {
        let other = if *choice == "a" { "b" } else { "a" };
        apps_client::vote(&vote, Some(id), other)
            .await
            .expect("re-vote accepted");
        *choice = other;
    }
    for (_, choice) in &voters {
        *want.entry(choice.to_string()).or_insert(0) += 1;
    }
    // Voter by voter first: while the worker drains the queue the tally passes through the
    // wanted counts on the way (a re-vote from a to b and a later one from b to a), so only
    // every voter's own last choice shows that all votes were counted.
    let last_choice: BTreeMap<String, String> = voters
        .iter()
        .map(|(id, choice)| (id.clone(), choice.to_string()))
        .collect();
    let mut recorded = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        recorded = ballots(&c, &ns.name).await.unwrap_or_default();
        if recorded == last_choice {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        recorded, last_choice,
        "each voter's last choice in PostgreSQL"
    );
    let result = service_base(&c, &ns.name, "vote-result").await;
    let shown = apps_client::wait_for_tally(&result, &want, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("the result page: {e}\n{}", op.log_text()));
    assert_eq!(shown, want);
    assert_eq!(
        counted(&c, &ns.name)
            .await
            .expect("the tally in PostgreSQL"),
        want
    );
    op.assert_no_reconcile_errors().await;
}

#[tokio::test]
async fn the_example_guestbook_serves_through_its_proxy() {
    let c = client().await;
    if require(&[Capability::Runner, Capability::ClusterDns])
        .await
        .is_none()
    {
        return;
    }
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, "guestbook").await;
    let op = Operator::start(&ns.name, "solo", &["--leader-election=false"]);
    apply_file(&c, &ns.name, "manifests/examples/guestbook.yaml").await;
    wait_ready(
        &c,
        &ns.name,
        "Guestbook",
        "guestbook",
        Duration::from_secs(300),
    )
    .await;
    let entry = service_base(&c, &ns.name, "guestbook-proxy").await;
    apps_client::guestbook_set(&entry, "hello from e2e")
        .await
        .unwrap_or_else(|e| panic!("write through the proxy: {e}\n{}", op.log_text()));
    let read = wait_for("the entry read back", Duration::from_secs(20), || async {
        let got = apps_client::guestbook_get(&entry).await.ok()?;
        got.contains("hello from e2e").then_some(got)
    })
    .await;
    assert!(read.contains("hello from e2e"));
    render_matches_the_live_objects(&c, &ns.name, "manifests/examples/guestbook.yaml").await;
    let summary = kubectl_plugin_status(&ns.name, "gb/guestbook");
    for want in [
        "Guestbook",
        "Ready",
        "True",
        "frontend",
        "guestbook-redis",
        "Events",
    ] {
        assert!(
            summary.contains(want),
            "{want:?} missing from the status summary:\n{summary}"
        );
    }
    op.assert_no_reconcile_errors().await;
}

/// `guestbook-operator render` of `file` prints what the controllers applied: each rendered
/// object is contained in its live copy (uids aside, which only the API server assigns).
/// Objects whose content follows observed state (the follower Service's role while no replica
/// is in sync) are left out of the comparison.
pub async fn render_matches_the_live_objects(c: &Client, ns: &str, file: &str) {
    use kube::api::{DynamicObject, GroupVersionKind};
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_guestbook-operator"))
        .args(["render", "-f"])
        .arg(crate::support::repo(file))
        .args(["-n", ns])
        .output()
        .expect("run render");
    assert!(
        out.status.success(),
        "render: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut compared = 0;
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let mut want: serde_json::Value = serde::Deserialize::deserialize(doc).expect("yaml doc");
        let (Some(api_version), Some(kind), Some(name)) = (
            want["apiVersion"].as_str().map(str::to_string),
            want["kind"].as_str().map(str::to_string),
            want["metadata"]["name"].as_str().map(str::to_string),
        ) else {
            continue;
        };
        if name == "redis-follower" {
            continue;
        }
        let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
        let gvk = GroupVersionKind::gvk(group, version, &kind);
        let (ar, _) = kube::discovery::pinned_kind(c, &gvk)
            .await
            .expect("a served kind");
        let api: kube::Api<DynamicObject> = kube::Api::namespaced_with(c.clone(), ns, &ar);
        let live = api
            .get(&name)
            .await
            .unwrap_or_else(|e| panic!("rendered {kind}/{name} does not exist: {e}"));
        let live = serde_json::to_value(&live).expect("json");
        if let Some(refs) = want["metadata"]["ownerReferences"].as_array_mut() {
            for (i, r) in refs.iter_mut().enumerate() {
                r["uid"] = live["metadata"]["ownerReferences"][i]["uid"].clone();
            }
        }
        if let Some(m) = want.as_object_mut() {
            m.remove("apiVersion");
            m.remove("kind");
        }
        let diff = guestbook_operator::k8s::apply::difference(&want, &live);
        assert!(
            diff.is_none(),
            "rendered {kind}/{name} differs from the live object at {diff:?}"
        );
        compared += 1;
    }
    println!("figure: render of {file}: {compared} objects, each as the live one");
    assert!(compared > 10, "render printed only {compared} objects");
}

/// `kubectl guestbook-operator status TARGET -n NS`, the binary installed as a kubectl plugin.
fn kubectl_plugin_status(ns: &str, target: &str) -> String {
    let dir = crate::support::repo(&format!("target/e2e-logs/plugin-{ns}"));
    std::fs::create_dir_all(&dir).expect("plugin dir");
    let link = dir.join("kubectl-guestbook_operator");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_guestbook-operator"), &link).expect("symlink");
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("kubectl")
        .args(["guestbook-operator", "status", target, "-n", ns])
        .env("PATH", path)
        .output()
        .expect("run kubectl (from e2e/cluster env's PATH)");
    assert!(
        out.status.success(),
        "kubectl guestbook-operator status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test]
async fn a_second_app_in_a_namespace_stalls_and_touches_nothing() {
    let c = client().await;
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, "second-app").await;
    let _op = Operator::start(&ns.name, "solo", &["--leader-election=false"]);
    let first = "apiVersion: guestbook-operator.dev/v1alpha1\nkind: Guestbook\nmetadata: {name: first}\nspec: {redis: {name: cache}}\n";
    apply_yaml(&c, &ns.name, first).await.expect("first");
    wait_for(
        "the first Guestbook's status",
        Duration::from_secs(30),
        || async {
            let (_, reason, ..) = kstatus(&c, &ns.name, "Guestbook", "first").await?;
            (reason == "WaitingForStore").then_some(())
        },
    )
    .await;
    let second = first.replace("name: first", "name: second");
    apply_yaml(&c, &ns.name, &second).await.expect("second");
    let (status, reason, message) =
        wait_for("the second Stalled", Duration::from_secs(30), || async {
            condition(&c, &ns.name, "Guestbook", "second", "Stalled").await
        })
        .await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "NamespaceConflict")
    );
    assert!(message.contains("\"first\""), "{message}");
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(c.clone(), &ns.name);
    let names: Vec<String> = deployments
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|d| d.metadata.name)
        .collect();
    assert_eq!(names, ["first-frontend"], "the second app created nothing");
}
