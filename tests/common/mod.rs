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

/// Compares `actual` with the committed snapshot `tests/snapshots/<name>`; with
/// GBO_UPDATE_SNAPSHOTS=1 it rewrites the snapshot instead (then review the diff).
pub fn assert_snapshot(name: &str, actual: &str) {
    let file = path(&format!("tests/snapshots/{name}"));
    if std::env::var_os("GBO_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&file, actual).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        return;
    }
    let expected = std::fs::read_to_string(&file).unwrap_or_default();
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .filter(|(_, (e, a))| e != a)
            .take(5)
            .map(|(i, (e, a))| format!("line {}:\n  snapshot: {e}\n  now:      {a}", i + 1))
            .collect();
        panic!(
            "{name} differs from tests/snapshots/{name} ({} vs {} lines)\n{}\nIf the change is intended: GBO_UPDATE_SNAPSHOTS=1 cargo test, review and commit the snapshot.",
            expected.lines().count(),
            actual.lines().count(),
            diff.join("\n")
        );
    }
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
