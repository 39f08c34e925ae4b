//! Pure: the fixed-name Services the stock images hard-code (`redis`, `db`, `redis-leader`,
//! `redis-follower`). Each selects the store's pods on the role label the store's controller
//! maintains, so it follows a failover the moment the label moves — no polling of ours.

use crate::k8s::children::{Child, ChildKind};
use crate::k8s::factory::Factory;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// A Service `name` on `port` → the store pods' named port `target`, selecting `selector`.
pub fn service(
    f: &Factory,
    name: &str,
    component: &str,
    selector: BTreeMap<String, String>,
    port: i32,
    target: &str,
) -> crate::error::Result<Child> {
    let svc = Service {
        metadata: f.object_meta(name, component),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some(target.into()),
                port,
                target_port: Some(IntOrString::String(target.into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    f.typed(ChildKind::Service, &svc)
}
