//! Masquerade settings as data: the `--masquerade-ports` range and the `--masquerade-exclude`
//! list of `up`, and the rules that keep them apart from the published ports. No maps:
//! `ops::masquerade` writes them.
use std::{collections::BTreeSet, fmt, str::FromStr};

use anyhow::{Result, bail};
use netpath_common::{DEFAULT_NAT_PORTS, MAX_MASQ_EXCLUDE, MAX_NETWORKS};
use serde::{Deserialize, Serialize};

use crate::{
    model::ipam::Subnet,
    model::publish::{Mapping, Publishes, parse_port},
};

/// Most `--masquerade-exclude` CIDRs: the trie also holds every network's subnet.
pub const MAX_EXCLUDE: usize = (MAX_MASQ_EXCLUDE - MAX_NETWORKS) as usize;

/// The source ports masquerade allocates from when a connection's own is taken:
/// `START-END`, inclusive, never empty, never port 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NatPorts {
    pub start: u16,
    pub end: u16,
}

impl NatPorts {
    pub const DEFAULT: NatPorts = NatPorts {
        start: DEFAULT_NAT_PORTS.0,
        end: DEFAULT_NAT_PORTS.1,
    };

    pub fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }

    /// Refuses a published host port inside the range: the replies of a masqueraded
    /// connection on that port would be taken for connections to the published one.
    pub fn check_free(&self, m: &Mapping) -> Result<()> {
        if self.contains(m.host_port) {
            bail!(
                "host port {} is in the masquerade port range {self} (see `netpath up --masquerade-ports`)",
                m.host()
            );
        }
        Ok(())
    }

    /// [`Self::check_free`] for every published port.
    pub fn check_publishes(&self, publishes: &Publishes) -> Result<()> {
        for m in publishes.mappings() {
            if self.contains(m.host_port) {
                bail!(
                    "masquerade port range {self} overlaps published port {}",
                    m.host()
                );
            }
        }
        Ok(())
    }
}

impl fmt::Display for NatPorts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl FromStr for NatPorts {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let Some((start, end)) = s.split_once('-') else {
            bail!("masquerade port range {s:?}: expected START-END, e.g. 40000-49999");
        };
        let (start, end) = (
            parse_port("masquerade port", start)?,
            parse_port("masquerade port", end)?,
        );
        if end < start {
            bail!("masquerade port range {s} is empty (it ends before it starts)");
        }
        Ok(NatPorts { start, end })
    }
}

impl TryFrom<String> for NatPorts {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<NatPorts> for String {
    fn from(p: NatPorts) -> String {
        p.to_string()
    }
}

/// One `--masquerade-exclude` value: a CIDR, or `none` to drop those of earlier `up`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exclude {
    None,
    Cidr(Subnet),
}

impl FromStr for Exclude {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        if s == "none" {
            return Ok(Exclude::None);
        }
        Ok(Exclude::Cidr(s.parse()?))
    }
}

/// The exclusion list after an `up`: the stored one (unless `none` is given) plus the given
/// CIDRs.
pub fn plan_exclude(stored: &BTreeSet<Subnet>, given: &[Exclude]) -> Result<BTreeSet<Subnet>> {
    let mut exclude = if given.contains(&Exclude::None) {
        BTreeSet::new()
    } else {
        stored.clone()
    };
    exclude.extend(given.iter().filter_map(|e| match e {
        Exclude::Cidr(s) => Some(*s),
        Exclude::None => None,
    }));
    if exclude.len() > MAX_EXCLUDE {
        bail!("too many masquerade exclusions: at most {MAX_EXCLUDE}");
    }
    Ok(exclude)
}

/// What the exclusion trie must hold: the networks' subnets, so that traffic among netpath
/// networks keeps its source, and the user's exclusions.
pub fn trie_entries<'a>(
    networks: impl IntoIterator<Item = &'a Subnet>,
    exclude: &'a BTreeSet<Subnet>,
) -> Vec<Subnet> {
    let all: BTreeSet<Subnet> = networks.into_iter().chain(exclude).copied().collect();
    all.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> String {
        format!("{:#}", s.parse::<NatPorts>().expect_err(s))
    }

    #[test]
    fn parses_port_ranges() {
        let p: NatPorts = "40000-40009".parse().unwrap();
        assert_eq!((p.start, p.end), (40000, 40009));
        assert_eq!(p.to_string(), "40000-40009");
        assert!(p.contains(40000) && p.contains(40009) && !p.contains(40010));
        assert_eq!(
            "1-1".parse::<NatPorts>().unwrap(),
            NatPorts { start: 1, end: 1 }
        );
        for (bad, says) in [
            ("40000", "expected START-END"),
            ("", "expected START-END"),
            ("40009-40000", "40009-40000 is empty"),
            ("0-100", "masquerade port 0 is out of range (1-65535)"),
            ("1-65536", "masquerade port 65536 is out of range"),
            ("a-b", "masquerade port \"a\" is not a port number"),
            ("-5", "masquerade port \"\" is not a port number"),
            ("1-2-3", "masquerade port \"2-3\" is not a port number"),
        ] {
            let msg = err(bad);
            assert!(msg.contains(says), "{bad:?}: {msg:?} lacks {says:?}");
            assert!(!msg.contains('\n'));
        }
        let json = serde_json::to_string(&NatPorts::DEFAULT).unwrap();
        assert_eq!(json, "\"32768-60999\"");
        assert_eq!(
            serde_json::from_str::<NatPorts>(&json).unwrap(),
            NatPorts::DEFAULT
        );
    }

    #[test]
    fn ranges_and_publishes_stay_apart() {
        let publishes: Publishes = vec!["8080:172.17.0.2:80".parse().unwrap()]
            .try_into()
            .unwrap();
        let range: NatPorts = "8000-8999".parse().unwrap();
        let msg = format!("{:#}", range.check_publishes(&publishes).unwrap_err());
        assert_eq!(
            msg,
            "masquerade port range 8000-8999 overlaps published port *:8080/tcp"
        );
        let clear: NatPorts = "8081-8999".parse().unwrap();
        clear.check_publishes(&publishes).unwrap();
        let m = publishes.mappings().next().unwrap();
        let msg = format!("{:#}", range.check_free(&m).unwrap_err());
        assert!(msg.starts_with("host port *:8080/tcp is in the masquerade port range 8000-8999"));
        clear.check_free(&m).unwrap();
    }

    #[test]
    fn exclusions_accumulate_until_none() {
        let cidr = |s: &str| s.parse::<Subnet>().unwrap();
        let stored = BTreeSet::from([cidr("10.0.0.0/8")]);
        let given = ["192.0.2.0/24".parse().unwrap()];
        assert_eq!(
            plan_exclude(&stored, &given).unwrap(),
            BTreeSet::from([cidr("10.0.0.0/8"), cidr("192.0.2.0/24")])
        );
        let given = ["192.0.2.0/24".parse().unwrap(), Exclude::None];
        assert_eq!(
            plan_exclude(&stored, &given).unwrap(),
            BTreeSet::from([cidr("192.0.2.0/24")])
        );
        assert!(plan_exclude(&stored, &[Exclude::None]).unwrap().is_empty());
        assert!("10.0.0.1/8".parse::<Exclude>().is_err());
        assert!("None".parse::<Exclude>().is_err());

        let nets = [cidr("172.17.0.0/16"), cidr("10.0.0.0/8")];
        let entries = trie_entries(&nets, &stored);
        assert_eq!(entries, [cidr("10.0.0.0/8"), cidr("172.17.0.0/16")]);
    }
}
