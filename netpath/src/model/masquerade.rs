//! Masquerade settings as data: the `--masquerade-ports` range and the `--masquerade-exclude`
//! list of `up`, and the rules that keep them apart from the published ports. No maps:
//! `ops::masquerade` writes them.
use std::{collections::BTreeSet, fmt, str::FromStr};

use netpath_common::{DEFAULT_NAT_PORTS, MAX_MASQ_EXCLUDE, MAX_NETWORKS};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{
    model::ipam::Subnet,
    model::parse::{self, ParseError},
    model::publish::{Host, Mapping, Publishes},
};

/// Most `--masquerade-exclude` CIDRs: the trie also holds every network's subnet.
pub const MAX_EXCLUDE: usize = (MAX_MASQ_EXCLUDE - MAX_NETWORKS) as usize;

/// Why masquerade settings and published ports cannot go together.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MasqueradeError {
    /// A port to publish, refused by the range already set.
    #[error(
        "host port {host} is in the masquerade port range {range} (see `netpath up --masquerade-ports`)"
    )]
    PublishInRange { host: Host, range: NatPorts },
    /// A range to set, refused by a port already published.
    #[error("masquerade port range {range} overlaps published port {host}")]
    RangeOverlaps { range: NatPorts, host: Host },
    #[error("too many masquerade exclusions: at most {MAX_EXCLUDE}")]
    TooManyExclusions,
}

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
    pub fn check_free(&self, m: &Mapping) -> Result<(), MasqueradeError> {
        if self.contains(m.host_port) {
            return Err(MasqueradeError::PublishInRange {
                host: m.host(),
                range: *self,
            });
        }
        Ok(())
    }

    /// [`Self::check_free`] for every published port.
    pub fn check_publishes(&self, publishes: &Publishes) -> Result<(), MasqueradeError> {
        match publishes.mappings().find(|m| self.contains(m.host_port)) {
            Some(m) => Err(MasqueradeError::RangeOverlaps {
                range: *self,
                host: m.host(),
            }),
            None => Ok(()),
        }
    }
}

impl fmt::Display for NatPorts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl FromStr for NatPorts {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let range = s.to_owned();
        let Some((start, end)) = s.split_once('-') else {
            return Err(ParseError::NatPortsSyntax { range });
        };
        let (start, end) = (
            parse::port("masquerade port", start)?,
            parse::port("masquerade port", end)?,
        );
        if end < start {
            return Err(ParseError::NatPortsEmpty { range });
        }
        Ok(NatPorts { start, end })
    }
}

impl TryFrom<String> for NatPorts {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
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
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        if s == "none" {
            return Ok(Exclude::None);
        }
        Ok(Exclude::Cidr(s.parse()?))
    }
}

/// The exclusion list after an `up`: the stored one (unless `none` is given) plus the given
/// CIDRs.
pub fn plan_exclude(
    stored: &BTreeSet<Subnet>,
    given: &[Exclude],
) -> Result<BTreeSet<Subnet>, MasqueradeError> {
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
        return Err(MasqueradeError::TooManyExclusions);
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

    fn port_error(field: &'static str, value: &str, out_of_range: bool) -> ParseError {
        let value = value.to_owned();
        if out_of_range {
            ParseError::PortOutOfRange { field, value }
        } else {
            ParseError::NotAPort { field, value }
        }
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
        let range = |s: &str| s.to_owned();
        let port = "masquerade port";
        for (bad, variant, says) in [
            (
                "40000",
                ParseError::NatPortsSyntax {
                    range: range("40000"),
                },
                "masquerade port range \"40000\": expected START-END, e.g. 40000-49999",
            ),
            (
                "",
                ParseError::NatPortsSyntax { range: range("") },
                "expected START-END",
            ),
            (
                "40009-40000",
                ParseError::NatPortsEmpty {
                    range: range("40009-40000"),
                },
                "masquerade port range 40009-40000 is empty (it ends before it starts)",
            ),
            (
                "0-100",
                port_error(port, "0", true),
                "masquerade port 0 is out of range (1-65535)",
            ),
            (
                "1-65536",
                port_error(port, "65536", true),
                "masquerade port 65536 is out of range",
            ),
            (
                "a-b",
                port_error(port, "a", false),
                "masquerade port \"a\" is not a port number",
            ),
            (
                "-5",
                port_error(port, "", false),
                "masquerade port \"\" is not a port number",
            ),
            (
                "1-2-3",
                port_error(port, "2-3", false),
                "masquerade port \"2-3\" is not a port number",
            ),
        ] {
            let e = bad.parse::<NatPorts>().expect_err(bad);
            let msg = e.to_string();
            assert!(msg.contains(says), "{bad:?}: {msg:?} lacks {says:?}");
            assert!(!msg.contains('\n'));
            assert_eq!(e, variant, "{bad:?}");
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
        let m = publishes.mappings().next().unwrap();
        let e = range.check_publishes(&publishes).unwrap_err();
        assert_eq!(
            e.to_string(),
            "masquerade port range 8000-8999 overlaps published port *:8080/tcp"
        );
        assert_eq!(
            e,
            MasqueradeError::RangeOverlaps {
                range,
                host: m.host()
            }
        );
        let clear: NatPorts = "8081-8999".parse().unwrap();
        clear.check_publishes(&publishes).unwrap();
        let e = range.check_free(&m).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("host port *:8080/tcp is in the masquerade port range 8000-8999")
        );
        assert_eq!(
            e,
            MasqueradeError::PublishInRange {
                host: m.host(),
                range
            }
        );
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
        assert!(matches!(
            "10.0.0.1/8".parse::<Exclude>(),
            Err(ParseError::HostBitsSet { .. })
        ));
        assert!(matches!(
            "None".parse::<Exclude>(),
            Err(ParseError::CidrSyntax { .. })
        ));
        let many: Vec<Exclude> = (0..=MAX_EXCLUDE as u32)
            .map(|i| Exclude::Cidr(Subnet::new(std::net::Ipv4Addr::from(i << 8), 24).unwrap()))
            .collect();
        let e = plan_exclude(&BTreeSet::new(), &many).unwrap_err();
        assert_eq!(e, MasqueradeError::TooManyExclusions);
        assert_eq!(
            e.to_string(),
            format!("too many masquerade exclusions: at most {MAX_EXCLUDE}")
        );

        let nets = [cidr("172.17.0.0/16"), cidr("10.0.0.0/8")];
        let entries = trie_entries(&nets, &stored);
        assert_eq!(entries, [cidr("10.0.0.0/8"), cidr("172.17.0.0/16")]);
    }
}
