//! Pure: how an app's store binding resolves (a reference to an existing store, or an inline
//! spec the app owns as `<app>-<suffix>`), and the one-app-per-namespace rule for apps whose
//! images hard-code Service names.

use crate::k8s::conditions::Health;
use crate::k8s::owner::Owner;
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use std::sync::Arc;

/// A store an app uses.
#[derive(Clone, Debug)]
pub struct Binding<S> {
    /// Name of the store custom resource.
    pub name: String,
    /// The app declares it inline, so owns it.
    pub owned: bool,
    /// The store as the cache has it; `None` while it does not exist (yet).
    pub store: Option<Arc<S>>,
}

/// Resolves a binding that is either a reference (`reference`) or an inline spec owned by the
/// app under `<app>-<suffix>`. `field` is the spec path and `kind` the store kind, for
/// messages. `Err` is the `Stalled` health when an inline store's name is taken by a store the
/// app does not own (taking it over would put its data at risk).
pub fn resolve<S: Resource<DynamicType = ()> + Clone>(
    app: &Owner,
    reference: Option<&str>,
    suffix: &str,
    field: &str,
    kind: &str,
    stores: &Store<S>,
) -> Result<Binding<S>, Health> {
    let find = |name: &str| {
        stores.state().into_iter().find(|s| {
            s.meta().namespace.as_deref() == Some(app.namespace.as_str()) && s.name_any() == name
        })
    };
    match reference {
        Some(name) => Ok(Binding {
            name: name.to_string(),
            owned: false,
            store: find(name),
        }),
        None => {
            let own = format!("{}-{suffix}", app.name);
            let store = find(&own);
            if let Some(existing) = &store {
                let ours = existing.owner_references().iter().any(|r| r.uid == app.uid);
                if !ours {
                    return Err(Health::stalled(
                        "StoreNameTaken",
                        format!(
                            "{field}.spec: the inline store would be the {kind} \"{own}\", but one of that name already exists and does not belong to this app; reference it with {field}.name or rename the app"
                        ),
                    ));
                }
            }
            Ok(Binding {
                name: own,
                owned: true,
                store,
            })
        }
    }
}

/// `Some(stalled)` when another app of the same kind already owns this namespace's fixed
/// Service names (`services`, for the message).
pub fn namespace_conflict<K: Resource<DynamicType = ()> + Clone>(
    app: &Owner,
    siblings: &Store<K>,
    kind: &str,
    services: &str,
) -> Option<Health> {
    let owner = owner_in_cache(app, siblings)?;
    (owner != app.name).then(|| {
        Health::stalled(
            NAMESPACE_CONFLICT,
            format!("{kind} \"{owner}\" already runs in namespace \"{}\" and owns the fixed Services {services}; only one {kind} per namespace is possible because the stock images hard-code those names", app.namespace),
        )
    })
}

/// The app that owns `app`'s namespace as the cache of its kind has it.
pub fn owner_in_cache<K: Resource<DynamicType = ()> + Clone>(
    app: &Owner,
    siblings: &Store<K>,
) -> Option<String> {
    let state = siblings.state();
    let same_ns = state
        .iter()
        .map(|a| a.as_ref())
        .filter(|a| a.meta().namespace.as_deref() == Some(app.namespace.as_str()));
    namespace_owner(same_ns)
}

pub const NAMESPACE_CONFLICT: &str = "NamespaceConflict";

/// The object among `candidates` (same kind, same namespace) that owns the namespace's fixed
/// Service names: the oldest, then the first by name. Deterministic, so two objects never
/// both believe they won.
pub fn namespace_owner<'a, K: Resource + 'a>(
    candidates: impl Iterator<Item = &'a K>,
) -> Option<String> {
    candidates
        .filter(|o| o.meta().deletion_timestamp.is_none())
        .map(|o| {
            (
                o.meta().creation_timestamp.clone().map(|t| t.0),
                o.meta().name.clone().unwrap_or_default(),
            )
        })
        .min_by(|a, b| match (&a.0, &b.0) {
            (Some(x), Some(y)) => x.cmp(y).then_with(|| a.1.cmp(&b.1)),
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, None) => a.1.cmp(&b.1),
        })
        .map(|(_, name)| name)
}
