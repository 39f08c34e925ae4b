//! The PatroniCluster builder, from YAML fixtures to the exact objects it applies.

mod common;

use common::{assert_snapshot, one, render};
use guestbook_operator::controllers::patroni_cluster::build::{
    Inputs, build_offline, patroni_yaml,
};
use guestbook_operator::controllers::patroni_cluster::names::KIND;
use guestbook_operator::crd::PatroniCluster;
use guestbook_operator::k8s::children::{Child, ChildKind};
use guestbook_operator::k8s::owner::Owner;

const SUPER: &str = "fixed-superuser-password";
const REPL: &str = "fixed-replication-password";

fn built(fixture: &str) -> Vec<Child> {
    let pc: PatroniCluster = one(&format!("tests/fixtures/build/{fixture}.yaml"));
    build_offline(
        &pc,
        &Inputs {
            superuser_password: SUPER,
            replication_password: REPL,
            restore: true,
            replicas: pc.spec.members,
            user_passwords: &["user-pw-0".to_string(), "user-pw-1".to_string()],
            roles: Some("f1ngerpr"),
        },
    )
    .expect("a valid fixture")
}

fn yaml_of(pc: &PatroniCluster) -> String {
    patroni_yaml(
        pc,
        &Owner::of(pc, KIND).expect("fixture with namespace and uid"),
    )
}

#[test]
fn snapshots() {
    for f in ["patroni-default", "patroni-maximal", "patroni-stock"] {
        assert_snapshot(f, &render(&built(f)));
    }
}

#[test]
fn deterministic_and_secret_free() {
    for f in ["patroni-default", "patroni-maximal", "patroni-stock"] {
        assert_eq!(built(f), built(f));
        for c in built(f) {
            let text = serde_json::to_string(&c.object).expect("json");
            assert!(
                !text.contains(SUPER) && !text.contains(REPL),
                "{f}: {:?} {} carries a password",
                c.kind,
                c.name
            );
        }
    }
}

#[test]
fn patroni_gets_exactly_the_namespaced_rights_it_needs() {
    let children = built("patroni-default");
    let role = children
        .iter()
        .find(|c| c.kind == ChildKind::Role)
        .expect("Role");
    let rules = role.object["rules"].as_array().expect("rules");
    let resources: Vec<&str> = rules
        .iter()
        .flat_map(|r| r["resources"].as_array().into_iter().flatten())
        .filter_map(|r| r.as_str())
        .collect();
    assert_eq!(resources, ["configmaps", "pods"]);
    assert!(!role.object.to_string().contains('*'), "no wildcards");
    assert!(
        children
            .iter()
            .all(|c| !matches!(c.kind, ChildKind::Deployment)),
        "no cluster-wide objects either"
    );
}

#[test]
fn the_primary_service_selects_patronis_leader_label() {
    let children = built("patroni-default");
    let primary = children
        .iter()
        .find(|c| c.kind == ChildKind::Service && c.name == "db")
        .expect("primary Service");
    assert_eq!(
        primary.object["spec"]["selector"]["guestbook-operator.dev/role"],
        "primary"
    );
    let sts = children
        .iter()
        .find(|c| c.kind == ChildKind::StatefulSet)
        .expect("StatefulSet");
    let env = sts.object["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        env.contains("PATRONI_KUBERNETES_ROLE_LABEL")
            && env.contains("guestbook-operator.dev/role"),
        "{env}"
    );
}

#[test]
fn failsafe_mode_is_on_and_sync_mode_follows_the_spec() {
    let pc: PatroniCluster = one("tests/fixtures/build/patroni-maximal.yaml");
    let yaml = yaml_of(&pc);
    assert!(yaml.contains("\"failsafe_mode\": true"));
    assert!(
        yaml.contains("\"synchronous_mode\": true")
            && yaml.contains("\"synchronous_mode_strict\": true"),
        "{yaml}"
    );
    let default: PatroniCluster = one("tests/fixtures/build/patroni-default.yaml");
    assert!(yaml_of(&default).contains("\"synchronous_mode\": false"));
    // Every value a YAML 1.1 parser could misread is quoted.
    assert!(yaml.contains("\"hot_standby\": \"on\""), "{yaml}");
}

#[test]
fn stock_credentials_are_the_fixed_pair_and_nothing_is_generated_for_them() {
    let children = built("patroni-stock");
    let superuser = children
        .iter()
        .find(|c| c.kind == ChildKind::Secret && c.name == "vote-db-superuser")
        .expect("superuser Secret");
    assert!(superuser.initial.is_none(), "not a generated secret");
    assert_eq!(superuser.object["data"]["password"], "cG9zdGdyZXM="); // "postgres"
}

#[test]
fn a_stock_credentials_cluster_admits_only_its_clients() {
    let stock = built("patroni-stock");
    let policy = stock
        .iter()
        .find(|c| c.kind == ChildKind::NetworkPolicy)
        .expect("a NetworkPolicy for postgres/postgres");
    let from = &policy.object["spec"]["ingress"][0]["from"];
    assert_eq!(
        from[1]["podSelector"]["matchLabels"]["guestbook-operator.dev/postgres-client"],
        "vote-db"
    );
    assert!(
        built("patroni-default")
            .iter()
            .all(|c| c.kind != ChildKind::NetworkPolicy),
        "real credentials need no extra fence"
    );
}
