//! Pure: the fixed-name Services the stock images hard-code (`redis`, `db`, `redis-leader`,
//! `redis-follower`). Each selects the store's pods on the role label the store's controller
//! maintains, so it follows a failover the moment the label moves — no polling of ours.

use crate::k8s::children::{Child, ChildKind};
use crate::k8s::factory::Factory;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// A Service `name` on `port` → the store pods' named port `target`, selecting `selector`.
pub fn service(
    f: &Factory,
    name: &str,
    component: &str,
    selector: BTreeMap<String, String>,
    port: i32,
    target: &str,
) -> crate::error::Result<Child> {
    let svc = Service {
        metadata: f.object_meta(name, component),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some(target.into()),
                port,
                target_port: Some(IntOrString::String(target.into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    f.typed(ChildKind::Service, &svc)
}

/// `Some(stalled)` when one of the fixed Service `names` exists but is not this app's: another
/// owner would rewrite it each time the app does (a PatroniCluster named `db` owns a Service
/// `db`, say). Our own cache answers for the app's Services; only names missing from it are
/// looked up.
pub async fn taken(
    client: &kube::Client,
    cache: &crate::k8s::cache::ChildCache,
    owner: &crate::k8s::owner::Owner,
    names: &[&str],
) -> crate::error::Result<Option<crate::k8s::conditions::Health>> {
    let ns = &owner.namespace;
    let api: kube::Api<Service> = kube::Api::namespaced(client.clone(), ns);
    for name in names {
        if cache.get(ChildKind::Service, ns, name).is_some() {
            continue;
        }
        // A list by name: the operator lists Services anyway (its child watch), and needs no
        // `get` grant for this.
        let lp = kube::api::ListParams::default().fields(&format!("metadata.name={name}"));
        let Some(svc) = api.list_metadata(&lp).await?.items.into_iter().next() else {
            continue;
        };
        let refs = svc.metadata.owner_references.unwrap_or_default();
        if refs.iter().any(|r| r.uid == owner.uid) {
            continue;
        }
        let holder = refs
            .iter()
            .find(|r| r.controller == Some(true))
            .map(|r| format!("{} \"{}\"", r.kind, r.name))
            .unwrap_or_else(|| "no controller of ours".into());
        return Ok(Some(crate::k8s::conditions::Health::stalled(
            "ServiceNameTaken",
            format!(
                "Service \"{name}\" already exists in namespace \"{ns}\" and belongs to {holder}; the app's images need that name: rename or remove it, or run the app in another namespace"
            ),
        )));
    }
    Ok(None)
}
