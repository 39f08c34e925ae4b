//! The Guestbook and VoteApp builders, from YAML fixtures to the objects they apply.

mod common;

use common::{assert_snapshot, one, render};
use guestbook_operator::controllers::guestbook::build as gb;
use guestbook_operator::controllers::vote_app::build as va;
use guestbook_operator::crd::{Guestbook, VoteApp};
use guestbook_operator::k8s::children::{Child, ChildKind};
use serde_json::Value;

fn guestbook(fixture: &str) -> gb::Built {
    let g: Guestbook = one(&format!("tests/fixtures/build/{fixture}.yaml"));
    gb::build_offline(&g).expect("a valid fixture")
}

fn voteapp(fixture: &str) -> va::Built {
    let a: VoteApp = one(&format!("tests/fixtures/build/{fixture}.yaml"));
    va::build_offline(&a).expect("a valid fixture")
}

fn find<'a>(children: &'a [Child], kind: ChildKind, name: &str) -> &'a Value {
    &children
        .iter()
        .find(|c| c.kind == kind && c.name == name)
        .unwrap_or_else(|| panic!("no {kind:?} {name}"))
        .object
}

fn has(children: &[Child], kind: ChildKind, name: &str) -> bool {
    children.iter().any(|c| c.kind == kind && c.name == name)
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

#[test]
fn the_guestbook_frontend_finds_redis_by_the_names_its_image_hard_codes() {
    let b = guestbook("gb-default");
    let c = &b.children;
    let fe = find(c, ChildKind::Deployment, "book-frontend");
    assert_eq!(fe["spec"]["replicas"], 3);
    let container = &fe["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        env(container, "GET_HOSTS_FROM").expect("env")["value"],
        "dns"
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/");
    let leader = find(c, ChildKind::Service, "redis-leader");
    let sel = &leader["spec"]["selector"];
    assert_eq!(sel["guestbook-operator.dev/role"], "master");
    assert_eq!(sel["app.kubernetes.io/instance"], "cache");
    assert_eq!(sel["app.kubernetes.io/name"], "redis-sentinel");
    // No replica known in sync (the store is not there offline): reads go to the master.
    let follower = find(c, ChildKind::Service, "redis-follower");
    assert_eq!(
        follower["spec"]["selector"]["guestbook-operator.dev/role"],
        "master"
    );
    let pod_labels = &fe["spec"]["template"]["metadata"]["labels"];
    assert_eq!(pod_labels["guestbook-operator.dev/redis-client"], "cache");
    assert!(
        !has(c, ChildKind::RedisSentinel, "book-redis"),
        "a referenced store is not owned"
    );
    assert!(has(c, ChildKind::PodDisruptionBudget, "book-frontend"));
}

#[test]
fn the_proxy_limits_each_client_and_fronts_the_app() {
    let b = guestbook("gb-proxy");
    let c = &b.children;
    let conf = find(c, ChildKind::ConfigMap, "book-proxy")["data"]["guestbook.conf"]
        .as_str()
        .expect("config text")
        .to_string();
    for want in [
        "rate=20r/s",
        "burst=10 nodelay",
        "limit_conn per_client_conn 5;",
        "limit_req_status 429;",
        "limit_conn_status 429;",
        "server book-frontend.shop.svc.cluster.local:8080;",
        "location = /healthz",
        "stub_status;",
        "urt=$upstream_response_time",
    ] {
        assert!(conf.contains(want), "{want:?} missing from\n{conf}");
    }
    let proxy = find(c, ChildKind::Service, "book-proxy");
    assert_eq!(proxy["spec"]["type"], "LoadBalancer");
    assert_eq!(proxy["spec"]["ports"][0]["port"], 8080);
    assert_eq!(
        proxy["metadata"]["annotations"]["example.org/lb"],
        "internal"
    );
    let frontend = find(c, ChildKind::Service, "book-frontend");
    assert_eq!(
        frontend["spec"]["type"], "ClusterIP",
        "behind the proxy the frontend is internal"
    );
    let ing = find(c, ChildKind::Ingress, "book");
    let backend = &ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"];
    assert_eq!(backend["name"], "book-proxy");
    assert_eq!(ing["spec"]["tls"][0]["secretName"], "book-tls");
    let (name, route) = &b.routes[0];
    assert_eq!(name, "book");
    assert_eq!(
        route["spec"]["rules"][0]["backendRefs"][0]["name"],
        "book-proxy"
    );
    assert_eq!(route["spec"]["parentRefs"][0]["namespace"], "gateways");
    let store = find(c, ChildKind::RedisSentinel, "book-redis");
    assert_eq!(store["metadata"]["ownerReferences"][0]["kind"], "Guestbook");
    assert_eq!(store["spec"]["auth"]["enabled"], false);
    assert!(
        has(c, ChildKind::Service, "redis-master") && has(c, ChildKind::Service, "redis-replica")
    );
}

#[test]
fn the_proxy_exporter_runs_from_the_image_asked_and_without_monitoring_when_enabled() {
    let g: Guestbook = one("tests/fixtures/build/gb-proxy.yaml");
    let sidecars = |g: &Guestbook| -> Vec<Value> {
        let b = gb::build_offline(g).expect("valid");
        let d = find(&b.children, ChildKind::Deployment, "book-proxy");
        d["spec"]["template"]["spec"]["initContainers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["name"] == "exporter")
            .collect()
    };
    let monitored = sidecars(&g);
    assert_eq!(monitored.len(), 1);
    assert_eq!(
        monitored[0]["image"],
        "registry.example.org/mirror/nginx-prometheus-exporter:1.4.2"
    );
    assert_eq!(monitored[0]["resources"]["requests"]["cpu"], "10m");

    // No monitoring: the exporter only where enabled, and no PodMonitor either way.
    let mut plain = g.clone();
    plain.spec.monitoring = None;
    assert!(sidecars(&plain).is_empty());
    let mut enabled = plain.clone();
    if let Some(x) = enabled
        .spec
        .proxy
        .as_mut()
        .and_then(|p| p.exporter.as_mut())
    {
        x.enabled = true;
    }
    assert_eq!(sidecars(&enabled).len(), 1);
    let b = gb::build_offline(&enabled).expect("valid");
    assert!(!b.children.iter().any(|c| c.kind == ChildKind::PodMonitor));
}

#[test]
fn a_proxy_configuration_change_rolls_the_proxy() {
    let g: Guestbook = one("tests/fixtures/build/gb-proxy.yaml");
    let mut changed = g.clone();
    if let Some(p) = changed.spec.proxy.as_mut() {
        p.requests_per_second = 21;
    }
    let hash = |g: &Guestbook| {
        let b = gb::build_offline(g).expect("valid");
        find(&b.children, ChildKind::Deployment, "book-proxy")["spec"]["template"]["metadata"]
            ["annotations"]["guestbook-operator.dev/config-hash"]
            .clone()
    };
    assert!(hash(&g).is_string());
    assert_ne!(hash(&g), hash(&changed));
}

#[test]
fn autoscaled_tiers_leave_replicas_to_their_autoscalers() {
    let b = guestbook("gb-autoscaled");
    let c = &b.children;
    for tier in ["book-frontend", "book-proxy"] {
        let d = find(c, ChildKind::Deployment, tier);
        assert!(
            d["spec"].get("replicas").is_none(),
            "{tier} must not set replicas"
        );
        let hpa = find(c, ChildKind::HorizontalPodAutoscaler, tier);
        assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], tier.to_string());
    }
    let hpa = find(c, ChildKind::HorizontalPodAutoscaler, "book-frontend");
    assert_eq!(hpa["spec"]["maxReplicas"], 20);
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        60
    );
}

#[test]
fn the_vote_app_gets_the_services_its_images_hard_code() {
    let b = voteapp("va-default");
    let c = &b.children;
    let redis = find(c, ChildKind::Service, "redis");
    assert_eq!(
        redis["spec"]["selector"]["guestbook-operator.dev/role"],
        "master"
    );
    assert_eq!(
        redis["spec"]["selector"]["app.kubernetes.io/instance"],
        "queue"
    );
    assert_eq!(redis["spec"]["ports"][0]["port"], 6379);
    let db = find(c, ChildKind::Service, "db");
    assert_eq!(
        db["spec"]["selector"]["guestbook-operator.dev/role"],
        "primary"
    );
    assert_eq!(
        db["spec"]["selector"]["app.kubernetes.io/instance"],
        "tally"
    );
    assert_eq!(db["spec"]["ports"][0]["port"], 5432);
    let vote =
        &find(c, ChildKind::Deployment, "polls-vote")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(env(vote, "OPTION_A").expect("env")["value"], "Cats");
    assert!(
        vote["image"]
            .as_str()
            .is_some_and(|i| i.contains("examplevotingapp_vote"))
    );
    let result = &find(c, ChildKind::Deployment, "polls-result")["spec"]["template"]["spec"]["containers"]
        [0];
    assert_eq!(env(result, "PORT").expect("env")["value"], "80");
    let worker = find(c, ChildKind::Deployment, "polls-worker");
    assert_eq!(worker["spec"]["replicas"], 1);
    assert!(
        !has(c, ChildKind::Service, "polls-worker"),
        "the worker serves nothing"
    );
    let svc = find(c, ChildKind::Service, "polls-result");
    assert!(
        svc["spec"].get("sessionAffinity").is_none(),
        "one result pod needs no affinity"
    );
}

#[test]
fn the_maximal_vote_app_owns_its_stores_and_scales() {
    let b = voteapp("va-maximal");
    let c = &b.children;
    let rs = find(c, ChildKind::RedisSentinel, "polls-redis");
    assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "VoteApp");
    let pc = find(c, ChildKind::PatroniCluster, "polls-db");
    assert_eq!(pc["spec"]["auth"]["stockAppCredentials"], true);
    let vote = find(c, ChildKind::Deployment, "polls-vote");
    assert!(vote["spec"].get("replicas").is_none());
    assert!(has(c, ChildKind::HorizontalPodAutoscaler, "polls-vote"));
    let result = find(c, ChildKind::Service, "polls-result");
    assert_eq!(
        result["spec"]["sessionAffinity"], "ClientIP",
        "socket.io with two pods"
    );
    assert_eq!(result["spec"]["type"], "NodePort");
    let worker = find(c, ChildKind::Deployment, "polls-worker");
    assert_eq!(
        worker["spec"]["replicas"], 1,
        "queue-driven workers start at the minimum"
    );
    assert_eq!(
        worker["spec"]["template"]["spec"]["nodeSelector"]["pool"], "web",
        "placement applies to every tier"
    );
    assert!(has(c, ChildKind::Ingress, "polls-vote") && has(c, ChildKind::Ingress, "polls-result"));
    assert_eq!(b.routes.len(), 1);
}

#[test]
fn per_pod_queues_live_in_the_vote_pods() {
    let b = voteapp("va-perpod");
    let c = &b.children;
    assert!(!has(c, ChildKind::Service, "redis"), "no central Redis");
    assert!(
        !has(c, ChildKind::Deployment, "polls-worker"),
        "workers run in the vote pods"
    );
    let pod = &find(c, ChildKind::Deployment, "polls-vote")["spec"]["template"]["spec"];
    assert_eq!(pod["hostAliases"][0]["ip"], "127.0.0.1");
    assert_eq!(pod["hostAliases"][0]["hostnames"][0], "redis");
    let sidecars = pod["initContainers"].as_array().expect("sidecars");
    let names: Vec<_> = sidecars
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        ["queue-worker", "queue-redis"],
        "Redis stops first, the worker last"
    );
    assert!(sidecars.iter().all(|s| s["restartPolicy"] == "Always"));
    let redis = &sidecars[1];
    assert!(
        redis["command"]
            .as_array()
            .is_some_and(|c| c.iter().any(|a| a == "--appendonly"))
    );
    let pre_stop = redis["lifecycle"]["preStop"]["exec"]["command"][2]
        .as_str()
        .unwrap_or_default();
    assert!(pre_stop.contains("llen votes"), "{pre_stop}");
    assert!(has(c, ChildKind::Service, "db"));
}

#[test]
fn the_same_spec_always_builds_the_same_objects() {
    for f in ["gb-default", "gb-proxy", "gb-autoscaled"] {
        assert_eq!(guestbook(f).children, guestbook(f).children, "{f}");
    }
    for f in ["va-default", "va-maximal", "va-perpod"] {
        assert_eq!(voteapp(f).children, voteapp(f).children, "{f}");
    }
}

/// Children and routes as one YAML stream.
fn rendered(children: &[Child], routes: &[(String, Value)]) -> String {
    let mut out = render(children);
    for (_, route) in routes {
        out.push_str(&format!(
            "---\n{}",
            serde_yaml_ng::to_string(route).expect("yaml")
        ));
    }
    out
}

#[test]
fn snapshots() {
    for f in ["gb-default", "gb-proxy", "gb-autoscaled"] {
        let b = guestbook(f);
        assert_snapshot(f, &rendered(&b.children, &b.routes));
    }
    for f in ["va-default", "va-maximal", "va-perpod"] {
        let b = voteapp(f);
        assert_snapshot(f, &rendered(&b.children, &b.routes));
    }
}
