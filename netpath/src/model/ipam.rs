//! IPv4 subnets and address assignment. Pure data: no netlink, no files.
use std::{fmt, net::Ipv4Addr, str::FromStr};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::parse::ParseError;

/// Why an address cannot be had: frontends (a CNI IPAM) tell a full subnet from a bad request.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IpamError {
    #[error("invalid prefix length /{0} (must be 0-32)")]
    PrefixLen(u8),
    #[error("address {addr} is outside subnet {subnet}")]
    Outside { addr: Ipv4Addr, subnet: Subnet },
    #[error("address {addr} is the network or broadcast address of {subnet}")]
    NotAHost { addr: Ipv4Addr, subnet: Subnet },
    #[error("subnet {subnet} has no free address left")]
    Exhausted { subnet: Subnet },
}

/// An IPv4 network in CIDR form, always with its host bits clear. Ordered by address, then
/// prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subnet {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl Subnet {
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Result<Self, IpamError> {
        if prefix_len > 32 {
            return Err(IpamError::PrefixLen(prefix_len));
        }
        Ok(Self::masked(addr, prefix_len))
    }

    /// `prefix_len` must be at most 32.
    fn masked(addr: Ipv4Addr, prefix_len: u8) -> Self {
        Self {
            network: Ipv4Addr::from(u32::from(addr) & mask(prefix_len)),
            prefix_len,
        }
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
    pub fn check_host(&self, addr: Ipv4Addr) -> Result<(), IpamError> {
        let subnet = *self;
        if !self.contains(addr) {
            return Err(IpamError::Outside { addr, subnet });
        }
        if addr == self.network || addr == self.broadcast() {
            return Err(IpamError::NotAHost { addr, subnet });
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
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let cidr = s.to_owned();
        let Some((addr, len)) = s.split_once('/') else {
            return Err(ParseError::CidrSyntax { cidr });
        };
        let Ok(ip) = addr.parse::<Ipv4Addr>() else {
            let addr = addr.to_owned();
            return Err(ParseError::CidrAddress { cidr, addr });
        };
        let len = match len.parse::<u8>() {
            Ok(len) if len <= 32 => len,
            _ => return Err(ParseError::CidrPrefix { cidr }),
        };
        let network = Subnet::masked(ip, len);
        if network.network != ip {
            return Err(ParseError::HostBitsSet { cidr, network });
        }
        Ok(network)
    }
}

impl TryFrom<String> for Subnet {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
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

/// A set of addresses kept as sorted ranges, apart and not adjacent. A network's addresses are
/// mostly handed out in a row, so the set stays a few ranges however many containers there
/// are, and so does its text in the state: `["172.17.0.2-172.17.3.233"]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct AddrSet(Vec<(u32, u32)>);

impl AddrSet {
    /// The range holding `x`, or where one starting at `x` would go.
    fn find(&self, x: u32) -> Result<usize, usize> {
        self.0.binary_search_by(|&(a, b)| match (b < x, a > x) {
            (true, _) => std::cmp::Ordering::Less,
            (_, true) => std::cmp::Ordering::Greater,
            _ => std::cmp::Ordering::Equal,
        })
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.find(ip.into()).is_ok()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    pub fn insert(&mut self, ip: Ipv4Addr) {
        let x = u32::from(ip);
        let Err(i) = self.find(x) else {
            return;
        };
        // Neighbours end below x and start above it, so the arithmetic cannot overflow.
        let joins_prev = i > 0 && self.0[i - 1].1 + 1 == x;
        let joins_next = i < self.0.len() && self.0[i].0 - 1 == x;
        match (joins_prev, joins_next) {
            (true, true) => {
                self.0[i - 1].1 = self.0[i].1;
                self.0.remove(i);
            }
            (true, false) => self.0[i - 1].1 = x,
            (false, true) => self.0[i].0 = x,
            (false, false) => self.0.insert(i, (x, x)),
        }
    }

    pub fn remove(&mut self, ip: Ipv4Addr) {
        let x = u32::from(ip);
        let Ok(i) = self.find(x) else {
            return;
        };
        let (a, b) = self.0[i];
        match (a == x, b == x) {
            (true, true) => {
                self.0.remove(i);
            }
            (true, false) => self.0[i].0 = x + 1,
            (false, true) => self.0[i].1 = x - 1,
            (false, false) => {
                self.0[i].1 = x - 1;
                self.0.insert(i + 1, (x + 1, b));
            }
        }
    }

    /// The lowest host address of `subnet` that is neither in the set nor `gateway`.
    /// Sequential so that the first container gets .2, as with Docker.
    pub fn next_free(&self, subnet: &Subnet, gateway: Ipv4Addr) -> Result<Ipv4Addr, IpamError> {
        let last = u64::from(u32::from(subnet.broadcast())).saturating_sub(1);
        let mut x = u64::from(u32::from(subnet.network)) + 1;
        while x <= last {
            // Ranges are never adjacent: the one after a range's end is free.
            if let Ok(i) = self.find(x as u32) {
                x = u64::from(self.0[i].1) + 1;
            } else if x as u32 == u32::from(gateway) {
                x += 1;
            } else {
                return Ok(Ipv4Addr::from(x as u32));
            }
        }
        Err(IpamError::Exhausted { subnet: *subnet })
    }
}

impl From<AddrSet> for Vec<String> {
    fn from(set: AddrSet) -> Vec<String> {
        let text = |x: u32| Ipv4Addr::from(x).to_string();
        set.0
            .into_iter()
            .map(|(a, b)| match a == b {
                true => text(a),
                false => format!("{}-{}", text(a), text(b)),
            })
            .collect()
    }
}

impl TryFrom<Vec<String>> for AddrSet {
    type Error = String;

    fn try_from(runs: Vec<String>) -> Result<AddrSet, String> {
        let mut parsed = Vec::with_capacity(runs.len());
        for run in &runs {
            let (a, b) = run.split_once('-').unwrap_or((run, run));
            match (a.parse::<Ipv4Addr>(), b.parse::<Ipv4Addr>()) {
                (Ok(a), Ok(b)) if a <= b => parsed.push((u32::from(a), u32::from(b))),
                _ => return Err(format!("invalid address range {run:?}")),
            }
        }
        // netpath writes them in order, apart and not adjacent; a file edited by hand is
        // put back in that form rather than refused.
        parsed.sort_unstable();
        let mut set = AddrSet::default();
        for (a, b) in parsed {
            match set.0.last_mut() {
                Some((_, end)) if u64::from(*end) + 1 >= u64::from(a) => *end = (*end).max(b),
                _ => set.0.push((a, b)),
            }
        }
        Ok(set)
    }
}

/// A stable MAC for a container address: locally administered, derived from the IP the way
/// Docker does it (02:42 followed by the address), so it survives re-creation.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// A MAC address as `ip link` and Docker write it.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn address_sets_keep_ranges() {
        let ip = |d| Ipv4Addr::new(10, 0, 1, d);
        let mut set = AddrSet::default();
        for d in [2, 4, 3, 7, 9, 10] {
            set.insert(ip(d));
        }
        set.insert(ip(3));
        let text = serde_json::to_string(&set).unwrap();
        assert_eq!(
            text,
            r#"["10.0.1.2-10.0.1.4","10.0.1.7","10.0.1.9-10.0.1.10"]"#
        );
        assert_eq!(serde_json::from_str::<AddrSet>(&text).unwrap(), set);
        set.remove(ip(3));
        set.remove(ip(9));
        set.remove(ip(8));
        set.insert(ip(8));
        let text = serde_json::to_string(&set).unwrap();
        assert_eq!(
            text,
            r#"["10.0.1.2","10.0.1.4","10.0.1.7-10.0.1.8","10.0.1.10"]"#
        );
        assert!(set.contains(ip(8)) && !set.contains(ip(9)) && !set.contains(ip(1)));
        for bad in [r#"["10.0.1.9-10.0.1.2"]"#, r#"["10.0.1.x"]"#] {
            let e = serde_json::from_str::<AddrSet>(bad)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("invalid address range"), "{bad}: {e}");
        }
        // Out of order, overlapping or adjacent: merged into the form netpath writes.
        let edited = r#"["10.0.1.7","10.0.1.2-10.0.1.5","10.0.1.3","10.0.1.6","10.0.1.9"]"#;
        let set: AddrSet = serde_json::from_str(edited).unwrap();
        let text = serde_json::to_string(&set).unwrap();
        assert_eq!(text, r#"["10.0.1.2-10.0.1.7","10.0.1.9"]"#);
        // The smallest subnets have no host address to give, and say so.
        for tiny in ["0.0.0.0/32", "10.0.0.0/31", "255.255.255.255/32"] {
            let s: Subnet = tiny.parse().unwrap();
            let e = set.next_free(&s, s.network()).unwrap_err();
            assert_eq!(e, IpamError::Exhausted { subnet: s });
        }
    }

    /// Against a plain set of addresses, over random inserts and removes.
    #[test]
    fn address_sets_match_a_plain_set() {
        let mut seed = 0x9e37_79b9_u32;
        let mut set = AddrSet::default();
        let mut plain = BTreeSet::new();
        let s: Subnet = "10.0.0.0/26".parse().unwrap();
        let gateway = s.first_host();
        for _ in 0..5000 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let ip = Ipv4Addr::new(10, 0, 0, (seed % 64) as u8);
            if seed & 0x100 == 0 {
                set.insert(ip);
                plain.insert(ip);
            } else {
                set.remove(ip);
                plain.remove(&ip);
            }
            let expected = (1..63)
                .map(|d| Ipv4Addr::new(10, 0, 0, d))
                .find(|ip| *ip != gateway && !plain.contains(ip));
            assert_eq!(set.next_free(&s, gateway).ok(), expected);
            let text = serde_json::to_string(&set).unwrap();
            assert_eq!(serde_json::from_str::<AddrSet>(&text).unwrap(), set);
        }
        assert!(plain.iter().all(|ip| set.contains(*ip)));
    }

    #[test]
    fn macs_as_text() {
        let mac = [2, 0x42, 0xac, 0x12, 0, 2];
        assert_eq!(format_mac(mac), "02:42:ac:12:00:02");
        assert_eq!(parse_mac(&format_mac(mac)), Some(mac));
        assert_eq!(parse_mac("02:42"), None);
        assert_eq!(parse_mac("02:42:ac:12:00:02:03"), None);
    }

    #[test]
    fn parses_and_rejects() {
        let s: Subnet = "172.17.0.0/16".parse().unwrap();
        assert_eq!(s.to_string(), "172.17.0.0/16");
        assert_eq!(s.broadcast(), Ipv4Addr::new(172, 17, 255, 255));
        let cidr = |s: &str| s.to_owned();
        for (bad, variant, says) in [
            (
                "172.17.0.0",
                ParseError::CidrSyntax {
                    cidr: cidr("172.17.0.0"),
                },
                "invalid CIDR \"172.17.0.0\": expected ADDRESS/PREFIX, e.g. 172.18.0.0/16",
            ),
            (
                "172.17.0.0/33",
                ParseError::CidrPrefix {
                    cidr: cidr("172.17.0.0/33"),
                },
                "invalid CIDR \"172.17.0.0/33\": prefix length must be 0-32",
            ),
            (
                "10.0.0.0/-1",
                ParseError::CidrPrefix {
                    cidr: cidr("10.0.0.0/-1"),
                },
                "invalid CIDR \"10.0.0.0/-1\": prefix length must be 0-32",
            ),
            (
                "300.1.1.1/8",
                ParseError::CidrAddress {
                    cidr: cidr("300.1.1.1/8"),
                    addr: cidr("300.1.1.1"),
                },
                "invalid CIDR \"300.1.1.1/8\": \"300.1.1.1\" is not an IPv4 address",
            ),
            (
                "x/8",
                ParseError::CidrAddress {
                    cidr: cidr("x/8"),
                    addr: cidr("x"),
                },
                "invalid CIDR \"x/8\": \"x\" is not an IPv4 address",
            ),
            (
                "172.17.0.1/16",
                ParseError::HostBitsSet {
                    cidr: cidr("172.17.0.1/16"),
                    network: s,
                },
                "invalid CIDR \"172.17.0.1/16\": host bits are set (did you mean 172.17.0.0/16?)",
            ),
        ] {
            let e = bad.parse::<Subnet>().expect_err(bad);
            assert_eq!(e, variant, "{bad}");
            assert_eq!(e.to_string(), says, "{bad}");
        }
        assert_eq!(
            Subnet::new(Ipv4Addr::UNSPECIFIED, 33),
            Err(IpamError::PrefixLen(33))
        );
        assert_eq!(
            IpamError::PrefixLen(33).to_string(),
            "invalid prefix length /33 (must be 0-32)"
        );
    }

    #[test]
    fn overlap_and_hosts() {
        let a: Subnet = "10.0.0.0/8".parse().unwrap();
        let b: Subnet = "10.1.0.0/16".parse().unwrap();
        let c: Subnet = "11.0.0.0/8".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a) && !a.overlaps(&c));
        for (addr, says) in [
            (
                Ipv4Addr::new(10, 1, 0, 0),
                "address 10.1.0.0 is the network or broadcast address of 10.1.0.0/16",
            ),
            (
                Ipv4Addr::new(10, 1, 255, 255),
                "address 10.1.255.255 is the network or broadcast address of 10.1.0.0/16",
            ),
        ] {
            let e = b.check_host(addr).unwrap_err();
            assert_eq!(e, IpamError::NotAHost { addr, subnet: b });
            assert_eq!(e.to_string(), says);
        }
        let addr = Ipv4Addr::new(10, 2, 0, 1);
        let e = b.check_host(addr).unwrap_err();
        assert_eq!(e, IpamError::Outside { addr, subnet: b });
        assert_eq!(
            e.to_string(),
            "address 10.2.0.1 is outside subnet 10.1.0.0/16"
        );
        assert!(b.check_host(Ipv4Addr::new(10, 1, 0, 9)).is_ok());
    }

    #[test]
    fn allocation_skips_taken_and_exhausts() {
        let s: Subnet = "192.0.2.0/30".parse().unwrap();
        let mut taken = AddrSet::default();
        let ip = taken.next_free(&s, s.first_host()).unwrap();
        assert_eq!(ip, Ipv4Addr::new(192, 0, 2, 2));
        taken.insert(ip);
        let e = taken.next_free(&s, s.first_host()).unwrap_err();
        assert_eq!(e, IpamError::Exhausted { subnet: s });
        assert_eq!(
            e.to_string(),
            "subnet 192.0.2.0/30 has no free address left"
        );
    }

    #[test]
    fn pools_start_with_docker_default() {
        assert_eq!(default_pools().next().unwrap().to_string(), "172.17.0.0/16");
    }
}
