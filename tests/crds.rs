//! The generated CRDs: committed copy current, and shaped the way kubectl, GitOps tools and
//! the API server's YAML parser need.

use guestbook_operator::crd::{self, Guestbook, PatroniCluster, RedisSentinel, VoteApp};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::Path;

const COMMITTED: &str = "crds/guestbook-operator.yaml";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn committed_crds_are_current() {
    let generated = crd::all_yaml().expect("CRDs render");
    let committed = std::fs::read_to_string(root().join(COMMITTED)).unwrap_or_default();
    assert!(
        generated == committed,
        "{COMMITTED} is stale: run `cargo run -- crd > {COMMITTED}` (then hack/render-manifests) and commit the result"
    );
}

/// Words YAML 1.1 parsers (the API server's and kubectl's) read as booleans or null. An enum
/// value spelled like one would be rejected as "must be of type string" when written unquoted.
const YAML11_KEYWORDS: &[&str] = &[
    "y", "yes", "n", "no", "true", "false", "on", "off", "null", "~",
];

fn walk<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    out.push((path.clone(), v));
    match v {
        Value::Object(m) => m
            .iter()
            .for_each(|(k, c)| walk(c, format!("{path}/{k}"), out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, c)| walk(c, format!("{path}/{i}"), out)),
        _ => {}
    }
}

fn schema(c: &CustomResourceDefinition) -> Value {
    serde_json::to_value(&c.spec.versions[0].schema).expect("schema serialises")
}

#[test]
fn no_enum_value_reads_as_a_yaml_boolean() {
    for c in crd::all() {
        let s = schema(&c);
        let mut nodes = Vec::new();
        walk(&s, String::new(), &mut nodes);
        for (path, node) in nodes {
            if let Some(Value::Array(values)) = node.get("enum") {
                for v in values.iter().filter_map(Value::as_str) {
                    assert!(
                        !YAML11_KEYWORDS.contains(&v.to_ascii_lowercase().as_str()),
                        "{}: enum value {v:?} at {path} is a YAML 1.1 keyword",
                        c.spec.names.kind
                    );
                }
            }
        }
    }
}

/// Our own properties all carry `kubectl explain` text. Embedded upstream types (resources,
/// affinity, ...) and the standard Condition are documented by Kubernetes itself.
#[test]
fn every_field_of_ours_is_documented() {
    const UPSTREAM: &[&str] = &[
        "resources",
        "affinity",
        "tolerations",
        "topologySpreadConstraints",
        "conditions",
        "metadata",
        "scraperNamespaceSelector",
    ];
    fn check(kind: &str, path: &str, node: &Value, missing: &mut Vec<String>) {
        let Some(props) = node.get("properties").and_then(Value::as_object) else {
            if let Some(items) = node.get("items") {
                check(kind, &format!("{path}[]"), items, missing);
            }
            return;
        };
        for (name, child) in props {
            let p = format!("{path}.{name}");
            if child
                .get("description")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
                && name != "apiVersion"
                && name != "kind"
            {
                missing.push(format!("{kind}: {p}"));
            }
            if !UPSTREAM.contains(&name.as_str()) {
                check(kind, &p, child, missing);
            }
        }
    }
    let mut missing = Vec::new();
    for c in crd::all() {
        let s = schema(&c);
        check(&c.spec.names.kind, "", &s["openAPIV3Schema"], &mut missing);
    }
    assert!(
        missing.is_empty(),
        "fields without a doc comment:\n{}",
        missing.join("\n")
    );
}

/// Short names of built-in resources (kubectl api-resources on Kubernetes 1.36).
const BUILTIN_SHORT_NAMES: &[&str] = &[
    "cm", "cs", "csr", "crd", "crds", "deploy", "ds", "ep", "ev", "hpa", "ing", "limits", "netpol",
    "no", "ns", "pc", "pdb", "po", "psp", "pv", "pvc", "quota", "rc", "rs", "sa", "sc", "sts",
    "svc", "vac", "cj", "ipa", "sc",
];

#[test]
fn names_printer_columns_and_subresources() {
    let mut seen = Vec::new();
    for c in crd::all() {
        let names = &c.spec.names;
        assert_eq!(c.spec.group, crd::common::GROUP);
        assert_eq!(
            names.categories.as_deref(),
            Some(&[crd::common::CATEGORY.to_string()][..]),
            "{}",
            names.kind
        );
        for short in names.short_names.iter().flatten() {
            assert!(
                !BUILTIN_SHORT_NAMES.contains(&short.as_str()),
                "{}: short name {short} collides with a built-in",
                names.kind
            );
            assert!(!seen.contains(short), "short name {short} used twice");
            seen.push(short.clone());
        }
        let v = &c.spec.versions[0];
        assert!(v.served && v.storage);
        let sub = v.subresources.as_ref().expect("subresources");
        assert!(sub.status.is_some(), "{}: status subresource", names.kind);
        let scaled = sub.scale.is_some();
        assert_eq!(
            scaled,
            names.kind != "VoteApp",
            "{}: scale subresource only where one replica count makes sense",
            names.kind
        );
        let cols: Vec<_> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(cols.first(), Some(&"Ready"), "{}", names.kind);
        assert!(cols.contains(&"Age"));
    }
}

fn parse_all<K: DeserializeOwned>(text: &str) -> Result<Vec<K>, serde_yaml_ng::Error> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(K::deserialize)
        .collect()
}

#[test]
fn every_example_is_one_of_our_kinds() {
    let dir = root().join("manifests/examples");
    let mut kinds = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("manifests/examples exists") {
        let path = entry.expect("dir entry").path();
        let text = std::fs::read_to_string(&path).expect("readable example");
        let kind = serde_yaml_ng::from_str::<Value>(&text).expect("YAML")["kind"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let ok = match kind.as_str() {
            "RedisSentinel" => parse_all::<RedisSentinel>(&text).map(|_| ()),
            "PatroniCluster" => parse_all::<PatroniCluster>(&text).map(|_| ()),
            "Guestbook" => parse_all::<Guestbook>(&text).map(|_| ()),
            "VoteApp" => parse_all::<VoteApp>(&text).map(|_| ()),
            other => panic!("{}: unexpected kind {other:?}", path.display()),
        };
        ok.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        kinds.push(kind);
    }
    kinds.sort();
    assert_eq!(
        kinds,
        ["Guestbook", "PatroniCluster", "RedisSentinel", "VoteApp"],
        "one example per kind"
    );
}
