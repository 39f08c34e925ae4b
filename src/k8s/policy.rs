//! Pure: the NetworkPolicy a store gets when it serves the stock images (no Redis password,
//! postgres/postgres): only the store's own pods (members, backup and restore Jobs), the pods
//! of apps declared as its clients, and the operator may connect; the metrics ports are open
//! to the scrapers' namespaces (`spec.monitoring.scraperNamespaceSelector`, else any).

use super::children::{Child, ChildKind};
use super::factory::Factory;
use super::labels;
use super::podspec::match_labels;
use crate::error::Result;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// The metrics ports of a store and who may scrape them.
#[derive(Clone, Debug, Default)]
pub struct MetricsPorts {
    pub ports: Vec<i32>,
    /// Namespaces of the scrapers; any namespace when `None`.
    pub scrapers: Option<LabelSelector>,
}

/// The policy `name` (component `component`) over every pod of the store instance `f`
/// builds for; clients are pods labelled `client_label: <instance>`.
pub fn store_clients_only(
    f: &Factory,
    name: &str,
    component: &str,
    client_label: &str,
    metrics: &MetricsPorts,
) -> Result<Child> {
    let pods = |pairs: &[(&str, &str)]| {
        let labels = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Some(match_labels(&labels.collect::<BTreeMap<_, _>>()))
    };
    let instance = pods(&[(labels::NAME, f.app), (labels::INSTANCE, &f.instance)]);
    let from = vec![
        NetworkPolicyPeer {
            pod_selector: instance.clone(),
            ..NetworkPolicyPeer::default()
        },
        NetworkPolicyPeer {
            pod_selector: pods(&[(client_label, &f.instance)]),
            ..NetworkPolicyPeer::default()
        },
        NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector::default()),
            pod_selector: pods(&[(labels::NAME, labels::MANAGER)]),
            ..NetworkPolicyPeer::default()
        },
    ];
    let mut rules = vec![NetworkPolicyIngressRule {
        from: Some(from),
        ..NetworkPolicyIngressRule::default()
    }];
    if !metrics.ports.is_empty() {
        let ports = metrics.ports.iter().map(|p| NetworkPolicyPort {
            port: Some(IntOrString::Int(*p)),
            ..NetworkPolicyPort::default()
        });
        // Pods in the scrapers' namespaces: Prometheus runs in a namespace of its own.
        let scrapers = NetworkPolicyPeer {
            namespace_selector: Some(metrics.scrapers.clone().unwrap_or_default()),
            ..NetworkPolicyPeer::default()
        };
        rules.push(NetworkPolicyIngressRule {
            from: Some(vec![scrapers]),
            ports: Some(ports.collect()),
        });
    }
    let policy = NetworkPolicy {
        metadata: f.object_meta(name, component),
        spec: Some(NetworkPolicySpec {
            pod_selector: instance,
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(rules),
            ..NetworkPolicySpec::default()
        }),
    };
    f.typed(ChildKind::NetworkPolicy, &policy)
}
