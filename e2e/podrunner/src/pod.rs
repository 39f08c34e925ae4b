//! One task per real pod, playing its kubelet: sandbox, volumes, init containers, containers
//! with restarts and probes, status, and graceful termination.

use crate::error::{Error, Result, io};
use crate::ipam::Ipam;
use crate::objects::Objects;
use crate::settings::Settings;
use crate::status::{Ctr, PodState, State, Terminated};
use crate::volumes::{self, VolumeContext, Volumes};
use crate::{env, etc, images, net, probes, sandbox};
use k8s_openapi::api::core::v1::{Container, Node, Pod, Probe};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// State shared by all pod tasks.
pub struct Shared {
    pub client: Client,
    pub settings: Settings,
    pub objects: Objects,
    pub nodes: Store<Node>,
    pub ipam: Mutex<Ipam>,
}

/// What the dispatcher tells a pod task.
#[derive(Clone, Debug)]
pub enum Update {
    Pod(Arc<Pod>),
    /// The pod object is gone from the API (force-deleted).
    Gone,
    /// The runner is stopping.
    Shutdown,
}

enum Stop {
    Delete(Duration),
    Gone,
    Shutdown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Readiness,
    Liveness,
    Startup,
}

struct Tracker {
    probe: Option<Probe>,
    next: Instant,
    successes: u32,
    failures: u32,
    in_flight: bool,
    passed: bool,
}

impl Tracker {
    fn new(probe: Option<Probe>) -> Self {
        let passed = probe.is_none();
        Self {
            probe,
            next: Instant::now(),
            successes: 0,
            failures: 0,
            in_flight: false,
            passed,
        }
    }
    fn reset(&mut self, started: Instant) {
        self.successes = 0;
        self.failures = 0;
        self.in_flight = false;
        self.passed = self.probe.is_none();
        self.next = started
            + self
                .probe
                .as_ref()
                .map(|p| probes::timing(p).initial_delay)
                .unwrap_or_default();
    }
}

struct Running {
    spec: Container,
    status: Ctr,
    launcher: Option<u32>,
    main: Option<u32>,
    started: Option<Instant>,
    next_start: Option<Instant>,
    backoff: Duration,
    kill_at: Option<Instant>,
    readiness: Tracker,
    liveness: Tracker,
    startup: Tracker,
    /// No restart after the current run ends (restart policy, or the pod is stopping).
    finished: bool,
    /// An image the runner does not know (a metrics sidecar, say): reported running and
    /// ready without a process, as kwok reports simulated pods.
    simulated: bool,
}

struct Exit {
    init: bool,
    idx: usize,
    run: u64,
    code: i32,
}

struct ProbeResult {
    idx: usize,
    kind: Kind,
    run: u64,
    ok: bool,
}

pub struct PodTask {
    shared: Arc<Shared>,
    pod: Arc<Pod>,
    uid: String,
    ns: String,
    name: String,
    dir: PathBuf,
    netns: String,
    veth: String,
    ip: Option<Ipv4Addr>,
    volumes: Volumes,
    tokens: BTreeMap<String, (String, jiff::Timestamp)>,
    state: PodState,
    init: Vec<Running>,
    main: Vec<Running>,
    last_status: Option<serde_json::Value>,
    restart_policy: String,
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

impl PodTask {
    pub fn new(shared: Arc<Shared>, pod: Arc<Pod>) -> Self {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let (netns, veth) = net::names(&uid);
        let dir = shared.settings.pods_dir().join(&uid);
        let spec = pod.spec.clone().unwrap_or_default();
        let make = |cs: &[Container]| -> Vec<Running> {
            cs.iter()
                .map(|c| Running {
                    status: Ctr::new(&c.name, c.image.as_deref().unwrap_or_default()),
                    readiness: Tracker::new(c.readiness_probe.clone()),
                    liveness: Tracker::new(c.liveness_probe.clone()),
                    startup: Tracker::new(c.startup_probe.clone()),
                    spec: c.clone(),
                    launcher: None,
                    main: None,
                    started: None,
                    next_start: Some(Instant::now()),
                    backoff: Duration::ZERO,
                    kill_at: None,
                    finished: false,
                    simulated: !shared
                        .settings
                        .is_real(c.image.as_deref().unwrap_or_default()),
                })
                .collect()
        };
        let state = PodState {
            phase: "Pending".into(),
            start_time: Some(now()),
            ..PodState::default()
        };
        Self {
            ns: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            init: make(spec.init_containers.as_deref().unwrap_or_default()),
            main: make(&spec.containers),
            restart_policy: spec
                .restart_policy
                .clone()
                .unwrap_or_else(|| "Always".into()),
            shared,
            pod,
            uid,
            dir,
            netns,
            veth,
            ip: None,
            volumes: Volumes::default(),
            tokens: BTreeMap::new(),
            state,
            last_status: None,
        }
    }

    fn etc_dir(&self) -> PathBuf {
        self.dir.join("etc")
    }

    fn ctr_dir(&self, name: &str) -> PathBuf {
        self.dir.join("containers").join(name)
    }

    /// Writes status if it changed since the last write.
    async fn report(&mut self) {
        self.state.init = self.init.iter().map(|c| c.status.clone()).collect();
        self.state.main = self.main.iter().map(|c| c.status.clone()).collect();
        let scheduled = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled").cloned());
        let status = self.state.to_status(&self.uid, scheduled, now());
        let Ok(value) = serde_json::to_value(&status) else {
            return;
        };
        if self.last_status.as_ref() == Some(&value) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &self.ns);
        let patch = serde_json::json!({ "status": value });
        match api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => self.last_status = Some(value),
            Err(e) => {
                tracing::warn!(pod = %self.name, ns = %self.ns, error = %e, "status update failed")
            }
        }
    }

    fn write_index(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let meta = self.dir.join("meta");
        std::fs::write(&meta, format!("{} {}\n", self.ns, self.name)).map_err(io(&meta))?;
        let index = self.shared.settings.state_dir.join("index").join(&self.ns);
        std::fs::create_dir_all(&index).map_err(io(&index))?;
        let entry = index.join(&self.name);
        std::fs::write(&entry, &self.uid).map_err(io(&entry))
    }

    /// Network namespace, address, /etc files, then volumes.
    async fn prepare(&mut self) -> Result<()> {
        if self.ip.is_none() {
            let node_name = self
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            let node = self
                .shared
                .nodes
                .get(&ObjectRef::new(&node_name))
                .ok_or_else(|| Error::Pod(format!("node {node_name} not known yet")))?;
            let cidr = node
                .spec
                .as_ref()
                .and_then(|s| s.pod_cidr.clone())
                .ok_or_else(|| Error::Pod(format!("node {node_name} has no podCIDR")))?;
            let ip = self
                .shared
                .ipam
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .allocate(&cidr, &self.uid)?;
            let s = &self.shared.settings;
            let wiring = net::Wiring {
                bridge: &s.bridge,
                prefix_len: s.prefix_len,
                gateway: s.gateway,
                service_cidr: s.service_cidr.as_deref(),
                hairpin_set: s.hairpin_set.as_deref(),
            };
            net::create(&self.netns, &self.veth, ip, &wiring).await?;
            let dns = etc::ClusterDns {
                nameserver: s.cluster_dns,
                domain: s.cluster_domain.clone(),
            };
            etc::write(&self.etc_dir(), &self.pod, ip, &dns)?;
            self.ip = Some(ip);
            self.state.ip = Some(ip);
            self.state.host_ip = Some(s.gateway);
            self.state.sandbox_ready = true;
        }
        let mut ctx = VolumeContext {
            pod: &self.pod,
            pod_dir: &self.dir,
            objects: &self.shared.objects,
            client: &self.shared.client,
            tokens: &mut self.tokens,
        };
        self.volumes = volumes::materialize(&mut ctx).await?;
        Ok(())
    }

    fn identity(&self, c: &Container) -> (u32, u32, Vec<u32>) {
        let pod_sc = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.clone())
            .unwrap_or_default();
        let sc = c.security_context.clone().unwrap_or_default();
        let as_u32 = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
        let uid = as_u32(sc.run_as_user)
            .or(as_u32(pod_sc.run_as_user))
            .unwrap_or(0);
        let gid = as_u32(sc.run_as_group)
            .or(as_u32(pod_sc.run_as_group))
            .unwrap_or(0);
        let mut groups: Vec<u32> = pod_sc
            .supplemental_groups
            .iter()
            .flatten()
            .filter_map(|g| u32::try_from(*g).ok())
            .collect();
        if let Some(g) = as_u32(pod_sc.fs_group) {
            groups.push(g);
        }
        (uid, gid, groups)
    }

    fn env_of(&self, c: &Container) -> Result<Vec<(String, String)>> {
        let s = &self.shared.settings;
        let ctx = env::EnvContext {
            pod: &self.pod,
            pod_ip: self.ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            host_ip: s.gateway,
            apiserver: s
                .kubernetes_service
                .unwrap_or(SocketAddrV4::new(s.gateway, s.apiserver_port)),
            extra_path: s.extra_path.as_deref(),
            objects: &self.shared.objects,
        };
        env::resolve(c, &ctx)
    }

    fn launch(&self, c: &Container) -> Result<sandbox::Launch> {
        let env = self.env_of(c)?;
        let argv = env::argv(c, &env)?;
        let mut mounts = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            let base = self.volumes.paths.get(&m.name).ok_or_else(|| {
                Error::Pod(format!("container {}: no volume named {}", c.name, m.name))
            })?;
            let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) if sub.split('/').any(|p| p == "..") => {
                    return Err(Error::Pod(format!("subPath {sub:?} may not contain '..'")));
                }
                Some(sub) => {
                    let p = base.join(sub);
                    if !p.exists() {
                        std::fs::create_dir_all(&p).map_err(io(&p))?;
                    }
                    p
                }
                None => base.clone(),
            };
            mounts.push(sandbox::Mount {
                source,
                target: m.mount_path.clone(),
                read_only: m.read_only.unwrap_or(false),
            });
        }
        let (uid, gid, groups) = self.identity(c);
        Ok(sandbox::Launch {
            dir: self.ctr_dir(&c.name),
            netns: self.netns.clone(),
            argv,
            env,
            workdir: c.working_dir.clone(),
            uid,
            gid,
            groups,
            mounts,
            aliases: self.shared.settings.path_aliases.clone(),
            etc_dir: self.etc_dir(),
            hostname: etc::hostname(&self.pod),
            layer: images::layer(c.image.as_deref().unwrap_or_default()),
            termination_message_path: c
                .termination_message_path
                .clone()
                .unwrap_or_else(|| "/dev/termination-log".into()),
        })
    }

    fn start(&mut self, init: bool, idx: usize, exits: &mpsc::UnboundedSender<Exit>) {
        let spec = if init {
            self.init[idx].spec.clone()
        } else {
            self.main[idx].spec.clone()
        };
        let c = if init {
            &mut self.init[idx]
        } else {
            &mut self.main[idx]
        };
        if c.simulated {
            c.next_start = None;
            c.status.run += 1;
            c.status.state = State::Running { started_at: now() };
            c.status.started = true;
            c.status.ready = true;
            if init {
                // A simulated init container succeeds at once.
                let _ = exits.send(Exit {
                    init,
                    idx,
                    run: c.status.run,
                    code: 0,
                });
            }
            return;
        }
        let launch = self.launch(&spec);
        let c = if init {
            &mut self.init[idx]
        } else {
            &mut self.main[idx]
        };
        c.next_start = None;
        let launch = match launch {
            Ok(l) => l,
            Err(e) => {
                c.status.state = State::Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message: Some(e.to_string()),
                };
                c.next_start = Some(Instant::now() + Duration::from_secs(2));
                return;
            }
        };
        if let Err(e) = std::fs::create_dir_all(&launch.dir) {
            c.status.state = State::Waiting {
                reason: "CreateContainerError".into(),
                message: Some(e.to_string()),
            };
            c.next_start = Some(Instant::now() + Duration::from_secs(2));
            return;
        }
        match sandbox::start(&launch) {
            Ok(mut child) => {
                c.status.run += 1;
                let run = c.status.run;
                c.launcher = child.id();
                c.main = None;
                c.started = Some(Instant::now());
                c.kill_at = None;
                c.status.state = State::Running { started_at: now() };
                c.status.ready = false;
                c.status.started = c.startup.probe.is_none();
                let started = Instant::now();
                c.readiness.reset(started);
                c.liveness.reset(started);
                c.startup.reset(started);
                let tx = exits.clone();
                let log = launch.dir.join("log");
                tokio::spawn(async move {
                    let code = match child.wait().await {
                        Ok(s) => sandbox::exit_code(&s, &log),
                        Err(_) => 255,
                    };
                    let _ = tx.send(Exit {
                        init,
                        idx,
                        run,
                        code,
                    });
                });
                tracing::info!(pod = %self.name, ns = %self.ns, container = %spec.name, run, "container started");
            }
            Err(e) => {
                c.status.state = State::Waiting {
                    reason: "RunContainerError".into(),
                    message: Some(e.to_string()),
                };
                c.next_start = Some(Instant::now() + Duration::from_secs(2));
            }
        }
    }

    /// Records the PID of each container's main process once it exists (for probes and faults).
    fn discover_pids(&mut self) {
        let dir = self.dir.join("containers");
        for c in self.init.iter_mut().chain(self.main.iter_mut()) {
            if c.main.is_none()
                && let Some(l) = c.launcher
                && let Some(pid) = sandbox::main_pid(l)
            {
                c.main = Some(pid);
                let _ = sandbox::write_pid(&dir.join(&c.spec.name).join("pid"), pid);
            }
        }
    }

    fn on_exit(&mut self, e: Exit) {
        let policy = self.restart_policy.clone();
        let settings = self.shared.settings.clone();
        let list = if e.init {
            &mut self.init
        } else {
            &mut self.main
        };
        let Some(c) = list.get_mut(e.idx) else { return };
        if c.status.run != e.run {
            return;
        }
        let started_at = match &c.status.state {
            State::Running { started_at } => Some(*started_at),
            _ => None,
        };
        let fallback =
            c.spec.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
        let message = sandbox::termination_message(
            &self.dir.join("containers").join(&c.spec.name),
            fallback,
            e.code,
        );
        let t = Terminated {
            exit_code: e.code,
            reason: if e.code == 0 { "Completed" } else { "Error" }.into(),
            message,
            started_at,
            finished_at: now(),
        };
        tracing::info!(pod = %self.name, ns = %self.ns, container = %c.spec.name, code = e.code, "container exited");
        let _ = std::fs::remove_file(self.dir.join("containers").join(&c.spec.name).join("pid"));
        c.launcher = None;
        c.main = None;
        c.kill_at = None;
        c.status.ready = false;
        let restart = !c.finished
            && match policy.as_str() {
                "Never" => false,
                "OnFailure" => e.code != 0,
                _ => !e.init || e.code != 0,
            };
        if restart {
            // A run that lasted 10 minutes resets the back-off, as a kubelet does.
            let ran_long = c
                .started
                .is_some_and(|s| s.elapsed() > Duration::from_secs(600));
            c.backoff = if ran_long || c.backoff.is_zero() {
                settings.restart_backoff
            } else {
                (c.backoff * 2).min(settings.restart_backoff_max)
            };
            let held = crate::fault::hold(&self.dir.join("containers").join(&c.spec.name))
                .unwrap_or_default();
            c.next_start = Some(Instant::now() + c.backoff.max(held));
            c.status.restart_count += 1;
            c.status.last = Some(t);
            c.status.state = State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(format!(
                    "back-off {:?} restarting failed container",
                    c.backoff
                )),
            };
        } else {
            c.status.state = State::Terminated(t);
            c.finished = true;
        }
    }

    fn on_probe(&mut self, r: ProbeResult) {
        let grace = self.grace();
        let Some(c) = self.main.get_mut(r.idx) else {
            return;
        };
        if c.status.run != r.run {
            return;
        }
        let tracker = match r.kind {
            Kind::Readiness => &mut c.readiness,
            Kind::Liveness => &mut c.liveness,
            Kind::Startup => &mut c.startup,
        };
        tracker.in_flight = false;
        let Some(probe) = tracker.probe.as_ref() else {
            return;
        };
        let t = probes::timing(probe);
        tracker.next = Instant::now() + t.period;
        if r.ok {
            tracker.successes += 1;
            tracker.failures = 0;
            if tracker.successes >= t.success_threshold {
                tracker.passed = true;
            }
        } else {
            tracker.failures += 1;
            tracker.successes = 0;
            if tracker.failures >= t.failure_threshold {
                tracker.passed = false;
            }
        }
        let failed_hard = !r.ok && tracker.failures >= t.failure_threshold;
        match r.kind {
            Kind::Readiness => c.status.ready = c.readiness.passed && c.status.started,
            Kind::Startup => {
                c.status.started = c.startup.passed;
                if c.startup.passed {
                    c.status.ready = c.readiness.probe.is_none();
                }
            }
            Kind::Liveness => {}
        }
        if failed_hard && r.kind != Kind::Readiness && c.kill_at.is_none() {
            tracing::info!(pod = %self.name, container = %c.spec.name, probe = ?r.kind, "probe failed, restarting container");
            if let Some(pid) = c.main {
                sandbox::signal(pid, libc::SIGTERM);
            }
            c.kill_at = Some(Instant::now() + grace);
        }
    }

    fn grace(&self) -> Duration {
        let s = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        Duration::from_secs(u64::try_from(s).unwrap_or(30))
    }

    fn on_tick(
        &mut self,
        exits: &mpsc::UnboundedSender<Exit>,
        results: &mpsc::UnboundedSender<ProbeResult>,
    ) {
        self.discover_pids();
        let now_i = Instant::now();
        for idx in 0..self.main.len() {
            if self.main[idx].next_start.is_some_and(|t| t <= now_i) && !self.main[idx].finished {
                self.start(false, idx, exits);
            }
        }
        let ip = self.ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        for idx in 0..self.main.len() {
            let env = self.env_of(&self.main[idx].spec).unwrap_or_default();
            let (uid, gid, _) = self.identity(&self.main[idx].spec);
            let c = &mut self.main[idx];
            if let Some(at) = c.kill_at
                && at <= now_i
                && let Some(pid) = c.main
            {
                for p in sandbox::container_pids(pid) {
                    sandbox::signal(p, libc::SIGKILL);
                }
            }
            if !matches!(c.status.state, State::Running { .. })
                || c.kill_at.is_some()
                || c.simulated
            {
                continue;
            }
            if c.startup.probe.is_none() && !c.status.started {
                c.status.started = true;
            }
            if c.readiness.probe.is_none() && c.status.started && !c.status.ready {
                c.status.ready = true;
            }
            let kinds: &[Kind] = if c.status.started {
                &[Kind::Readiness, Kind::Liveness]
            } else {
                &[Kind::Startup]
            };
            for kind in kinds {
                let tracker = match kind {
                    Kind::Readiness => &mut c.readiness,
                    Kind::Liveness => &mut c.liveness,
                    Kind::Startup => &mut c.startup,
                };
                let Some(probe) = tracker.probe.clone() else {
                    continue;
                };
                if tracker.in_flight || tracker.next > now_i {
                    continue;
                }
                if probe.exec.is_some() && c.main.is_none() {
                    continue;
                }
                tracker.in_flight = true;
                let exec = c.main.map(|main_pid| probes::ExecTarget {
                    main_pid,
                    uid,
                    gid,
                    env: env.clone(),
                });
                let (spec, run, kind, tx) = (c.spec.clone(), c.status.run, *kind, results.clone());
                tokio::spawn(async move {
                    let ok = probes::run(&probe, &spec, ip, exec).await;
                    let _ = tx.send(ProbeResult { idx, kind, run, ok });
                });
            }
        }
        self.update_phase();
    }

    fn update_phase(&mut self) {
        if !self.state.initialized {
            return;
        }
        let all_done = self.main.iter().all(|c| c.finished);
        self.state.phase = if all_done {
            let ok = self
                .main
                .iter()
                .all(|c| matches!(&c.status.state, State::Terminated(t) if t.exit_code == 0));
            if ok { "Succeeded" } else { "Failed" }.into()
        } else {
            "Running".into()
        };
    }

    fn on_update(&mut self, u: Update) -> Option<Stop> {
        match u {
            Update::Gone => Some(Stop::Gone),
            Update::Shutdown => Some(Stop::Shutdown),
            Update::Pod(p) => {
                let deleting = p.metadata.deletion_timestamp.is_some();
                let grace = p
                    .metadata
                    .deletion_grace_period_seconds
                    .and_then(|s| u64::try_from(s).ok())
                    .map(Duration::from_secs);
                self.pod = p;
                deleting.then(|| Stop::Delete(grace.unwrap_or_else(|| self.grace())))
            }
        }
    }

    async fn refresh_volumes(&mut self) {
        if !self.state.sandbox_ready {
            return;
        }
        let mut ctx = VolumeContext {
            pod: &self.pod,
            pod_dir: &self.dir,
            objects: &self.shared.objects,
            client: &self.shared.client,
            tokens: &mut self.tokens,
        };
        if let Err(e) = volumes::refresh(&mut ctx).await {
            tracing::warn!(pod = %self.name, ns = %self.ns, error = %e, "volume refresh failed");
        }
    }

    /// SIGTERM to every running container, SIGKILL after `grace`, then wait for them to exit.
    async fn stop_containers(
        &mut self,
        grace: Duration,
        exits: &mut mpsc::UnboundedReceiver<Exit>,
    ) {
        self.discover_pids();
        for c in self.init.iter_mut().chain(self.main.iter_mut()) {
            c.finished = true;
            if let Some(pid) = c.main {
                sandbox::signal(pid, libc::SIGTERM);
            }
        }
        let running = |t: &PodTask| {
            t.init
                .iter()
                .chain(t.main.iter())
                .any(|c| c.launcher.is_some())
        };
        let deadline = Instant::now() + grace;
        let mut killed = false;
        while running(self) {
            let until = if killed {
                Instant::now() + Duration::from_secs(5)
            } else {
                deadline
            };
            match tokio::time::timeout_at(until.into(), exits.recv()).await {
                Ok(Some(e)) => self.on_exit(e),
                Ok(None) => break,
                Err(_) if killed => break,
                Err(_) => {
                    self.discover_pids();
                    for c in self.init.iter().chain(self.main.iter()) {
                        if let Some(pid) = c.main.or(c.launcher) {
                            for p in sandbox::container_pids(pid) {
                                sandbox::signal(p, libc::SIGKILL);
                            }
                            sandbox::signal(pid, libc::SIGKILL);
                        }
                    }
                    killed = true;
                }
            }
        }
    }

    async fn teardown(&mut self, stop: Stop, exits: &mut mpsc::UnboundedReceiver<Exit>) {
        let grace = match &stop {
            Stop::Delete(g) => *g,
            Stop::Gone => Duration::ZERO,
            Stop::Shutdown => Duration::from_secs(3),
        };
        self.stop_containers(grace, exits).await;
        if self.state.sandbox_ready {
            let _ = net::delete(&self.netns).await;
            if let (Some(set), Some(ip)) = (&self.shared.settings.hairpin_set, self.ip) {
                let _ = net::hairpin(set, ip, false).await;
            }
        }
        self.shared
            .ipam
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .release(&self.uid);
        let index = self
            .shared
            .settings
            .state_dir
            .join("index")
            .join(&self.ns)
            .join(&self.name);
        if std::fs::read_to_string(&index).ok().as_deref() == Some(self.uid.as_str()) {
            let _ = std::fs::remove_file(&index);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Stop::Delete(_) = stop {
            // The kubelet's last word: remove the object now that nothing runs.
            let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &self.ns);
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(self.uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&self.name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => {}
                Err(e) => {
                    tracing::warn!(pod = %self.name, ns = %self.ns, error = %e, "final delete failed")
                }
            }
        }
        tracing::info!(pod = %self.name, ns = %self.ns, "pod stopped");
    }

    /// Waits for the next update while sleeping at most `d`; `Some` when the pod must stop.
    async fn pause(&mut self, d: Duration, rx: &mut watch::Receiver<Update>) -> Option<Stop> {
        tokio::select! {
            _ = tokio::time::sleep(d) => None,
            r = rx.changed() => {
                if r.is_err() { return Some(Stop::Shutdown); }
                let u = rx.borrow_and_update().clone();
                self.on_update(u)
            }
        }
    }

    pub async fn run(mut self, mut rx: watch::Receiver<Update>) {
        let (exit_tx, mut exit_rx) = mpsc::unbounded_channel::<Exit>();
        let (probe_tx, mut probe_rx) = mpsc::unbounded_channel::<ProbeResult>();
        if let Err(e) = self.write_index() {
            tracing::warn!(error = %e, "cannot write the pod index");
        }
        if self.pod.metadata.deletion_timestamp.is_some() {
            // Being deleted before we ever ran it: nothing to stop, only to finish.
            let stop = self
                .on_update(Update::Pod(self.pod.clone()))
                .unwrap_or(Stop::Gone);
            return self.teardown(stop, &mut exit_rx).await;
        }
        // Sandbox and volumes: retried until they work, like ContainerCreating.
        loop {
            match self.prepare().await {
                Ok(()) => break,
                Err(e) => {
                    let msg = e.to_string();
                    for c in self.init.iter_mut().chain(self.main.iter_mut()) {
                        c.status.state = State::Waiting {
                            reason: "ContainerCreating".into(),
                            message: Some(msg.clone()),
                        };
                    }
                    self.report().await;
                }
            }
            if let Some(stop) = self.pause(Duration::from_secs(2), &mut rx).await {
                return self.teardown(stop, &mut exit_rx).await;
            }
        }
        self.report().await;
        // Init containers, one after the other.
        for idx in 0..self.init.len() {
            loop {
                if self.init[idx]
                    .next_start
                    .is_some_and(|t| t <= Instant::now())
                {
                    self.start(true, idx, &exit_tx);
                    self.report().await;
                }
                let event = tokio::select! {
                    Some(e) = exit_rx.recv() => Some(Ok(e)),
                    r = rx.changed() => Some(Err(r.ok().map(|_| rx.borrow_and_update().clone()))),
                    _ = tokio::time::sleep(Duration::from_millis(500)) => None,
                };
                match event {
                    Some(Ok(e)) => {
                        self.on_exit(e);
                        self.report().await;
                    }
                    Some(Err(update)) => {
                        if let Some(stop) = self.on_update(update.unwrap_or(Update::Shutdown)) {
                            return self.teardown(stop, &mut exit_rx).await;
                        }
                    }
                    None => self.discover_pids(),
                }
                let c = &self.init[idx];
                if matches!(&c.status.state, State::Terminated(t) if t.exit_code == 0) {
                    break;
                }
                if c.finished {
                    self.state.phase = "Failed".into();
                    self.report().await;
                    // Nothing more runs; wait for the pod to be deleted.
                    loop {
                        if let Some(stop) = self.pause(Duration::from_secs(3600), &mut rx).await {
                            return self.teardown(stop, &mut exit_rx).await;
                        }
                    }
                }
            }
        }
        self.state.initialized = true;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut refresh = tokio::time::interval(Duration::from_secs(2));
        let stop = loop {
            tokio::select! {
                Some(e) = exit_rx.recv() => self.on_exit(e),
                Some(r) = probe_rx.recv() => self.on_probe(r),
                _ = tick.tick() => self.on_tick(&exit_tx, &probe_tx),
                _ = refresh.tick() => self.refresh_volumes().await,
                r = rx.changed() => {
                    if r.is_err() { break Stop::Shutdown; }
                    let u = rx.borrow_and_update().clone();
                    if let Some(stop) = self.on_update(u) { break stop; }
                }
            }
            self.update_phase();
            self.report().await;
        };
        self.teardown(stop, &mut exit_rx).await;
    }
}
