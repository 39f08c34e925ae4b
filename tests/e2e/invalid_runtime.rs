//! Inputs that pass admission but cannot work as written. Each must end `Stalled` or
//! `Reconciling` with its reason named (the field, the object, the server's or the kubelet's
//! words), with exactly one Warning event, without a hot retry loop (reconciles counted over
//! a minute from the operator's metrics), and must recover once it is fixed. One namespace and
//! one operator hold most of the corpus; the refused backup schedule, which keeps a store
//! running beside the failure, has its own so that its reconciles are counted alone.

use crate::support::{
    Capability, Operator, TestNamespace, apply_yaml, client, condition, install_crds, require,
    require_part, wait_for,
};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use std::time::Duration;

/// A fix is seen within this long: a watch event, or the one-minute recheck of a StorageClass
/// (which the operator may get but not watch).
const RECOVER: Duration = Duration::from_secs(150);
const SETTLE: Duration = Duration::from_secs(90);
/// The most reconciles of one kind a minute may hold while everything waits on a fix.
const MAX_PER_MINUTE: f64 = 10.0;

fn yaml(kind: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: guestbook-operator.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: {name}}}\nspec:\n{spec}"
    )
}

async fn reconciles(op: &Operator, kind: &str) -> f64 {
    op.metric(
        "guestbook_operator_reconciles_total",
        &format!("kind=\"{kind}\""),
    )
    .await
}

/// Warning events about `name`, by reason.
async fn warnings(c: &Client, ns: &str, name: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(c.clone(), ns);
    let list = events.list(&ListParams::default()).await.expect("events");
    list.items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.reason)
        .collect()
}

/// Waits until `kind/name` is Ready=False with `type_` (Stalled or Reconciling) True for
/// `reason` and a message naming every one of `parts` (a reason may be written before all its
/// words are known: an event is recorded a moment after the claim it is about).
async fn ends(
    c: &Client,
    ns: &str,
    (kind, name): (&str, &str),
    type_: &str,
    reason: &str,
    parts: &[&str],
) {
    let deadline = std::time::Instant::now() + SETTLE;
    let mut last = None;
    loop {
        let cond = condition(c, ns, kind, name, type_).await;
        let ready = condition(c, ns, kind, name, "Ready").await;
        if let (Some((status, r, message)), Some((ready, ..))) = (&cond, &ready) {
            let named = parts.iter().all(|p| message.contains(p));
            if status == "True" && r == reason && ready == "False" && named {
                println!("{kind} {name}: {type_} {reason}: {message}");
                return;
            }
        }
        last = cond.or(last);
        assert!(
            std::time::Instant::now() < deadline,
            "{kind} {name}: no {type_} {reason} naming {parts:?} within {SETTLE:?}; last: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until neither `Stalled` nor a Ready reason in `gone` remains.
async fn recovers(c: &Client, ns: &str, kind: &str, name: &str, gone: &[&str]) -> String {
    let what = format!("{kind} {name} to get past {gone:?}");
    wait_for(&what, RECOVER, || async {
        let stalled = condition(c, ns, kind, name, "Stalled").await;
        let (_, reason, message) = condition(c, ns, kind, name, "Ready").await?;
        (stalled.is_none() && !gone.contains(&reason.as_str()))
            .then(|| format!("{reason}: {message}"))
    })
    .await
}

/// Cluster-scoped StorageClasses a test made, deleted when it ends.
struct Classes {
    names: Vec<String>,
}

impl Classes {
    async fn create(&mut self, c: &Client, name: &str, provisioner: &str) {
        let class: StorageClass = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "gbo-e2e"}},
            "provisioner": provisioner,
            "reclaimPolicy": "Delete",
        }))
        .expect("a StorageClass");
        Api::<StorageClass>::all(c.clone())
            .create(&PostParams::default(), &class)
            .await
            .unwrap_or_else(|e| panic!("creating StorageClass {name}: {e}"));
        if !self.names.iter().any(|n| n == name) {
            self.names.push(name.to_string());
        }
    }

    async fn delete(c: &Client, name: &str) {
        let api = Api::<StorageClass>::all(c.clone());
        let _ = api.delete(name, &DeleteParams::default()).await;
        wait_for(&format!("StorageClass {name} gone"), SETTLE, || async {
            matches!(api.get_opt(name).await, Ok(None)).then_some(())
        })
        .await;
    }
}

impl Drop for Classes {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.names);
        // Drop cannot await; delete from a runtime of our own on another thread.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(c) = Client::try_default().await {
                    for n in names {
                        let api = Api::<StorageClass>::all(c.clone());
                        let _ = api.delete(&n, &DeleteParams::default()).await;
                    }
                }
            });
        })
        .join();
    }
}

/// Plays the kubelet of a simulated pod that cannot pull its image: kwok runs every image it
/// is given, so the local cluster never reports a pull failure by itself.
async fn report_pull_failure(c: &Client, ns: &str, pod: &Pod) {
    let container = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .expect("a container");
    let image = container.image.clone().unwrap_or_default();
    let status = serde_json::json!({"status": {
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady"},
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady"}
        ],
        "containerStatuses": [{
            "name": container.name, "image": image, "imageID": "", "ready": false,
            "started": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ErrImagePull", "message": format!("failed to pull and unpack image \"{image}\": not found")}}
        }]
    }});
    Api::<Pod>::namespaced(c.clone(), ns)
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .expect("report ErrImagePull as the kubelet would");
}

#[tokio::test]
async fn inputs_that_cannot_work_are_named_counted_and_recover() {
    let c = client().await;
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, "invalid-rt").await;
    let n = &ns.name;
    let mut classes = Classes { names: Vec::new() };
    let (missing, unprovisioned) = (format!("{n}-missing"), format!("{n}-unprovisioned"));
    let op = Operator::start(n, "solo", &["--leader-election=false"]);

    // A Secret without the key the spec names.
    let secrets: Api<Secret> = Api::namespaced(c.clone(), n);
    let mut s = Secret::default();
    s.metadata.name = Some("key-auth".into());
    s.string_data = Some([("pass".to_string(), "s3cret-for-tests".to_string())].into());
    secrets
        .create(&PostParams::default(), &s)
        .await
        .expect("the Secret");
    // A class whose provisioner nobody runs: its claims stay Pending.
    classes
        .create(&c, &unprovisioned, "example.invalid/none")
        .await;

    let sentinels = "  sentinel: {replicas: 3}\n";
    let objects = [
        yaml(
            "RedisSentinel",
            "key",
            &format!(
                "  redis: {{replicas: 1}}\n{sentinels}  auth:\n    existingSecret: {{name: key-auth, key: password}}\n"
            ),
        ),
        yaml(
            "RedisSentinel",
            "class",
            &format!(
                "  redis:\n    replicas: 1\n    storage: {{size: 1Gi, storageClassName: {missing}}}\n{sentinels}"
            ),
        ),
        yaml(
            "RedisSentinel",
            "pending",
            &format!(
                "  redis:\n    replicas: 1\n    storage: {{size: 1Gi, storageClassName: {unprovisioned}}}\n{sentinels}"
            ),
        ),
        yaml(
            "PatroniCluster",
            "restore",
            "  members: 1\n  bootstrap:\n    fromBackup: {claimName: no-such-backups}\n",
        ),
        yaml(
            "Guestbook",
            "gb",
            "  frontend: {image: registry.local/gbo-e2e/frontend:1, replicas: 1}\n  scheduling:\n    nodeSelector: {gbo-e2e/placement: nowhere}\n  redis: {name: gb-store}\n",
        ),
        yaml(
            "VoteApp",
            "va",
            "  vote: {image: registry.local/gbo-e2e/vote:1, replicas: 1}\n  result: {image: registry.local/gbo-e2e/result:1, replicas: 1}\n  worker: {image: registry.local/gbo-e2e/worker:1, replicas: 1}\n  redis: {name: va-queue}\n  postgres: {name: va-db}\n",
        ),
    ];
    for o in &objects {
        apply_yaml(&c, n, o)
            .await
            .unwrap_or_else(|e| panic!("accepted at admission: {e}\n{o}"));
    }

    // Each ends where it should, the reason naming the field or object and the words of
    // whoever refused.
    let stalled = [
        (
            ("RedisSentinel", "key"),
            "SecretKeyNotFound",
            vec!["spec.auth.existingSecret", "key-auth", "password"],
        ),
        (
            ("RedisSentinel", "class"),
            "StorageClassNotFound",
            vec!["spec.redis.storage.storageClassName", missing.as_str()],
        ),
        (
            ("PatroniCluster", "restore"),
            "BackupClaimNotFound",
            vec!["spec.bootstrap.fromBackup.claimName", "no-such-backups"],
        ),
    ];
    for (object, reason, parts) in &stalled {
        ends(&c, n, *object, "Stalled", reason, parts).await;
    }
    let waiting = [
        (
            ("RedisSentinel", "pending"),
            "ClaimPending",
            // The provisioner's event, quoted.
            vec![
                "PersistentVolumeClaim data-pending-redis-0 is Pending",
                "example.invalid/none",
            ],
        ),
        (
            ("Guestbook", "gb"),
            "Unschedulable",
            // The scheduler's condition message, quoted.
            vec![
                "frontend tier: Pod gb-",
                "cannot be scheduled",
                "didn't match Pod's node affinity/selector",
            ],
        ),
    ];
    for (object, reason, parts) in &waiting {
        ends(&c, n, *object, "Reconciling", reason, parts).await;
    }
    // Image pulls: the local cluster's kwok runs any image, so the test plays the kubelet.
    let pull = require_part(
        "image pull failure (reported by the test in the kubelet's place; kwok pulls no images)",
        &[Capability::Runner],
    )
    .await
    .is_some();
    if pull {
        let pods: Api<Pod> = Api::namespaced(c.clone(), n);
        let vote = wait_for("the vote pod running", SETTLE, || async {
            let lp = ListParams::default().labels("app.kubernetes.io/component=vote");
            let list = pods.list(&lp).await.ok()?;
            list.items
                .into_iter()
                .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        })
        .await;
        report_pull_failure(&c, n, &vote).await;
        let parts = [
            "vote tier: Pod",
            "ErrImagePull",
            "registry.local/gbo-e2e/vote:1",
        ];
        let va = ("VoteApp", "va");
        ends(&c, n, va, "Reconciling", "ImagePullFailed", &parts).await;
    }

    // A quiet minute: everything waits for a fix; nothing retries hot.
    let kinds = ["RedisSentinel", "PatroniCluster", "Guestbook", "VoteApp"];
    let mut before = Vec::new();
    for k in kinds {
        before.push(reconciles(&op, k).await);
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    for (k, b) in kinds.iter().zip(&before) {
        let runs = reconciles(&op, k).await - b;
        println!("figure: {k}: {runs} reconciles in a minute while waiting for fixes");
        assert!(
            runs <= MAX_PER_MINUTE,
            "{k}: {runs} reconciles in a minute: a hot loop\n{}",
            op.log_text()
        );
    }
    let mut expected = vec![
        ("key", "SecretKeyNotFound"),
        ("class", "StorageClassNotFound"),
        ("restore", "BackupClaimNotFound"),
        ("pending", "ClaimPending"),
        ("gb", "Unschedulable"),
    ];
    if pull {
        expected.push(("va", "ImagePullFailed"));
    }
    for (name, reason) in &expected {
        let w = warnings(&c, n, name).await;
        let same = w.iter().filter(|r| r == reason).count();
        assert_eq!(same, 1, "{name}: one Warning event {reason}, got {w:?}");
    }

    // Fixes: the key added, the class created, the provisioner replaced (a class's provisioner
    // cannot change: it is recreated), the bootstrap dropped, the tier placed on real nodes, an
    // image that pulls.
    let patch = serde_json::json!({"stringData": {"password": "s3cret-for-tests"}});
    secrets
        .patch("key-auth", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("add the key");
    classes
        .create(&c, &missing, "kubernetes.io/host-path")
        .await;
    Classes::delete(&c, &unprovisioned).await;
    classes
        .create(&c, &unprovisioned, "kubernetes.io/host-path")
        .await;
    apply_yaml(&c, n, &yaml("PatroniCluster", "restore", "  members: 1\n"))
        .await
        .expect("bootstrap dropped");
    apply_yaml(
        &c,
        n,
        &yaml(
            "Guestbook",
            "gb",
            // Placed on nodes that exist. (Dropping `scheduling` altogether is not carried to
            // the Deployment: the apply path skips a desired object its live one contains.)
            "  frontend: {image: registry.local/gbo-e2e/frontend:1, replicas: 1}\n  scheduling:\n    nodeSelector: {kubernetes.io/os: linux}\n  redis: {name: gb-store}\n",
        ),
    )
    .await
    .expect("placed where nodes are");
    if pull {
        let va: Api<DynamicObject> =
            Api::namespaced_with(c.clone(), n, &crate::support::api_resource("VoteApp"));
        let patch =
            serde_json::json!({"spec": {"vote": {"image": "registry.local/gbo-e2e/vote:2"}}});
        va.patch("va", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("an image that pulls");
    }
    let started = std::time::Instant::now();
    let key = recovers(&c, n, "RedisSentinel", "key", &["SecretKeyNotFound"]).await;
    let restore = recovers(&c, n, "PatroniCluster", "restore", &["BackupClaimNotFound"]).await;
    let gb = recovers(&c, n, "Guestbook", "gb", &["Unschedulable"]).await;
    let va = match pull {
        true => recovers(&c, n, "VoteApp", "va", &["ImagePullFailed"]).await,
        false => String::new(),
    };
    let pending = recovers(
        &c,
        n,
        "RedisSentinel",
        "pending",
        &["ClaimPending", "Unschedulable"],
    )
    .await;
    let class = recovers(
        &c,
        n,
        "RedisSentinel",
        "class",
        &["StorageClassNotFound", "ClaimPending", "Unschedulable"],
    )
    .await;
    println!(
        "figure: every fix taken up within {:.0?}",
        started.elapsed()
    );
    assert!(
        gb.starts_with("WaitingForStore"),
        "the Guestbook waits for its store once placed: {gb}"
    );
    for (what, now) in [
        ("key", key),
        ("restore", restore),
        ("gb", gb),
        ("va", va),
        ("pending", pending),
        ("class", class),
    ] {
        println!("  {what}: now {now}");
    }
    drop(op);
    for name in [missing, unprovisioned] {
        Classes::delete(&c, &name).await;
    }
}

/// A backup schedule in a time zone the CronJob API does not know: the CronJob is refused
/// with the server's words in status, while the rest of the store still works (a master is
/// elected), with one event and no hot loop; a known zone clears it.
#[tokio::test]
async fn a_refused_backup_schedule_is_named_while_the_store_still_works() {
    if require(&[Capability::Runner]).await.is_none() {
        return;
    }
    let c = client().await;
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, "invalid-tz").await;
    let n = &ns.name;
    let op = Operator::start(n, "solo", &["--leader-election=false"]);
    let spec = |zone: &str| {
        yaml(
            "RedisSentinel",
            "tz",
            &format!(
                "  redis: {{replicas: 1}}\n  sentinel: {{replicas: 3}}\n  backup: {{schedule: '0 * * * *', timeZone: {zone}}}\n"
            ),
        )
    };
    apply_yaml(&c, n, &spec("Mars/Olympus_Mons"))
        .await
        .expect("the schema accepts any zone name");
    // The server's words: "unknown time zone Mars/Olympus_Mons".
    let parts = ["CronJob/tz-", "unknown time zone Mars/Olympus_Mons"];
    ends(
        &c,
        n,
        ("RedisSentinel", "tz"),
        "Stalled",
        "ChildRejected",
        &parts,
    )
    .await;
    let rs: Api<DynamicObject> =
        Api::namespaced_with(c.clone(), n, &crate::support::api_resource("RedisSentinel"));
    // Settled: a master, and every Sentinel monitoring it (pod events stop; what remains is
    // the retry of the refused CronJob).
    let master = wait_for("a master elected beside the refusal", RECOVER, || async {
        let o = rs.get("tz").await.ok()?;
        let status = o.data.get("status")?;
        let pod = status.get("master")?.get("pod")?.as_str()?;
        let agreeing = status.get("sentinelsAgreeing")?.as_i64()?;
        (agreeing == 3).then(|| pod.to_string())
    })
    .await;
    println!("master {master} elected, 3 Sentinels agreeing, while the CronJob is refused");
    let before = reconciles(&op, "RedisSentinel").await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let runs = reconciles(&op, "RedisSentinel").await - before;
    println!("figure: RedisSentinel: {runs} reconciles in a minute with a refused CronJob");
    assert!(
        runs <= MAX_PER_MINUTE,
        "{runs} reconciles in a minute: a hot loop\n{}",
        op.log_text()
    );
    let still = condition(&c, n, "RedisSentinel", "tz", "Stalled").await;
    assert!(
        still.as_ref().is_some_and(|s| s.1 == "ChildRejected"),
        "still Stalled on the CronJob: {still:?}"
    );
    let w = warnings(&c, n, "tz").await;
    let refused = w.iter().filter(|r| *r == "ChildRejected").count();
    assert_eq!(refused, 1, "one Warning event for the refusal: {w:?}");

    apply_yaml(&c, n, &spec("Europe/Berlin"))
        .await
        .expect("a known zone");
    wait_for("Ready once the zone is known", RECOVER, || async {
        let stalled = condition(&c, n, "RedisSentinel", "tz", "Stalled").await;
        let (ready, ..) = condition(&c, n, "RedisSentinel", "tz", "Ready").await?;
        (stalled.is_none() && ready == "True").then_some(())
    })
    .await;
}

/// Changes the operator cannot carry out yet (a claim that grows, a PostgreSQL major upgrade)
/// end `Stalled` naming the field and what it needs — never a Ready status over a reconcile
/// that fails on every run — and a revert brings the store back to Ready.
#[tokio::test]
async fn changes_that_need_a_procedure_stall_naming_the_field() {
    if require(&[Capability::Runner]).await.is_none() {
        return;
    }
    let c = client().await;
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, "procedure").await;
    let n = &ns.name;
    let op = Operator::start(n, "solo", &["--leader-election=false"]);
    let redis = |size: &str| {
        yaml(
            "RedisSentinel",
            "grows",
            &format!(
                "  redis:\n    replicas: 1\n    storage: {{size: {size}}}\n  sentinel: {{replicas: 3}}\n"
            ),
        )
    };
    let postgres = |version: u8| {
        yaml(
            "PatroniCluster",
            "upgrades",
            &format!("  members: 1\n  postgresql: {{version: {version}}}\n"),
        )
    };
    apply_yaml(&c, n, &redis("1Gi")).await.expect("redis");
    apply_yaml(&c, n, &postgres(17)).await.expect("postgres");
    let ready = |kind: &'static str, name: &'static str| {
        let c = c.clone();
        async move {
            wait_for(&format!("{kind} {name} Ready"), RECOVER, || async {
                let (ready, ..) = condition(&c, n, kind, name, "Ready").await?;
                (ready == "True").then_some(())
            })
            .await
        }
    };
    ready("RedisSentinel", "grows").await;
    ready("PatroniCluster", "upgrades").await;

    apply_yaml(&c, n, &redis("2Gi"))
        .await
        .expect("growth passes admission");
    apply_yaml(&c, n, &postgres(18))
        .await
        .expect("an upgrade passes admission");
    let grows = [
        "spec.redis.storage.size: 2Gi is larger than the 1Gi",
        "StatefulSet grows-redis",
        "--cascade=orphan",
    ];
    let object = ("RedisSentinel", "grows");
    ends(
        &c,
        n,
        object,
        "Stalled",
        "StorageGrowthNotImplemented",
        &grows,
    )
    .await;
    let upgrade = [
        "spec.postgresql.version: 18 but the cluster's data is PostgreSQL 17",
        "not implemented",
    ];
    let object = ("PatroniCluster", "upgrades");
    ends(
        &c,
        n,
        object,
        "Stalled",
        "MajorUpgradeNotImplemented",
        &upgrade,
    )
    .await;
    for (name, reason) in [
        ("grows", "StorageGrowthNotImplemented"),
        ("upgrades", "MajorUpgradeNotImplemented"),
    ] {
        let w = warnings(&c, n, name).await;
        let same = w.iter().filter(|r| *r == reason).count();
        assert_eq!(same, 1, "{name}: one Warning event {reason}, got {w:?}");
    }
    op.assert_no_reconcile_errors().await;

    apply_yaml(&c, n, &redis("1Gi")).await.expect("reverted");
    apply_yaml(&c, n, &postgres(17)).await.expect("reverted");
    ready("RedisSentinel", "grows").await;
    ready("PatroniCluster", "upgrades").await;
}
