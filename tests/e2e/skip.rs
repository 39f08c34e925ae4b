//! What a test may need that not every cluster has, and the visible skip when it is missing:
//! one line per skipped test at once, the skips again and `N skipped` when the process exits,
//! a failure instead when the run requires every capability (`GBO_REQUIRE_RUNNER=1`, as
//! hack/test-all sets it on the local cluster). Shared by the e2e suite (through support.rs),
//! the offline stand-in tests and the benches.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What a test may need that not every cluster has. The local cluster has all of them and
/// hack/test-all requires them there (`GBO_REQUIRE_RUNNER=1`); elsewhere (kind) a test that
/// lacks one is reported skipped, never passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    /// Real processes behind pods: the pod runner (`GBO_PODRUNNER_STATE`).
    Runner,
    /// Names resolved inside the cluster: the `kube-dns` Service with a ready endpoint.
    ClusterDns,
    /// The API server's audit log of write requests (`GBO_AUDIT_LOG`).
    AuditLog,
    /// A program on PATH (helm, kubectl, lua5.1, ...): `e2e/cluster build` installs them.
    // Until the tests that shell out to such programs (helm, gitops, rbac) declare it.
    #[allow(dead_code)]
    Program(&'static str),
}

/// What the capabilities a test was granted hand it.
#[derive(Debug, Default)]
pub struct Granted {
    runner_state: Option<PathBuf>,
    audit_log: Option<PathBuf>,
}

impl Granted {
    /// The pod runner's state directory (for `gbo_podrunner::fault` and `exec`).
    pub fn runner_state(&self) -> PathBuf {
        self.runner_state
            .clone()
            .expect("Capability::Runner among the required capabilities")
    }

    /// The API server's audit log.
    pub fn audit_log(&self) -> PathBuf {
        self.audit_log
            .clone()
            .expect("Capability::AuditLog among the required capabilities")
    }
}

/// Whether this run requires every capability: hack/test-all sets it on the local cluster,
/// where a missing one is a broken cluster, not a reason to skip.
pub fn required() -> bool {
    std::env::var("GBO_REQUIRE_RUNNER").as_deref() == Ok("1")
}

/// `caps`, or `None` once the running test is recorded as skipped (see [`skip`]); the test
/// then returns at once. Fails the test instead when the run requires them.
pub async fn require(caps: &[Capability]) -> Option<Granted> {
    summary_at_exit();
    match check(caps).await {
        Ok(granted) => Some(granted),
        Err(why) => {
            skip(None, &why);
            None
        }
    }
}

/// [`require`] for one part of a test (`part` says which): the rest of it runs either way.
pub async fn require_part(part: &str, caps: &[Capability]) -> Option<Granted> {
    match check(caps).await {
        Ok(granted) => Some(granted),
        Err(why) => {
            skip(Some(part), &why);
            None
        }
    }
}

async fn check(caps: &[Capability]) -> Result<Granted, String> {
    let mut granted = Granted::default();
    let mut missing: Vec<String> = Vec::new();
    let var = |name: &str| std::env::var_os(name).map(PathBuf::from);
    for cap in caps {
        match cap {
            Capability::Runner => match var("GBO_PODRUNNER_STATE") {
                Some(dir) => granted.runner_state = Some(dir),
                None => missing.push(
                    "no pod runner behind this cluster (GBO_PODRUNNER_STATE is not set)".into(),
                ),
            },
            Capability::AuditLog => match var("GBO_AUDIT_LOG") {
                Some(path) => granted.audit_log = Some(path),
                None => missing
                    .push("this cluster keeps no audit log (GBO_AUDIT_LOG is not set)".into()),
            },
            Capability::Program(name) => {
                if !on_path(name) {
                    missing.push(format!("no {name} on PATH"));
                }
            }
            Capability::ClusterDns => {
                let c = Client::try_default()
                    .await
                    .map_err(|e| format!("no client for the cluster in KUBECONFIG: {e}"))?;
                if !cluster_dns(&c).await {
                    missing
                        .push("no cluster DNS (no kube-dns Service with a ready endpoint)".into());
                }
            }
        }
    }
    if missing.is_empty() {
        Ok(granted)
    } else {
        Err(missing.join("; "))
    }
}

/// Whether an executable file `name` is in one of PATH's directories.
fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(name))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Whether the cluster serves `kube-dns` from at least one ready endpoint.
async fn cluster_dns(c: &Client) -> bool {
    let found = Api::<Service>::namespaced(c.clone(), "kube-system")
        .get_opt("kube-dns")
        .await;
    if !matches!(found, Ok(Some(_))) {
        return false;
    }
    let slices = Api::<EndpointSlice>::namespaced(c.clone(), "kube-system")
        .list(&ListParams::default().labels("kubernetes.io/service-name=kube-dns"))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    slices
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .any(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
}

/// The skips of this process, for the summary printed at exit.
static SKIPS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static SKIP_COUNT: AtomicUsize = AtomicUsize::new(0);

/// Records that the running test (or `part` of it) cannot run here, because `why`: prints
/// `skipped: <test>: <why>` at once, counts it for the `N skipped` line printed when the
/// process exits, and appends the line to the file `GBO_SKIP_LOG` names, if any (hack/test-all
/// sums its steps with it). Panics instead when the run requires every capability.
pub fn skip(part: Option<&str>, why: &str) {
    let test = match part {
        Some(part) => format!("{} ({part})", test_name()),
        None => test_name(),
    };
    assert!(
        !required(),
        "GBO_REQUIRE_RUNNER=1, yet {test} cannot run here: {why}"
    );
    let line = format!("skipped: {test}: {why}");
    summary_at_exit();
    // Straight to the file descriptor: the harness hides what passing tests print.
    let _ = writeln!(std::io::stderr(), "{line}");
    if let Some(path) = std::env::var_os("GBO_SKIP_LOG") {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = appended {
            let _ = writeln!(std::io::stderr(), "GBO_SKIP_LOG {path:?}: {e}");
        }
    }
    SKIP_COUNT.fetch_add(1, Ordering::SeqCst);
    SKIPS.lock().unwrap_or_else(|p| p.into_inner()).push(line);
}

/// The running test's name, as the harness names its thread; outside the harness (a bench),
/// the program's.
fn test_name() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_string(),
        _ => std::env::args()
            .next()
            .as_deref()
            .map(Path::new)
            .and_then(Path::file_stem)
            .map(|s| s.to_string_lossy().to_string())
            // Cargo names test binaries `<target>-<hash>`.
            .map(|s| s.rsplit_once('-').map_or(s.clone(), |(t, _)| t.to_string()))
            .unwrap_or_else(|| "this program".into()),
    }
}

/// Makes the process print the skips and the line `N skipped` when it exits. Each test runs
/// on a thread of the harness, which prints its own results and then exits the process, so the
/// summary comes last; libc's atexit is the hook that runs after it.
pub fn summary_at_exit() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: registers a function with no preconditions; it only writes to stderr.
        unsafe { libc::atexit(print_skip_summary) };
    });
}

extern "C" fn print_skip_summary() {
    let mut out = std::io::stderr();
    let n = SKIP_COUNT.load(Ordering::SeqCst);
    // A test thread still holding the lock at exit must not hang the exit: then the count only.
    if let Ok(lines) = SKIPS.try_lock() {
        if !lines.is_empty() {
            let _ = writeln!(out);
        }
        for line in lines.iter() {
            let _ = writeln!(out, "{line}");
        }
    }
    let _ = writeln!(out, "{n} skipped");
}
