//! The operator reports kstatus status for every object, stalls on bad references without
//! retrying hot, and writes nothing when nothing changed.

use crate::audit;
use crate::identity::{Identity, Mode};
use crate::support::{
    Capability, Operator, TestNamespace, apply_yaml, client, condition, conditions, install_crds,
    kstatus, repo, require_part, wait_for,
};
use guestbook_operator::crd::{Guestbook, VoteApp};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

async fn apply_examples(c: &kube::Client, ns: &str) -> Vec<(String, String)> {
    let mut objs = Vec::new();
    for entry in std::fs::read_dir(repo("manifests/examples")).expect("examples dir") {
        let yaml = std::fs::read_to_string(entry.expect("entry").path()).expect("example");
        let o = apply_yaml(c, ns, &yaml).await.expect("example accepted");
        objs.push((o.types.expect("types").kind, o.metadata.name.expect("name")));
    }
    objs
}

/// Writes the operator made since `mark`, printed; their total.
fn report_writes(what: &str, mark: &audit::Mark, user: &str) -> u32 {
    let writes = mark.writes_by(user);
    let total: u32 = writes.values().sum();
    println!("figure: {what}: {total} write requests by the operator");
    for (request, n) in &writes {
        println!("  {n:>4}  {request}");
    }
    total
}

#[tokio::test]
async fn every_example_converges_and_a_quiet_operator_writes_nothing() {
    let c = client().await;
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, "status").await;
    let me = Identity::shared(&ns.name, Mode::ClusterWide);
    let audit_log = require_part("the write counts", &[Capability::AuditLog])
        .await
        .map(|g| g.audit_log());
    let start = audit_log.as_ref().map(audit::Mark::now);
    let objs = apply_examples(&c, &ns.name).await;
    let extra = ["--leader-election=false"];
    let op = Operator::start_as(&ns.name, "solo", &extra, Some(&me.kubeconfig));

    // Every example, children included, converges to Ready; until then it is Ready=False with
    // Reconciling=True (or Unknown on first sight), never Stalled.
    let converge = Duration::from_secs(420);
    for (kind, name) in &objs {
        let what = format!("{kind} {name} Ready");
        let deadline = std::time::Instant::now() + converge;
        loop {
            let s = conditions(&c, &ns.name, kind, name).await;
            let get = |t: &str| {
                s.as_ref()
                    .and_then(|(_, _, all)| all.iter().find(|(ty, _, _)| ty == t))
                    .map(|(_, status, reason)| (status.as_str(), reason.as_str()))
            };
            assert!(
                get("Stalled").is_none(),
                "{kind} {name} stalled: {s:?}\n{}",
                op.log_text()
            );
            if let (Some((generation, observed, _)), Some((ready, reason))) = (&s, get("Ready")) {
                if ready == "False" {
                    assert_eq!(
                        get("Reconciling").map(|r| r.0),
                        Some("True"),
                        "{kind} {name}: Ready=False needs Reconciling=True ({reason}): {s:?}"
                    );
                }
                if ready == "True" && observed == generation {
                    break;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}: {s:?}\n{}",
                op.log_text()
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let (code, body) = op.get("/readyz").await.expect("readyz answers");
    assert_eq!((code, body.as_str()), (200, "ok: leader, caches synced"));
    if let (Some(m), Some(_)) = (&start, &audit_log) {
        report_writes("one whole converge of the examples", m, &me.user);
    }

    // Quiet: nothing changes, nothing is written — neither while left alone (safety polls,
    // child and pod events), nor when every controller is woken through its objects.
    if let Some(path) = &audit_log {
        // Converged includes settled: Patroni names its synchronous standby and replicas catch
        // up a loop after the members stream. Wait (at most a minute) until no object's
        // resourceVersion moved for 10 s, then measure.
        let versions = || async {
            let mut out = Vec::new();
            for (kind, name) in &objs {
                let api: Api<kube::api::DynamicObject> =
                    Api::namespaced_with(c.clone(), &ns.name, &crate::support::api_resource(kind));
                out.push(
                    api.get(name)
                        .await
                        .ok()
                        .and_then(|o| o.metadata.resource_version),
                );
            }
            out
        };
        let settle_by = std::time::Instant::now() + Duration::from_secs(60);
        let mut last = versions().await;
        let mut still_since = std::time::Instant::now();
        while std::time::Instant::now() < settle_by
            && still_since.elapsed() < Duration::from_secs(10)
        {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = versions().await;
            if now != last {
                last = now;
                still_since = std::time::Instant::now();
            }
        }
        let quiet = audit::Mark::now(path);
        tokio::time::sleep(Duration::from_secs(35)).await;
        for (kind, name) in &objs {
            let api: Api<kube::api::DynamicObject> =
                Api::namespaced_with(c.clone(), &ns.name, &crate::support::api_resource(kind));
            let touch = serde_json::json!({"metadata": {"labels": {"touched": "yes"}}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&touch))
                .await
                .expect("label an example");
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        let n = report_writes(
            "45 quiet seconds, every object woken once",
            &quiet,
            &me.user,
        );
        assert_eq!(
            n,
            0,
            "a no-op reconcile wrote; see the requests above, and what they changed:\n{}",
            op.log_text()
                .lines()
                .filter(|l| l.contains("status written"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    // A spec change is observed: observedGeneration follows the generation.
    let gb: Api<Guestbook> = Api::namespaced(c.clone(), &ns.name);
    let patch = serde_json::json!({"spec": {"frontend": {"replicas": 4}}});
    gb.patch("guestbook", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("scale the guestbook");
    wait_for("observedGeneration to follow", T, || async {
        let (_, _, observed, generation) = kstatus(&c, &ns.name, "Guestbook", "guestbook").await?;
        (observed == generation && generation > 1).then_some(())
    })
    .await;
    op.assert_no_reconcile_errors().await;
}

#[tokio::test]
async fn a_missing_secret_stalls_once_then_recovers_when_created() {
    let c = client().await;
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, "secret").await;
    let op = Operator::start(&ns.name, "solo", &["--leader-election=false"]);
    let yaml = "apiVersion: guestbook-operator.dev/v1alpha1\nkind: RedisSentinel\nmetadata: {name: cache}\nspec:\n  auth:\n    existingSecret: {name: cache-auth}\n";
    apply_yaml(&c, &ns.name, yaml).await.expect("accepted");
    let (status, reason, message) = wait_for("Stalled", T, || {
        condition(&c, &ns.name, "RedisSentinel", "cache", "Stalled")
    })
    .await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "SecretNotFound")
    );
    assert!(
        message.contains("spec.auth.existingSecret") && message.contains("cache-auth"),
        "{message}"
    );
    let ready = condition(&c, &ns.name, "RedisSentinel", "cache", "Ready")
        .await
        .expect("Ready");
    assert_eq!(ready.0, "False");

    // Stalled means waiting for a change, not retrying: the reconcile count stays put.
    let runs = op
        .metric(
            "guestbook_operator_reconciles_total",
            "kind=\"RedisSentinel\"",
        )
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        op.metric(
            "guestbook_operator_reconciles_total",
            "kind=\"RedisSentinel\""
        )
        .await,
        runs,
        "hot retry loop"
    );

    let events: Api<Event> = Api::namespaced(c.clone(), &ns.name);
    let list = events.list(&ListParams::default()).await.expect("events");
    let stalled: Vec<_> = list
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("SecretNotFound"))
        .collect();
    assert_eq!(
        stalled.len(),
        1,
        "one Warning event for the stall: {:?}",
        list.items.iter().map(|e| &e.reason).collect::<Vec<_>>()
    );

    let secrets: Api<Secret> = Api::namespaced(c.clone(), &ns.name);
    let mut s = Secret::default();
    s.metadata.name = Some("cache-auth".into());
    s.string_data = Some([("password".to_string(), "s3cret-for-tests".to_string())].into());
    secrets
        .create(&PostParams::default(), &s)
        .await
        .expect("create the Secret");
    wait_for("recovery once the Secret exists", T, || async {
        let stalled = condition(&c, &ns.name, "RedisSentinel", "cache", "Stalled").await;
        let (ready, reason, ..) = kstatus(&c, &ns.name, "RedisSentinel", "cache").await?;
        // Past validation: now building the store (its pods start).
        (stalled.is_none() && ready != "True" && reason != "SecretNotFound").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_second_voteapp_in_a_namespace_stalls_until_the_first_goes() {
    let c = client().await;
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, "conflict").await;
    let _op = Operator::start(&ns.name, "solo", &["--leader-election=false"]);
    let app = |name: &str| {
        format!(
            "apiVersion: guestbook-operator.dev/v1alpha1\nkind: VoteApp\nmetadata: {{name: {name}}}\nspec:\n  redis: {{name: queue}}\n  postgres: {{name: tally}}\n"
        )
    };
    apply_yaml(&c, &ns.name, &app("first"))
        .await
        .expect("first accepted");
    wait_for("first has status", T, || {
        kstatus(&c, &ns.name, "VoteApp", "first")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // creationTimestamp has 1 s resolution
    apply_yaml(&c, &ns.name, &app("second"))
        .await
        .expect("second accepted");
    let (_, reason, message) = wait_for("second Stalled", T, || {
        condition(&c, &ns.name, "VoteApp", "second", "Stalled")
    })
    .await;
    assert_eq!(reason, "NamespaceConflict");
    assert!(message.contains("VoteApp \"first\""), "{message}");
    // The first is not disturbed: it waits for its stores, it is not in conflict.
    let (_, reason, _) = condition(&c, &ns.name, "VoteApp", "first", "Ready")
        .await
        .expect("first Ready condition");
    assert_eq!(reason, "WaitingForStore");

    let va: Api<VoteApp> = Api::namespaced(c.clone(), &ns.name);
    va.delete("first", &DeleteParams::default())
        .await
        .expect("delete first");
    wait_for("second to take over", T, || async {
        let stalled = condition(&c, &ns.name, "VoteApp", "second", "Stalled").await;
        let (_, reason, _) = condition(&c, &ns.name, "VoteApp", "second", "Ready").await?;
        (stalled.is_none() && reason == "WaitingForStore").then_some(())
    })
    .await;
}
