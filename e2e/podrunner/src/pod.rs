//! One task per real pod, playing its kubelet: sandbox, volumes, init containers and native
//! sidecars, containers with restarts and probes, preStop hooks, status, and graceful
//! termination in the kubelet's order (see `lifecycle`).

use crate::error::{Error, Result, io};
use crate::ipam::Ipam;
use crate::lifecycle::{self, Action, Ending, Hook, InitView, Role, StopView};
use crate::objects::Objects;
use crate::settings::Settings;
use crate::status::{Ctr, PodState, State, Terminated};
use crate::volumes::{self, VolumeContext, Volumes};
use crate::{env, etc, exec, images, net, probes, sandbox};
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

#[derive(Clone, Copy, Debug)]
enum Stop {
    /// Deleted with this grace period: hooks, order, then the object is removed.
    Delete(Duration),
    /// The object is gone already: everything is killed at once.
    Gone,
    /// The runner stops: every container gets a short SIGTERM, no hooks.
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
    role: Role,
    status: Ctr,
    launcher: Option<u32>,
    main: Option<u32>,
    /// The container's own command runs (its first process is past the runner's setup
    /// script): what a runtime's "started" means, and all a sidecar without a startup probe
    /// waits for before the next container starts.
    execd: bool,
    started: Option<Instant>,
    next_start: Option<Instant>,
    backoff: Duration,
    readiness: Tracker,
    liveness: Tracker,
    startup: Tracker,
    /// No restart after the current run ends (restart policy, or the pod is stopping).
    finished: bool,
    /// An image the runner does not know (a metrics sidecar, say): reported running and
    /// ready without a process, as kwok reports simulated pods.
    simulated: bool,
    /// Being stopped: its preStop hook, SIGTERM, SIGKILL (see `lifecycle`).
    ending: Option<Ending>,
}

impl Running {
    /// Whether it has a process (or, simulated, is shown running).
    fn alive(&self) -> bool {
        self.launcher.is_some()
            || (self.simulated && matches!(self.status.state, State::Running { .. }))
    }
}

struct Exit {
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

struct HookDone {
    idx: usize,
    run: u64,
    outcome: std::result::Result<String, String>,
}

/// Where the pod task sends what its helpers report.
#[derive(Clone)]
struct Senders {
    exits: mpsc::UnboundedSender<Exit>,
    probes: mpsc::UnboundedSender<ProbeResult>,
    hooks: mpsc::UnboundedSender<HookDone>,
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
    /// The init containers in spec order, then the main containers.
    ctrs: Vec<Running>,
    n_init: usize,
    /// The first init container not yet done (`lifecycle::init_cursor`).
    cursor: usize,
    last_status: Option<serde_json::Value>,
    restart_policy: String,
    /// Set once the pod is being stopped.
    stopping: Option<Stop>,
    /// The pod's containers are done (all main containers, or a failed init container): the
    /// sidecars are being stopped, the pod stays.
    completing: bool,
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
        let inits = spec.init_containers.clone().unwrap_or_default();
        let n_init = inits.len();
        let make = |c: &Container, role: Role| -> Running {
            let mut status = Ctr::new(&c.name, c.image.as_deref().unwrap_or_default());
            status.sidecar = role == Role::Sidecar;
            if role == Role::Main && n_init > 0 {
                status.state = State::Waiting {
                    reason: "PodInitializing".into(),
                    message: None,
                };
            }
            Running {
                status,
                role,
                readiness: Tracker::new(c.readiness_probe.clone()),
                liveness: Tracker::new(c.liveness_probe.clone()),
                startup: Tracker::new(c.startup_probe.clone()),
                spec: c.clone(),
                launcher: None,
                main: None,
                execd: false,
                started: None,
                next_start: Some(Instant::now()),
                backoff: Duration::ZERO,
                finished: false,
                simulated: !shared
                    .settings
                    .is_real(c.image.as_deref().unwrap_or_default()),
                ending: None,
            }
        };
        let ctrs: Vec<Running> = inits
            .iter()
            .map(|c| make(c, Role::of_init(c)))
            .chain(spec.containers.iter().map(|c| make(c, Role::Main)))
            .collect();
        let state = PodState {
            phase: "Pending".into(),
            start_time: Some(now()),
            ..PodState::default()
        };
        Self {
            ns: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            ctrs,
            n_init,
            cursor: 0,
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
            stopping: None,
            completing: false,
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
        self.state.init = self.ctrs[..self.n_init]
            .iter()
            .map(|c| c.status.clone())
            .collect();
        self.state.main = self.ctrs[self.n_init..]
            .iter()
            .map(|c| c.status.clone())
            .collect();
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
            // Gone already (a pod in a terminal phase is removed at once when deleted): there
            // is nothing left to tell.
            Err(kube::Error::Api(s)) if s.is_not_found() && self.stopping.is_some() => {
                self.last_status = Some(value)
            }
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

    fn start(&mut self, idx: usize, tx: &Senders) {
        let spec = self.ctrs[idx].spec.clone();
        let role = self.ctrs[idx].role;
        if self.ctrs[idx].simulated {
            let c = &mut self.ctrs[idx];
            c.next_start = None;
            c.status.run += 1;
            c.status.state = State::Running { started_at: now() };
            c.status.started = true;
            c.status.ready = true;
            if role == Role::Init {
                // A simulated init container succeeds at once.
                let _ = tx.exits.send(Exit {
                    idx,
                    run: c.status.run,
                    code: 0,
                });
            }
            return;
        }
        let launch = self.launch(&spec);
        let c = &mut self.ctrs[idx];
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
                c.execd = false;
                c.started = Some(Instant::now());
                c.ending = None;
                c.status.state = State::Running { started_at: now() };
                c.status.ready = false;
                c.status.started = false;
                let started = Instant::now();
                c.readiness.reset(started);
                c.liveness.reset(started);
                c.startup.reset(started);
                let exits = tx.exits.clone();
                let log = launch.dir.join("log");
                tokio::spawn(async move {
                    let code = match child.wait().await {
                        Ok(s) => sandbox::exit_code(&s, &log),
                        Err(_) => 255,
                    };
                    let _ = exits.send(Exit { idx, run, code });
                });
                tracing::info!(pod = %self.name, ns = %self.ns, container = %spec.name, ?role, run, "container started");
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

    /// Records the PID of each container's main process once it exists (for probes and faults),
    /// and when it has become the container's own command. A container without a startup
    /// probe counts as started then.
    fn discover_pids(&mut self) {
        let dir = self.dir.join("containers");
        for c in self.ctrs.iter_mut() {
            if c.main.is_none()
                && let Some(l) = c.launcher
                && let Some(pid) = sandbox::main_pid(l)
            {
                c.main = Some(pid);
                let _ = sandbox::write_pid(&dir.join(&c.spec.name).join("pid"), pid);
            }
            if !c.execd
                && let Some(pid) = c.main
            {
                let script = dir.join(&c.spec.name).join(sandbox::INIT_SCRIPT);
                c.execd = sandbox::past_setup(pid, &script);
            }
            if c.execd
                && c.startup.probe.is_none()
                && !c.status.started
                && c.ending.is_none()
                && matches!(c.status.state, State::Running { .. })
            {
                c.status.started = true;
            }
        }
    }

    fn on_exit(&mut self, e: Exit) {
        let policy = self.restart_policy.clone();
        let settings = self.shared.settings.clone();
        let stopping = self.stopping.is_some();
        let Some(c) = self.ctrs.get_mut(e.idx) else {
            return;
        };
        if c.status.run != e.run {
            return;
        }
        let started_at = match &c.status.state {
            State::Running { started_at } => Some(*started_at),
            _ => None,
        };
        let fallback =
            c.spec.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
        let message = if c.simulated {
            None
        } else {
            sandbox::termination_message(
                &self.dir.join("containers").join(&c.spec.name),
                fallback,
                e.code,
            )
        };
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
        c.ending = None;
        c.status.ready = false;
        c.status.started = false;
        let restart = !c.finished
            && !stopping
            && match c.role {
                // A sidecar is restarted whatever the pod's policy and its exit code.
                Role::Sidecar => true,
                Role::Init => e.code != 0 && policy != "Never",
                Role::Main => match policy.as_str() {
                    "Never" => false,
                    "OnFailure" => e.code != 0,
                    _ => true,
                },
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
            // A regular init container that succeeded stays ready (the kubelet's rule).
            c.status.ready = c.role == Role::Init && e.code == 0;
            c.status.state = State::Terminated(t);
            c.finished = true;
        }
    }

    fn on_probe(&mut self, r: ProbeResult) {
        let grace = self.grace();
        let Some(c) = self.ctrs.get_mut(r.idx) else {
            return;
        };
        if c.status.run != r.run || c.ending.is_some() {
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
        if failed_hard && r.kind != Kind::Readiness {
            tracing::info!(pod = %self.name, container = %c.spec.name, probe = ?r.kind, "probe failed, restarting container");
            // As the kubelet kills it: its preStop hook, then SIGTERM, SIGKILL after the
            // grace period; restarted per policy when it has exited.
            let hook = c
                .spec
                .lifecycle
                .as_ref()
                .is_some_and(|l| l.pre_stop.is_some());
            c.ending = Some(Ending::new(
                Instant::now(),
                grace,
                false,
                hook,
                lifecycle::MIN_TERM,
            ));
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

    /// Starts what the init order allows: init containers one after the other (sidecars
    /// counted once started), then the main containers; restarts what is due.
    fn start_due(&mut self, tx: &Senders) {
        // Each pass may count a sidecar started at once (no startup probe), which lets the
        // next container start in the same tick.
        for _ in 0..=self.ctrs.len() {
            let views: Vec<InitView> = self.ctrs[..self.n_init]
                .iter()
                .map(|c| InitView {
                    role: c.role,
                    done: match c.role {
                        Role::Sidecar => c.status.started && c.alive(),
                        _ => matches!(&c.status.state, State::Terminated(t) if t.exit_code == 0),
                    },
                })
                .collect();
            self.cursor = lifecycle::init_cursor(&views, self.cursor);
            if self.cursor >= self.n_init && !self.state.initialized {
                self.state.initialized = true;
                tracing::info!(pod = %self.name, ns = %self.ns, "initialized");
            }
            let now_i = Instant::now();
            let due: Vec<usize> = (0..self.ctrs.len())
                .filter(|&i| {
                    let c = &self.ctrs[i];
                    !c.finished
                        && c.launcher.is_none()
                        && c.next_start.is_some_and(|t| t <= now_i)
                        && lifecycle::may_start(c.role, i, self.cursor, self.n_init)
                })
                .collect();
            if due.is_empty() {
                break;
            }
            for i in due {
                self.start(i, tx);
            }
        }
    }

    fn run_probes(&mut self, tx: &Senders) {
        let ip = self.ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let now_i = Instant::now();
        for idx in 0..self.ctrs.len() {
            let c = &self.ctrs[idx];
            if !matches!(c.status.state, State::Running { .. }) || c.ending.is_some() || c.simulated
            {
                continue;
            }
            let kinds: &[Kind] = if c.status.started {
                &[Kind::Readiness, Kind::Liveness]
            } else if c.startup.probe.is_some() {
                &[Kind::Startup]
            } else {
                // Started once its command runs (`discover_pids`).
                &[]
            };
            let due: Vec<Kind> = kinds
                .iter()
                .copied()
                .filter(|k| {
                    let t = match k {
                        Kind::Readiness => &c.readiness,
                        Kind::Liveness => &c.liveness,
                        Kind::Startup => &c.startup,
                    };
                    t.probe.is_some() && !t.in_flight && t.next <= now_i
                })
                .collect();
            let needs_exec = due.iter().any(|k| {
                let t = match k {
                    Kind::Readiness => &c.readiness,
                    Kind::Liveness => &c.liveness,
                    Kind::Startup => &c.startup,
                };
                t.probe.as_ref().is_some_and(|p| p.exec.is_some())
            });
            // The environment only when an exec probe needs it (it is resolved each time).
            let env = if needs_exec {
                self.env_of(&c.spec).unwrap_or_default()
            } else {
                Vec::new()
            };
            let (uid, gid, _) = self.identity(&c.spec);
            let c = &mut self.ctrs[idx];
            if c.startup.probe.is_none() && !c.status.started && c.execd {
                c.status.started = true;
            }
            if c.readiness.probe.is_none() && c.status.started && !c.status.ready {
                c.status.ready = true;
            }
            for kind in due {
                let tracker = match kind {
                    Kind::Readiness => &mut c.readiness,
                    Kind::Liveness => &mut c.liveness,
                    Kind::Startup => &mut c.startup,
                };
                let Some(probe) = tracker.probe.clone() else {
                    continue;
                };
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
                let (spec, run, tx) = (c.spec.clone(), c.status.run, tx.probes.clone());
                tokio::spawn(async move {
                    let ok = probes::run(&probe, &spec, ip, exec).await;
                    let _ = tx.send(ProbeResult { idx, kind, run, ok });
                });
            }
        }
    }

    fn on_tick(&mut self, tx: &Senders) {
        self.discover_pids();
        if self.stopping.is_none() && !self.completing {
            self.start_due(tx);
            self.run_probes(tx);
            self.complete_if_done();
        }
        self.advance_endings(tx);
        self.update_phase();
    }

    /// Stops `idxs` (those alive) as part of the pod's end: hooks, then SIGTERM in order.
    fn end(&mut self, idxs: &[usize], grace: Duration, hooks: bool, ordered: bool, min: Duration) {
        let now_i = Instant::now();
        for &i in idxs {
            let c = &mut self.ctrs[i];
            c.finished = true;
            c.next_start = None;
            if !c.alive() {
                continue;
            }
            let deadline = now_i + grace;
            match &mut c.ending {
                // Already ending (a failed probe, or an earlier, longer deletion): the sooner
                // deadline wins, as a shorter grace period does in the kubelet.
                Some(e) => {
                    e.deadline = e.deadline.min(deadline);
                    e.ordered |= ordered;
                    e.min_term = e.min_term.min(min);
                }
                None => {
                    let hook = hooks
                        && !c.simulated
                        && c.spec
                            .lifecycle
                            .as_ref()
                            .is_some_and(|l| l.pre_stop.is_some());
                    c.ending = Some(Ending::new(now_i, grace, ordered, hook, min));
                }
            }
        }
    }

    /// Once every main container has ended for good (restart policy Never or OnFailure), or a
    /// regular init container failed for good, the sidecars are stopped as at a deletion.
    fn complete_if_done(&mut self) {
        let init_failed = self.ctrs[..self.n_init].iter().any(|c| {
            c.role == Role::Init
                && c.finished
                && matches!(&c.status.state, State::Terminated(t) if t.exit_code != 0)
        });
        let mains_done = self.state.initialized
            && self.ctrs.len() > self.n_init
            && self.ctrs[self.n_init..].iter().all(|c| c.finished);
        if !(init_failed || mains_done) {
            return;
        }
        self.completing = true;
        let all: Vec<usize> = (0..self.ctrs.len()).collect();
        let grace = self.grace();
        self.end(&all, grace, true, true, lifecycle::MIN_TERM);
    }

    /// Moves every ending container on: hooks started, SIGTERM in turn, SIGKILL when due.
    fn advance_endings(&mut self, tx: &Senders) {
        if self.ctrs.iter().all(|c| c.ending.is_none()) {
            return;
        }
        self.discover_pids();
        let now_i = Instant::now();
        let views: Vec<StopView> = self
            .ctrs
            .iter()
            .map(|c| StopView {
                role: c.role,
                alive: c.alive(),
                ending: c.ending,
            })
            .collect();
        for action in lifecycle::stop_actions(&views, now_i) {
            match action {
                Action::Hook(i) => self.start_hook(i, tx),
                Action::Term(i) => {
                    let c = &mut self.ctrs[i];
                    // A container still in the runner's setup script would lose the signal (its
                    // first process has no handler yet): a runtime only signals a container once
                    // its command runs. Until the grace period is over.
                    if !c.simulated && !c.execd && c.ending.is_some_and(|e| now_i < e.deadline) {
                        continue;
                    }
                    if let Some(e) = c.ending.as_mut() {
                        e.term_at = Some(now_i);
                    }
                    tracing::info!(pod = %self.name, ns = %self.ns, container = %c.spec.name, "SIGTERM");
                    if c.simulated {
                        let _ = tx.exits.send(Exit {
                            idx: i,
                            run: c.status.run,
                            code: 0,
                        });
                    } else if let Some(pid) = c.main {
                        sandbox::signal(pid, libc::SIGTERM);
                    }
                }
                Action::Kill(i) => {
                    let c = &mut self.ctrs[i];
                    if let Some(e) = c.ending.as_mut() {
                        e.killed = true;
                    }
                    tracing::info!(pod = %self.name, ns = %self.ns, container = %c.spec.name, "SIGKILL");
                    // The container's whole PID namespace; the launcher too, should the
                    // container's first process not be known yet.
                    if let Some(pid) = c.main {
                        for p in sandbox::container_pids(pid) {
                            sandbox::signal(p, libc::SIGKILL);
                        }
                        sandbox::signal(pid, libc::SIGKILL);
                    }
                    if let Some(pid) = c.launcher {
                        sandbox::signal(pid, libc::SIGKILL);
                    }
                }
            }
        }
    }

    /// Runs container `i`'s preStop hook in the background, within what is left of its
    /// grace period; `HookDone` reports the end.
    fn start_hook(&mut self, i: usize, tx: &Senders) {
        let spec = self.ctrs[i].spec.clone();
        let Some(handler) = spec.lifecycle.as_ref().and_then(|l| l.pre_stop.clone()) else {
            if let Some(e) = self.ctrs[i].ending.as_mut() {
                e.hook = Hook::Done;
            }
            return;
        };
        let env = if handler.exec.is_some() {
            self.env_of(&spec).unwrap_or_default()
        } else {
            Vec::new()
        };
        let (uid, gid, groups) = self.identity(&spec);
        let c = &mut self.ctrs[i];
        let Some(e) = c.ending.as_mut() else { return };
        e.hook = Hook::Running;
        let limit = e.deadline.saturating_duration_since(Instant::now());
        let target = lifecycle::HookTarget {
            exec: c.main.map(|pid| exec::Target {
                pid,
                uid,
                gid,
                groups,
                env,
            }),
            pod_ip: self.ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
        };
        let (run, hooks) = (c.status.run, tx.hooks.clone());
        tracing::info!(pod = %self.name, ns = %self.ns, container = %spec.name, "running the preStop hook");
        tokio::spawn(async move {
            let outcome = lifecycle::run_hook(&handler, &spec, target, limit).await;
            let _ = hooks.send(HookDone {
                idx: i,
                run,
                outcome,
            });
        });
    }

    fn on_hook(&mut self, h: HookDone) {
        let Some(c) = self.ctrs.get_mut(h.idx) else {
            return;
        };
        if c.status.run != h.run {
            return;
        }
        match &h.outcome {
            Ok(out) => {
                tracing::info!(pod = %self.name, ns = %self.ns, container = %c.spec.name, output = %out, "preStop hook completed")
            }
            Err(e) => {
                tracing::warn!(pod = %self.name, ns = %self.ns, container = %c.spec.name, error = %e, "preStop hook failed")
            }
        }
        if let Some(e) = c.ending.as_mut() {
            e.hook = Hook::Done;
        }
    }

    fn update_phase(&mut self) {
        let init_failed = self.ctrs[..self.n_init].iter().any(|c| {
            c.role == Role::Init
                && c.finished
                && matches!(&c.status.state, State::Terminated(t) if t.exit_code != 0)
        });
        if init_failed && self.stopping.is_none() {
            self.state.phase = "Failed".into();
            return;
        }
        if !self.state.initialized {
            return;
        }
        let mains = &self.ctrs[self.n_init..];
        // The phase follows the main containers alone; sidecars do not count.
        let all_done = mains.iter().all(|c| c.finished && !c.alive());
        self.state.phase = if all_done && self.stopping.is_none() {
            let ok = mains
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

    /// The pod is to stop: every container ends (see `lifecycle`), restarts cease.
    fn begin_stop(&mut self, stop: Stop, tx: &Senders) {
        let first = self.stopping.is_none();
        // A later, harsher request wins (Gone or Shutdown after a deletion).
        match (self.stopping, stop) {
            (Some(Stop::Gone), _) | (Some(Stop::Shutdown), Stop::Delete(_)) => {}
            _ => self.stopping = Some(stop),
        }
        let all: Vec<usize> = (0..self.ctrs.len()).collect();
        match stop {
            Stop::Delete(grace) => self.end(&all, grace, true, true, lifecycle::MIN_TERM),
            Stop::Gone => self.end(&all, Duration::ZERO, false, false, Duration::ZERO),
            Stop::Shutdown => self.end(&all, Duration::from_secs(3), false, false, Duration::ZERO),
        }
        if first {
            tracing::info!(pod = %self.name, ns = %self.ns, ?stop, "stopping");
        }
        self.advance_endings(tx);
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

    /// After every container has stopped: the sandbox, the address, the pod's state, and for a
    /// deletion the object itself.
    async fn teardown(&mut self, stop: Stop) {
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
        let (hook_tx, mut hook_rx) = mpsc::unbounded_channel::<HookDone>();
        let tx = Senders {
            exits: exit_tx,
            probes: probe_tx,
            hooks: hook_tx,
        };
        if let Err(e) = self.write_index() {
            tracing::warn!(error = %e, "cannot write the pod index");
        }
        if self.pod.metadata.deletion_timestamp.is_some() {
            // Being deleted before we ever ran it: nothing to stop, only to finish.
            let stop = self
                .on_update(Update::Pod(self.pod.clone()))
                .unwrap_or(Stop::Gone);
            return self.teardown(stop).await;
        }
        // Sandbox and volumes: retried until they work, like ContainerCreating.
        loop {
            match self.prepare().await {
                Ok(()) => break,
                Err(e) => {
                    let msg = e.to_string();
                    for c in self.ctrs.iter_mut() {
                        c.status.state = State::Waiting {
                            reason: "ContainerCreating".into(),
                            message: Some(msg.clone()),
                        };
                    }
                    self.report().await;
                }
            }
            if let Some(stop) = self.pause(Duration::from_secs(2), &mut rx).await {
                return self.teardown(stop).await;
            }
        }
        self.report().await;
        if self.n_init == 0 {
            self.state.initialized = true;
        }
        self.on_tick(&tx);
        self.report().await;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut refresh = tokio::time::interval(Duration::from_secs(2));
        // When everything was sent SIGKILL and some exit is still not seen (a process stuck in
        // the kernel), give up waiting after this long.
        let mut gave_up_at: Option<Instant> = None;
        let stop = loop {
            tokio::select! {
                Some(e) = exit_rx.recv() => self.on_exit(e),
                Some(r) = probe_rx.recv() => self.on_probe(r),
                Some(h) = hook_rx.recv() => self.on_hook(h),
                _ = tick.tick() => self.on_tick(&tx),
                _ = refresh.tick() => self.refresh_volumes().await,
                r = rx.changed(), if !matches!(self.stopping, Some(Stop::Gone | Stop::Shutdown)) => {
                    let u = if r.is_err() {
                        Update::Shutdown
                    } else {
                        rx.borrow_and_update().clone()
                    };
                    if let Some(stop) = self.on_update(u) {
                        self.begin_stop(stop, &tx);
                    }
                }
            }
            // Every event may let the next container start or stop (a sidecar's turn comes
            // the moment the container it waits for has exited).
            if self.stopping.is_some() || self.completing {
                self.advance_endings(&tx);
            }
            self.update_phase();
            self.report().await;
            if let Some(stop) = self.stopping {
                if !self.ctrs.iter().any(Running::alive) {
                    break stop;
                }
                let all_killed = self
                    .ctrs
                    .iter()
                    .filter(|c| c.alive())
                    .all(|c| c.ending.is_some_and(|e| e.killed));
                if all_killed {
                    let at =
                        *gave_up_at.get_or_insert_with(|| Instant::now() + Duration::from_secs(5));
                    if Instant::now() >= at {
                        tracing::warn!(pod = %self.name, ns = %self.ns, "containers did not exit after SIGKILL");
                        break stop;
                    }
                }
            }
        };
        self.teardown(stop).await;
    }
}
