//! The API server itself enforces the schema and CEL rules of our CRDs.

use crate::support::{TestNamespace, apply_yaml, client, install_crds, repo};

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
