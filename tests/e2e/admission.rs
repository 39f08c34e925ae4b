//! The API server itself enforces the schema and CEL rules of our CRDs, transition rules
//! (`oldSelf`) included.

use crate::support::{TestNamespace, api_resource, apply_yaml, client, install_crds, repo};
use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams};

#[tokio::test]
async fn every_example_is_accepted() {
    let c = client().await;
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, "examples").await;
    let dir = repo("manifests/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("examples dir") {
        let path = entry.expect("entry").path();
        let yaml = std::fs::read_to_string(&path).expect("example");
        apply_yaml(&c, &ns.name, &yaml)
            .await
            .unwrap_or_else(|e| panic!("{} was rejected: {e}", path.display()));
        n += 1;
    }
    assert_eq!(n, 4, "one example per kind");
}

/// Each fixture carries `# expect: <text>` lines; the rejection must contain every one, so a
/// user reading it learns which field is wrong and why.
#[tokio::test]
async fn invalid_objects_are_rejected_naming_the_field() {
    let c = client().await;
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, "invalid").await;
    let mut failures = Vec::new();
    let mut count = 0;
    let mut paths: Vec<_> = std::fs::read_dir(repo("tests/fixtures/invalid"))
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    for path in paths {
        let yaml = std::fs::read_to_string(&path).expect("fixture");
        let expects: Vec<&str> = yaml
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expects.is_empty(),
            "{} has no '# expect:' line",
            path.display()
        );
        count += 1;
        match apply_yaml(&c, &ns.name, &yaml).await {
            Ok(_) => failures.push(format!("{}: accepted, should be rejected", path.display())),
            Err(kube::Error::Api(status)) => {
                let msg = status.message.clone();
                for e in &expects {
                    if !msg.contains(e) {
                        failures.push(format!(
                            "{}: rejection does not mention {e:?}: {msg}",
                            path.display()
                        ));
                    }
                }
            }
            Err(other) => failures.push(format!("{}: unexpected error {other}", path.display())),
        }
    }
    assert!(
        count >= 15,
        "the corpus must hold at least 15 invalid objects, has {count}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `# expect:` lines of a fixture: every one must be in the rejection.
fn expectations(yaml: &str) -> Vec<&str> {
    yaml.lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .collect()
}

/// Each fixture in `invalid/transitions` holds two documents: an object the API server
/// accepts, then an update to it that can never work (a downgrade, a claim that shrinks, a
/// fixed identity renamed). The update must be refused naming the field; the object stays as
/// it was created.
#[tokio::test]
async fn changes_that_can_never_work_are_refused_naming_the_field() {
    let c = client().await;
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, "transitions").await;
    let mut paths: Vec<_> = std::fs::read_dir(repo("tests/fixtures/invalid/transitions"))
        .expect("transition fixtures")
        .map(|e| e.expect("entry").path())
        .collect();
    paths.sort();
    let mut failures = Vec::new();
    for path in &paths {
        let text = std::fs::read_to_string(path).expect("fixture");
        let expects = expectations(&text);
        assert!(
            !expects.is_empty(),
            "{} has no '# expect:' line",
            path.display()
        );
        let docs: Vec<&str> = text.split("\n---\n").collect();
        assert_eq!(
            docs.len(),
            2,
            "{}: a valid object, then the update",
            path.display()
        );
        if let Err(e) = apply_yaml(&c, &ns.name, docs[0]).await {
            failures.push(format!(
                "{}: the valid object was rejected: {e}",
                path.display()
            ));
            continue;
        }
        match apply_yaml(&c, &ns.name, docs[1]).await {
            Ok(_) => failures.push(format!(
                "{}: update accepted, should be refused",
                path.display()
            )),
            Err(kube::Error::Api(status)) => {
                let msg = &status.message;
                for e in &expects {
                    if !msg.contains(e) {
                        failures.push(format!(
                            "{}: refusal does not mention {e:?}: {msg}",
                            path.display()
                        ));
                    }
                }
            }
            Err(other) => failures.push(format!("{}: unexpected error {other}", path.display())),
        }
    }
    println!(
        "figure: {} invalid transitions refused at admission",
        paths.len()
    );
    assert!(
        paths.len() >= 10,
        "at least 10 invalid transitions, found {}",
        paths.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The transition rules refuse only what cannot work: growing storage, a major upgrade (the
/// operator reports what it needs), moving backups to another claim, and declaring a store
/// inline where the app referenced one (no old inline spec to compare with) are accepted.
#[tokio::test]
async fn changes_that_can_work_are_accepted() {
    let c = client().await;
    install_crds(&c).await;
    let ns = TestNamespace::new(&c, "transitions-ok").await;
    let pc = |size: &str, version: u8| {
        format!(
            "apiVersion: guestbook-operator.dev/v1alpha1\nkind: PatroniCluster\nmetadata: {{name: grows}}\nspec:\n  members: 1\n  postgresql: {{version: {version}}}\n  storage: {{size: {size}, storageClassName: fast}}\n"
        )
    };
    let rs = |size: &str, claim: &str| {
        format!(
            "apiVersion: guestbook-operator.dev/v1alpha1\nkind: RedisSentinel\nmetadata: {{name: grows}}\nspec:\n  redis:\n    storage: {{size: {size}}}\n  backup:\n    destination:\n      volume: {{{claim}size: 5Gi}}\n"
        )
    };
    let gb = |redis: &str| {
        format!(
            "apiVersion: guestbook-operator.dev/v1alpha1\nkind: Guestbook\nmetadata: {{name: switches}}\nspec:\n  redis: {redis}\n"
        )
    };
    let steps = [
        ("PatroniCluster created", pc("1Gi", 16)),
        (
            "PatroniCluster storage grown, major version raised",
            pc("1536Mi", 17),
        ),
        ("RedisSentinel created", rs("1Gi", "")),
        ("RedisSentinel storage grown", rs("2Gi", "")),
        (
            "RedisSentinel backups moved to a claim of the user's",
            rs("2Gi", "claimName: mine, "),
        ),
        (
            "RedisSentinel backups back on the operator's claim",
            rs("2Gi", ""),
        ),
        ("Guestbook referencing a store", gb("{name: cache}")),
        (
            "Guestbook declaring it inline, with storage",
            gb("{spec: {redis: {storage: {size: 1Gi}}}}"),
        ),
    ];
    for (what, yaml) in &steps {
        apply_yaml(&c, &ns.name, yaml)
            .await
            .unwrap_or_else(|e| panic!("{what}: refused: {e}"));
    }

    // The way back: while the object (or the app, for an inline store) reports that the store
    // cannot carry out the last change, undoing it passes; once it no longer says so, the same
    // change is refused again. (The status is written here as the operator would write it.)
    let undo = [
        (
            "PatroniCluster",
            "grows",
            pc("1536Mi", 18),
            pc("1Gi", 17),
            serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "MajorUpgradeNotImplemented", "message": "spec.postgresql.version: ...", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}}),
        ),
        (
            "Guestbook",
            "switches",
            gb("{spec: {redis: {storage: {size: 2Gi}}}}"),
            gb("{spec: {redis: {storage: {size: 1Gi}}}}"),
            serde_json::json!({"status": {"redis": {"name": "switches-redis", "owned": true, "ready": false, "reason": "StorageGrowthNotImplemented"}}}),
        ),
    ];
    for (kind, name, change, back, status) in &undo {
        apply_yaml(&c, &ns.name, change)
            .await
            .unwrap_or_else(|e| panic!("{kind}: the change refused: {e}"));
        assert!(
            apply_yaml(&c, &ns.name, back).await.is_err(),
            "{kind}: undone without a word from the store"
        );
        let api: Api<DynamicObject> =
            Api::namespaced_with(c.clone(), &ns.name, &api_resource(kind));
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .unwrap_or_else(|e| panic!("{kind}: status: {e}"));
        apply_yaml(&c, &ns.name, back).await.unwrap_or_else(|e| {
            panic!("{kind}: undoing what the store could not carry out refused: {e}")
        });
    }
}
