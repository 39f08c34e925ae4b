//! Probes run for real: exec inside the container, HTTP and TCP against the pod's address.

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::net::Ipv4Addr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Timing of a probe, with Kubernetes' defaults.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

fn secs(v: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
}

fn count(v: Option<i32>, default: u32) -> u32 {
    v.and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

pub fn timing(p: &Probe) -> Timing {
    Timing {
        initial_delay: secs(p.initial_delay_seconds, 0),
        period: secs(p.period_seconds, 10),
        timeout: secs(p.timeout_seconds, 1),
        success_threshold: count(p.success_threshold, 1),
        failure_threshold: count(p.failure_threshold, 3),
    }
}

fn port(c: &Container, p: &IntOrString) -> Option<u16> {
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

/// Where and as whom an exec probe runs.
pub struct ExecTarget {
    pub main_pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub env: Vec<(String, String)>,
}

/// Runs the probe once. `true` on success.
pub async fn run(p: &Probe, c: &Container, ip: Ipv4Addr, exec: Option<ExecTarget>) -> bool {
    let t = timing(p).timeout.max(Duration::from_millis(500));
    if let Some(e) = &p.exec {
        let Some(target) = exec else { return false };
        let argv = e.command.clone().unwrap_or_default();
        if argv.is_empty() {
            return false;
        }
        let mut cmd = tokio::process::Command::new("nsenter");
        cmd.arg("-t")
            .arg(target.main_pid.to_string())
            .args(["-m", "-n", "-p", "-u", "-r", "-w", "--", "/usr/bin/setpriv"])
            .arg(format!("--reuid={}", target.uid))
            .arg(format!("--regid={}", target.gid))
            .args(["--clear-groups", "--"])
            .args(&argv)
            .env_clear()
            .envs(target.env)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        return match tokio::time::timeout(t, cmd.status()).await {
            Ok(Ok(s)) => s.success(),
            _ => false,
        };
    }
    if let Some(h) = &p.http_get {
        let Some(port) = port(c, &h.port) else {
            return false;
        };
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        return tokio::time::timeout(t, http_ok(ip, port, &path))
            .await
            .unwrap_or(false);
    }
    if let Some(s) = &p.tcp_socket {
        let Some(port) = port(c, &s.port) else {
            return false;
        };
        return matches!(
            tokio::time::timeout(t, tokio::net::TcpStream::connect((ip, port))).await,
            Ok(Ok(_))
        );
    }
    // gRPC probes are not modelled: report failure rather than pretend.
    false
}

async fn http_ok(ip: Ipv4Addr, port: u16, path: &str) -> bool {
    http_status(ip, port, path, "kube-probe/1.36")
        .await
        .is_ok_and(|c| (200..400).contains(&c))
}

/// The status code of `GET path` on `ip:port` (probes and lifecycle hooks).
pub(crate) async fn http_status(
    ip: Ipv4Addr,
    port: u16,
    path: &str,
    agent: &str,
) -> Result<u16, String> {
    let mut s = tokio::net::TcpStream::connect((ip, port))
        .await
        .map_err(|e| format!("{ip}:{port}: {e}"))?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: {agent}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("{ip}:{port}: {e}"))?;
    let mut head = [0u8; 64];
    let n = s
        .read(&mut head)
        .await
        .map_err(|e| format!("{ip}:{port}: {e}"))?;
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("{ip}:{port}: not an HTTP response: {line:?}"))
}
