//! The Prometheus Operator objects the stores and apps get when `spec.monitoring.enabled`
//! (`monitoring.coreos.com/v1`). k8s-openapi has no types for them: these are our own typed
//! structs with only the fields we set, applied through the shared path like every child.
//! The API is an add-on a cluster may lack, so the operator asks the API server once at
//! start ([`served`]) and watches and applies these kinds only where it is served.

use super::children::{Child, ChildKind};
use super::factory::Factory;
use crate::crd::common::{ExporterSpec, MonitoringSpec};
use crate::error::Result;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{Client, CustomResource};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

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

/// Whether the API server serves [`GROUP`]/[`VERSION`]: asked once at start, because the
/// child watches of a kind that is not served would never sync and would hold readiness
/// back. (Installing the Prometheus Operator later takes a restart of the operator.)
pub async fn served(client: &Client) -> std::result::Result<bool, kube::Error> {
    let groups = client.list_api_groups().await?;
    Ok(groups
        .groups
        .iter()
        .any(|g| g.name == GROUP && g.versions.iter().any(|v| v.version == VERSION)))
}

/// The kinds of `kinds` a controller may watch: the monitoring kinds only where served.
pub fn watchable(kinds: &[ChildKind], monitoring_served: bool) -> Vec<ChildKind> {
    kinds
        .iter()
        .copied()
        .filter(|k| monitoring_served || !k.is_monitoring())
        .collect()
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
    fn monitoring_kinds_are_neither_watched_nor_applied_where_not_served() {
        let kinds = [
            ChildKind::Service,
            ChildKind::ServiceMonitor,
            ChildKind::PodMonitor,
        ];
        assert_eq!(watchable(&kinds, false), vec![ChildKind::Service]);
        assert_eq!(watchable(&kinds, true), kinds.to_vec());
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
}
