//! /etc/hosts, /etc/resolv.conf and /etc/hostname of each pod. There is no cluster DNS here:
//! each pod's hosts file lists every real pod of its namespace that has a hostname and
//! subdomain (a headless Service's members), under the names DNS would give them.

use crate::error::{Result, io};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;

#[derive(Clone, Debug)]
pub struct Entry {
    pub ip: Ipv4Addr,
    pub hostname: String,
    pub subdomain: Option<String>,
    pub etc_dir: PathBuf,
}

fn names(e: &Entry, ns: &str) -> Vec<String> {
    match &e.subdomain {
        Some(sub) => vec![
            format!("{}.{sub}.{ns}.svc.cluster.local", e.hostname),
            format!("{}.{sub}.{ns}.svc", e.hostname),
            format!("{}.{sub}.{ns}", e.hostname),
            format!("{}.{sub}", e.hostname),
        ],
        None => Vec::new(),
    }
}

/// Namespace → pod UID → entry.
#[derive(Default)]
pub struct Hosts {
    by_ns: Mutex<BTreeMap<String, BTreeMap<String, Entry>>>,
}

impl Hosts {
    /// Adds, changes or (with `None`) removes a pod, then rewrites the namespace's hosts files.
    pub fn set(&self, ns: &str, uid: &str, entry: Option<Entry>) -> Result<()> {
        let mut all = self.by_ns.lock().unwrap_or_else(|p| p.into_inner());
        let pods = all.entry(ns.to_string()).or_default();
        match entry {
            Some(e) => {
                pods.insert(uid.to_string(), e);
            }
            None => {
                pods.remove(uid);
            }
        }
        for (uid, me) in pods.iter() {
            let mut text = String::from(
                "# Kubernetes-managed hosts file (gbo-podrunner).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
            );
            let mut own = names(me, ns);
            own.push(me.hostname.clone());
            text += &format!("{}\t{}\n", me.ip, own.join(" "));
            for (other_uid, other) in pods.iter().filter(|(u, _)| *u != uid) {
                let n = names(other, ns);
                if !n.is_empty() {
                    text += &format!("{}\t{}\t# {other_uid}\n", other.ip, n.join(" "));
                }
            }
            // Rewrite in place: containers see this file through a bind mount of its inode.
            let path = me.etc_dir.join("hosts");
            std::fs::write(&path, text).map_err(io(&path))?;
        }
        Ok(())
    }
}

/// Writes the pod's resolv.conf and hostname (hosts comes from [`Hosts::set`]).
pub fn write_static(etc_dir: &std::path::Path, ns: &str, hostname: &str) -> Result<()> {
    std::fs::create_dir_all(etc_dir).map_err(io(etc_dir))?;
    // No DNS server exists here; a lookup that misses the hosts file fails at once on the
    // pod's own loopback instead of going anywhere else.
    let resolv = format!(
        "search {ns}.svc.cluster.local svc.cluster.local cluster.local\nnameserver 127.0.0.1\noptions ndots:5 timeout:1 attempts:1\n"
    );
    for (f, text) in [
        ("resolv.conf", resolv),
        ("hostname", format!("{hostname}\n")),
    ] {
        let p = etc_dir.join(f);
        std::fs::write(&p, text).map_err(io(&p))?;
    }
    let hosts = etc_dir.join("hosts");
    if !hosts.exists() {
        std::fs::write(&hosts, "127.0.0.1\tlocalhost\n").map_err(io(&hosts))?;
    }
    Ok(())
}
