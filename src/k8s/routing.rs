//! Whether a store's own Service leads to the member that serves it. The Services select on
//! role labels; a selector or port changed by someone else (put back on the next apply), a
//! label that did not move, or an endpoints controller that stopped can leave a healthy
//! master behind a Service that leads nowhere, which clients see as the store being down.

use super::conditions::Health;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client};

/// The ready addresses of `service`, from its EndpointSlices.
pub async fn ready_addresses(
    client: &Client,
    ns: &str,
    service: &str,
) -> Result<Vec<String>, kube::Error> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    let slices = api.list(&lp).await?;
    let mut out: Vec<String> = slices
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .flat_map(|e| e.addresses.iter().cloned())
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// Pure: `Reconciling` when `service` does not list `ip`, the address of `member` (the
/// master or leader, which runs), among its ready endpoints.
pub fn verdict(
    service: &str,
    role: &str,
    member: &str,
    ip: &str,
    ready: &[String],
) -> Option<Health> {
    if ready.iter().any(|a| a == ip) {
        return None;
    }
    let listed = if ready.is_empty() {
        "no ready endpoint".to_string()
    } else {
        format!("only {}", ready.join(", "))
    };
    Some(Health::progressing(
        "ServiceNotRouting",
        format!(
            "Service {service} does not lead to the {role} {member} ({ip}), which runs: its EndpointSlices list {listed}"
        ),
    ))
}

/// [`verdict`] for the live Service; a failed read is logged and judged by the next reconcile.
pub async fn check(
    client: &Client,
    ns: &str,
    service: &str,
    role: &str,
    member: &str,
    ip: &str,
) -> Option<Health> {
    match ready_addresses(client, ns, service).await {
        Ok(ready) => verdict(service, role, member, ip, &ready),
        Err(e) => {
            tracing::warn!(service, error = %e, "could not read the Service's EndpointSlices");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_that_does_not_list_the_master_says_so() {
        let ok = verdict("db", "leader", "db-0", "10.244.1.2", &["10.244.1.2".into()]);
        assert!(ok.is_none());
        let none = verdict("db", "leader", "db-0", "10.244.1.2", &[]).expect("reported");
        assert_eq!(none.reason(), "ServiceNotRouting");
        assert_eq!(
            none.message(),
            "Service db does not lead to the leader db-0 (10.244.1.2), which runs: its EndpointSlices list no ready endpoint"
        );
        let other = verdict(
            "c-redis",
            "master",
            "c-redis-1",
            "10.0.0.2",
            &["10.0.0.1".into()],
        );
        assert!(
            other
                .expect("reported")
                .message()
                .ends_with("list only 10.0.0.1")
        );
    }
}
