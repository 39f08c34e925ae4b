//! Labels on everything the operator creates: the standard app.kubernetes.io set, plus owner
//! labels that scope each controller's child and pod watches to its own objects (pruning then
//! goes by the controller reference's uid in those caches, see [`super::apply`]).

use std::collections::BTreeMap;

pub const NAME: &str = "app.kubernetes.io/name";
pub const INSTANCE: &str = "app.kubernetes.io/instance";
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const PART_OF: &str = "app.kubernetes.io/part-of";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "guestbook-operator";
/// Kind and name of the custom resource a child belongs to.
pub const OWNER_KIND: &str = "guestbook-operator.dev/owner-kind";
pub const OWNER_NAME: &str = "guestbook-operator.dev/owner-name";
/// The role the operator gives a store pod (`master`/`replica`); Services select on it.
pub const ROLE: &str = "guestbook-operator.dev/role";
/// Hash of the configuration a pod template was built from, so that a change rolls the pods.
pub const CONFIG_HASH: &str = "guestbook-operator.dev/config-hash";

/// Labels identifying the pods of one component: stable, so usable as a selector.
pub fn selector(app: &str, instance: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME.to_string(), app.to_string()),
        (INSTANCE.to_string(), instance.to_string()),
        (COMPONENT.to_string(), component.to_string()),
    ])
}

/// All labels of a child: the selector ones plus ownership and management.
pub fn child(
    app: &str,
    instance: &str,
    component: &str,
    owner_kind: &str,
    part_of: &str,
) -> BTreeMap<String, String> {
    let mut l = selector(app, instance, component);
    l.insert(PART_OF.to_string(), part_of.to_string());
    l.insert(MANAGED_BY.to_string(), MANAGER.to_string());
    l.insert(OWNER_KIND.to_string(), owner_kind.to_string());
    l.insert(OWNER_NAME.to_string(), instance.to_string());
    l
}

/// The selector pruning uses to find everything one custom resource owns.
pub fn owned_by(owner_kind: &str, owner_name: &str) -> String {
    format!("{MANAGED_BY}={MANAGER},{OWNER_KIND}={owner_kind},{OWNER_NAME}={owner_name}")
}

/// The selector a controller's child watches use: only its own kind's children.
pub fn owned_by_kind(owner_kind: &str) -> String {
    format!("{MANAGED_BY}={MANAGER},{OWNER_KIND}={owner_kind}")
}

/// A label selector in the string form the API and the scale subresource use (`k=v,k=v`).
pub fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
