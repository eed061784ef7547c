//! IPv4 subnets and address assignment. Pure data: no netlink, no files.
use std::{collections::BTreeSet, fmt, net::Ipv4Addr, str::FromStr};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// An IPv4 network in CIDR form, always with its host bits clear. Ordered by address, then
/// prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subnet {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl Subnet {
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Result<Self> {
        if prefix_len > 32 {
            bail!("invalid prefix length /{prefix_len} (must be 0-32)");
        }
        let network = Ipv4Addr::from(u32::from(addr) & mask(prefix_len));
        Ok(Self {
            network,
            prefix_len,
        })
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix_len))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix_len) == u32::from(self.network)
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// The first usable host address, the default gateway.
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// Checks that `ip` may be given to a host in this subnet: inside it, and neither its
    /// network nor its broadcast address.
    pub fn check_host(&self, ip: Ipv4Addr) -> Result<()> {
        if !self.contains(ip) {
            bail!("address {ip} is outside subnet {self}");
        }
        if ip == self.network || ip == self.broadcast() {
            bail!("address {ip} is the network or broadcast address of {self}");
        }
        Ok(())
    }
}

fn mask(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0)
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl FromStr for Subnet {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let Some((addr, len)) = s.split_once('/') else {
            bail!("invalid CIDR {s:?}: expected ADDRESS/PREFIX, e.g. 172.18.0.0/16");
        };
        let Ok(addr) = addr.parse::<Ipv4Addr>() else {
            bail!("invalid CIDR {s:?}: {addr:?} is not an IPv4 address");
        };
        let len = match len.parse::<u8>() {
            Ok(len) if len <= 32 => len,
            _ => bail!("invalid CIDR {s:?}: prefix length must be 0-32"),
        };
        let subnet = Subnet::new(addr, len)?;
        if subnet.network != addr {
            bail!("invalid CIDR {s:?}: host bits are set (did you mean {subnet}?)");
        }
        Ok(subnet)
    }
}

impl TryFrom<String> for Subnet {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Subnet> for String {
    fn from(s: Subnet) -> String {
        s.to_string()
    }
}

/// The pools tried, in order, for a network created without `--subnet` (Docker's defaults).
pub fn default_pools() -> impl Iterator<Item = Subnet> {
    let b172 = (17..=31).map(|b| Subnet::new(Ipv4Addr::new(172, b, 0, 0), 16));
    let b192 = (0..16).map(|i| Subnet::new(Ipv4Addr::new(192, 168, i * 16, 0), 20));
    b172.chain(b192).map(|s| s.expect("valid prefix"))
}

/// The lowest free host address of `subnet`, skipping everything in `taken` (the gateway
/// included). Sequential so that the first container gets .2, as with Docker.
pub fn next_free(subnet: &Subnet, taken: &BTreeSet<Ipv4Addr>) -> Result<Ipv4Addr> {
    let first = u32::from(subnet.network) + 1;
    let last = u32::from(subnet.broadcast()).saturating_sub(1);
    (first..=last)
        .map(Ipv4Addr::from)
        .find(|ip| !taken.contains(ip))
        .ok_or_else(|| anyhow::anyhow!("subnet {subnet} has no free address left"))
}

/// A stable MAC for a container address: locally administered, derived from the IP the way
/// Docker does it (02:42 followed by the address), so it survives re-creation.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let s: Subnet = "172.17.0.0/16".parse().unwrap();
        assert_eq!(s.to_string(), "172.17.0.0/16");
        assert_eq!(s.broadcast(), Ipv4Addr::new(172, 17, 255, 255));
        for bad in [
            "172.17.0.0",
            "172.17.0.0/33",
            "300.1.1.1/8",
            "172.17.0.1/16",
            "x/8",
        ] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn overlap_and_hosts() {
        let a: Subnet = "10.0.0.0/8".parse().unwrap();
        let b: Subnet = "10.1.0.0/16".parse().unwrap();
        let c: Subnet = "11.0.0.0/8".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a) && !a.overlaps(&c));
        assert!(b.check_host(Ipv4Addr::new(10, 1, 0, 0)).is_err());
        assert!(b.check_host(Ipv4Addr::new(10, 1, 255, 255)).is_err());
        assert!(b.check_host(Ipv4Addr::new(10, 2, 0, 1)).is_err());
        assert!(b.check_host(Ipv4Addr::new(10, 1, 0, 9)).is_ok());
    }

    #[test]
    fn allocation_skips_taken_and_exhausts() {
        let s: Subnet = "192.0.2.0/30".parse().unwrap();
        let mut taken = BTreeSet::from([s.first_host()]);
        let ip = next_free(&s, &taken).unwrap();
        assert_eq!(ip, Ipv4Addr::new(192, 0, 2, 2));
        taken.insert(ip);
        assert!(next_free(&s, &taken).is_err());
    }

    #[test]
    fn pools_start_with_docker_default() {
        assert_eq!(default_pools().next().unwrap().to_string(), "172.17.0.0/16");
    }
}
