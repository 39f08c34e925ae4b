//! What the two app controllers share (DESIGN.md §10): an app is tiers plus stores plus the
//! Services that glue them. [`binding`] resolves a store reference or inline spec, [`stores`]
//! reads a store's state and builds an owned one, [`tier`] is the one web-tier builder
//! (Deployment, Service, disruption budget, autoscaler, Ingress, HTTPRoute), [`glue`] builds the
//! fixed-name Services the stock images need, selecting on the stores' role labels.

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
