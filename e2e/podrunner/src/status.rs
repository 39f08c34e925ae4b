//! What the runner reports in a pod's status, shaped as a kubelet shapes it.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

#[derive(Clone, Debug, PartialEq)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: jiff::Timestamp,
    },
    Terminated(Terminated),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Terminated {
    pub exit_code: i32,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<jiff::Timestamp>,
    pub finished_at: jiff::Timestamp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ctr {
    pub name: String,
    pub image: String,
    pub state: State,
    pub last: Option<Terminated>,
    pub restart_count: i32,
    pub ready: bool,
    pub started: bool,
    pub run: u64,
    /// An init container with `restartPolicy: Always`: its readiness counts toward the pod's.
    pub sidecar: bool,
}

impl Ctr {
    pub fn new(name: &str, image: &str) -> Self {
        Self {
            name: name.into(),
            image: image.into(),
            state: State::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            last: None,
            restart_count: 0,
            ready: false,
            started: false,
            run: 0,
            sidecar: false,
        }
    }
}

/// Everything the pod status is computed from.
#[derive(Clone, Debug, Default)]
pub struct PodState {
    pub phase: String,
    pub ip: Option<Ipv4Addr>,
    pub host_ip: Option<Ipv4Addr>,
    pub start_time: Option<jiff::Timestamp>,
    pub sandbox_ready: bool,
    pub initialized: bool,
    pub init: Vec<Ctr>,
    pub main: Vec<Ctr>,
    pub message: Option<String>,
    /// Condition type → (status, last transition), so transition times only move on change.
    pub transitions: BTreeMap<String, (bool, jiff::Timestamp)>,
}

fn time(t: jiff::Timestamp) -> Time {
    Time(t)
}

fn terminated(t: &Terminated) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        reason: Some(t.reason.clone()),
        message: t.message.clone(),
        started_at: t.started_at.map(time),
        finished_at: Some(time(t.finished_at)),
        ..Default::default()
    }
}

fn container_status(c: &Ctr, pod_uid: &str) -> ContainerStatus {
    let state = match &c.state {
        State::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..Default::default()
        },
        State::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(time(*started_at)),
            }),
            ..Default::default()
        },
        State::Terminated(t) => ContainerState {
            terminated: Some(terminated(t)),
            ..Default::default()
        },
    };
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: format!("gbo-podrunner://{}", c.image),
        container_id: (c.run > 0)
            .then(|| format!("gbo-podrunner://{pod_uid}/{}/{}", c.name, c.run)),
        ready: c.ready,
        started: Some(c.started),
        restart_count: c.restart_count,
        state: Some(state),
        last_state: c.last.as_ref().map(|t| ContainerState {
            terminated: Some(terminated(t)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl PodState {
    fn condition(&mut self, type_: &str, status: bool, now: jiff::Timestamp) -> PodCondition {
        let entry = self
            .transitions
            .entry(type_.to_string())
            .or_insert((status, now));
        if entry.0 != status {
            *entry = (status, now);
        }
        PodCondition {
            type_: type_.into(),
            status: if status { "True" } else { "False" }.into(),
            last_transition_time: Some(time(entry.1)),
            ..Default::default()
        }
    }

    /// The status to write, given the pod's current conditions (PodScheduled is the scheduler's).
    pub fn to_status(
        &mut self,
        pod_uid: &str,
        scheduled: Option<PodCondition>,
        now: jiff::Timestamp,
    ) -> PodStatus {
        // As the kubelet's ContainersReady: every main container and every sidecar ready.
        let all_ready = !self.main.is_empty()
            && self.main.iter().all(|c| c.ready)
            && self.init.iter().filter(|c| c.sidecar).all(|c| c.ready);
        let mut conditions: Vec<PodCondition> = scheduled.into_iter().collect();
        conditions.push(self.condition("PodReadyToStartContainers", self.sandbox_ready, now));
        conditions.push(self.condition("Initialized", self.initialized, now));
        conditions.push(self.condition("ContainersReady", all_ready, now));
        conditions.push(self.condition("Ready", all_ready, now));
        PodStatus {
            phase: Some(self.phase.clone()),
            conditions: Some(conditions),
            host_ip: self.host_ip.map(|i| i.to_string()),
            host_ips: self.host_ip.map(|i| vec![HostIP { ip: i.to_string() }]),
            pod_ip: self.ip.map(|i| i.to_string()),
            pod_ips: self.ip.map(|i| vec![PodIP { ip: i.to_string() }]),
            start_time: self.start_time.map(time),
            message: self.message.clone(),
            init_container_statuses: (!self.init.is_empty()).then(|| {
                self.init
                    .iter()
                    .map(|c| container_status(c, pod_uid))
                    .collect()
            }),
            container_statuses: Some(
                self.main
                    .iter()
                    .map(|c| container_status(c, pod_uid))
                    .collect(),
            ),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(name: &str, ready: bool, sidecar: bool) -> Ctr {
        let mut c = Ctr::new(name, "redis:7.2");
        c.state = State::Running {
            started_at: jiff::Timestamp::UNIX_EPOCH,
        };
        c.started = true;
        c.ready = ready;
        c.sidecar = sidecar;
        c.run = 1;
        c
    }

    fn ready_condition(s: &PodStatus) -> String {
        s.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status.clone())
            .unwrap_or_default()
    }

    #[test]
    fn sidecars_are_reported_as_init_containers_and_their_readiness_counts() {
        let mut done = Ctr::new("setup", "busybox");
        done.state = State::Terminated(Terminated {
            exit_code: 0,
            reason: "Completed".into(),
            message: None,
            started_at: None,
            finished_at: jiff::Timestamp::UNIX_EPOCH,
        });
        done.ready = true;
        let mut s = PodState {
            phase: "Running".into(),
            initialized: true,
            sandbox_ready: true,
            init: vec![
                done,
                running("queue-worker", true, true),
                running("queue-redis", false, true),
            ],
            main: vec![running("vote", true, false)],
            ..PodState::default()
        };
        let now = jiff::Timestamp::UNIX_EPOCH;
        let status = s.to_status("uid", None, now);
        let inits = status.init_container_statuses.clone().unwrap_or_default();
        let names: Vec<&str> = inits.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["setup", "queue-worker", "queue-redis"]);
        let redis = &inits[2];
        assert!(
            redis
                .state
                .as_ref()
                .and_then(|s| s.running.as_ref())
                .is_some()
        );
        assert_eq!((redis.started, redis.ready), (Some(true), false));
        // A completed regular init container is ready and not started (the kubelet's rule).
        assert_eq!((inits[0].started, inits[0].ready), (Some(false), true));
        // Redis not ready yet: neither is the pod, though its only main container is.
        assert_eq!(ready_condition(&status), "False");
        s.init[2].ready = true;
        assert_eq!(ready_condition(&s.to_status("uid", None, now)), "True");
        // A regular init container's readiness never holds the pod back.
        s.init[0].ready = false;
        assert_eq!(ready_condition(&s.to_status("uid", None, now)), "True");
    }
}
