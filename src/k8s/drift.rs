//! Pure: who changed a field of one of our children. The API server records, per field
//! manager, the fields it set (`metadata.managedFields`, in the `fieldsV1` trie); the manager
//! whose fields reach deepest along the drifted path is the one that changed it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use serde_json::Value;

/// One child put back: `Kind/name`, the first field that differed (as
/// [`super::apply::difference`] names it), and the manager that set it, when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    pub child: String,
    pub field: String,
    pub manager: Option<String>,
}

impl Drift {
    /// The event's note.
    pub fn note(&self) -> String {
        let by = match &self.manager {
            Some(m) => format!("field manager {m:?}"),
            None => "another field manager".to_string(),
        };
        format!(
            "{}: {} was changed by {by}; applied the operator's value again",
            self.child, self.field
        )
    }
}

/// The manager other than `ours` that owns the deepest part of `path` (ties: the latest).
pub fn changed_by(entries: &[ManagedFieldsEntry], path: &str, ours: &str) -> Option<String> {
    let segments = segments(path);
    entries
        .iter()
        .filter(|e| e.manager.as_deref().is_some_and(|m| m != ours))
        .filter_map(|e| {
            let depth = depth(&e.fields_v1.as_ref()?.0, &segments);
            (depth > 0).then(|| (depth, e.time.as_ref().map(|t| t.0), e.manager.clone()))
        })
        .max_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)))
        .and_then(|(_, _, m)| m)
}

/// `.spec.selector.app` → `f:spec`, `f:selector`, `f:app`; `.ports[name="redis"].port` →
/// `f:ports`, a `k:` key naming the item, `f:port`.
fn segments(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (field, items) = part.split_once('[').unwrap_or((part, ""));
        if !field.is_empty() {
            out.push(Segment::Field(field.to_string()));
        }
        for item in items.split('[').filter(|i| !i.is_empty()) {
            let item = item.trim_end_matches(']');
            if let Some((key, value)) = item.split_once('=') {
                let value: Value = serde_json::from_str(value).unwrap_or(Value::Null);
                out.push(Segment::Item(key.to_string(), value));
            }
        }
    }
    out
}

enum Segment {
    Field(String),
    /// A list item named by one key, as `difference` prints it.
    Item(String, Value),
}

fn depth(trie: &Value, segments: &[Segment]) -> usize {
    let Some((first, rest)) = segments.split_first() else {
        return 0;
    };
    let Some(map) = trie.as_object() else {
        return 0;
    };
    let next = match first {
        Segment::Field(f) => map.get(&format!("f:{f}")),
        Segment::Item(key, value) => map.iter().find_map(|(k, v)| {
            let named: Value = serde_json::from_str(k.strip_prefix("k:")?).ok()?;
            (named.get(key) == Some(value)).then_some(v)
        }),
    };
    next.map_or(0, |n| 1 + depth(n, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, Time};
    use serde_json::json;

    fn entry(manager: &str, secs: i64, fields: Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Update".into()),
            fields_v1: Some(FieldsV1(fields)),
            time: Some(Time(
                k8s_openapi::jiff::Timestamp::from_second(secs).expect("time"),
            )),
            ..ManagedFieldsEntry::default()
        }
    }

    #[test]
    fn the_manager_owning_the_added_selector_key_is_named() {
        let ours = json!({"f:spec": {"f:selector": {"f:app": {}}, "f:ports": {}}});
        let edit = json!({"f:spec": {"f:selector": {"f:tier": {}}}});
        let other = json!({"f:metadata": {"f:labels": {"f:x": {}}}});
        let entries = [
            entry("guestbook-operator", 1, ours),
            entry("kubectl-edit", 2, edit),
            entry("argocd", 3, other),
        ];
        assert_eq!(
            changed_by(&entries, ".spec.selector.tier", "guestbook-operator").as_deref(),
            Some("kubectl-edit")
        );
    }

    #[test]
    fn list_items_are_matched_by_their_key() {
        let env = json!({"f:spec": {"f:containers": {"k:{\"name\":\"redis\"}": {"f:image": {}}}}});
        let shallow = json!({"f:spec": {"f:containers": {}}});
        let entries = [entry("helm", 5, env), entry("later", 9, shallow)];
        let path = ".spec.containers[name=\"redis\"].image";
        assert_eq!(
            changed_by(&entries, path, "guestbook-operator").as_deref(),
            Some("helm")
        );
        assert_eq!(changed_by(&entries, ".data.x", "guestbook-operator"), None);
    }

    #[test]
    fn the_note_names_child_field_and_manager() {
        let d = Drift {
            child: "Service/db".into(),
            field: ".spec.selector.tier".into(),
            manager: Some("kubectl-edit".into()),
        };
        assert_eq!(
            d.note(),
            "Service/db: .spec.selector.tier was changed by field manager \"kubectl-edit\"; applied the operator's value again"
        );
    }
}
