//! Drift that breaks a store is put back and said: one more key in the selector of a
//! PatroniCluster's primary Service (set by another field manager, as `kubectl edit` does)
//! makes it select nothing; the operator compares selectors for equality, applies its own
//! again within a reconcile and records a Warning event naming the field and the manager.

use crate::real::endpoints;
use crate::support::{
    Capability, Operator, TestNamespace, apply_yaml, client, condition, install_crds, require,
    wait_for,
};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use std::time::Duration;

const DB: &str = "apiVersion: guestbook-operator.dev/v1alpha1\nkind: PatroniCluster\nmetadata: {name: db}\nspec:\n  members: 1\n  storage: {size: 200Mi}\n  patroni: {ttl: 20, loopWait: 2, retryTimeout: 5}\n";

#[tokio::test]
async fn a_selector_widened_by_another_manager_is_put_back_and_named() {
    if require(&[Capability::Runner]).await.is_none() {
        return;
    }
    let c = client().await;
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, "drift").await;
    let n = &ns.name;
    let op = Operator::start(n, "solo", &["--leader-election=false"]);
    apply_yaml(&c, n, DB)
        .await
        .expect("PatroniCluster accepted");
    wait_for("db Ready", Duration::from_secs(180), || async {
        let (ready, ..) = condition(&c, n, "PatroniCluster", "db", "Ready").await?;
        (ready == "True").then_some(())
    })
    .await;
    let primary = endpoints(&c, n, "db").await;
    assert_eq!(primary.len(), 1, "the primary behind Service db");

    let services: Api<Service> = Api::namespaced(c.clone(), n);
    let edit = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..PatchParams::default()
    };
    let widen = serde_json::json!({"spec": {"selector": {"tier": "gold"}}});
    services
        .patch("db", &edit, &Patch::Merge(&widen))
        .await
        .expect("widen the selector");
    wait_for(
        "the selector put back and the primary behind db again",
        Duration::from_secs(30),
        || async {
            let s = services.get("db").await.ok()?;
            let selector = s.spec?.selector?;
            let back = !selector.contains_key("tier");
            (back && endpoints(&c, n, "db").await == primary).then_some(())
        },
    )
    .await;
    let events: Api<Event> = Api::namespaced(c.clone(), n);
    let note = wait_for("a DriftRepaired event", Duration::from_secs(30), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find_map(|e| {
            let about_db = e.regarding.as_ref()?.name.as_deref() == Some("db");
            (about_db && e.reason.as_deref() == Some("DriftRepaired")).then_some(e.note?)
        })
    })
    .await;
    assert!(
        note.contains("Service/db")
            && note.contains(".spec.selector.tier")
            && note.contains("kubectl-edit"),
        "{note}"
    );
    op.assert_no_reconcile_errors().await;
}
