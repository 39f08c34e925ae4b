//! Gateway API HTTPRoutes for app tiers. k8s-openapi has no Gateway API types and the API is
//! an add-on a cluster may lack, so routes are built as JSON and applied outside the watched
//! child kinds: only where the API is served, compared with the live route first (a no-op
//! reconcile writes nothing), deleted when no longer wanted.

use crate::crd::common::HttpRouteSpec;
use crate::error::Result;
use crate::k8s::FIELD_MANAGER;
use crate::k8s::apply::difference;
use crate::k8s::factory::Factory;
use crate::k8s::labels;
use crate::k8s::owner::Owner;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const GROUP: &str = "gateway.networking.k8s.io";
const VERSION: &str = "v1";

fn resource() -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: VERSION.into(),
        api_version: format!("{GROUP}/{VERSION}"),
        kind: "HTTPRoute".into(),
        plural: "httproutes".into(),
    }
}

/// Pure: the HTTPRoute sending `spec` to Service `backend` on `port`.
pub fn build(
    f: &Factory,
    name: &str,
    component: &str,
    spec: &HttpRouteSpec,
    backend: &str,
    port: i32,
) -> Value {
    let parents: Vec<Value> = spec
        .parent_refs
        .iter()
        .map(|p| {
            let mut r = json!({"group": GROUP, "kind": "Gateway", "name": p.name});
            if let Some(ns) = &p.namespace {
                r["namespace"] = json!(ns);
            }
            if let Some(s) = &p.section_name {
                r["sectionName"] = json!(s);
            }
            r
        })
        .collect();
    let mut route_spec = json!({
        "parentRefs": parents,
        "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": spec.path}}],
            "backendRefs": [{"group": "", "kind": "Service", "name": backend, "port": port, "weight": 1}],
        }],
    });
    if !spec.hostnames.is_empty() {
        route_spec["hostnames"] = json!(spec.hostnames);
    }
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "HTTPRoute",
        "metadata": f.object_meta(name, component),
        "spec": route_spec,
    })
}

/// The health of an app whose spec asks for routes where the Gateway API is not served;
/// `fields` names the spec fields that ask.
pub fn api_missing(fields: &str) -> crate::k8s::conditions::Health {
    crate::k8s::conditions::Health::stalled(
        "GatewayAPIMissing",
        format!(
            "{fields}: this cluster does not serve {GROUP}/{VERSION} HTTPRoutes; install the Gateway API CRDs or remove {fields}"
        ),
    )
}

/// What happened to the routes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Routes {
    /// Routes are wanted but the cluster does not serve the Gateway API.
    pub api_missing: bool,
    pub written: Vec<String>,
    pub deleted: Vec<String>,
}

async fn served(client: &Client) -> Result<bool> {
    let groups = client.list_api_groups().await?;
    Ok(groups
        .groups
        .iter()
        .any(|g| g.name == GROUP && g.versions.iter().any(|v| v.version == VERSION)))
}

/// Brings the owner's routes to `desired` (name → object), deleting owned routes not desired.
pub async fn sync(client: &Client, owner: &Owner, desired: &[(String, Value)]) -> Result<Routes> {
    let mut out = Routes::default();
    if !served(client).await? {
        out.api_missing = !desired.is_empty();
        return Ok(out);
    }
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &owner.namespace, &resource());
    let params = PatchParams::apply(FIELD_MANAGER)
        .force()
        .validation_strict();
    for (name, route) in desired {
        let live = api.get_opt(name).await?;
        if let Some(live) = &live {
            let live =
                serde_json::to_value(live).map_err(|source| crate::error::Error::Serialize {
                    what: name.clone(),
                    source,
                })?;
            let mut ours = route.clone();
            if let Some(m) = ours.as_object_mut() {
                m.remove("apiVersion");
                m.remove("kind");
            }
            if difference(&ours, &live).is_none() {
                continue;
            }
        }
        api.patch(name, &params, &Patch::Apply(route)).await?;
        out.written.push(name.clone());
    }
    let selector = labels::owned_by(owner.kind, &owner.name);
    let lp = kube::api::ListParams::default().labels(&selector);
    for live in api.list_metadata(&lp).await?.items {
        let name = live.metadata.name.clone().unwrap_or_default();
        let ours = live
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.uid == owner.uid);
        if ours && !desired.iter().any(|(n, _)| *n == name) {
            api.delete(&name, &DeleteParams::default()).await?;
            out.deleted.push(name);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Guestbook;
    use crate::k8s::conditions::Health;

    /// A client for an API server that serves only `/apis`, listing `groups`: any other
    /// request fails the test's expectations with a 404.
    fn api_server(groups: &[&str]) -> Client {
        let list = json!({
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": groups.iter().map(|g| json!({
                "name": g,
                "versions": [{"groupVersion": format!("{g}/v1"), "version": "v1"}],
                "preferredVersion": {"groupVersion": format!("{g}/v1"), "version": "v1"},
            })).collect::<Vec<_>>(),
        });
        let app = axum::Router::new().route(
            "/apis",
            axum::routing::get(move || {
                let list = list.to_string();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        list,
                    )
                }
            }),
        );
        Client::new(app, "default")
    }

    fn owner() -> Owner {
        let gb: Guestbook = serde_json::from_value(json!({
            "apiVersion": "guestbook-operator.dev/v1alpha1",
            "kind": "Guestbook",
            "metadata": {"name": "shop", "namespace": "web", "uid": "u-1"},
            "spec": {"redis": {"name": "cache"}},
        }))
        .expect("a Guestbook");
        Owner::of(&gb, "Guestbook").expect("an owner")
    }

    #[tokio::test]
    async fn without_the_gateway_api_a_wanted_route_stalls_the_app_and_nothing_is_written() {
        let client = api_server(&["apps", "guestbook-operator.dev"]);
        let route = json!({"kind": "HTTPRoute", "metadata": {"name": "shop"}});
        let out = sync(&client, &owner(), &[("shop".into(), route)])
            .await
            .expect("only the group list is read");
        assert_eq!(
            out,
            Routes {
                api_missing: true,
                ..Routes::default()
            }
        );
        match api_missing("spec.httpRoute") {
            Health::Stalled { reason, message } => {
                assert_eq!(reason, "GatewayAPIMissing");
                assert!(message.starts_with("spec.httpRoute: "), "{message}");
            }
            other => panic!("not stalled: {other:?}"),
        }
        // An app without routes is fine on such a cluster.
        let out = sync(&client, &owner(), &[]).await.expect("no route wanted");
        assert_eq!(out, Routes::default());
    }
}
