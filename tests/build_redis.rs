//! The RedisSentinel builder, from YAML fixtures to the exact objects it applies.

mod common;

use common::{assert_snapshot, one, render};
use guestbook_operator::controllers::redis_sentinel::build::{Inputs, build_offline};
use guestbook_operator::crd::RedisSentinel;
use guestbook_operator::k8s::children::{Child, ChildKind};
use serde_json::Value;

const PASSWORD: &str = "fixed-test-password";

fn built(fixture: &str) -> Vec<Child> {
    let rs: RedisSentinel = one(&format!("tests/fixtures/build/{fixture}.yaml"));
    build_offline(
        &rs,
        &Inputs {
            generated_password: PASSWORD,
        },
    )
    .expect("a valid fixture")
}

fn find<'a>(children: &'a [Child], kind: ChildKind, name: &str) -> &'a Value {
    &children
        .iter()
        .find(|c| c.kind == kind && c.name == name)
        .unwrap_or_else(|| panic!("no {kind:?} {name}"))
        .object
}

#[test]
fn snapshots() {
    for f in [
        "redis-default",
        "redis-maximal",
        "redis-no-auth",
        "redis-of-voteapp",
    ] {
        assert_snapshot(f, &render(&built(f)));
    }
}

#[test]
fn the_same_spec_always_builds_the_same_objects() {
    assert_eq!(built("redis-maximal"), built("redis-maximal"));
}

#[test]
fn no_password_ever_appears_outside_the_generated_secret() {
    for f in ["redis-default", "redis-maximal", "redis-no-auth"] {
        for c in built(f) {
            let text = serde_json::to_string(&c.object).expect("json");
            assert!(
                !text.contains(PASSWORD),
                "{f}: {:?} {} carries the password",
                c.kind,
                c.name
            );
        }
    }
    let children = built("redis-default");
    let secret = children
        .iter()
        .find(|c| c.kind == ChildKind::Secret)
        .expect("generated Secret");
    assert_eq!(
        secret
            .initial
            .as_ref()
            .and_then(|i| i["stringData"]["password"].as_str()),
        Some(PASSWORD)
    );
    assert!(
        built("redis-maximal")
            .iter()
            .all(|c| c.kind != ChildKind::Secret),
        "an existing Secret is used, none generated"
    );
}

#[test]
fn every_child_is_owned_and_labelled_and_backups_outlive_the_resource() {
    for c in built("redis-maximal") {
        let meta = &c.object["metadata"];
        if c.kind == ChildKind::PersistentVolumeClaim {
            // Owned, it would be garbage-collected with the resource: backups must not be.
            assert!(meta.get("ownerReferences").is_none(), "{}", c.name);
        } else {
            assert_eq!(
                meta["ownerReferences"][0]["uid"], "6f1d2c3b-0000-4000-8000-000000000002",
                "{:?} {}",
                c.kind, c.name
            );
            assert_eq!(meta["ownerReferences"][0]["controller"], true);
        }
        assert_eq!(
            meta["labels"]["app.kubernetes.io/managed-by"],
            "guestbook-operator"
        );
        assert_eq!(meta["labels"]["app.kubernetes.io/part-of"], "storefront");
        assert_eq!(
            meta["labels"]["guestbook-operator.dev/owner-kind"],
            "RedisSentinel"
        );
    }
}

#[test]
fn the_master_service_selects_the_master_label() {
    let children = built("redis-default");
    let master = find(&children, ChildKind::Service, "cache-redis");
    assert_eq!(
        master["spec"]["selector"]["guestbook-operator.dev/role"],
        "master"
    );
    let replicas = find(&children, ChildKind::Service, "cache-redis-replicas");
    assert_eq!(
        replicas["spec"]["selector"]["guestbook-operator.dev/role"],
        "replica"
    );
}

#[test]
fn configuration_changes_roll_the_pods() {
    let rs: RedisSentinel = one("tests/fixtures/build/redis-default.yaml");
    let mut changed = rs.clone();
    changed
        .spec
        .redis
        .config
        .insert("maxmemory".into(), "100mb".into());
    let hash = |rs: &RedisSentinel| {
        let c = build_offline(
            rs,
            &Inputs {
                generated_password: PASSWORD,
            },
        )
        .expect("a valid fixture");
        find(&c, ChildKind::StatefulSet, "cache-redis")["spec"]["template"]["metadata"]["annotations"]["guestbook-operator.dev/config-hash"].clone()
    };
    assert_ne!(hash(&rs), hash(&changed));
}

#[test]
fn pods_meet_the_restricted_pod_security_standard() {
    for c in built("redis-maximal")
        .iter()
        .filter(|c| c.kind == ChildKind::StatefulSet)
    {
        let pod = &c.object["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        for container in pod["containers"].as_array().expect("containers") {
            let sc = &container["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{}", c.name);
            assert_eq!(sc["capabilities"]["drop"][0], "ALL");
            assert_eq!(sc["readOnlyRootFilesystem"], true);
        }
    }
}

#[test]
fn without_auth_a_network_policy_guards_the_store() {
    let children = built("redis-no-auth");
    let np = find(&children, ChildKind::NetworkPolicy, "votes-redis");
    let from = np["spec"]["ingress"][0]["from"].to_string();
    assert!(
        from.contains("guestbook-operator.dev/redis-client"),
        "{from}"
    );
    assert!(
        built("redis-default")
            .iter()
            .all(|c| c.kind != ChildKind::NetworkPolicy)
    );
    assert!(
        children
            .iter()
            .all(|c| c.kind != ChildKind::PersistentVolumeClaim),
        "an existing backup claim is used"
    );
}
