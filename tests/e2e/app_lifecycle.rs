//! An app's life beyond the happy path: workers that follow the queue, a tier handed to its
//! autoscaler and back without losing pods or restarting them, a store reference changed
//! (Services rewired, the old owned store released with its data, never deleted), the app
//! deleted (what it owns goes, what it references stays).

use crate::apps::wait_ready;
use crate::support::{
    Capability, Operator, TestNamespace, apply_yaml, client, install_crds, require, wait_for,
};
use guestbook_operator::crd::{RedisSentinel, VoteApp};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

async fn deployment_replicas(c: &Client, ns: &str, name: &str) -> Option<i32> {
    let d = Api::<Deployment>::namespaced(c.clone(), ns)
        .get(name)
        .await
        .ok()?;
    d.spec?.replicas
}

#[tokio::test]
async fn workers_follow_the_queue_up_and_back_down() {
    let c = client().await;
    if require(&[Capability::Runner, Capability::ClusterDns])
        .await
        .is_none()
    {
        return;
    }
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, "queue-scaling").await;
    let op = Operator::start(&ns.name, "solo", &["--leader-election=false"]);
    let app = r#"apiVersion: guestbook-operator.dev/v1alpha1
kind: VoteApp
metadata: {name: polls}
spec:
  worker:
    autoscaling: {minReplicas: 0, maxReplicas: 3, targetQueueLength: 5}
  redis:
    spec:
      redis: {replicas: 3}
      sentinel: {replicas: 3}
      auth: {enabled: false}
  postgres:
    spec:
      members: 1
      auth: {stockAppCredentials: true}
"#;
    apply_yaml(&c, &ns.name, app).await.expect("the app");
    wait_ready(&c, &ns.name, "VoteApp", "polls", Duration::from_secs(300)).await;
    assert_eq!(
        deployment_replicas(&c, &ns.name, "polls-worker").await,
        Some(0),
        "an empty queue needs no worker"
    );

    // A backlog: 40 votes queued straight into the master, as 40 vote pods would.
    let master = Api::<RedisSentinel>::namespaced(c.clone(), &ns.name)
        .get("polls-redis")
        .await
        .ok()
        .and_then(|r| r.status?.master?.address)
        .expect("the master's address");
    let client = redis::Client::open(format!("redis://{master}:6379/")).expect("redis client");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the master");
    for i in 0..40 {
        let vote = serde_json::json!({"voter_id": format!("backlog-{i}"), "vote": "a"}).to_string();
        let _: i64 = redis::cmd("RPUSH")
            .arg("votes")
            .arg(vote)
            .query_async(&mut con)
            .await
            .expect("rpush");
    }
    let t0 = Instant::now();
    wait_for("workers raised to the maximum", T, || async {
        (deployment_replicas(&c, &ns.name, "polls-worker").await == Some(3)).then_some(())
    })
    .await;
    println!(
        "figure: 40 queued votes → 3 workers after {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let apps: Api<VoteApp> = Api::namespaced(c.clone(), &ns.name);
    wait_for(
        "the queue drained and the workers back to 0",
        Duration::from_secs(120),
        || async {
            let queue = apps.get("polls").await.ok()?.status?.queue_length?;
            let workers = deployment_replicas(&c, &ns.name, "polls-worker").await?;
            (queue == 0 && workers == 0).then_some(())
        },
    )
    .await;
    println!(
        "figure: queue empty and 0 workers {:.1}s after the backlog",
        t0.elapsed().as_secs_f64()
    );
    op.assert_no_reconcile_errors().await;
}

#[tokio::test]
async fn a_tier_goes_to_its_autoscaler_and_back_without_losing_or_restarting_pods() {
    let c = client().await;
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, "hpa-handoff").await;
    let op = Operator::start(&ns.name, "solo", &["--leader-election=false"]);
    // A custom image: simulated pods are enough to watch replicas.
    let gb = r#"apiVersion: guestbook-operator.dev/v1alpha1
kind: Guestbook
metadata: {name: book}
spec:
  frontend: {replicas: 3, image: example.org/my-frontend:1}
  redis: {name: cache}
"#;
    apply_yaml(&c, &ns.name, gb).await.expect("the app");
    wait_for("3 frontend replicas", T, || async {
        (deployment_replicas(&c, &ns.name, "book-frontend").await == Some(3)).then_some(())
    })
    .await;
    let rs_names = || async {
        let mut n: Vec<String> = Api::<ReplicaSet>::namespaced(c.clone(), &ns.name)
            .list(&ListParams::default())
            .await
            .map(|l| l.items.iter().map(|r| r.name_any()).collect())
            .unwrap_or_default();
        n.sort();
        n
    };
    let before = rs_names().await;

    let with_hpa = gb.replace(
        "{replicas: 3, image",
        "{replicas: 3, autoscaling: {minReplicas: 2, maxReplicas: 5}, image",
    );
    apply_yaml(&c, &ns.name, &with_hpa)
        .await
        .expect("autoscaling on");
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(c.clone(), &ns.name);
    wait_for("the autoscaler", T, || async {
        hpas.get_opt("book-frontend").await.ok().flatten()
    })
    .await;
    // Through the hand-over the count never falls back to the default of 1.
    let watch_until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < watch_until {
        let n = deployment_replicas(&c, &ns.name, "book-frontend").await;
        assert!(
            n.is_some_and(|n| n >= 2),
            "replicas fell to {n:?} during the hand-over"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The autoscaler (here: anyone using the scale subresource) owns the count now.
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    let scale = serde_json::json!({"spec": {"replicas": 4}});
    deployments
        .patch_scale(
            "book-frontend",
            &PatchParams::default(),
            &Patch::Merge(&scale),
        )
        .await
        .expect("scale to 4");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        deployment_replicas(&c, &ns.name, "book-frontend").await,
        Some(4),
        "the operator must not fight the autoscaler"
    );

    apply_yaml(&c, &ns.name, gb).await.expect("autoscaling off");
    wait_for("the spec's count back, the autoscaler gone", T, || async {
        let gone = hpas.get_opt("book-frontend").await.ok()?.is_none();
        (gone && deployment_replicas(&c, &ns.name, "book-frontend").await == Some(3)).then_some(())
    })
    .await;
    assert_eq!(
        rs_names().await,
        before,
        "no new ReplicaSet: the pods were never restarted"
    );
    op.assert_no_reconcile_errors().await;
}

#[tokio::test]
async fn a_changed_store_reference_rewires_and_deletion_keeps_what_is_not_owned() {
    let c = client().await;
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, "rewire").await;
    let op = Operator::start(&ns.name, "solo", &["--leader-election=false"]);
    let other = "apiVersion: guestbook-operator.dev/v1alpha1\nkind: RedisSentinel\nmetadata: {name: other}\nspec: {auth: {enabled: false}}\n";
    apply_yaml(&c, &ns.name, other)
        .await
        .expect("another store");
    let inline = "apiVersion: guestbook-operator.dev/v1alpha1\nkind: Guestbook\nmetadata: {name: book}\nspec:\n  redis: {spec: {auth: {enabled: false}}}\n";
    apply_yaml(&c, &ns.name, inline).await.expect("the app");
    let stores: Api<RedisSentinel> = Api::namespaced(c.clone(), &ns.name);
    let owned = wait_for("the owned store", T, || async {
        stores.get_opt("book-redis").await.ok().flatten()
    })
    .await;
    assert_eq!(
        owned.owner_references().first().map(|r| r.kind.as_str()),
        Some("Guestbook")
    );
    let services: Api<Service> = Api::namespaced(c.clone(), &ns.name);
    let selects = |svc: &'static str, store: &'static str| {
        let services = services.clone();
        async move {
            let s = services.get(svc).await.ok()?;
            let sel = s.spec?.selector?;
            (sel.get("app.kubernetes.io/instance").map(String::as_str) == Some(store)).then_some(())
        }
    };
    wait_for("redis-leader on the owned store", T, || {
        selects("redis-leader", "book-redis")
    })
    .await;

    let referenced = inline.replace(
        "redis: {spec: {auth: {enabled: false}}}",
        "redis: {name: other}",
    );
    apply_yaml(&c, &ns.name, &referenced)
        .await
        .expect("switch to a reference");
    wait_for("redis-leader rewired", T, || {
        selects("redis-leader", "other")
    })
    .await;
    wait_for("redis-follower rewired", T, || {
        selects("redis-follower", "other")
    })
    .await;
    let released = wait_for("the old store released, not deleted", T, || async {
        let s = stores.get_opt("book-redis").await.ok()??;
        s.owner_references().is_empty().then_some(s)
    })
    .await;
    assert!(released.metadata.deletion_timestamp.is_none());

    Api::<guestbook_operator::crd::Guestbook>::namespaced(c.clone(), &ns.name)
        .delete("book", &DeleteParams::background())
        .await
        .expect("delete the app");
    wait_for("the app's children garbage-collected", T, || async {
        let d = Api::<Deployment>::namespaced(c.clone(), &ns.name)
            .get_opt("book-frontend")
            .await
            .ok()?;
        let s = services.get_opt("redis-leader").await.ok()?;
        (d.is_none() && s.is_none()).then_some(())
    })
    .await;
    for keep in ["other", "book-redis"] {
        let s = stores
            .get_opt(keep)
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("{keep} deleted"));
        assert!(
            s.metadata.deletion_timestamp.is_none(),
            "{keep} is being deleted"
        );
    }
    op.assert_no_reconcile_errors().await;
}

#[tokio::test]
async fn a_fixed_service_name_held_by_another_owner_stalls_the_app() {
    let c = client().await;
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, "name-taken").await;
    let op = Operator::start(&ns.name, "solo", &["--leader-election=false"]);
    // A PatroniCluster named `db` owns a primary Service named `db`: the name the stock images need.
    let store = "apiVersion: guestbook-operator.dev/v1alpha1\nkind: PatroniCluster\nmetadata: {name: db}\nspec: {members: 1, auth: {stockAppCredentials: true}}\n";
    apply_yaml(&c, &ns.name, store).await.expect("the store");
    let services: Api<Service> = Api::namespaced(c.clone(), &ns.name);
    wait_for("the store's Service db", T, || async {
        services.get_opt("db").await.ok().flatten()
    })
    .await;
    let app = "apiVersion: guestbook-operator.dev/v1alpha1\nkind: VoteApp\nmetadata: {name: polls}\nspec:\n  redis: {name: queue}\n  postgres: {name: db}\n";
    apply_yaml(&c, &ns.name, app).await.expect("the app");
    let (status, reason, message) = wait_for("the app Stalled", T, || async {
        crate::support::condition(&c, &ns.name, "VoteApp", "polls", "Stalled").await
    })
    .await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "ServiceNameTaken")
    );
    assert!(message.contains("PatroniCluster \"db\""), "{message}");
    let owners: Vec<String> = services
        .get("db")
        .await
        .expect("db")
        .owner_references()
        .iter()
        .map(|r| r.kind.clone())
        .collect();
    assert_eq!(
        owners,
        ["PatroniCluster"],
        "the app did not take the Service over"
    );
    drop(op);
}
