//! What the two app controllers share (DESIGN.md §10): an app is tiers plus stores plus the
//! Services that glue them. [`binding`] resolves a store reference or inline spec, [`stores`]
//! reads a store's state and builds an owned one, [`tier`] is the one web-tier builder
//! (Deployment, Service, disruption budget, autoscaler, Ingress, HTTPRoute), [`glue`] builds the
//! fixed-name Services the stock images need, selecting on the stores' role labels.

use crate::k8s::owner::Owner;
use k8s_openapi::NamespaceResourceScope;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;

pub(crate) mod binding;
pub(crate) mod glue;
pub(crate) mod handoff;
pub(crate) mod health;
pub(crate) mod route;
pub mod stores;
pub(crate) mod tier;

/// Pod labels the stores' NetworkPolicies admit (`<label>: <store name>`).
pub use crate::controllers::patroni_cluster::names::CLIENT_LABEL as POSTGRES_CLIENT_LABEL;
pub use crate::controllers::redis_sentinel::names::CLIENT_LABEL as REDIS_CLIENT_LABEL;

/// Whether a `NamespaceConflict` the cache shows is already over on the API server: the app it
/// names as the namespace's owner is gone, going, or another object of that name. An app
/// controller hears of a sibling's deletion through a watch of its own, which can run ahead of
/// the cache validation reads; without this look the app would stay Stalled, with nothing left
/// to wake it. One GET, only while in conflict.
pub async fn conflict_over<K>(client: &Client, app: &Owner, siblings: &Store<K>) -> bool
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let Some(owner) = binding::owner_in_cache(app, siblings) else {
        return false;
    };
    if owner == app.name {
        return false;
    }
    let cached = siblings
        .get(&ObjectRef::new(&owner).within(&app.namespace))
        .and_then(|o| o.meta().uid.clone());
    let api: Api<K> = Api::namespaced(client.clone(), &app.namespace);
    match api.get_opt(&owner).await {
        Ok(None) => true,
        Ok(Some(live)) => live.meta().deletion_timestamp.is_some() || live.meta().uid != cached,
        // Unknown: keep what the cache says.
        Err(_) => false,
    }
}

/// How soon an app whose conflict is over on the API server, but not yet in the cache, looks
/// again.
pub const CACHE_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(1);

/// The repository part of an image reference (`docker.io/dockersamples/x:tag` → `x`).
pub fn image_repo(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_repository_is_the_last_path_element_without_tag_or_digest() {
        assert_eq!(
            super::image_repo("docker.io/dockersamples/examplevotingapp_vote:latest"),
            "examplevotingapp_vote"
        );
        assert_eq!(super::image_repo("gb-frontend@sha256:ab"), "gb-frontend");
        assert_eq!(super::image_repo("registry:5000/x/y"), "y");
    }
}
