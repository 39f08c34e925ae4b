//! Gateway API HTTPRoutes on a cluster that serves them (the local cluster installs the
//! standard channel's CRDs in `e2e/cluster up`): a Guestbook's `spec.httpRoute` becomes the
//! HTTPRoute `render` prints, accepted by the API server's own schema of the route (the
//! operator applies it with strict field validation), pointing at the app's entry Service —
//! the proxy's once there is a proxy — and removing `spec.httpRoute` deletes it. Where the API
//! is not served the app is `Stalled: GatewayAPIMissing`; that path is a unit test of the
//! route module (src/controllers/apps/route.rs), as installing or removing cluster-wide CRDs
//! here would change what every other test on the cluster sees.

use crate::support::{
    MANAGER, Operator, TestNamespace, apply_yaml, client, condition, install_crds, kstatus, repo,
    skip, wait_for,
};
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, Client};
use std::time::{Duration, Instant};

const GROUP: &str = "gateway.networking.k8s.io";

fn routes() -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: "v1".into(),
        api_version: format!("{GROUP}/v1"),
        kind: "HTTPRoute".into(),
        plural: "httproutes".into(),
    }
}

async fn served(c: &Client) -> bool {
    c.list_api_groups().await.is_ok_and(|g| {
        g.groups
            .iter()
            .any(|g| g.name == GROUP && g.versions.iter().any(|v| v.version == "v1"))
    })
}

/// The Gateway API, or `false` when this cluster lacks it. A cluster without it gets the CRDs
/// the `e2e/cluster build` cache holds (`GBO_GATEWAY_API_CRDS`), if any.
async fn gateway_api(c: &Client) -> bool {
    if served(c).await {
        return true;
    }
    let Some(dir) = std::env::var_os("GBO_GATEWAY_API_CRDS") else {
        return false;
    };
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(c.clone());
    let mut names = Vec::new();
    for e in std::fs::read_dir(&dir)
        .expect("GBO_GATEWAY_API_CRDS")
        .flatten()
    {
        let text = std::fs::read_to_string(e.path()).expect("a CRD file");
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v: serde_json::Value = serde::Deserialize::deserialize(doc).expect("yaml");
            if v["kind"] != "CustomResourceDefinition" {
                continue;
            }
            let crd: CustomResourceDefinition = serde_json::from_value(v).expect("a CRD");
            let name = crd.metadata.name.clone().expect("named");
            api.patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&crd),
            )
            .await
            .unwrap_or_else(|e| panic!("installing CRD {name}: {e}"));
            names.push(name);
        }
    }
    wait_for(
        "the Gateway API served",
        Duration::from_secs(60),
        || async { served(c).await.then_some(()) },
    )
    .await;
    println!("installed the Gateway API CRDs from {dir:?}: {names:?}");
    true
}

fn guestbook(route: bool, proxy: bool) -> String {
    let mut y = String::from(
        "apiVersion: guestbook-operator.dev/v1alpha1\nkind: Guestbook\nmetadata: {name: shop}\nspec:\n  frontend: {replicas: 0}\n  redis: {name: cache}\n",
    );
    if proxy {
        // An image the pod runner does not run: kwok simulates the proxy's pod.
        y += "  proxy: {image: registry.example/edge-proxy:1.0, replicas: 1}\n";
    }
    if route {
        y += "  httpRoute:\n    parentRefs: [{name: public, namespace: gateways, sectionName: http}]\n    hostnames: [shop.example.org]\n    path: /shop\n";
    }
    y
}

/// The HTTPRoute `guestbook-operator render` prints for `yaml` in `ns`.
fn rendered_route(ns: &str, yaml: &str) -> serde_json::Value {
    let dir = repo(&format!("target/e2e-logs/routes-{ns}"));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let file = dir.join("guestbook.yaml");
    std::fs::write(&file, yaml).expect("write the fixture");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_guestbook-operator"))
        .args(["render", "-f"])
        .arg(&file)
        .args(["-n", ns])
        .output()
        .expect("run render");
    assert!(
        out.status.success(),
        "render: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("a YAML document"))
        .find(|v: &serde_json::Value| v["kind"] == "HTTPRoute")
        .expect("render prints an HTTPRoute")
}

/// Waits until the live route contains what render prints (owner uids aside).
async fn route_as_rendered(
    api: &Api<DynamicObject>,
    ns: &str,
    yaml: &str,
    what: &str,
) -> serde_json::Value {
    let mut want = rendered_route(ns, yaml);
    if let Some(m) = want.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    }
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(live)) = api.get_opt("shop").await {
            let live = serde_json::to_value(&live).expect("json");
            let mut want = want.clone();
            if let Some(refs) = want["metadata"]["ownerReferences"].as_array_mut() {
                for (i, r) in refs.iter_mut().enumerate() {
                    r["uid"] = live["metadata"]["ownerReferences"][i]["uid"].clone();
                }
            }
            match guestbook_operator::k8s::apply::difference(&want, &live) {
                None => return live,
                Some(d) => last = Some(d),
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the HTTPRoute never matched render's; last difference at {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn an_http_route_is_created_as_rendered_follows_the_entry_service_and_goes_with_the_spec() {
    let c = client().await;
    if !gateway_api(&c).await {
        // The local cluster always has it (e2e/cluster up installs it): missing there is a
        // broken cluster, and `skip` fails the run that requires every capability.
        skip(
            None,
            "this cluster does not serve the Gateway API (install its standard CRDs, or set GBO_GATEWAY_API_CRDS to their directory)",
        );
        return;
    }
    let t0 = Instant::now();
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, "routes").await;
    let op = Operator::start(&ns.name, "solo", &["--leader-election=false"]);
    let api: Api<DynamicObject> = Api::namespaced_with(c.clone(), &ns.name, &routes());

    // Without a proxy the route goes to the frontend's Service.
    let plain = guestbook(true, false);
    apply_yaml(&c, &ns.name, &plain)
        .await
        .expect("the Guestbook");
    let live = route_as_rendered(&api, &ns.name, &plain, "frontend entry").await;
    let backend = &live["spec"]["rules"][0]["backendRefs"][0];
    assert_eq!(backend["name"], "shop-frontend", "{live}");
    assert_eq!(backend["port"], 80);
    let svc: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(c.clone(), &ns.name);
    assert!(
        svc.get_opt("shop-frontend").await.expect("get").is_some(),
        "the backend Service exists"
    );
    // The API server kept what it was sent (its schema knows every field) and defaulted the
    // rest, as a route the operator had got wrong would show here.
    assert_eq!(live["spec"]["parentRefs"][0]["sectionName"], "http");
    assert_eq!(
        live["spec"]["rules"][0]["matches"][0]["path"],
        serde_json::json!({"type": "PathPrefix", "value": "/shop"})
    );
    assert!(
        live["metadata"]["ownerReferences"][0]["controller"] == true,
        "owned by the Guestbook: {live}"
    );
    let stalled = condition(&c, &ns.name, "Guestbook", "shop", "Stalled").await;
    assert!(
        !stalled
            .as_ref()
            .is_some_and(|(s, r, _)| s == "True" && r == "GatewayAPIMissing"),
        "the Gateway API is served: {stalled:?}"
    );

    // A proxy becomes the entry point: the route follows it.
    let proxied = guestbook(true, true);
    apply_yaml(&c, &ns.name, &proxied)
        .await
        .expect("add a proxy");
    let live = route_as_rendered(&api, &ns.name, &proxied, "proxy entry").await;
    assert_eq!(
        live["spec"]["rules"][0]["backendRefs"][0]["name"], "shop-proxy",
        "{live}"
    );

    // Without spec.httpRoute the route goes.
    apply_yaml(&c, &ns.name, &guestbook(false, true))
        .await
        .expect("drop spec.httpRoute");
    wait_for(
        "the HTTPRoute deleted with spec.httpRoute",
        Duration::from_secs(60),
        || async { matches!(api.get_opt("shop").await, Ok(None)).then_some(()) },
    )
    .await;
    let status = kstatus(&c, &ns.name, "Guestbook", "shop").await;
    println!(
        "figure: HTTPRoute created as rendered, moved to the proxy, deleted with the spec field, in {:.1}s (Guestbook Ready: {status:?})",
        t0.elapsed().as_secs_f64()
    );
    op.assert_no_reconcile_errors().await;
}
