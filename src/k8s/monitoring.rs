//! The Prometheus Operator objects the stores and apps get when `spec.monitoring.enabled`
//! (`monitoring.coreos.com/v1`). k8s-openapi has no types for them: these are our own typed
//! structs with only the fields we set, applied through the shared path like every child.
//! The API is an add-on a cluster may lack (or get later): the operator asks the API server
//! at start and then every `--api-discovery-interval-seconds` ([`MonitoringApi`]), and
//! watches and applies these kinds only while it is served.

use super::children::{Child, ChildKind};
use super::factory::Factory;
use crate::crd::common::{ExporterSpec, MonitoringSpec};
use crate::error::Result;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{Client, CustomResource};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use tokio::sync::watch;

pub const GROUP: &str = "monitoring.coreos.com";
pub const VERSION: &str = "v1";

/// The pod labels every target carries into Prometheus (as `app_kubernetes_io_instance` and
/// `app_kubernetes_io_component`): the alerts group by them.
pub const TARGET_LABELS: [&str; 2] = [super::labels::INSTANCE, super::labels::COMPONENT];

/// The reason of the one Normal event an object gets per generation when it asks for
/// monitoring where the API server does not serve [`GROUP`].
pub const API_MISSING: &str = "MonitoringAPIMissing";

/// A ServiceMonitor: Prometheus scrapes `endpoints` (ports named on the Services) of the
/// Services in the object's namespace that `selector` picks.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "monitoring.coreos.com",
    version = "v1",
    kind = "ServiceMonitor",
    plural = "servicemonitors",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    pub selector: LabelSelector,
    pub endpoints: Vec<Endpoint>,
    pub pod_target_labels: Vec<String>,
}

/// A PodMonitor: Prometheus scrapes the named container ports of the pods `selector` picks,
/// without a Service in between.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "monitoring.coreos.com",
    version = "v1",
    kind = "PodMonitor",
    plural = "podmonitors",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct PodMonitorSpec {
    pub selector: LabelSelector,
    pub pod_metrics_endpoints: Vec<Endpoint>,
    pub pod_target_labels: Vec<String>,
}

/// One scraped port, by name, on `/metrics`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub port: String,
    pub path: String,
}

fn endpoints(ports: &[&str]) -> Vec<Endpoint> {
    ports
        .iter()
        .map(|p| Endpoint {
            port: p.to_string(),
            path: "/metrics".into(),
        })
        .collect()
}

fn target_labels() -> Vec<String> {
    TARGET_LABELS.iter().map(|l| l.to_string()).collect()
}

/// The ServiceMonitor `name` over the Services of the instance `f` builds for that carry
/// the given port names. Services are picked by name/instance/managed-by: a ServiceMonitor
/// ignores a selected Service without one of the ports.
pub fn service_monitor(f: &Factory, name: &str, component: &str, ports: &[&str]) -> Result<Child> {
    let mut selector: BTreeMap<String, String> = BTreeMap::new();
    selector.insert(super::labels::NAME.into(), f.app.into());
    selector.insert(super::labels::INSTANCE.into(), f.instance.clone());
    selector.insert(
        super::labels::MANAGED_BY.into(),
        super::labels::MANAGER.into(),
    );
    let sm = ServiceMonitor {
        metadata: f.object_meta(name, component),
        spec: ServiceMonitorSpec {
            selector: super::podspec::match_labels(&selector),
            endpoints: endpoints(ports),
            pod_target_labels: target_labels(),
        },
    };
    f.typed(ChildKind::ServiceMonitor, &sm)
}

/// The PodMonitor `name` over the pods of `component` of the instance `f` builds for.
pub fn pod_monitor(f: &Factory, name: &str, component: &str, ports: &[&str]) -> Result<Child> {
    let pm = PodMonitor {
        metadata: f.object_meta(name, component),
        spec: PodMonitorSpec {
            selector: super::podspec::match_labels(&f.selector(component)),
            pod_metrics_endpoints: endpoints(ports),
            pod_target_labels: target_labels(),
        },
    };
    f.typed(ChildKind::PodMonitor, &pm)
}

/// The exporter sidecar a store runs: the one `spec.exporter` asks for, or, when monitoring is
/// wanted, one with `spec.exporter`'s image and resources (if any): a ServiceMonitor needs
/// something to scrape.
pub fn exporter(
    exporter: Option<&ExporterSpec>,
    monitoring: Option<&MonitoringSpec>,
) -> Option<ExporterSpec> {
    match (exporter, MonitoringSpec::wanted(monitoring)) {
        (Some(x), _) if x.enabled => Some(x.clone()),
        (x, true) => Some(ExporterSpec {
            enabled: true,
            image: x.and_then(|x| x.image.clone()),
            resources: x.and_then(|x| x.resources.clone()),
        }),
        (_, false) => None,
    }
}

/// Whether the API server serves [`GROUP`]/[`VERSION`]: asked before watching the kinds,
/// because the watch of a kind that is not served would never sync.
pub async fn served(client: &Client) -> std::result::Result<bool, kube::Error> {
    let groups = client.list_api_groups().await?;
    Ok(groups
        .groups
        .iter()
        .any(|g| g.name == GROUP && g.versions.iter().any(|v| v.version == VERSION)))
}

/// Whether the API server serves the monitoring API, as last found, shared by the
/// controllers: their watches of the monitoring kinds start once it is (see
/// [`super::cache::watch_children`]), their objects are reconciled again each time it comes,
/// and their monitoring children are withheld while it is not.
#[derive(Debug)]
pub struct MonitoringApi(watch::Sender<Found>);

/// What discovery last found, and how many times the API has arrived (gone from not served to
/// served): a count, so a watcher that sees only the latest value misses no arrival.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Found {
    served: bool,
    arrivals: u64,
}

impl MonitoringApi {
    pub fn new(served: bool) -> Self {
        Self(watch::Sender::new(Found {
            served,
            arrivals: 0,
        }))
    }

    pub fn served(&self) -> bool {
        self.0.borrow().served
    }

    /// Records what discovery (or a refused apply) found; logs a change.
    pub fn set(&self, served: bool) {
        let changed = self.0.send_if_modified(|found| {
            if found.served == served {
                return false;
            }
            found.served = served;
            found.arrivals += u64::from(served);
            true
        });
        if changed {
            tracing::info!(
                served,
                "the Prometheus Operator API ({GROUP}/{VERSION}) changed"
            );
        }
    }

    /// Resolves once the API is served (at once if it is).
    pub fn when_served(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        async move {
            // An error means the sender is gone with the operator: nothing left to start.
            let _ = rx.wait_for(|found| found.served).await;
        }
    }

    /// Yields each time the API arrives from now on.
    pub fn arrivals(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        let seen = rx.borrow_and_update().arrivals;
        futures::stream::unfold((rx, seen), |(mut rx, seen)| async move {
            loop {
                rx.changed().await.ok()?;
                let now = rx.borrow_and_update().arrivals;
                if now != seen {
                    return Some(((), (rx, now)));
                }
            }
        })
    }

    /// Asks the API server again; a failed discovery changes nothing.
    pub async fn rediscover(&self, client: &Client) {
        match served(client).await {
            Ok(now) => self.set(now),
            Err(e) => tracing::debug!(error = %e, "API discovery failed; monitoring unchanged"),
        }
    }
}

/// Whether `error` says the API server does not serve the kind any more: not found (its CRD
/// went since the last discovery) or forbidden because its CRD is being deleted (creates are
/// refused then). The object is then withheld, not failed.
pub fn is_api_gone(error: &crate::error::Error) -> bool {
    let crate::error::Error::Kube(kube::Error::Api(s)) = error else {
        return false;
    };
    // By code: a kind not served gets the router's bare "404 page not found", which carries
    // no reason `is_not_found` would know. The apiextensions server words the other one
    // "create not allowed while custom resource definition is terminating".
    s.code == 404
        || (s.code == 403
            && s.message
                .contains("custom resource definition is terminating"))
}

/// Takes the monitoring objects out of `children` where the API is not served; returns
/// whether any were wanted.
pub fn withhold(children: &mut Vec<Child>, monitoring_served: bool) -> bool {
    if monitoring_served {
        return false;
    }
    let before = children.len();
    children.retain(|c| !c.kind.is_monitoring());
    children.len() != before
}

/// Per object uid, the generation it was last told about: one event per object and
/// generation.
#[derive(Debug, Default)]
pub struct Told(Mutex<HashMap<String, i64>>);

impl Told {
    /// True the first time it is asked for `uid` at `generation`. When a new object comes,
    /// those that are gone are forgotten (`live` lists the uids still cached; asked only then,
    /// so a known object costs one map lookup).
    pub fn first(
        &self,
        uid: &str,
        generation: i64,
        live: impl FnOnce() -> HashSet<String>,
    ) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(uid) {
            let live = live();
            map.retain(|u, _| live.contains(u));
        }
        map.insert(uid.to_string(), generation) != Some(generation)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn told_once_per_object_and_generation_and_forgets_the_gone() {
        let told = Told::default();
        let live = |uids: &[&str]| uids.iter().map(|u| u.to_string()).collect::<HashSet<_>>();
        assert!(told.first("a", 1, || live(&["a"])));
        assert!(!told.first("a", 1, || panic!("a known object needs no list")));
        assert!(told.first("a", 2, || panic!("a known object needs no list")));
        assert!(!told.first("a", 2, || live(&[])));
        assert!(told.first("b", 1, || live(&["b"])), "a is gone");
        assert_eq!(told.len(), 1);
    }

    #[test]
    fn monitoring_kinds_are_not_applied_where_not_served() {
        let child = |kind| Child {
            kind,
            name: "x".into(),
            object: serde_json::Value::Null,
            initial: None,
        };
        let mut children = vec![child(ChildKind::Service), child(ChildKind::ServiceMonitor)];
        assert!(!withhold(&mut children, true));
        assert_eq!(children.len(), 2);
        assert!(withhold(&mut children, false));
        assert_eq!(children, vec![child(ChildKind::Service)]);
        assert!(!withhold(&mut children, false), "nothing was wanted");
    }

    #[tokio::test]
    async fn arrivals_are_the_changes_to_served() {
        use futures::StreamExt;
        let api = MonitoringApi::new(false);
        let mut arrivals = Box::pin(api.arrivals());
        let served = api.when_served();
        api.set(false);
        api.set(true);
        tokio::time::timeout(std::time::Duration::from_secs(5), served)
            .await
            .expect("when_served resolves once served");
        assert_eq!(arrivals.next().await, Some(()));
        api.set(true);
        api.set(false);
        api.set(true);
        assert_eq!(arrivals.next().await, Some(()));
        assert!(api.served());
    }
}
