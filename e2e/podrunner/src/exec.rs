//! Running a command inside a running container, as `kubectl exec` does: in the container's
//! mount, network, PID and UTS namespaces and its root directory, as its user, with its
//! environment (all read from the container's main process).

use crate::error::{Error, Result, io};
use crate::fault;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

/// Who and where a command runs: the container's main process and its identity.
#[derive(Clone, Debug)]
pub struct Target {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub env: Vec<(String, String)>,
}

fn status_ids(status: &str, key: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The container `container` of the pod (or its only running container).
pub fn target(state: &Path, ns: &str, pod: &str, container: Option<&str>) -> Result<Target> {
    let mut mains = fault::main_pids(state, ns, pod, container)?;
    if mains.len() > 1 {
        let names: Vec<&str> = mains.iter().map(|(n, _)| n.as_str()).collect();
        return Err(Error::Pod(format!(
            "pod {ns}/{pod} runs several containers ({}): name one",
            names.join(", ")
        )));
    }
    let (_, pid) = mains.remove(0);
    let status_path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&status_path).map_err(io(&status_path))?;
    let environ_path = format!("/proc/{pid}/environ");
    let environ = std::fs::read(&environ_path).map_err(io(&environ_path))?;
    let env = environ
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    // The real (first) id of each line.
    let first = |key: &str| status_ids(&status, key).first().copied().unwrap_or(0);
    Ok(Target {
        pid,
        uid: first("Uid:"),
        gid: first("Gid:"),
        groups: status_ids(&status, "Groups:"),
        env,
    })
}

/// The command line that runs `argv` in the target container.
pub fn command(t: &Target, argv: &[String]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("nsenter");
    let groups = if t.groups.is_empty() {
        "--clear-groups".to_string()
    } else {
        let g: Vec<String> = t.groups.iter().map(u32::to_string).collect();
        format!("--groups={}", g.join(","))
    };
    cmd.arg("-t")
        .arg(t.pid.to_string())
        .args(["-m", "-n", "-p", "-u", "-r", "-w", "--", "/usr/bin/setpriv"])
        .arg(format!("--reuid={}", t.uid))
        .arg(format!("--regid={}", t.gid))
        .arg(groups)
        .arg("--")
        .args(argv)
        .env_clear()
        .envs(t.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Kills a command's whole process group when dropped: nsenter forks the command into the
/// container's PID namespace, so killing nsenter alone would leave the command running.
pub struct GroupGuard(Option<i32>);

impl GroupGuard {
    pub fn new(child: &tokio::process::Child) -> Self {
        Self(child.id().and_then(|p| i32::try_from(p).ok()))
    }
    pub fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // SAFETY: kill(2) on the process group this module created for its own child.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

/// Runs `argv` in the pod's container and collects its output (exit status included). The
/// command and everything it started are killed after `timeout`, or if the future is dropped.
pub async fn run(
    state: &Path,
    ns: &str,
    pod: &str,
    container: Option<&str>,
    argv: &[String],
    timeout: Duration,
) -> Result<Output> {
    let what = || format!("exec in {ns}/{pod}: {}", argv.join(" "));
    if argv.is_empty() {
        return Err(Error::Pod("exec needs a command".into()));
    }
    let t = target(state, ns, pod, container)?;
    let mut cmd = command(&t, argv);
    cmd.process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().map_err(|e| Error::Command {
        cmd: what(),
        msg: e.to_string(),
    })?;
    let mut guard = GroupGuard::new(&child);
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| Error::Command {
            cmd: what(),
            msg: format!("still running after {timeout:?}; killed"),
        })?
        .map_err(|e| Error::Command {
            cmd: what(),
            msg: e.to_string(),
        })?;
    guard.disarm();
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_real_ids_and_groups() {
        let status = "Name:\tredis\nUid:\t999\t999\t999\t999\nGid:\t1000\t1000\t1000\t1000\nGroups:\t1000 2000 \n";
        assert_eq!(super::status_ids(status, "Uid:"), vec![999, 999, 999, 999]);
        assert_eq!(super::status_ids(status, "Groups:"), vec![1000, 2000]);
        assert!(super::status_ids("Groups:\t\n", "Groups:").is_empty());
    }
}
