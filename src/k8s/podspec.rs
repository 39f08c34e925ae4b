//! Pure, typed pieces of pod templates every builder uses: the restricted security settings,
//! environment entries, probes and the default placement.

use crate::crd::common::{ExporterSpec, SchedulingSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, ExecAction, HTTPGetAction, KeyToPath, ObjectFieldSelector, PodSecurityContext,
    PodSpec, Probe, SeccompProfile, SecretKeySelector, SecurityContext, TopologySpreadConstraint,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// Container security of the restricted Pod Security Standard.
pub fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// Pod security of the restricted Pod Security Standard, running as `uid`/`gid`.
pub fn restricted_pod(uid: i64, gid: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(gid),
        fs_group: Some(gid),
        // Only on first mount: a database's data directory must keep its own modes.
        fs_group_change_policy: Some("OnRootMismatch".into()),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..PodSecurityContext::default()
    }
}

/// The container runtime's default seccomp profile: what every Pod Security level above
/// privileged asks for, and harmless for images that run as root.
pub fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..SeccompProfile::default()
    }
}

/// The command running `script` with `sh -c`.
pub fn shell(script: impl Into<String>) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

/// `name=value`.
pub fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// `name` from key `key` of Secret `secret`.
pub fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                ..SecretKeySelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// `POD_IP`, from the downward API.
pub fn pod_ip_env() -> EnvVar {
    field_env("POD_IP", "status.podIP")
}

/// `name` from the pod's field `field_path` (downward API), e.g. `metadata.name`.
pub fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// A named container port (TCP): Services and probes refer to it by name.
pub fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        ..ContainerPort::default()
    }
}

/// Volume `name` mounted writable at `path`.
pub fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..VolumeMount::default()
    }
}

/// Volume `name` mounted read-only at `path`.
pub fn read_only_mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        read_only: Some(true),
        ..mount(name, path)
    }
}

/// A scratch volume living as long as the pod (the root filesystem is read-only).
pub fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

/// ConfigMap `config_map` as volume `name`: only the files `keys` (each under its own name)
/// when given, every key otherwise.
pub fn config_map_volume(name: &str, config_map: &str, keys: &[&str]) -> Volume {
    let items = keys
        .iter()
        .map(|key| KeyToPath {
            key: key.to_string(),
            path: key.to_string(),
            ..KeyToPath::default()
        })
        .collect::<Vec<_>>();
    Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map.into(),
            items: (!items.is_empty()).then_some(items),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// A store's metrics exporter next to each member: `spec`'s image (`default_image` when it
/// names none), serving on the port named `metrics`.
pub fn exporter(
    spec: &ExporterSpec,
    default_image: &str,
    port: i32,
    env: Vec<EnvVar>,
) -> Container {
    Container {
        name: "exporter".into(),
        image: Some(spec.image.as_deref().unwrap_or(default_image).into()),
        env: Some(env),
        ports: Some(vec![container_port("metrics", port)]),
        security_context: Some(restricted_container()),
        resources: spec.resources.clone(),
        ..Container::default()
    }
}

/// Timing of a probe: period, timeout, failures allowed, initial delay (seconds).
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub period: i32,
    pub timeout: i32,
    pub failures: i32,
    pub delay: i32,
}

impl Timing {
    fn apply(self, probe: Probe) -> Probe {
        Probe {
            period_seconds: Some(self.period),
            timeout_seconds: Some(self.timeout),
            failure_threshold: Some(self.failures),
            initial_delay_seconds: Some(self.delay),
            ..probe
        }
    }
}

/// An HTTP GET probe of `path` on the named or numbered `port`.
pub fn http_probe(path: &str, port: IntOrString, timing: Timing) -> Probe {
    timing.apply(Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port,
            ..HTTPGetAction::default()
        }),
        ..Probe::default()
    })
}

/// A probe running `command` in the container.
pub fn exec_probe(command: &[&str], timing: Timing) -> Probe {
    timing.apply(Probe {
        exec: Some(ExecAction {
            command: Some(command.iter().map(|s| s.to_string()).collect()),
        }),
        ..Probe::default()
    })
}

/// Pod placement: the user's settings, or by default a spread across zones, then hosts
/// (preferred, so a small cluster still schedules every pod).
pub fn placement(
    pod: &mut PodSpec,
    scheduling: Option<&SchedulingSpec>,
    selector: &BTreeMap<String, String>,
) {
    let s = scheduling.cloned().unwrap_or_default();
    if !s.node_selector.is_empty() {
        pod.node_selector = Some(s.node_selector);
    }
    if !s.tolerations.is_empty() {
        pod.tolerations = Some(s.tolerations);
    }
    pod.affinity = s.affinity;
    pod.priority_class_name = s.priority_class_name;
    let spread = if s.topology_spread_constraints.is_empty() {
        ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
            .iter()
            .map(|key| TopologySpreadConstraint {
                max_skew: 1,
                topology_key: key.to_string(),
                when_unsatisfiable: "ScheduleAnyway".into(),
                label_selector: Some(match_labels(selector)),
                ..TopologySpreadConstraint::default()
            })
            .collect()
    } else {
        s.topology_spread_constraints
    };
    pod.topology_spread_constraints = Some(spread);
}

/// A label selector matching exactly these labels.
pub fn match_labels(labels: &BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels.clone()),
        ..LabelSelector::default()
    }
}
