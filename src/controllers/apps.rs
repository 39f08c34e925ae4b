//! What the two app controllers share: store bindings and the one-app-per-namespace rule.

use crate::k8s::conditions::Health;
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};

/// How an app's store binding resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// Name of the store custom resource the app uses.
    pub store: String,
    /// A problem that keeps the app from going further, if any.
    pub problem: Option<Health>,
}

/// Resolves a binding that is either a reference (`name`) or an inline spec owned by the app
/// under `<app>-<suffix>`. `field` is the spec path, for messages; `kind` the store kind.
pub fn resolve_binding<S: Resource<DynamicType = ()> + Clone>(
    app: &impl Resource,
    reference: Option<&str>,
    suffix: &str,
    field: &str,
    kind: &str,
    stores: &Store<S>,
) -> Binding {
    let ns = app.meta().namespace.clone().unwrap_or_default();
    let app_uid = app.meta().uid.clone();
    let find = |name: &str| {
        stores
            .state()
            .into_iter()
            .find(|s| s.meta().namespace.as_deref() == Some(&ns) && s.name_any() == name)
    };
    match reference {
        Some(name) => {
            let problem = find(name).is_none().then(|| {
                Health::progressing(
                    "WaitingForStore",
                    format!(
                        "{field}.name: {kind} \"{name}\" does not exist in namespace \"{ns}\" yet"
                    ),
                )
            });
            Binding {
                store: name.to_string(),
                problem,
            }
        }
        None => {
            let own = format!("{}-{suffix}", app.meta().name.clone().unwrap_or_default());
            // An existing store of that name that the app does not own would be taken over
            // (and its data put at risk): refuse instead.
            let problem = find(&own).and_then(|existing| {
                let owned = existing.owner_references().iter().any(|r| Some(&r.uid) == app_uid.as_ref());
                (!owned).then(|| {
                    Health::stalled(
                        "StoreNameTaken",
                        format!("{field}.spec: the inline store would be the {kind} \"{own}\", but one of that name already exists and does not belong to this app; reference it with {field}.name or rename the app"),
                    )
                })
            });
            Binding {
                store: own,
                problem,
            }
        }
    }
}

/// `Some(health)` when another app of the same kind already owns this namespace's fixed
/// Service names.
pub fn namespace_conflict<K: Resource<DynamicType = ()> + Clone>(
    app: &K,
    siblings: &Store<K>,
    kind: &str,
    services: &str,
) -> Option<Health> {
    let ns = app.meta().namespace.clone();
    let state = siblings.state();
    let same_ns = state
        .iter()
        .map(|a| a.as_ref())
        .filter(|a| a.meta().namespace == ns);
    let owner = namespace_owner(same_ns)?;
    let me = app.meta().name.clone().unwrap_or_default();
    (owner != me).then(|| {
        Health::stalled(
            "NamespaceConflict",
            format!("{kind} \"{owner}\" already runs in namespace \"{}\" and owns the fixed Services {services}; only one {kind} per namespace is possible because the stock images hard-code those names", ns.unwrap_or_default()),
        )
    })
}

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
