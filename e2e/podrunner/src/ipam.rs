//! Addresses for real pods: per node, from the node's pod /24 shifted by the offset.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

#[derive(Default)]
pub struct Ipam {
    offset: u8,
    used: BTreeMap<Ipv4Addr, String>,
}

impl Ipam {
    pub fn new(offset: u8) -> Self {
        Self {
            offset,
            used: BTreeMap::new(),
        }
    }

    /// The /24 real pods on a node with `pod_cidr` draw from.
    pub fn range(&self, pod_cidr: &str) -> Result<[u8; 3]> {
        let (addr, len) = pod_cidr
            .split_once('/')
            .ok_or_else(|| Error::Pod(format!("node podCIDR {pod_cidr:?} is not a CIDR")))?;
        let ip: Ipv4Addr = addr
            .parse()
            .map_err(|_| Error::Pod(format!("node podCIDR {pod_cidr:?} is not IPv4")))?;
        if len != "24" {
            return Err(Error::Pod(format!(
                "node podCIDR {pod_cidr} must be a /24 for the pod runner"
            )));
        }
        let o = ip.octets();
        let third = o[2].checked_add(self.offset).ok_or_else(|| {
            Error::Pod(format!(
                "node podCIDR {pod_cidr} leaves no room for the offset"
            ))
        })?;
        Ok([o[0], o[1], third])
    }

    /// The lowest free address of the node's range, recorded for `owner` (a pod UID).
    pub fn allocate(&mut self, pod_cidr: &str, owner: &str) -> Result<Ipv4Addr> {
        if let Some((ip, _)) = self.used.iter().find(|(_, o)| o.as_str() == owner) {
            return Ok(*ip);
        }
        let [a, b, c] = self.range(pod_cidr)?;
        let ip = (2..=254u8)
            .map(|d| Ipv4Addr::new(a, b, c, d))
            .find(|ip| !self.used.contains_key(ip))
            .ok_or_else(|| Error::Pod(format!("no free pod address left in {a}.{b}.{c}.0/24")))?;
        self.used.insert(ip, owner.to_string());
        Ok(ip)
    }

    pub fn release(&mut self, owner: &str) {
        self.used.retain(|_, o| o != owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_lowest_free_and_reuses_after_release() {
        let mut ipam = Ipam::new(128);
        assert_eq!(
            ipam.allocate("10.244.1.0/24", "a").unwrap(),
            Ipv4Addr::new(10, 244, 129, 2)
        );
        assert_eq!(
            ipam.allocate("10.244.1.0/24", "b").unwrap(),
            Ipv4Addr::new(10, 244, 129, 3)
        );
        assert_eq!(
            ipam.allocate("10.244.1.0/24", "a").unwrap(),
            Ipv4Addr::new(10, 244, 129, 2),
            "same owner, same address"
        );
        ipam.release("a");
        assert_eq!(
            ipam.allocate("10.244.2.0/24", "c").unwrap(),
            Ipv4Addr::new(10, 244, 130, 2)
        );
        assert_eq!(
            ipam.allocate("10.244.1.0/24", "d").unwrap(),
            Ipv4Addr::new(10, 244, 129, 2)
        );
        assert!(ipam.allocate("10.244.1.0/16", "e").is_err());
    }
}
