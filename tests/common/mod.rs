//! Helpers shared by the offline tests.

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

pub fn path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Every document of a YAML fixture, as `K`.
pub fn load<K: DeserializeOwned>(rel: &str) -> Vec<K> {
    let full = path(rel);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| K::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", full.display())))
        .collect()
}

pub fn one<K: DeserializeOwned>(rel: &str) -> K {
    load::<K>(rel)
        .into_iter()
        .next()
        .expect("fixture has a document")
}

/// Compares `actual` with the committed insta snapshot `tests/snapshots/<fixture>.snap`, the
/// children built from `tests/fixtures/build/<fixture>.yaml`. A mismatch fails the test with a
/// diff of the changed lines, in CI or not (outside CI insta also leaves `<fixture>.snap.new`
/// beside it for review). To accept an intended change: `INSTA_UPDATE=always cargo test --test
/// <test>` (or `cargo insta review`), then review the diff and commit the snapshot.
pub fn assert_snapshot(fixture: &str, actual: &str) {
    let mut settings = insta::Settings::clone_current();
    // One flat directory for every test file, named by fixture, not by the calling module.
    settings.set_snapshot_path(path("tests/snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_input_file(path(&format!("tests/fixtures/build/{fixture}.yaml")));
    settings.set_omit_expression(true);
    settings.bind(|| insta::assert_snapshot!(fixture, actual));
}

/// Children as one YAML stream, the way snapshots show them.
pub fn render(children: &[guestbook_operator::k8s::children::Child]) -> String {
    children
        .iter()
        .map(|c| {
            let mut doc = serde_yaml_ng::to_string(&c.object).expect("yaml");
            if c.initial.is_some() {
                doc = format!("# created once with a generated password, then only its metadata is applied\n{doc}");
            }
            format!("---\n{doc}")
        })
        .collect()
}
