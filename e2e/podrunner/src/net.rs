//! A network namespace per pod: the pod's address on eth0 (a veth on the bridge) and its own
//! loopback. No default route: a pod reaches the pod network, the gateway and, through the
//! gateway (where kube-proxy serves it), the Service range; nothing else.

use crate::error::{Error, Result};
use std::net::Ipv4Addr;
use tokio::process::Command;

pub const PREFIX: &str = "gbo-";
pub const VETH_PREFIX: &str = "gv";

/// Namespace and host-side veth names for a pod UID (interface names have 15 bytes at most).
pub fn names(uid: &str) -> (String, String) {
    let short: String = uid
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(12)
        .collect();
    (format!("{PREFIX}{short}"), format!("{VETH_PREFIX}{short}"))
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

/// How a pod's namespace is wired.
pub struct Wiring<'a> {
    pub bridge: &'a str,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// Routed via the gateway when set (the Service range).
    pub service_cidr: Option<&'a str>,
    /// The nftables set (`FAMILY TABLE SET`) of `addr . addr` pairs whose traffic is
    /// masqueraded after a Service sent it back to its source (see [`hairpin`]).
    pub hairpin_set: Option<&'a str>,
}

async fn nft(args: &[&str]) -> Result<()> {
    let out = Command::new("nft")
        .args(args)
        .output()
        .await
        .map_err(|e| Error::Command {
            cmd: format!("nft {}", args.join(" ")),
            msg: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            cmd: format!("nft {}", args.join(" ")),
            msg: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Adds (or removes) the pod's address to the hairpin set. A pod reaching itself through a
/// Service arrives from its own address, which its kernel drops; kube-proxy masquerades such
/// traffic only for endpoints on its own node, and here every node's pods share this one
/// kube-proxy, so the cluster masquerades the rest through this set.
pub async fn hairpin(set: &str, addr: Ipv4Addr, present: bool) -> Result<()> {
    let words: Vec<&str> = set.split_whitespace().collect();
    let [family, table, name] = words[..] else {
        return Err(Error::Pod(format!(
            "hairpin set {set:?}: want FAMILY TABLE SET"
        )));
    };
    let element = format!("{{ {addr} . {addr} }}");
    let verb = if present { "add" } else { "delete" };
    nft(&[verb, "element", family, table, name, &element]).await
}

/// Empties the hairpin set (a new runner starts with no pods).
pub async fn hairpin_flush(set: &str) -> Result<()> {
    let words: Vec<&str> = set.split_whitespace().collect();
    let mut args = vec!["flush", "set"];
    args.extend(words);
    nft(&args).await
}

/// Creates (or recreates) the namespace `ns` holding `addr/prefix` on eth0.
pub async fn create(ns: &str, veth: &str, addr: Ipv4Addr, w: &Wiring<'_>) -> Result<()> {
    let (prefix, bridge) = (w.prefix_len, w.bridge);
    let _ = delete(ns).await;
    ip(&["netns", "add", ns]).await?;
    ip(&[
        "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
    ])
    .await?;
    ip(&["link", "set", veth, "master", bridge, "up"]).await?;
    // A pod reaching itself through a Service: kube-proxy's translation happens as the frame
    // crosses the bridge, which must then send it back out the port it came in on (the
    // kubelet's hairpin-veth mode does the same).
    ip(&["link", "set", veth, "type", "bridge_slave", "hairpin", "on"]).await?;
    let cidr = format!("{addr}/{prefix}");
    ip(&["-n", ns, "addr", "add", &cidr, "dev", "eth0"]).await?;
    ip(&["-n", ns, "link", "set", "eth0", "up"]).await?;
    ip(&["-n", ns, "link", "set", "lo", "up"]).await?;
    if let Some(cidr) = w.service_cidr {
        let gw = w.gateway.to_string();
        ip(&["-n", ns, "route", "add", cidr, "via", &gw, "dev", "eth0"]).await?;
    }
    if let Some(set) = w.hairpin_set {
        hairpin(set, addr, true).await?;
    }
    Ok(())
}

/// Removes the namespace and its veth pair. The pair is deleted first, from the host: the
/// kernel tears a deleted namespace down in the background, and its veth would outlive it for
/// a moment (long enough for `e2e/cluster down` to find it).
pub async fn delete(ns: &str) -> Result<()> {
    if let Some(short) = ns.strip_prefix(PREFIX) {
        let _ = ip(&["link", "del", &format!("{VETH_PREFIX}{short}")]).await;
    }
    ip(&["netns", "del", ns]).await.map(|_| ())
}

/// Host-side veths of ours whose namespace is gone.
pub async fn stray_veths() -> Result<Vec<String>> {
    let out = ip(&["-o", "link", "show"]).await?;
    Ok(out
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with(VETH_PREFIX))
        .collect())
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
