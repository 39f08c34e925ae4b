//! Fault injection for chaos tests, by the PIDs the runner recorded: kill -9 a container,
//! pause a whole pod (SIGSTOP, a stand-in for a network partition), resume it. Also reads logs.

use crate::error::{Error, Result, io};
use crate::sandbox;
use std::path::{Path, PathBuf};

fn pod_dir(state: &Path, ns: &str, pod: &str) -> Result<PathBuf> {
    let index = state.join("index").join(ns).join(pod);
    let uid = std::fs::read_to_string(&index)
        .map_err(|_| Error::Pod(format!("pod {ns}/{pod} is not run by the pod runner")))?;
    Ok(state.join("pods").join(uid.trim()))
}

/// (container, main PID) of the pod's running containers, or only of `container`.
pub fn main_pids(
    state: &Path,
    ns: &str,
    pod: &str,
    container: Option<&str>,
) -> Result<Vec<(String, u32)>> {
    let dir = pod_dir(state, ns, pod)?.join("containers");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if container.is_some_and(|c| c != name) {
            continue;
        }
        if let Some(pid) = sandbox::read_pid(&e.path().join("pid")) {
            out.push((name, pid));
        }
    }
    if out.is_empty() {
        return Err(Error::Pod(format!(
            "pod {ns}/{pod} has no running container{}",
            container.map(|c| format!(" {c}")).unwrap_or_default()
        )));
    }
    Ok(out)
}

/// kill -9 of the container's main process: the whole container dies, as when a node kills it.
/// With `down_for`, the runner does not restart it before that much time has passed (a crashed
/// machine, not just a crashed process).
pub fn kill(
    state: &Path,
    ns: &str,
    pod: &str,
    container: Option<&str>,
    down_for: Option<std::time::Duration>,
) -> Result<()> {
    let dir = pod_dir(state, ns, pod)?.join("containers");
    for (name, pid) in main_pids(state, ns, pod, container)? {
        if let Some(d) = down_for {
            let until =
                jiff::Timestamp::now() + jiff::SignedDuration::try_from(d).unwrap_or_default();
            let f = dir.join(&name).join(HOLD_FILE);
            std::fs::write(&f, until.to_string()).map_err(io(&f))?;
        }
        sandbox::signal(pid, libc::SIGKILL);
    }
    Ok(())
}

/// In a container's directory: do not restart it before this time.
pub const HOLD_FILE: &str = "hold-until";

/// How long a container must stay down, if a fault asked for it.
pub fn hold(container_dir: &Path) -> Option<std::time::Duration> {
    let until: jiff::Timestamp = std::fs::read_to_string(container_dir.join(HOLD_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let left = until.duration_since(jiff::Timestamp::now());
    std::time::Duration::try_from(left)
        .ok()
        .filter(|d| !d.is_zero())
}

fn signal_pod(state: &Path, ns: &str, pod: &str, container: Option<&str>, sig: i32) -> Result<()> {
    for (_, pid) in main_pids(state, ns, pod, container)? {
        for p in sandbox::container_pids(pid) {
            sandbox::signal(p, sig);
        }
    }
    Ok(())
}

/// Freezes every process of the pod: it neither answers nor acts, as if cut off.
pub fn pause(state: &Path, ns: &str, pod: &str) -> Result<()> {
    signal_pod(state, ns, pod, None, libc::SIGSTOP)
}

pub fn resume(state: &Path, ns: &str, pod: &str) -> Result<()> {
    signal_pod(state, ns, pod, None, libc::SIGCONT)
}

/// Freezes one container of the pod (SIGSTOP to its every process): it still counts as
/// running and ready, it just does nothing, as a process stuck on a slow disk or peer would.
pub fn pause_container(state: &Path, ns: &str, pod: &str, container: &str) -> Result<()> {
    signal_pod(state, ns, pod, Some(container), libc::SIGSTOP)
}

pub fn resume_container(state: &Path, ns: &str, pod: &str, container: &str) -> Result<()> {
    signal_pod(state, ns, pod, Some(container), libc::SIGCONT)
}

/// The container's output so far (`previous` for the run before the last restart).
pub fn log(state: &Path, ns: &str, pod: &str, container: &str, previous: bool) -> Result<String> {
    let f = pod_dir(state, ns, pod)?
        .join("containers")
        .join(container)
        .join(if previous { "log.previous" } else { "log" });
    std::fs::read_to_string(&f).map_err(io(&f))
}
