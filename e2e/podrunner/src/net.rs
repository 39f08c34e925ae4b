//! A network namespace per pod: the pod's address on eth0 (a veth on the bridge) and its own
//! loopback. No default route: a pod reaches the pod network and the gateway, nothing else.

use crate::error::{Error, Result};
use std::net::Ipv4Addr;
use tokio::process::Command;

pub const PREFIX: &str = "gbo-";

/// Namespace and host-side veth names for a pod UID (interface names have 15 bytes at most).
pub fn names(uid: &str) -> (String, String) {
    let short: String = uid
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(12)
        .collect();
    (format!("{PREFIX}{short}"), format!("gv{short}"))
}

pub async fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| Error::Command {
            cmd: format!("ip {}", args.join(" ")),
            msg: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            cmd: format!("ip {}", args.join(" ")),
            msg: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Creates (or recreates) the namespace `ns` holding `addr/prefix` on eth0.
pub async fn create(ns: &str, veth: &str, addr: Ipv4Addr, prefix: u8, bridge: &str) -> Result<()> {
    let _ = delete(ns).await;
    ip(&["netns", "add", ns]).await?;
    ip(&[
        "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
    ])
    .await?;
    ip(&["link", "set", veth, "master", bridge, "up"]).await?;
    let cidr = format!("{addr}/{prefix}");
    ip(&["-n", ns, "addr", "add", &cidr, "dev", "eth0"]).await?;
    ip(&["-n", ns, "link", "set", "eth0", "up"]).await?;
    ip(&["-n", ns, "link", "set", "lo", "up"]).await?;
    Ok(())
}

/// Removes the namespace; its veth pair goes with it.
pub async fn delete(ns: &str) -> Result<()> {
    ip(&["netns", "del", ns]).await.map(|_| ())
}

/// Namespaces this runner (or an earlier one) made.
pub async fn ours() -> Result<Vec<String>> {
    let out = ip(&["netns", "list"]).await?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_fit_interface_limits() {
        let (ns, veth) = super::names("5f0c2a9e-1b7d-4c2e-9a51-0d6a1e2b3c4d");
        assert_eq!(ns, "gbo-5f0c2a9e1b7d");
        assert!(veth.len() <= 15);
    }
}
