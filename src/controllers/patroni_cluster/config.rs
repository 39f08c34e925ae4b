//! Pure: Patroni's dynamic configuration (kept in its DCS, shared by every member) as the spec
//! wants it, and the `PATCH /config` that brings the live one there. Patroni reads
//! `bootstrap.dcs` only when a cluster is first created; every later change goes through the
//! REST API, and Patroni itself flags the members whose PostgreSQL must restart.

use crate::crd::PatroniCluster;
use crate::crd::patroni_cluster::SynchronousMode;
use serde_json::{Map, Value, json};

/// The dynamic configuration for `pc`.
pub fn desired(pc: &PatroniCluster) -> Value {
    let s = &pc.spec;
    let mut parameters = json!({
        "wal_level": "replica",
        "hot_standby": "on",
        "wal_log_hints": "on",
        "max_wal_senders": "10",
        "max_replication_slots": "10",
    });
    for (k, v) in &s.postgresql.parameters {
        parameters[k] = json!(v);
    }
    json!({
        "ttl": s.patroni.ttl,
        "loop_wait": s.patroni.loop_wait,
        "retry_timeout": s.patroni.retry_timeout,
        "maximum_lag_on_failover": s.patroni.maximum_lag_on_failover,
        // Without failsafe mode a primary demotes itself whenever the API server is unreachable.
        "failsafe_mode": true,
        "synchronous_mode": s.patroni.synchronous_mode != SynchronousMode::Asynchronous,
        "synchronous_mode_strict": s.patroni.synchronous_mode == SynchronousMode::Strict,
        "postgresql": {"use_pg_rewind": true, "use_slots": true, "parameters": parameters},
    })
}

/// PostgreSQL spells a setting many ways (`on`, `true`, `1`; `8MB` as a string or number):
/// compare the forms Patroni hands back and the spec's strings loosely.
fn same(a: &Value, b: &Value) -> bool {
    fn norm(v: &Value) -> String {
        match v {
            Value::String(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "yes" => "on".into(),
                "false" | "no" => "off".into(),
                other => other.into(),
            },
            Value::Bool(true) => "on".into(),
            Value::Bool(false) => "off".into(),
            other => other.to_string(),
        }
    }
    norm(a) == norm(b)
}

/// Keys of `want` whose value differs in `live`; with `remove_others`, also a null for each
/// key `live` has and `want` does not.
fn diff(
    want: &Map<String, Value>,
    live: Option<&Map<String, Value>>,
    remove_others: bool,
) -> Map<String, Value> {
    let empty = Map::new();
    let live = live.unwrap_or(&empty);
    let mut out = Map::new();
    for (k, v) in want {
        match (v, live.get(k)) {
            (Value::Object(w), Some(Value::Object(l))) => {
                let inner = diff(w, Some(l), k == "parameters");
                if !inner.is_empty() {
                    out.insert(k.clone(), Value::Object(inner));
                }
            }
            (Value::Object(w), _) => {
                out.insert(k.clone(), Value::Object(w.clone()));
            }
            (w, Some(l)) if same(w, l) => {}
            (w, _) => {
                out.insert(k.clone(), w.clone());
            }
        }
    }
    if remove_others {
        for k in live.keys().filter(|k| !want.contains_key(*k)) {
            out.insert(k.clone(), Value::Null);
        }
    }
    out
}

/// The `PATCH /config` body that turns `live` into `want`, or `None` when they agree.
/// PostgreSQL parameters the spec no longer sets are removed (back to their defaults); other
/// keys Patroni keeps are left alone.
pub fn patch(want: &Value, live: &Value) -> Option<Value> {
    let want = want.as_object()?;
    let out = diff(want, live.as_object(), false);
    (!out.is_empty()).then_some(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(extra: &str) -> PatroniCluster {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: guestbook-operator.dev/v1alpha1\nkind: PatroniCluster\nmetadata: {{name: db}}\nspec: {{{extra}}}\n"
        ))
        .expect("fixture")
    }

    #[test]
    fn a_cluster_bootstrapped_from_the_spec_needs_no_patch() {
        let pc = cluster("postgresql: {parameters: {work_mem: 8MB}}");
        let mut live = desired(&pc);
        // Patroni hands back its own spellings and extra keys.
        live["postgresql"]["parameters"]["hot_standby"] = json!(true);
        live["postgresql"]["parameters"]["max_wal_senders"] = json!(10);
        live["master_start_timeout"] = json!(300);
        assert_eq!(patch(&desired(&pc), &live), None);
    }

    #[test]
    fn changed_added_and_removed_parameters_are_patched() {
        let before = cluster("postgresql: {parameters: {work_mem: 8MB, max_connections: '100'}}");
        let after = cluster(
            "postgresql: {parameters: {work_mem: 16MB, shared_buffers: 64MB}}, patroni: {ttl: 40}",
        );
        let p = patch(&desired(&after), &desired(&before)).expect("a patch");
        assert_eq!(
            p,
            json!({"ttl": 40, "postgresql": {"parameters": {
                "work_mem": "16MB", "shared_buffers": "64MB", "max_connections": null}}})
        );
    }

    #[test]
    fn synchronous_mode_switches_both_flags() {
        let sync = desired(&cluster("patroni: {synchronousMode: Strict}"));
        let p = patch(&sync, &desired(&cluster(""))).expect("a patch");
        assert_eq!(
            p,
            json!({"synchronous_mode": true, "synchronous_mode_strict": true})
        );
    }
}
