//! Validation is pure: YAML fixtures in, verdicts out, no cluster.

use guestbook_operator::context::Caches;
use guestbook_operator::controllers::apps::stores;
use guestbook_operator::controllers::guestbook::validate as gb_validate;
use guestbook_operator::controllers::patroni_cluster::validate as patroni;
use guestbook_operator::controllers::redis_sentinel::validate as redis;
use guestbook_operator::controllers::vote_app::validate as va_validate;
use guestbook_operator::crd::{Guestbook, PatroniCluster, RedisSentinel, VoteApp};
use guestbook_operator::k8s::conditions::Health;
use guestbook_operator::k8s::live::{ClaimTemplate, Members};
use guestbook_operator::k8s::owner::Owner;
use guestbook_operator::k8s::secrets::SecretRef;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use serde::de::DeserializeOwned;
use std::path::Path;

fn load<K: DeserializeOwned>(path: &str) -> Vec<K> {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| K::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", full.display())))
        .collect()
}

fn one<K: DeserializeOwned>(path: &str) -> K {
    load::<K>(path)
        .into_iter()
        .next()
        .expect("fixture has a document")
}

fn reason(h: &Health) -> &str {
    h.reason()
}

/// The owner of an object as the API server would have it: with a namespace and a uid.
fn owner<K: Resource<DynamicType = ()>>(obj: &mut K, kind: &'static str) -> Owner {
    let meta = obj.meta_mut();
    meta.namespace.get_or_insert_with(|| "test".into());
    meta.uid.get_or_insert_with(|| "u-test".into());
    Owner::of(obj, kind).expect("owner")
}

/// The health a validation ends in: `Stalled` on `Err`, else as the reconcile would start.
fn health<V>(result: Result<V, Health>) -> Health {
    match result {
        Ok(_) => Health::unknown("Valid", ""),
        Err(h) => h,
    }
}

#[test]
fn redis_with_missing_secret_stalls_naming_the_field() {
    let mut rs: RedisSentinel = one("tests/fixtures/valid/redis-existing-secret.yaml");
    let o = owner(&mut rs, "RedisSentinel");
    let world = redis::World {
        auth_secret: Some(SecretRef::MissingSecret),
        ..Default::default()
    };
    let h = health(redis::validate(&rs, o.clone(), &world));
    assert!(matches!(h, Health::Stalled { .. }), "{h:?}");
    assert_eq!(reason(&h), "SecretNotFound");
    assert!(
        h.message().contains("spec.auth.existingSecret"),
        "{}",
        h.message()
    );
    assert!(h.message().contains("cache-password"));

    let world = redis::World {
        auth_secret: Some(SecretRef::MissingKey),
        ..Default::default()
    };
    assert_eq!(
        reason(&health(redis::validate(&rs, o.clone(), &world))),
        "SecretKeyNotFound"
    );

    let world = redis::World {
        auth_secret: Some(SecretRef::Present),
        ..Default::default()
    };
    let v = redis::validate(&rs, o, &world).expect("valid");
    assert_eq!(
        v.password,
        Some(("cache-password".into(), "password".into()))
    );
    assert!(
        redis::warnings(&rs).is_empty(),
        "auth is on: no warning expected"
    );
}

#[test]
fn redis_without_auth_carries_a_warning_condition() {
    let gb: Guestbook = one("manifests/examples/guestbook.yaml");
    let inline = gb.spec.redis.spec.expect("the example has an inline store");
    let rs = RedisSentinel::new("guestbook-redis", *inline);
    let warnings = redis::warnings(&rs);
    let warn = warnings
        .iter()
        .find(|e| e.type_ == "AuthDisabled")
        .expect("AuthDisabled condition");
    assert!(warn.status);
    assert!(warn.message.contains("spec.auth.enabled"));
}

#[test]
fn patroni_reports_the_first_missing_reference() {
    let mut pc: PatroniCluster = one("tests/fixtures/valid/patroni-references.yaml");
    let o = owner(&mut pc, "PatroniCluster");
    let validate = |world: &patroni::World| health(patroni::validate(&pc, o.clone(), world));
    let mut world = patroni::World {
        secrets: vec![
            (
                "spec.auth.superuserSecretName".into(),
                "pg-admin".into(),
                SecretRef::Present,
            ),
            (
                "spec.users[0].secretName".into(),
                "app-password".into(),
                SecretRef::MissingSecret,
            ),
        ],
        storage_class: Some(("fast-ssd".into(), false)),
        bootstrap_claim: Some(("old-backups".into(), false)),
        ..Default::default()
    };
    let h = validate(&world);
    assert_eq!(reason(&h), "SecretNotFound");
    assert!(
        h.message().starts_with("spec.users[0].secretName"),
        "{}",
        h.message()
    );

    world.secrets[1].2 = SecretRef::Present;
    let h = validate(&world);
    assert_eq!(reason(&h), "StorageClassNotFound");
    assert!(h.message().contains("fast-ssd"));

    world.storage_class = Some(("fast-ssd".into(), true));
    let h = validate(&world);
    assert_eq!(reason(&h), "BackupClaimNotFound");
    assert!(h.message().contains("spec.bootstrap.fromBackup.claimName"));

    world.bootstrap_claim = Some(("old-backups".into(), true));
    let v = patroni::validate(&pc, o.clone(), &world).expect("valid");
    assert_eq!(v.superuser_secret, "pg-admin");
}

#[test]
fn patroni_stock_credentials_are_flagged() {
    let app: VoteApp = one("manifests/examples/voteapp.yaml");
    let pc = PatroniCluster::new("vote-db", *app.spec.postgres.spec.expect("inline postgres"));
    assert!(
        patroni::warnings(&pc)
            .iter()
            .any(|e| e.type_ == "InsecureCredentials" && e.status)
    );
}

#[test]
fn only_the_oldest_guestbook_in_a_namespace_proceeds() {
    let all: Vec<Guestbook> = load("tests/fixtures/valid/guestbooks-same-namespace.yaml");
    let mut cache = RedisSentinel::new("cache", Default::default());
    cache.metadata.namespace = Some("shop".into());
    cache.spec.auth.enabled = false;
    let caches = Caches::from_objects(vec![cache], vec![], all.clone(), vec![]);
    let validate = |n: &str| {
        let mut gb = all
            .iter()
            .find(|g| g.metadata.name.as_deref() == Some(n))
            .expect("fixture")
            .clone();
        let o = owner(&mut gb, "Guestbook");
        gb_validate::validate(&gb, o, &caches)
    };

    let h = health(validate("second"));
    assert_eq!(reason(&h), "NamespaceConflict");
    assert!(
        h.message().contains("Guestbook \"first\""),
        "{}",
        h.message()
    );

    let v = validate("first").expect("the oldest proceeds");
    assert_eq!(v.store.name, "cache");
    assert!(v.redis.exists && !v.store.owned);

    // Another namespace is independent, and an inline store is named after the app.
    let v = validate("elsewhere").expect("another namespace");
    assert_eq!(v.store.name, "elsewhere-redis");
    assert!(v.store.owned);
}

#[test]
fn a_referenced_store_that_does_not_exist_is_waited_for() {
    let all: Vec<Guestbook> = load("tests/fixtures/valid/guestbooks-same-namespace.yaml");
    let mut first = all
        .iter()
        .find(|g| g.metadata.name.as_deref() == Some("first"))
        .expect("fixture")
        .clone();
    let caches = Caches::from_objects(vec![], vec![], vec![first.clone()], vec![]);
    let o = owner(&mut first, "Guestbook");
    let v = gb_validate::validate(&first, o, &caches).expect("valid");
    let h = stores::waiting_for(
        "RedisSentinel",
        "spec.redis",
        &v.redis.status,
        v.redis.exists,
        "shop",
    )
    .expect("waits for the store");
    assert!(matches!(h, Health::Progressing { .. }), "{h:?}");
    assert_eq!(reason(&h), "WaitingForStore");
    assert!(h.message().contains("spec.redis.name"));
}

#[test]
fn a_stock_frontend_cannot_use_a_store_that_wants_a_password() {
    let all: Vec<Guestbook> = load("tests/fixtures/valid/guestbooks-same-namespace.yaml");
    let mut first = all
        .iter()
        .find(|g| g.metadata.name.as_deref() == Some("first"))
        .expect("fixture")
        .clone();
    let mut cache = RedisSentinel::new("cache", Default::default());
    cache.metadata.namespace = Some("shop".into());
    let caches = Caches::from_objects(vec![cache], vec![], vec![first.clone()], vec![]);
    let o = owner(&mut first, "Guestbook");
    let h = health(gb_validate::validate(&first, o, &caches));
    assert_eq!(reason(&h), "StoreNeedsPassword", "{h:?}");
    assert!(h.message().starts_with("spec.redis"), "{}", h.message());
}

#[test]
fn an_inline_store_never_takes_over_a_foreign_one() {
    let mut app: VoteApp = one("manifests/examples/voteapp.yaml");
    app.metadata.namespace = Some("polls".into());
    app.metadata.uid = Some("u-vote".into());
    let o = owner(&mut app, "VoteApp");
    let mut foreign = RedisSentinel::new("vote-redis", Default::default());
    foreign.metadata.namespace = Some("polls".into());
    foreign.spec.auth.enabled = false;
    let caches = Caches::from_objects(vec![foreign.clone()], vec![], vec![], vec![app.clone()]);
    let h = health(va_validate::validate(&app, o.clone(), &caches));
    assert_eq!(reason(&h), "StoreNameTaken");
    assert!(h.message().contains("spec.redis"));

    // The same store, owned by this app, is its own.
    foreign.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "guestbook-operator.dev/v1alpha1".into(),
        kind: "VoteApp".into(),
        name: "vote".into(),
        uid: "u-vote".into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    let caches = Caches::from_objects(vec![foreign], vec![], vec![], vec![app.clone()]);
    let v = va_validate::validate(&app, o, &caches).expect("its own store");
    let redis = v.redis_store.expect("a shared queue");
    assert_eq!((redis.name.as_str(), redis.owned), ("vote-redis", true));
    assert_eq!(v.postgres_store.name, "vote-db");
}

#[test]
fn stock_images_need_stock_postgres_credentials() {
    let mut app: VoteApp = one("manifests/examples/voteapp.yaml");
    if let Some(pg) = app.spec.postgres.spec.as_mut() {
        pg.auth.stock_app_credentials = false;
    }
    let o = owner(&mut app, "VoteApp");
    let caches = Caches::from_objects(vec![], vec![], vec![], vec![app.clone()]);
    let h = health(va_validate::validate(&app, o, &caches));
    assert_eq!(reason(&h), "StoreCredentials", "{h:?}");
    assert!(h.message().contains("stockAppCredentials"));
}

fn members(size: &str, class: Option<&str>, major: Option<i32>) -> Members {
    Members {
        name: "live".into(),
        claim: Some(ClaimTemplate {
            size: Some(size.into()),
            class: class.map(Into::into),
        }),
        postgres_major: major,
    }
}

#[test]
fn redis_storage_the_live_claims_cannot_follow_stalls_naming_the_field() {
    let yaml = "apiVersion: guestbook-operator.dev/v1alpha1\nkind: RedisSentinel\nmetadata: {name: cache}\nspec:\n  redis:\n    storage: {size: 2Gi, storageClassName: fast}\n";
    let mut rs: RedisSentinel = serde_yaml_ng::from_str(yaml).expect("fixture");
    let o = owner(&mut rs, "RedisSentinel");
    let stalled = |world: &redis::World| health(redis::validate(&rs, o.clone(), world));

    // The class the spec names does not exist, nothing runs yet.
    let mut world = redis::World {
        storage_class: Some(("fast".into(), false)),
        ..Default::default()
    };
    let h = stalled(&world);
    assert_eq!(reason(&h), "StorageClassNotFound");
    assert!(
        h.message()
            .starts_with("spec.redis.storage.storageClassName: StorageClass \"fast\"")
    );
    assert_eq!(
        redis::recheck(&h),
        Some(guestbook_operator::controllers::WAITING_RECHECK)
    );

    // The class exists, the running claims are smaller: growth is named, with what it needs.
    world.storage_class = Some(("fast".into(), true));
    world.members = Some(members("1Gi", Some("fast"), None));
    let h = stalled(&world);
    assert!(matches!(h, Health::Stalled { .. }), "{h:?}");
    assert_eq!(reason(&h), "StorageGrowthNotImplemented");
    assert!(
        h.message()
            .starts_with("spec.redis.storage.size: 2Gi is larger than the 1Gi"),
        "{}",
        h.message()
    );
    assert_eq!(redis::recheck(&h), None, "a spec change wakes it");

    // Claims on another class: the class is the change at fault.
    world.members = Some(members("2Gi", Some("slow"), None));
    let h = stalled(&world);
    assert_eq!(reason(&h), "StorageChangeImpossible");
    assert!(
        h.message()
            .starts_with("spec.redis.storage.storageClassName"),
        "{}",
        h.message()
    );

    // Members on emptyDirs: storage cannot be added.
    world.members = Some(Members {
        name: "live".into(),
        ..Members::default()
    });
    let h = stalled(&world);
    assert!(
        h.message()
            .starts_with("spec.redis.storage: set on a store whose members run on emptyDirs"),
        "{}",
        h.message()
    );

    world.members = Some(members("2048Mi", Some("fast"), None));
    assert!(
        redis::validate(&rs, o.clone(), &world).is_ok(),
        "the same size, written differently"
    );
}

#[test]
fn patroni_major_upgrade_and_claim_growth_stall_naming_the_field() {
    let yaml = "apiVersion: guestbook-operator.dev/v1alpha1\nkind: PatroniCluster\nmetadata: {name: db}\nspec:\n  members: 1\n  postgresql: {version: 18}\n  storage: {size: 1Gi}\n";
    let mut pc: PatroniCluster = serde_yaml_ng::from_str(yaml).expect("fixture");
    let o = owner(&mut pc, "PatroniCluster");
    let mut world = patroni::World {
        members: Some(members("1Gi", None, Some(17))),
        ..patroni::World::assumed(&pc)
    };
    let h = health(patroni::validate(&pc, o.clone(), &world));
    assert_eq!(reason(&h), "MajorUpgradeNotImplemented");
    assert!(
        h.message()
            .starts_with("spec.postgresql.version: 18 but the cluster's data is PostgreSQL 17"),
        "{}",
        h.message()
    );

    world.members = Some(members("512Mi", None, Some(18)));
    let h = health(patroni::validate(&pc, o.clone(), &world));
    assert_eq!(reason(&h), "StorageGrowthNotImplemented");
    assert!(
        h.message()
            .starts_with("spec.storage.size: 1Gi is larger than the 512Mi"),
        "{}",
        h.message()
    );

    world.members = Some(members("1Gi", None, Some(18)));
    assert!(patroni::validate(&pc, o, &world).is_ok());
}
