//! Pods and workloads of a store or app, read from the controllers' caches.

use super::cache::ChildCache;
use super::children::ChildKind;
use super::labels;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use std::sync::Arc;

/// Pods of one component (`redis`, `postgres`, `backup`...) of the instance `instance` of
/// `app`, from a pod cache, by ordinal.
pub fn component_pods(
    pods: &Store<Pod>,
    namespace: &str,
    instance: &str,
    app: &str,
    component: &str,
) -> Vec<Arc<Pod>> {
    let mut out: Vec<_> = pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
        .filter(|p| {
            let l = p.labels();
            l.get(labels::INSTANCE).map(String::as_str) == Some(instance)
                && l.get(labels::COMPONENT).map(String::as_str) == Some(component)
                && l.get(labels::NAME).map(String::as_str) == Some(app)
        })
        .collect();
    out.sort_by_key(|p| ordinal(&p.name_any()));
    out
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The ordinal of a StatefulSet pod from its name (`web-2` → 2); last when there is none.
pub fn ordinal(pod: &str) -> i32 {
    pod.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(i32::MAX)
}

/// A StatefulSet's update revision, once its controller has seen the current template.
pub fn update_revision(cache: &ChildCache, ns: &str, name: &str) -> Option<String> {
    let sts = cache.get(ChildKind::StatefulSet, ns, name)?;
    let status = sts.data.get("status")?;
    let observed = status.get("observedGeneration")?.as_i64()?;
    if Some(observed) != sts.metadata.generation {
        return None;
    }
    Some(status.get("updateRevision")?.as_str()?.to_string())
}

/// A count from a workload's status (`readyReplicas`, `availableReplicas`...); 0 when absent.
pub fn status_count(cache: &ChildCache, kind: ChildKind, ns: &str, name: &str, field: &str) -> i32 {
    cache
        .get(kind, ns, name)
        .and_then(|o| o.data.get("status")?.get(field)?.as_i64())
        .and_then(|n| i32::try_from(n).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ordinals_come_from_the_name() {
        assert_eq!(super::ordinal("db-postgres-12"), 12);
        assert_eq!(super::ordinal("odd"), i32::MAX);
    }
}
