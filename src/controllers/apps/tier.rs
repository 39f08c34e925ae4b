//! Pure: the one builder of an app's tiers. A tier is a Deployment (omitting `replicas` when an
//! autoscaler owns it), and optionally its Service, a disruption budget, a
//! HorizontalPodAutoscaler and an Ingress — all typed objects, labelled and owned like every
//! child.

use crate::crd::common::{
    AutoscalingSpec, IngressSpec, Resources, SchedulingSpec, ServiceSpec, ServiceType,
};
use crate::k8s::children::{Child, ChildKind};
use crate::k8s::factory::Factory;
use crate::k8s::labels;
use crate::k8s::podspec::{self, Timing};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, HostAlias, PodSpec, PodTemplateSpec, Probe,
    SecurityContext, Service, ServicePort, ServiceSpec as K8sServiceSpec, Volume,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec as K8sIngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// The name of a tier's port on its container and Service.
pub const HTTP_PORT_NAME: &str = "http";

/// One tier of an app, as the builder needs it.
#[derive(Clone, Debug)]
pub struct Tier<'a> {
    /// `app.kubernetes.io/component`: `frontend`, `proxy`, `vote`, `result`, `worker`.
    pub component: &'a str,
    /// Name of the Deployment (and of the Service, PDB, HPA, Ingress).
    pub name: String,
    pub image: &'a str,
    /// Pods when not autoscaled.
    pub replicas: i32,
    pub autoscaling: Option<&'a AutoscalingSpec>,
    pub resources: &'a Resources,
    pub env: Vec<EnvVar>,
    /// The container's HTTP port, probed on `probe_path`; `None` for a tier without one.
    pub http: Option<Http<'a>>,
    /// Labels on the pods beyond the selector ones (store client labels, ...).
    pub pod_labels: BTreeMap<String, String>,
    /// Annotations on the pod template: a change rolls the pods.
    pub pod_annotations: BTreeMap<String, String>,
    /// Containers and volumes beyond the tier's own (sidecars).
    pub extra: PodExtras,
}

/// A tier's HTTP side.
#[derive(Clone, Debug)]
pub struct Http<'a> {
    pub container_port: i32,
    pub probe_path: &'a str,
    /// The Service in front of the tier; `None` for none.
    pub service: Option<&'a ServiceSpec>,
    /// Pin a client to one pod (socket.io needs it when there is more than one pod).
    pub client_affinity: bool,
}

/// What some tiers add to the pod.
#[derive(Clone, Debug, Default)]
pub struct PodExtras {
    /// Native sidecars (init containers that keep running beside the main one and stop after it).
    pub sidecars: Vec<Container>,
    pub volumes: Vec<Volume>,
    pub host_aliases: Vec<HostAlias>,
    pub termination_grace_seconds: Option<i64>,
    /// Mounts and lifecycle of the tier's own container.
    pub main: Option<Container>,
}

/// The stock images run as root and bind port 80, so the app tiers cannot meet the
/// restricted Pod Security Standard; they get what baseline allows and nothing more.
fn app_container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: Some(vec![
                "CHOWN".into(),
                "NET_BIND_SERVICE".into(),
                "SETGID".into(),
                "SETUID".into(),
            ]),
        }),
        seccomp_profile: Some(podspec::runtime_default_seccomp()),
        ..SecurityContext::default()
    }
}

fn http_probe(h: &Http, period: i32, failures: i32) -> Probe {
    let timing = Timing {
        period,
        timeout: 3,
        failures,
        delay: 0,
    };
    podspec::http_probe(
        h.probe_path,
        IntOrString::String(HTTP_PORT_NAME.into()),
        timing,
    )
}

fn container(t: &Tier) -> Container {
    let base = t.extra.main.clone().unwrap_or_default();
    Container {
        name: t.component.to_string(),
        image: Some(t.image.to_string()),
        env: (!t.env.is_empty()).then(|| t.env.clone()),
        ports: t.http.as_ref().map(|h| {
            vec![ContainerPort {
                name: Some(HTTP_PORT_NAME.into()),
                container_port: h.container_port,
                ..ContainerPort::default()
            }]
        }),
        readiness_probe: t.http.as_ref().map(|h| http_probe(h, 5, 3)),
        liveness_probe: t.http.as_ref().map(|h| http_probe(h, 10, 6)),
        resources: t.resources.clone(),
        security_context: Some(app_container_security()),
        ..base
    }
}

/// The tier's Deployment. With an autoscaler, `replicas` is left out so that server-side
/// apply leaves the autoscaler's count alone.
pub fn deployment(
    f: &Factory,
    t: &Tier,
    scheduling: Option<&SchedulingSpec>,
) -> crate::error::Result<Child> {
    let selector = f.selector(t.component);
    let mut pod_labels = f.labels(t.component);
    pod_labels.extend(t.pod_labels.clone());
    let mut pod = PodSpec {
        containers: vec![container(t)],
        init_containers: (!t.extra.sidecars.is_empty()).then(|| t.extra.sidecars.clone()),
        volumes: (!t.extra.volumes.is_empty()).then(|| t.extra.volumes.clone()),
        host_aliases: (!t.extra.host_aliases.is_empty()).then(|| t.extra.host_aliases.clone()),
        termination_grace_period_seconds: t.extra.termination_grace_seconds,
        // The stock images find their peers by DNS; Service variables only add noise.
        enable_service_links: Some(false),
        automount_service_account_token: Some(false),
        ..PodSpec::default()
    };
    podspec::placement(&mut pod, scheduling, &selector);
    let deployment = Deployment {
        metadata: f.object_meta(&t.name, t.component),
        spec: Some(DeploymentSpec {
            replicas: t.autoscaling.is_none().then_some(t.replicas),
            selector: podspec::match_labels(&selector),
            // A new pod must be ready before an old one goes: a web tier never shrinks during
            // a rollout.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: (!t.pod_annotations.is_empty()).then(|| t.pod_annotations.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    f.typed(ChildKind::Deployment, &deployment)
}

/// The tier's Service, when it has one.
pub fn service(f: &Factory, t: &Tier) -> crate::error::Result<Option<Child>> {
    let Some(h) = &t.http else { return Ok(None) };
    let Some(spec) = h.service else {
        return Ok(None);
    };
    let mut meta = f.object_meta(&t.name, t.component);
    if !spec.annotations.is_empty() {
        meta.annotations = Some(spec.annotations.clone());
    }
    let type_ = match spec.type_ {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    };
    let svc = Service {
        metadata: meta,
        spec: Some(K8sServiceSpec {
            type_: Some(type_.into()),
            selector: Some(f.selector(t.component)),
            ports: Some(vec![ServicePort {
                name: Some(HTTP_PORT_NAME.into()),
                port: spec.port,
                target_port: Some(IntOrString::String(HTTP_PORT_NAME.into())),
                ..ServicePort::default()
            }]),
            session_affinity: h.client_affinity.then(|| "ClientIP".into()),
            ..K8sServiceSpec::default()
        }),
        ..Service::default()
    };
    f.typed(ChildKind::Service, &svc).map(Some)
}

/// A budget that lets one pod of the tier go at a time and never holds up a drain for an
/// unhealthy pod; only for tiers that can lose a pod (more than one).
pub fn disruption_budget(f: &Factory, t: &Tier) -> crate::error::Result<Option<Child>> {
    let most = t.autoscaling.map(|a| a.max_replicas).unwrap_or(t.replicas);
    if most < 2 {
        return Ok(None);
    }
    let pdb = PodDisruptionBudget {
        metadata: f.object_meta(&t.name, t.component),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(podspec::match_labels(&f.selector(t.component))),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    };
    f.typed(ChildKind::PodDisruptionBudget, &pdb).map(Some)
}

/// The tier's HorizontalPodAutoscaler on CPU, when the spec asks for one.
pub fn autoscaler(f: &Factory, t: &Tier) -> crate::error::Result<Option<Child>> {
    let Some(a) = t.autoscaling else {
        return Ok(None);
    };
    let hpa = HorizontalPodAutoscaler {
        metadata: f.object_meta(&t.name, t.component),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: t.name.clone(),
            },
            min_replicas: Some(a.min_replicas),
            max_replicas: a.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(a.target_cpu_utilization_percentage),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        },
        ..HorizontalPodAutoscaler::default()
    };
    f.typed(ChildKind::HorizontalPodAutoscaler, &hpa).map(Some)
}

/// An Ingress sending `spec.host` + `spec.path` to Service `backend` on `port`.
pub fn ingress(
    f: &Factory,
    name: &str,
    component: &str,
    spec: &IngressSpec,
    backend: &str,
    port: i32,
) -> crate::error::Result<Child> {
    let mut meta = f.object_meta(name, component);
    if !spec.annotations.is_empty() {
        meta.annotations = Some(spec.annotations.clone());
    }
    let ing = Ingress {
        metadata: meta,
        spec: Some(K8sIngressSpec {
            ingress_class_name: spec.class_name.clone(),
            rules: Some(vec![IngressRule {
                host: Some(spec.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(spec.path.clone()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: backend.into(),
                                port: Some(ServiceBackendPort {
                                    number: Some(port),
                                    ..ServiceBackendPort::default()
                                }),
                            }),
                            ..IngressBackend::default()
                        },
                    }],
                }),
            }]),
            tls: spec.tls_secret_name.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![spec.host.clone()]),
                    secret_name: Some(secret.clone()),
                }]
            }),
            ..K8sIngressSpec::default()
        }),
        ..Ingress::default()
    };
    f.typed(ChildKind::Ingress, &ing)
}

/// Every object of a tier: Deployment, then Service, budget and autoscaler where wanted.
pub fn objects(
    f: &Factory,
    t: &Tier,
    scheduling: Option<&SchedulingSpec>,
) -> crate::error::Result<Vec<Child>> {
    let mut out = vec![deployment(f, t, scheduling)?];
    out.extend(service(f, t)?);
    out.extend(disruption_budget(f, t)?);
    out.extend(autoscaler(f, t)?);
    Ok(out)
}

/// Labels a tier's pods carry beyond the selector: the store client labels.
pub fn client_labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The annotation that rolls a tier when the value changes (a configuration hash, a primary).
pub fn roll_annotation(key: &str, value: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(key.to_string(), value.to_string())])
}

/// [`labels::CONFIG_HASH`], for tiers rolled by a configuration change.
pub fn config_hash_annotation(hash: &str) -> BTreeMap<String, String> {
    roll_annotation(labels::CONFIG_HASH, hash)
}
