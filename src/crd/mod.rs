//! The custom resource types (no client code here). `kubectl explain` text comes from the doc
//! comments; validation the API server can enforce lives in the schema and CEL rules.

pub mod common;
pub mod guestbook;
pub mod patroni_cluster;
pub mod redis_sentinel;
pub mod transitions;
pub mod vote_app;

pub use guestbook::Guestbook;
pub use patroni_cluster::PatroniCluster;
pub use redis_sentinel::RedisSentinel;
pub use vote_app::VoteApp;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Every CRD this operator serves, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        RedisSentinel::crd(),
        PatroniCluster::crd(),
        Guestbook::crd(),
        VoteApp::crd(),
    ]
}

/// All CRDs as one multi-document YAML stream (what `guestbook-operator crd` prints and
/// `crds/` holds).
pub fn all_yaml() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for crd in all() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd)?);
    }
    Ok(out)
}
