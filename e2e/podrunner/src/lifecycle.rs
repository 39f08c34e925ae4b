//! The kubelet's ordering of a pod's containers (Kubernetes 1.29+, native sidecars), kept
//! pure so that it can be tested without processes, and the preStop hooks it runs.
//!
//! Start: init containers in order. A regular one must exit 0 before the next starts; a
//! sidecar (an init container with `restartPolicy: Always`) only has to be *started* — its
//! startup probe passed, or, without one, its process up — and keeps running, restarted with
//! back-off whenever it exits. The main containers start once every init container is done.
//!
//! Stop (pod deletion, as `killContainersWithSyncResult` and `terminationOrdering` do it):
//! every running container's preStop hook starts at once; a container gets SIGTERM when its
//! hook has finished, a main container at once, a sidecar only once every main container and
//! every sidecar defined after it has exited (so sidecars stop in reverse order). Nothing
//! waits past the grace period: then everything left gets SIGTERM, and SIGKILL follows no
//! sooner than the kubelet's minimum of 2 s after SIGTERM.

use crate::exec;
use k8s_openapi::api::core::v1::{Container, LifecycleHandler};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The kubelet's `minimumGracePeriodInSeconds`: a container always gets this long between
/// SIGTERM and SIGKILL, even when the pod's grace period has run out.
pub const MIN_TERM: Duration = Duration::from_secs(2);

/// What a container is to the ordering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A regular init container: runs to completion before the next one starts.
    Init,
    /// An init container with `restartPolicy: Always`.
    Sidecar,
    Main,
}

impl Role {
    pub fn of_init(c: &Container) -> Self {
        if c.restart_policy.as_deref() == Some("Always") {
            Role::Sidecar
        } else {
            Role::Init
        }
    }
}

/// One init container, as far as the start order cares.
#[derive(Clone, Copy, Debug)]
pub struct InitView {
    pub role: Role,
    /// A regular init container exited 0; a sidecar is running and started.
    pub done: bool,
}

/// The first init container not yet done, starting from `cursor` (the cursor never moves
/// back: a sidecar that exits after it was started is restarted, it does not hold the pod
/// back again). Equal to the number of init containers once the pod is initialized.
pub fn init_cursor(inits: &[InitView], cursor: usize) -> usize {
    let mut i = cursor;
    while i < inits.len() && inits[i].done {
        i += 1;
    }
    i
}

/// Whether container `idx` (an index among the init containers for `Init`/`Sidecar`, any
/// value for `Main`) may be started or restarted with the pod's initialization at `cursor`
/// of `n_init`.
pub fn may_start(role: Role, idx: usize, cursor: usize, n_init: usize) -> bool {
    match role {
        // Sidecars before the cursor are restarted when they exit; the one at it is started.
        Role::Sidecar => idx <= cursor,
        Role::Init => idx == cursor,
        Role::Main => cursor >= n_init,
    }
}

/// Where a container's preStop hook stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// To be run now.
    Pending,
    Running,
    /// Finished, failed, timed out, or there is none.
    Done,
}

/// A container being stopped.
#[derive(Clone, Copy, Debug)]
pub struct Ending {
    /// When the grace period runs out.
    pub deadline: Instant,
    /// Wait for this container's turn (a pod's termination); a single container stopped
    /// after a failed probe goes at once.
    pub ordered: bool,
    pub hook: Hook,
    pub term_at: Option<Instant>,
    pub killed: bool,
    /// The least time between SIGTERM and SIGKILL ([`MIN_TERM`], or zero when the pod object
    /// is already gone).
    pub min_term: Duration,
}

impl Ending {
    pub fn new(
        now: Instant,
        grace: Duration,
        ordered: bool,
        hook: bool,
        min_term: Duration,
    ) -> Self {
        Self {
            deadline: now + grace,
            ordered,
            hook: if hook && !grace.is_zero() {
                Hook::Pending
            } else {
                Hook::Done
            },
            term_at: None,
            killed: false,
            min_term,
        }
    }

    /// When SIGKILL is due, once SIGTERM was sent.
    pub fn kill_at(&self) -> Option<Instant> {
        self.term_at.map(|t| self.deadline.max(t + self.min_term))
    }
}

/// One container of the pod (init containers in spec order, then the main containers), as
/// far as stopping cares.
#[derive(Clone, Copy, Debug)]
pub struct StopView {
    pub role: Role,
    /// Has a process (or is a simulated container still shown running).
    pub alive: bool,
    pub ending: Option<Ending>,
}

/// What to do to container `.0` now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Hook(usize),
    Term(usize),
    Kill(usize),
}

/// Whether container `i` may be sent SIGTERM now as far as the order goes (`termination
/// ordering`): a sidecar after every main container and every later sidecar has exited.
pub fn turn(all: &[StopView], i: usize) -> bool {
    if all[i].role != Role::Sidecar {
        return true;
    }
    let mains_gone = all.iter().all(|c| c.role != Role::Main || !c.alive);
    let later_gone = all[i + 1..]
        .iter()
        .all(|c| c.role != Role::Sidecar || !c.alive);
    mains_gone && later_gone
}

/// The steps due at `now` for every container being stopped.
pub fn stop_actions(all: &[StopView], now: Instant) -> Vec<Action> {
    let mut out = Vec::new();
    for (i, c) in all.iter().enumerate() {
        let (true, Some(e)) = (c.alive, c.ending) else {
            continue;
        };
        if e.hook == Hook::Pending {
            out.push(Action::Hook(i));
            continue;
        }
        let expired = now >= e.deadline;
        match e.term_at {
            None => {
                let hook_done = e.hook == Hook::Done;
                if expired || (hook_done && (!e.ordered || turn(all, i))) {
                    out.push(Action::Term(i));
                }
            }
            Some(_) => {
                if !e.killed && e.kill_at().is_some_and(|k| now >= k) {
                    out.push(Action::Kill(i));
                }
            }
        }
    }
    out
}

/// Where and as whom an exec hook runs, and where an HTTP hook goes by default.
pub struct HookTarget {
    pub exec: Option<exec::Target>,
    pub pod_ip: Ipv4Addr,
}

fn port_of(c: &Container, p: &IntOrString) -> Option<u16> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name))
            .and_then(|cp| u16::try_from(cp.container_port).ok()),
    }
}

fn tail(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let t = s.trim();
    let start = t.len().saturating_sub(400);
    let start = (start..t.len())
        .find(|i| t.is_char_boundary(*i))
        .unwrap_or(t.len());
    t[start..].to_string()
}

/// Runs a lifecycle hook as the kubelet does: `exec` inside the container (its namespaces,
/// root, user and environment), `httpGet` against the pod, `sleep`. Gives up after `limit`
/// (what is left of the grace period); the exec'd command is killed then. `Ok` carries what
/// the hook printed.
pub async fn run_hook(
    h: &LifecycleHandler,
    c: &Container,
    target: HookTarget,
    limit: Duration,
) -> Result<String, String> {
    if let Some(e) = &h.exec {
        let argv = e.command.clone().unwrap_or_default();
        if argv.is_empty() {
            return Err("exec hook without a command".into());
        }
        let Some(t) = target.exec else {
            return Err("the container has no process to run the hook in".into());
        };
        let mut cmd = exec::command(&t, &argv);
        cmd.process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd
            .spawn()
            .map_err(|e| format!("{}: {e}", argv.join(" ")))?;
        let mut guard = exec::GroupGuard::new(&child);
        let out = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .map_err(|_| format!("not completed within the grace period ({limit:?})"))?
            .map_err(|e| e.to_string())?;
        guard.disarm();
        let mut text = tail(&out.stdout);
        let err = tail(&out.stderr);
        if !err.is_empty() {
            text = format!("{text} {err}").trim().to_string();
        }
        return if out.status.success() {
            Ok(text)
        } else {
            Err(format!("exited with {}: {text}", out.status))
        };
    }
    if let Some(g) = &h.http_get {
        if g.scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"))
        {
            return Err("HTTPS hooks are not modelled".into());
        }
        let port = port_of(c, &g.port).ok_or_else(|| format!("no port {:?}", g.port))?;
        let host = g
            .host
            .as_deref()
            .and_then(|h| h.parse::<Ipv4Addr>().ok())
            .unwrap_or(target.pod_ip);
        let path = g.path.clone().unwrap_or_else(|| "/".into());
        let code = tokio::time::timeout(
            limit,
            crate::probes::http_status(host, port, &path, "kube-lifecycle/1.36"),
        )
        .await
        .map_err(|_| format!("not completed within the grace period ({limit:?})"))??;
        return if (200..400).contains(&code) {
            Ok(format!("HTTP {code}"))
        } else {
            Err(format!("HTTP {code}"))
        };
    }
    if let Some(s) = &h.sleep {
        let d = Duration::from_secs(u64::try_from(s.seconds).unwrap_or(0));
        tokio::time::sleep(d.min(limit)).await;
        return Ok(String::new());
    }
    // tcpSocket is accepted by the API for backward compatibility only; the kubelet refuses it.
    Err("a hook with no exec, httpGet or sleep action".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init(role: Role, done: bool) -> InitView {
        InitView { role, done }
    }

    #[test]
    fn sidecars_count_once_started_and_regular_init_containers_once_succeeded() {
        use Role::*;
        // sidecar A, init B, sidecar C; then the main containers.
        let mut v = [
            init(Sidecar, false),
            init(Init, false),
            init(Sidecar, false),
        ];
        let n = v.len();
        let c = init_cursor(&v, 0);
        assert_eq!(c, 0);
        assert!(may_start(Sidecar, 0, c, n));
        assert!(!may_start(Init, 1, c, n));
        assert!(!may_start(Sidecar, 2, c, n));
        assert!(!may_start(Main, 0, c, n));
        // A's process is up (no startup probe): B may start, not yet C; A is never waited for.
        v[0].done = true;
        let c = init_cursor(&v, c);
        assert_eq!(c, 1);
        assert!(may_start(Init, 1, c, n));
        assert!(!may_start(Sidecar, 2, c, n));
        // B exits 0: C starts; the main containers wait for C to be started.
        v[1].done = true;
        let c = init_cursor(&v, c);
        assert_eq!(c, 2);
        assert!(may_start(Sidecar, 2, c, n) && !may_start(Main, 0, c, n));
        v[2].done = true;
        let c = init_cursor(&v, c);
        assert_eq!(c, n);
        assert!(may_start(Main, 0, c, n));
        // A crashes later: it is restarted, and the pod stays initialized.
        v[0].done = false;
        let c = init_cursor(&v, c);
        assert_eq!(c, n);
        assert!(may_start(Sidecar, 0, c, n));
        // A regular init container that finished is never started again.
        assert!(!may_start(Init, 1, c, n));
    }

    /// A pod being stopped, simulated in steps of 100 ms: each container runs its hook for
    /// `hook` and exits `exit_after` its SIGTERM (`None`: ignores SIGTERM, as a PID 1
    /// without a handler does).
    struct Sim {
        roles: Vec<Role>,
        hook: Vec<Option<Duration>>,
        exit_after: Vec<Option<Duration>>,
        grace: Duration,
    }

    #[derive(Debug, Default)]
    struct Trace {
        /// (container, what, ms since the deletion)
        events: Vec<(usize, &'static str, u64)>,
    }

    impl Trace {
        fn at(&self, c: usize, what: &str) -> Option<u64> {
            self.events
                .iter()
                .find(|(i, w, _)| *i == c && *w == what)
                .map(|e| e.2)
        }
    }

    impl Sim {
        fn run(&self) -> Trace {
            let t0 = Instant::now();
            let n = self.roles.len();
            let mut views: Vec<StopView> = (0..n)
                .map(|i| StopView {
                    role: self.roles[i],
                    alive: true,
                    ending: Some(Ending::new(
                        t0,
                        self.grace,
                        true,
                        self.hook[i].is_some(),
                        MIN_TERM,
                    )),
                })
                .collect();
            let mut hook_ends: Vec<Option<Instant>> = vec![None; n];
            let mut exit_at: Vec<Option<Instant>> = vec![None; n];
            let mut trace = Trace::default();
            let ms = |t: Instant| (t - t0).as_millis() as u64;
            let mut now = t0;
            while views.iter().any(|v| v.alive) {
                assert!(
                    now < t0 + self.grace + Duration::from_secs(10),
                    "never ends"
                );
                for i in 0..n {
                    if views[i].alive && exit_at[i].is_some_and(|t| now >= t) {
                        views[i].alive = false;
                        trace.events.push((i, "exit", ms(now)));
                    }
                    if let (Some(t), Some(e)) = (hook_ends[i], views[i].ending.as_mut())
                        && e.hook == Hook::Running
                        && (now >= t || now >= e.deadline)
                    {
                        e.hook = Hook::Done;
                        trace.events.push((i, "hook done", ms(now)));
                    }
                }
                for a in stop_actions(&views, now) {
                    match a {
                        Action::Hook(i) => {
                            let e = views[i].ending.as_mut().unwrap();
                            e.hook = Hook::Running;
                            hook_ends[i] = Some(now + self.hook[i].unwrap());
                            trace.events.push((i, "hook", ms(now)));
                        }
                        Action::Term(i) => {
                            views[i].ending.as_mut().unwrap().term_at = Some(now);
                            exit_at[i] = self.exit_after[i].map(|d| now + d);
                            trace.events.push((i, "term", ms(now)));
                        }
                        Action::Kill(i) => {
                            views[i].ending.as_mut().unwrap().killed = true;
                            exit_at[i] = Some(now);
                            trace.events.push((i, "kill", ms(now)));
                        }
                    }
                }
                now += Duration::from_millis(100);
            }
            trace
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn sidecars_stop_after_the_main_containers_in_reverse_order() {
        use Role::*;
        // A PerPod vote pod: worker sidecar, Redis sidecar (a preStop that holds 3 s until its
        // queue is drained), the vote container.
        let sim = Sim {
            roles: vec![Sidecar, Sidecar, Main],
            hook: vec![None, Some(S(3)), None],
            exit_after: vec![Some(S(1)), Some(S(1)), Some(S(1))],
            grace: S(120),
        };
        let t = sim.run();
        // The hook starts with the deletion, beside the vote container's SIGTERM.
        assert_eq!(t.at(1, "hook"), Some(0));
        assert_eq!(t.at(2, "term"), Some(0));
        // Redis: after its hook (3 s) and after the vote container is gone (1 s).
        assert_eq!(t.at(1, "term"), Some(3000));
        // The worker: only once Redis, defined after it, has exited.
        assert_eq!(t.at(0, "term"), Some(4000));
        assert_eq!(t.at(0, "exit"), Some(5000));
        assert!(t.events.iter().all(|(_, w, _)| *w != "kill"), "{t:?}");
    }

    #[test]
    fn a_sidecar_waits_for_its_turn_even_when_its_hook_is_done() {
        use Role::*;
        // Two sidecars without hooks and a main container that takes 5 s to exit.
        let sim = Sim {
            roles: vec![Sidecar, Sidecar, Main, Main],
            hook: vec![None, None, None, None],
            exit_after: vec![Some(S(0)), Some(S(2)), Some(S(5)), Some(S(1))],
            grace: S(30),
        };
        let t = sim.run();
        assert_eq!(t.at(2, "term"), Some(0));
        assert_eq!(t.at(3, "term"), Some(0));
        assert_eq!(
            t.at(1, "term"),
            Some(5000),
            "after the slower main container"
        );
        assert_eq!(t.at(0, "term"), Some(7000), "after the later sidecar");
    }

    #[test]
    fn the_grace_period_bounds_hooks_and_order_and_sigkill_follows() {
        use Role::*;
        // The main container ignores SIGTERM (PID 1 without a handler); the sidecar's hook
        // would run for ever.
        let sim = Sim {
            roles: vec![Sidecar, Main],
            hook: vec![Some(S(1000)), None],
            exit_after: vec![None, None],
            grace: S(10),
        };
        let t = sim.run();
        assert_eq!(t.at(1, "term"), Some(0));
        assert_eq!(
            t.at(1, "kill"),
            Some(10_000),
            "SIGKILL when the grace period ends"
        );
        // The sidecar: SIGTERM when the period ends, SIGKILL the minimum 2 s later.
        assert_eq!(t.at(0, "hook done"), Some(10_000));
        assert_eq!(t.at(0, "term"), Some(10_000));
        assert_eq!(t.at(0, "kill"), Some(12_000));
    }

    #[test]
    fn regular_init_containers_and_single_containers_do_not_wait() {
        use Role::*;
        let now = Instant::now();
        let mut e = Ending::new(now, S(30), false, false, MIN_TERM);
        let views = [
            StopView {
                role: Sidecar,
                alive: true,
                ending: Some(e),
            },
            StopView {
                role: Main,
                alive: true,
                ending: None,
            },
        ];
        // A sidecar restarted after a failed liveness probe goes at once (not ordered).
        assert_eq!(stop_actions(&views, now), vec![Action::Term(0)]);
        e.ordered = true;
        let ordered = [
            StopView {
                ending: Some(e),
                ..views[0]
            },
            views[1],
        ];
        assert!(stop_actions(&ordered, now).is_empty());
        // A regular init container still running at deletion is not held back either.
        let init = [
            StopView {
                role: Init,
                ..ordered[0]
            },
            ordered[1],
        ];
        assert_eq!(stop_actions(&init, now), vec![Action::Term(0)]);
    }

    #[test]
    fn a_zero_grace_period_runs_no_hook_and_kills_at_once() {
        let now = Instant::now();
        let e = Ending::new(now, Duration::ZERO, true, true, Duration::ZERO);
        assert_eq!(e.hook, Hook::Done);
        let mut v = [StopView {
            role: Role::Sidecar,
            alive: true,
            ending: Some(e),
        }];
        assert_eq!(stop_actions(&v, now), vec![Action::Term(0)]);
        v[0].ending.as_mut().unwrap().term_at = Some(now);
        assert_eq!(stop_actions(&v, now), vec![Action::Kill(0)]);
    }
}
