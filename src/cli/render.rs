//! `guestbook-operator render -f cr.yaml`: every object the operator would create for the
//! custom resources in a file, offline — for review in a GitOps pull request. The builders are
//! the controllers' own (one builder, the same bytes), run as on a namespace holding nothing
//! else: inline stores as declared (and their own objects, as their controller would build
//! them), referenced stores not found, nothing observed yet (no primary, no replica in sync,
//! no queue). Generated passwords are never printed: such Secrets show only what is applied
//! after their creation. What the API server assigns (uids) shows as a fixed placeholder.

use crate::controllers::{guestbook, patroni_cluster, redis_sentinel, vote_app};
use crate::crd::{Guestbook, PatroniCluster, RedisSentinel, VoteApp};
use crate::error::{Error, Result};
use crate::k8s::children::{Child, ChildKind};
use kube::ResourceExt;
use serde::Deserialize;
use serde_json::Value;

/// Stands in for the uid the API server gives each object (owner references carry it).
pub const PLACEHOLDER_UID: &str = "00000000-0000-4000-8000-000000000000";
/// What an offline build uses for a generated password; it never appears in the output.
const UNPRINTED_PASSWORD: &str = "generated-at-creation";

/// Renders every document of `yaml` into `namespace` (where a document names none).
pub fn render(yaml: &str, namespace: &str) -> Result<String> {
    let mut out = String::new();
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let value = Value::deserialize(doc).map_err(|e| invalid("the input", e.to_string()))?;
        if value.is_null() {
            continue;
        }
        for (title, objects) in objects_of(value, namespace)? {
            out.push_str(&format!("# {title}\n"));
            for o in objects {
                out.push_str("---\n");
                out.push_str(
                    &serde_yaml_ng::to_string(&o).map_err(|e| invalid("output", e.to_string()))?,
                );
            }
        }
    }
    Ok(out)
}

fn invalid(what: &str, message: String) -> Error {
    Error::Invalid {
        kind: "render",
        name: what.to_string(),
        message,
    }
}

/// A custom resource of ours as the API server would hold it: namespaced, with a uid.
fn admitted<K: for<'de> Deserialize<'de> + kube::Resource>(
    mut value: Value,
    ns: &str,
) -> Result<K> {
    let meta = value
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| invalid("the input", "a document without metadata".into()))?;
    meta.entry("namespace")
        .or_insert_with(|| Value::String(ns.into()));
    meta.entry("uid")
        .or_insert_with(|| Value::String(PLACEHOLDER_UID.into()));
    serde_json::from_value(value).map_err(|e| invalid("the input", e.to_string()))
}

/// (heading, objects) for one custom resource, and for the stores it owns.
fn objects_of(value: Value, ns: &str) -> Result<Vec<(String, Vec<Value>)>> {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    match kind.as_str() {
        "RedisSentinel" => {
            let rs: RedisSentinel = admitted(value, ns)?;
            Ok(vec![(heading("RedisSentinel", &rs), redis_objects(&rs)?)])
        }
        "PatroniCluster" => {
            let pc: PatroniCluster = admitted(value, ns)?;
            Ok(vec![(
                heading("PatroniCluster", &pc),
                patroni_objects(&pc)?,
            )])
        }
        "Guestbook" => {
            let gb: Guestbook = admitted(value, ns)?;
            let built = guestbook::build::build_offline(&gb)?;
            app_sections(heading("Guestbook", &gb), built.children, built.routes)
        }
        "VoteApp" => {
            let app: VoteApp = admitted(value, ns)?;
            let built = vote_app::build::build_offline(&app)?;
            app_sections(heading("VoteApp", &app), built.children, built.routes)
        }
        other => Err(invalid(
            "the input",
            format!(
                "kind {other:?} is not one of RedisSentinel, PatroniCluster, Guestbook, VoteApp"
            ),
        )),
    }
}

fn heading<K: kube::Resource>(kind: &str, obj: &K) -> String {
    format!(
        "{kind} {}/{}: the objects its controller applies",
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// An app's children, then each store it owns with that store's own children.
fn app_sections(
    title: String,
    children: Vec<Child>,
    routes: Vec<(String, Value)>,
) -> Result<Vec<(String, Vec<Value>)>> {
    let mut sections = Vec::new();
    let mut stores = Vec::new();
    for c in &children {
        match c.kind {
            ChildKind::RedisSentinel => {
                let rs: RedisSentinel = admitted(c.object.clone(), "")?;
                stores.push((heading("RedisSentinel", &rs), redis_objects(&rs)?));
            }
            ChildKind::PatroniCluster => {
                let pc: PatroniCluster = admitted(c.object.clone(), "")?;
                stores.push((heading("PatroniCluster", &pc), patroni_objects(&pc)?));
            }
            _ => {}
        }
    }
    let mut own = objects(&children);
    own.extend(routes.into_iter().map(|(_, r)| r));
    sections.push((title, own));
    sections.extend(stores);
    Ok(sections)
}

fn objects(children: &[Child]) -> Vec<Value> {
    children.iter().map(|c| c.object.clone()).collect()
}

fn redis_objects(rs: &RedisSentinel) -> Result<Vec<Value>> {
    let inputs = redis_sentinel::build::Inputs {
        generated_password: UNPRINTED_PASSWORD,
    };
    Ok(objects(&redis_sentinel::build::build_offline(rs, &inputs)?))
}

fn patroni_objects(pc: &PatroniCluster) -> Result<Vec<Value>> {
    let passwords: Vec<String> = pc
        .spec
        .users
        .iter()
        .map(|_| UNPRINTED_PASSWORD.to_string())
        .collect();
    let inputs = patroni_cluster::build::Inputs {
        superuser_password: UNPRINTED_PASSWORD,
        replication_password: UNPRINTED_PASSWORD,
        restore: false,
        replicas: pc.spec.members,
        user_passwords: &passwords,
        roles: None,
    };
    Ok(objects(&patroni_cluster::build::build_offline(
        pc, &inputs,
    )?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_never_printed_and_uids_are_placeholders() {
        let yaml = "apiVersion: guestbook-operator.dev/v1alpha1\nkind: RedisSentinel\nmetadata: {name: cache}\nspec: {}\n";
        let out = super::render(yaml, "shop").expect("renders");
        assert!(!out.contains(super::UNPRINTED_PASSWORD));
        assert!(out.contains(super::PLACEHOLDER_UID));
        assert!(out.contains("namespace: shop"));
        assert!(out.contains("kind: StatefulSet"));
    }

    #[test]
    fn an_unknown_kind_is_named() {
        let err = super::render("kind: Pod\nmetadata: {name: x}\n", "d").expect_err("refused");
        assert!(err.to_string().contains("\"Pod\""), "{err}");
    }
}
