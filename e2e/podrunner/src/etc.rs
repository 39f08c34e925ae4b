//! The files a kubelet writes for every container's /etc: `hosts` (the pod's own name and
//! its `hostAliases`), `resolv.conf` (by `dnsPolicy` and `dnsConfig`) and `hostname`.
//! Other pods' names are not listed: they resolve through the cluster DNS, as in a cluster.

use crate::error::{Result, io};
use k8s_openapi::api::core::v1::Pod;
use std::net::Ipv4Addr;
use std::path::Path;

/// What `ClusterFirst` pods are pointed at.
#[derive(Clone, Debug)]
pub struct ClusterDns {
    /// The kube-dns Service's address; `None` when the cluster has no DNS.
    pub nameserver: Option<Ipv4Addr>,
    /// `cluster.local`.
    pub domain: String,
}

/// The resolver a `Default` pod inherits from "its node". The node here has no resolver that
/// stays on this machine, so the pod's own loopback is named: nothing answers there and every
/// lookup fails at once instead of leaving the machine.
const NODE_RESOLV_CONF: &str = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n";

// glibc's limits, which the kubelet enforces too.
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

/// The pod's hostname as the kubelet sets it: `spec.hostname`, else the pod's name, cut to
/// 63 characters without a trailing '-' or '.'.
pub fn hostname(pod: &Pod) -> String {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    if name.len() <= 63 {
        return name;
    }
    name[..63].trim_end_matches(['-', '.']).to_string()
}

/// `<hostname>.<subdomain>.<ns>.svc.<domain>` when the pod has a subdomain.
pub fn fqdn(pod: &Pod, domain: &str) -> Option<String> {
    let sub = pod
        .spec
        .as_ref()?
        .subdomain
        .clone()
        .filter(|s| !s.is_empty())?;
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    Some(format!("{}.{sub}.{ns}.svc.{domain}", hostname(pod)))
}

pub fn hosts_file(pod: &Pod, ip: Ipv4Addr, domain: &str) -> String {
    let mut text = String::from(
        "# Kubernetes-managed hosts file (gbo-podrunner).\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    match fqdn(pod, domain) {
        Some(f) => text += &format!("{ip}\t{f}\t{}\n", hostname(pod)),
        None => text += &format!("{ip}\t{}\n", hostname(pod)),
    }
    let aliases = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_aliases.clone())
        .unwrap_or_default();
    if !aliases.is_empty() {
        text += "\n# Entries added by HostAliases.\n";
        for a in aliases {
            let names = a.hostnames.unwrap_or_default();
            if !names.is_empty() {
                text += &format!("{}\t{}\n", a.ip, names.join("\t"));
            }
        }
    }
    text
}

#[derive(Default)]
struct Resolver {
    nameservers: Vec<String>,
    searches: Vec<String>,
    /// name → value (`ndots` → `Some("5")`, `rotate` → `None`), in first-seen order.
    options: Vec<(String, Option<String>)>,
}

impl Resolver {
    fn parse(text: &str) -> Self {
        let mut r = Self::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => r.nameservers.extend(words.map(str::to_string)),
                Some("search") => r.searches.extend(words.map(str::to_string)),
                Some("options") => words.for_each(|o| r.set_option(o)),
                _ => {}
            }
        }
        r
    }

    fn set_option(&mut self, option: &str) {
        let (name, value) = match option.split_once(':') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (option.to_string(), None),
        };
        match self.options.iter_mut().find(|(n, _)| *n == name) {
            Some(existing) => existing.1 = value,
            None => self.options.push((name, value)),
        }
    }

    fn render(mut self) -> String {
        let dedup = |v: &mut Vec<String>| {
            let mut seen = std::collections::HashSet::new();
            v.retain(|s| seen.insert(s.clone()));
        };
        dedup(&mut self.nameservers);
        dedup(&mut self.searches);
        self.nameservers.truncate(MAX_NAMESERVERS);
        self.searches.truncate(MAX_SEARCHES);
        let mut text = String::new();
        for ns in &self.nameservers {
            text += &format!("nameserver {ns}\n");
        }
        if !self.searches.is_empty() {
            text += &format!("search {}\n", self.searches.join(" "));
        }
        if !self.options.is_empty() {
            let opts: Vec<String> = self
                .options
                .iter()
                .map(|(n, v)| match v {
                    Some(v) => format!("{n}:{v}"),
                    None => n.clone(),
                })
                .collect();
            text += &format!("options {}\n", opts.join(" "));
        }
        text
    }
}

/// resolv.conf as the kubelet writes it for the pod's `dnsPolicy`, merged with `dnsConfig`.
pub fn resolv_conf(pod: &Pod, dns: &ClusterDns) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let mut r = match (policy, dns.nameserver) {
        ("None", _) => Resolver::default(),
        ("ClusterFirst" | "ClusterFirstWithHostNet", Some(server)) => {
            let d = &dns.domain;
            let mut r = Resolver {
                nameservers: vec![server.to_string()],
                searches: vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()],
                ..Resolver::default()
            };
            r.set_option("ndots:5");
            r
        }
        // `Default`, and `ClusterFirst` without a cluster DNS (the kubelet falls back too).
        _ => Resolver::parse(NODE_RESOLV_CONF),
    };
    if let Some(c) = spec.dns_config {
        r.nameservers.extend(c.nameservers.unwrap_or_default());
        r.searches.extend(c.searches.unwrap_or_default());
        for o in c.options.unwrap_or_default() {
            match o.value {
                Some(v) => r.set_option(&format!("{}:{v}", o.name.unwrap_or_default())),
                None => r.set_option(&o.name.unwrap_or_default()),
            }
        }
    }
    r.render()
}

/// Writes the pod's hosts, resolv.conf and hostname into `etc_dir` (bind-mounted into each
/// container).
pub fn write(etc_dir: &Path, pod: &Pod, ip: Ipv4Addr, dns: &ClusterDns) -> Result<()> {
    std::fs::create_dir_all(etc_dir).map_err(io(etc_dir))?;
    for (f, text) in [
        ("hosts", hosts_file(pod, ip, &dns.domain)),
        ("resolv.conf", resolv_conf(pod, dns)),
        ("hostname", format!("{}\n", hostname(pod))),
    ] {
        let p = etc_dir.join(f);
        std::fs::write(&p, text).map_err(io(&p))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: &str) -> Pod {
        serde_json::from_str(json).unwrap()
    }

    fn cluster() -> ClusterDns {
        ClusterDns {
            nameserver: Some(Ipv4Addr::new(10, 96, 0, 10)),
            domain: "cluster.local".into(),
        }
    }

    #[test]
    fn cluster_first_points_at_kube_dns_with_the_kubelet_search_path() {
        let p =
            pod(r#"{"metadata":{"name":"vote-1","namespace":"shop"},"spec":{"containers":[]}}"#);
        assert_eq!(
            resolv_conf(&p, &cluster()),
            "nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
        );
        let no_dns = ClusterDns {
            nameserver: None,
            ..cluster()
        };
        assert_eq!(resolv_conf(&p, &no_dns), NODE_RESOLV_CONF);
    }

    #[test]
    fn default_stays_on_the_machine_and_none_takes_dns_config_only() {
        let p = pod(
            r#"{"metadata":{"name":"coredns","namespace":"kube-system"},"spec":{"containers":[],"dnsPolicy":"Default"}}"#,
        );
        assert_eq!(resolv_conf(&p, &cluster()), NODE_RESOLV_CONF);
        let p = pod(
            r#"{"metadata":{"name":"x","namespace":"a"},"spec":{"containers":[],"dnsPolicy":"None",
               "dnsConfig":{"nameservers":["10.244.129.9"],"searches":["a.example"],"options":[{"name":"ndots","value":"2"},{"name":"edns0"}]}}}"#,
        );
        assert_eq!(
            resolv_conf(&p, &cluster()),
            "nameserver 10.244.129.9\nsearch a.example\noptions ndots:2 edns0\n"
        );
        let p = pod(
            r#"{"metadata":{"name":"x","namespace":"a"},"spec":{"containers":[],
               "dnsConfig":{"searches":["a.svc.cluster.local","extra"],"options":[{"name":"ndots","value":"1"}]}}}"#,
        );
        assert_eq!(
            resolv_conf(&p, &cluster()),
            "nameserver 10.96.0.10\nsearch a.svc.cluster.local svc.cluster.local cluster.local extra\noptions ndots:1\n"
        );
    }

    #[test]
    fn hosts_hold_the_own_names_and_host_aliases() {
        let p = pod(
            r#"{"metadata":{"name":"redis-0","namespace":"ns"},"spec":{"containers":[],"hostname":"redis-0","subdomain":"redis",
               "hostAliases":[{"ip":"127.0.0.1","hostnames":["redis","queue"]}]}}"#,
        );
        let h = hosts_file(&p, Ipv4Addr::new(10, 244, 129, 2), "cluster.local");
        assert!(
            h.contains("10.244.129.2\tredis-0.redis.ns.svc.cluster.local\tredis-0\n"),
            "{h}"
        );
        assert!(
            h.ends_with("# Entries added by HostAliases.\n127.0.0.1\tredis\tqueue\n"),
            "{h}"
        );
        let long = "a".repeat(62) + "-b";
        let p = pod(&format!(
            r#"{{"metadata":{{"name":"{long}","namespace":"ns"}},"spec":{{"containers":[]}}}}"#
        ));
        assert_eq!(hostname(&p), "a".repeat(62));
    }
}
