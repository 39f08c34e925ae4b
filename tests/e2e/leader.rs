//! Two replicas: one acts, the other waits, and takes over when the first stops.

use crate::support::{
    Operator, TestNamespace, apply_yaml, client, install_crds, kstatus, wait_for,
};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use std::time::Duration;

const LEASE: &str = "guestbook-operator";

async fn holder(c: &kube::Client, ns: &str) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(c.clone(), ns);
    api.get(LEASE).await.ok()?.spec?.holder_identity
}

#[tokio::test]
async fn a_second_replica_stays_passive_then_takes_over() {
    let c = client().await;
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, "leader").await;
    let mut first = Operator::start(&ns.name, "first", &[]);
    wait_for("first to lead", Duration::from_secs(30), || async {
        (holder(&c, &ns.name).await.as_deref() == Some("first")).then_some(())
    })
    .await;
    let second = Operator::start(&ns.name, "second", &[]);
    wait_for(
        "second to report standby",
        Duration::from_secs(30),
        || async {
            let (code, body) = second.get("/readyz").await?;
            (code == 200 && body == "ok: standby").then_some(())
        },
    )
    .await;

    // Work arriving now is done by the leader only, for several lease periods.
    apply_yaml(&c, &ns.name, "apiVersion: guestbook-operator.dev/v1alpha1\nkind: RedisSentinel\nmetadata: {name: cache}\nspec: {}\n")
        .await
        .expect("accepted");
    wait_for("the leader to reconcile", Duration::from_secs(30), || {
        kstatus(&c, &ns.name, "RedisSentinel", "cache")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(holder(&c, &ns.name).await.as_deref(), Some("first"));
    assert_eq!(second.metric("guestbook_operator_leader", "").await, 0.0);
    assert_eq!(
        second
            .metric("guestbook_operator_reconciles_total", "")
            .await,
        0.0,
        "the standby reconciled"
    );
    assert_eq!(first.metric("guestbook_operator_leader", "").await, 1.0);
    assert!(
        first
            .metric("guestbook_operator_reconciles_total", "")
            .await
            >= 1.0
    );

    // The leader stops cleanly and gives the Lease up; the standby takes over at once.
    let status = first.terminate();
    assert!(
        status.success(),
        "the leader should exit cleanly on SIGTERM: {status:?}\n{}",
        first.log_text()
    );
    wait_for("second to lead", Duration::from_secs(10), || async {
        let (code, body) = second.get("/readyz").await?;
        (holder(&c, &ns.name).await.as_deref() == Some("second")
            && code == 200
            && body.starts_with("ok: leader"))
        .then_some(())
    })
    .await;
}
