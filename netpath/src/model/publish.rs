//! Published ports as data: the SPEC syntax of `publish` and `up --publish`, the `-p`
//! shorthand of `run`, and [`Publishes`], the set of published ports with the rules that keep
//! it consistent. No netlink, no maps: `ops::publish` decides and `datapath` writes.
use std::{
    collections::BTreeMap,
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
    ops::RangeInclusive,
    str::FromStr,
};

use netpath_common::{MAX_PUBLISH, PROTO_TCP, PROTO_UDP, PublishKey};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::parse::{self, ParseError};

pub const SPEC_SYNTAX: &str =
    "[HOST_IP:]HOST_PORT[-END]:CONTAINER_IP:CONTAINER_PORT[-END][/tcp|/udp]";
pub const PORT_SPEC_SYNTAX: &str = "[HOST_IP:]HOST_PORT[-END]:CONTAINER_PORT[-END][/tcp|/udp]";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// The IP protocol number, as the datapath's keys carry it.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => PROTO_TCP,
            Proto::Udp => PROTO_UDP,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

impl FromStr for Proto {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            _ => Err(ParseError::UnknownProto {
                proto: s.to_owned(),
                expected: "tcp or udp",
            }),
        }
    }
}

/// An inclusive range of ports, never containing port 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    start: u16,
    end: u16,
}

impl PortRange {
    pub fn single(port: u16) -> PortRange {
        PortRange {
            start: port,
            end: port,
        }
    }

    pub fn ports(self) -> RangeInclusive<u16> {
        self.start..=self.end
    }

    pub(crate) fn count(self) -> u32 {
        u32::from(self.end - self.start) + 1
    }

    /// Parses `PORT` or `START-END`; `field` names the field in errors.
    fn parse(field: &'static str, s: &str) -> Result<PortRange, ParseError> {
        let (start, end) = match s.split_once('-') {
            Some((start, end)) => (parse::port(field, start)?, parse::port(field, end)?),
            None => {
                let port = parse::port(field, s)?;
                (port, port)
            }
        };
        if end < start {
            return Err(ParseError::ReversedRange {
                field,
                range: s.to_owned(),
            });
        }
        Ok(PortRange { start, end })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// 0.0.0.0 means every local address, as with Docker.
fn parse_host_ip(s: &str) -> Result<Option<Ipv4Addr>, ParseError> {
    let ip = parse::ipv4("HOST_IP", s)?;
    Ok((!ip.is_unspecified()).then_some(ip))
}

/// Splits off `/PROTO` (TCP when absent).
fn split_proto(s: &str) -> Result<(&str, Proto), ParseError> {
    match s.split_once('/') {
        Some((body, proto)) => Ok((body, proto.parse()?)),
        None => Ok((s, Proto::Tcp)),
    }
}

fn parse_ranges(host: &str, container: &str) -> Result<(PortRange, PortRange), ParseError> {
    let host = PortRange::parse("HOST_PORT", host)?;
    let container = PortRange::parse("CONTAINER_PORT", container)?;
    if host.count() != container.count() {
        return Err(ParseError::RangeLengths { host, container });
    }
    Ok((host, container))
}

/// `[HOST_IP:]HOST_PORT[-END]:CONTAINER_IP:CONTAINER_PORT[-END][/tcp|/udp]`: one publish, a
/// range standing for one port per pair. Displays in canonical form (protocol always given),
/// which parses back to the same value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Spec {
    /// None: every local address.
    pub host_ip: Option<Ipv4Addr>,
    pub host_ports: PortRange,
    pub container_ip: Ipv4Addr,
    pub container_ports: PortRange,
    pub proto: Proto,
}

impl Spec {
    /// A container runtime's mapping of one port (Docker's `-p`, a CNI `portMappings` entry):
    /// `host_ip` empty or 0.0.0.0 means every local address, as both runtimes write it.
    pub fn one_port(
        host_ip: &str,
        host_port: u16,
        container_ip: Ipv4Addr,
        container_port: u16,
        proto: Proto,
    ) -> Result<Spec, ParseError> {
        let host_ip = match host_ip {
            "" | "0.0.0.0" => None,
            ip => Some(parse::ipv4("HOST_IP", ip)?),
        };
        Ok(Spec {
            host_ip,
            host_ports: PortRange::single(host_port),
            container_ip,
            container_ports: PortRange::single(container_port),
            proto,
        })
    }

    /// One mapping per port of the range.
    pub fn mappings(&self) -> impl Iterator<Item = Mapping> + use<> {
        let s = *self;
        s.host_ports.ports().zip(s.container_ports.ports()).map(
            move |(host_port, container_port)| Mapping {
                host_ip: s.host_ip,
                host_port,
                proto: s.proto,
                container_ip: s.container_ip,
                container_port,
            },
        )
    }

    /// Docker's PORTS form: `0.0.0.0:8080->80/tcp`.
    pub fn docker_form(&self) -> String {
        format!(
            "{}:{}->{}/{}",
            self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            self.host_ports,
            self.container_ports,
            self.proto
        )
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ip) = self.host_ip {
            write!(f, "{ip}:")?;
        }
        write!(
            f,
            "{}:{}:{}/{}",
            self.host_ports, self.container_ip, self.container_ports, self.proto
        )
    }
}

impl FromStr for Spec {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let (body, proto) = split_proto(s)?;
        let fields: Vec<&str> = body.split(':').collect();
        let (host_ip, host, container_ip, container) = match fields[..] {
            [host, ip, container] => (None, host, ip, container),
            [host_ip, host, ip, container] => (parse_host_ip(host_ip)?, host, ip, container),
            _ => {
                return Err(ParseError::Syntax {
                    syntax: SPEC_SYNTAX,
                });
            }
        };
        let (host_ports, container_ports) = parse_ranges(host, container)?;
        Ok(Spec {
            host_ip,
            host_ports,
            container_ip: parse::ipv4("CONTAINER_IP", container_ip)?,
            container_ports,
            proto,
        })
    }
}

impl TryFrom<String> for Spec {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        s.parse()
    }
}

impl From<Spec> for String {
    fn from(s: Spec) -> String {
        s.to_string()
    }
}

/// `run -p`: `[HOST_IP:]HOST_PORT[-END]:CONTAINER_PORT[-END][/tcp|/udp]`, Docker's shorthand
/// for a [`Spec`] whose container address is the new container's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub host_ip: Option<Ipv4Addr>,
    pub host_ports: PortRange,
    pub container_ports: PortRange,
    pub proto: Proto,
}

impl PortSpec {
    pub fn to_spec(self, container_ip: Ipv4Addr) -> Spec {
        Spec {
            host_ip: self.host_ip,
            host_ports: self.host_ports,
            container_ip,
            container_ports: self.container_ports,
            proto: self.proto,
        }
    }
}

impl FromStr for PortSpec {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let (body, proto) = split_proto(s)?;
        let fields: Vec<&str> = body.split(':').collect();
        let (host_ip, host, container) = match fields[..] {
            [host, container] => (None, host, container),
            [host_ip, host, container] => (parse_host_ip(host_ip)?, host, container),
            _ => {
                return Err(ParseError::Syntax {
                    syntax: PORT_SPEC_SYNTAX,
                });
            }
        };
        let (host_ports, container_ports) = parse_ranges(host, container)?;
        Ok(PortSpec {
            host_ip,
            host_ports,
            container_ports,
            proto,
        })
    }
}

/// One published port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub proto: Proto,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
}

impl Mapping {
    pub fn key(&self) -> PublishKey {
        PublishKey {
            host_addr: self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED).octets(),
            host_port: self.host_port,
            proto: self.proto.number(),
            _pad: 0,
        }
    }

    pub fn host(&self) -> Host {
        Host {
            ip: self.host_ip,
            port: self.host_port,
            proto: self.proto,
        }
    }

    pub fn container(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.container_ip, self.container_port)
    }

    fn host_key(&self) -> HostKey {
        (self.proto, self.host_port, self.host_ip)
    }
}

/// The host side of a mapping; displays as `192.0.2.1:8080/tcp`, `*:8080/tcp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Host {
    /// None: every local address.
    pub ip: Option<Ipv4Addr>,
    pub port: u16,
    pub proto: Proto,
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            Some(ip) => write!(f, "{ip}:{}/{}", self.port, self.proto),
            None => write!(f, "*:{}/{}", self.port, self.proto),
        }
    }
}

/// Why a port cannot be published or unpublished; frontends tell "port taken" from the rest.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PublishError {
    #[error("{host} is already published (to {to})")]
    AlreadyPublished { host: Host, to: SocketAddrV4 },
    /// A wildcard and a specific address of one port and protocol: `other` holds the port.
    #[error("{host} conflicts with {other} (to {to}): address already in use")]
    AddressInUse {
        host: Host,
        other: Host,
        to: SocketAddrV4,
    },
    #[error("the datapath holds at most {MAX_PUBLISH} published ports")]
    TooMany,
    #[error("{host} is not published")]
    NotPublished { host: Host },
    #[error("{host} is published to {to}, not to {not}")]
    OtherTarget {
        host: Host,
        to: SocketAddrV4,
        not: SocketAddrV4,
    },
}

/// Ordered so that every address of one port and protocol sits together (None, the wildcard,
/// first): the conflict check is one short range scan.
type HostKey = (Proto, u16, Option<Ipv4Addr>);

/// The published ports of a scope. Each (address, port, protocol) leads to one container
/// port, and a port published on every address is published on no specific one, and vice
/// versa: the same rules as binding sockets ("address already in use").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Spec>", into = "Vec<Spec>")]
pub struct Publishes {
    map: BTreeMap<HostKey, (Ipv4Addr, u16)>,
}

impl Publishes {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Adds a mapping that conflicts with none already here; `existing_ok` accepts one that
    /// is already here identically. Returns whether the mapping is new.
    pub fn insert(&mut self, m: Mapping, existing_ok: bool) -> Result<bool, PublishError> {
        let port = (m.proto, m.host_port, None)..=(m.proto, m.host_port, Some(Ipv4Addr::BROADCAST));
        for (&(_, _, ip), &(cip, cport)) in self.map.range(port) {
            let to = SocketAddrV4::new(cip, cport);
            if ip == m.host_ip {
                if existing_ok && to == m.container() {
                    return Ok(false);
                }
                return Err(PublishError::AlreadyPublished { host: m.host(), to });
            }
            if ip.is_none() || m.host_ip.is_none() {
                let other = Host { ip, ..m.host() };
                return Err(PublishError::AddressInUse {
                    host: m.host(),
                    other,
                    to,
                });
            }
        }
        if self.map.len() >= MAX_PUBLISH as usize {
            return Err(PublishError::TooMany);
        }
        self.map
            .insert(m.host_key(), (m.container_ip, m.container_port));
        Ok(true)
    }

    /// Removes a mapping, which must be here with the same target.
    pub fn remove(&mut self, m: &Mapping) -> Result<(), PublishError> {
        let host = m.host();
        let to = self
            .map
            .get(&m.host_key())
            .map(|&(ip, port)| SocketAddrV4::new(ip, port));
        match to {
            None => Err(PublishError::NotPublished { host }),
            Some(to) if to != m.container() => Err(PublishError::OtherTarget {
                host,
                to,
                not: m.container(),
            }),
            Some(_) => {
                self.map.remove(&m.host_key());
                Ok(())
            }
        }
    }

    pub fn mappings(&self) -> impl Iterator<Item = Mapping> + '_ {
        self.map.iter().map(|(k, v)| mapping(k, v))
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&Mapping) -> bool) {
        self.map.retain(|k, v| keep(&mapping(k, v)));
    }

    /// The fewest specs that say what is published: consecutive ports to consecutive ports of
    /// one container address become a range. Sorted by address, protocol and port.
    pub fn specs(&self) -> Vec<Spec> {
        let mut mappings: Vec<Mapping> = self.mappings().collect();
        mappings.sort_by_key(|m| (m.host_ip, m.proto, m.host_port));
        let mut specs: Vec<Spec> = Vec::new();
        for m in mappings {
            if let Some(last) = specs.last_mut()
                && last.host_ip == m.host_ip
                && last.proto == m.proto
                && last.container_ip == m.container_ip
                && u32::from(last.host_ports.end) + 1 == u32::from(m.host_port)
                && u32::from(last.container_ports.end) + 1 == u32::from(m.container_port)
            {
                last.host_ports.end = m.host_port;
                last.container_ports.end = m.container_port;
                continue;
            }
            specs.push(Spec {
                host_ip: m.host_ip,
                host_ports: PortRange::single(m.host_port),
                container_ip: m.container_ip,
                container_ports: PortRange::single(m.container_port),
                proto: m.proto,
            });
        }
        specs
    }
}

fn mapping(
    &(proto, host_port, host_ip): &HostKey,
    &(container_ip, container_port): &(Ipv4Addr, u16),
) -> Mapping {
    Mapping {
        host_ip,
        host_port,
        proto,
        container_ip,
        container_port,
    }
}

impl TryFrom<Vec<Spec>> for Publishes {
    type Error = PublishError;

    fn try_from(specs: Vec<Spec>) -> Result<Self, PublishError> {
        let mut publishes = Publishes::default();
        for spec in specs {
            for m in spec.mappings() {
                publishes.insert(m, false)?;
            }
        }
        Ok(publishes)
    }
}

impl From<Publishes> for Vec<Spec> {
    fn from(p: Publishes) -> Vec<Spec> {
        p.specs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> Spec {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e:#}"))
    }

    /// What parsing `bad` fails with, checked to say `says` on one line.
    fn err<T: FromStr<Err = ParseError> + fmt::Debug>(bad: &str, says: &str) -> ParseError {
        let e = bad.parse::<T>().expect_err(bad);
        let msg = e.to_string();
        assert!(msg.contains(says), "{bad:?}: {msg:?} lacks {says:?}");
        assert!(!msg.contains('\n'), "{bad:?}: {msg:?}");
        e
    }

    fn not_a_port(field: &'static str, value: &str) -> ParseError {
        ParseError::NotAPort {
            field,
            value: value.to_owned(),
        }
    }

    fn out_of_range(field: &'static str, value: &str) -> ParseError {
        ParseError::PortOutOfRange {
            field,
            value: value.to_owned(),
        }
    }

    fn not_an_address(field: &'static str, value: &str) -> ParseError {
        ParseError::NotAnAddress {
            field,
            value: value.to_owned(),
        }
    }

    fn unknown_proto(proto: &str) -> ParseError {
        ParseError::UnknownProto {
            proto: proto.to_owned(),
            expected: "tcp or udp",
        }
    }

    fn reversed(field: &'static str, range: &str) -> ParseError {
        ParseError::ReversedRange {
            field,
            range: range.to_owned(),
        }
    }

    fn lengths(host: &str, container: &str) -> ParseError {
        ParseError::RangeLengths {
            host: PortRange::parse("HOST_PORT", host).unwrap(),
            container: PortRange::parse("CONTAINER_PORT", container).unwrap(),
        }
    }

    #[test]
    fn parses_specs() {
        let s = spec("8088:172.17.0.2:80");
        assert_eq!(s.host_ip, None);
        assert_eq!(s.host_ports, PortRange::single(8088));
        assert_eq!(s.container_ip, Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(s.container_ports, PortRange::single(80));
        assert_eq!(s.proto, Proto::Tcp);

        let s = spec("192.0.2.1:8000-8009:172.17.0.2:9000-9009/udp");
        assert_eq!(s.host_ip, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(s.host_ports.ports(), 8000..=8009);
        assert_eq!(s.container_ports.ports(), 9000..=9009);
        assert_eq!(s.proto, Proto::Udp);

        assert_eq!(spec("0.0.0.0:80:10.0.0.2:80").host_ip, None);
        assert_eq!(
            spec("1:10.0.0.2:65535").container_ports,
            PortRange::single(65535)
        );
        assert_eq!(spec("5-5:10.0.0.2:7").host_ports, PortRange::single(5));
    }

    #[test]
    fn display_round_trips() {
        for canonical in [
            "8088:172.17.0.2:80/tcp",
            "192.0.2.1:8000-8009:172.17.0.2:9000-9009/udp",
            "1-65535:10.0.0.2:1-65535/tcp",
        ] {
            let s = spec(canonical);
            assert_eq!(s.to_string(), canonical);
            assert_eq!(spec(&s.to_string()), s);
        }
        // Defaults are spelled out, the wildcard address is not.
        assert_eq!(
            spec("0.0.0.0:80:10.0.0.2:8080").to_string(),
            "80:10.0.0.2:8080/tcp"
        );
        assert_eq!(
            spec("80:10.0.0.2:8080").docker_form(),
            "0.0.0.0:80->8080/tcp"
        );
        let json = serde_json::to_string(&spec("80:10.0.0.2:8080/udp")).unwrap();
        assert_eq!(json, "\"80:10.0.0.2:8080/udp\"");
        assert_eq!(
            serde_json::from_str::<Spec>(&json).unwrap(),
            spec("80:10.0.0.2:8080/udp")
        );
    }

    #[test]
    fn rejects_bad_specs_naming_the_part() {
        let syntax = ParseError::Syntax {
            syntax: SPEC_SYNTAX,
        };
        for (bad, variant, says) in [
            ("", syntax.clone(), "expected [HOST_IP:]"),
            ("8080", syntax.clone(), "expected [HOST_IP:]"),
            ("8080:80", syntax.clone(), "expected [HOST_IP:]"),
            (
                "1.2.3.4:8080:10.0.0.2:80:9",
                syntax.clone(),
                "expected [HOST_IP:]",
            ),
            (
                "8080:10.0.0.2:80/sctp",
                unknown_proto("sctp"),
                "unknown protocol \"sctp\"",
            ),
            (
                "8080:10.0.0.2:80/",
                unknown_proto(""),
                "unknown protocol \"\"",
            ),
            (
                "8080:10.0.0.2:80/tcp/udp",
                unknown_proto("tcp/udp"),
                "unknown protocol \"tcp/udp\"",
            ),
            (
                "8080:10.0.0.2:80/TCP",
                unknown_proto("TCP"),
                "unknown protocol \"TCP\"",
            ),
            (
                "1.2.3:8080:10.0.0.2:80",
                not_an_address("HOST_IP", "1.2.3"),
                "HOST_IP \"1.2.3\" is not an IPv4 address",
            ),
            (
                "::1:8080:10.0.0.2:80",
                syntax.clone(),
                "expected [HOST_IP:]",
            ),
            (
                "8080:10.0.0:80",
                not_an_address("CONTAINER_IP", "10.0.0"),
                "CONTAINER_IP \"10.0.0\" is not an IPv4 address",
            ),
            (
                "8080:host:80",
                not_an_address("CONTAINER_IP", "host"),
                "CONTAINER_IP \"host\" is not an IPv4 address",
            ),
            (
                "http:10.0.0.2:80",
                not_a_port("HOST_PORT", "http"),
                "HOST_PORT \"http\" is not a port number",
            ),
            (
                "+80:10.0.0.2:80",
                not_a_port("HOST_PORT", "+80"),
                "HOST_PORT \"+80\" is not a port number",
            ),
            (
                ":10.0.0.2:80",
                not_a_port("HOST_PORT", ""),
                "HOST_PORT \"\" is not a port number",
            ),
            (
                "8080:10.0.0.2:",
                not_a_port("CONTAINER_PORT", ""),
                "CONTAINER_PORT \"\" is not a port number",
            ),
            (
                "0:10.0.0.2:80",
                out_of_range("HOST_PORT", "0"),
                "HOST_PORT 0 is out of range (1-65535)",
            ),
            (
                "8080:10.0.0.2:0",
                out_of_range("CONTAINER_PORT", "0"),
                "CONTAINER_PORT 0 is out of range",
            ),
            (
                "65536:10.0.0.2:80",
                out_of_range("HOST_PORT", "65536"),
                "HOST_PORT 65536 is out of range",
            ),
            (
                "8080:10.0.0.2:99999999999",
                out_of_range("CONTAINER_PORT", "99999999999"),
                "CONTAINER_PORT 99999999999 is out of range",
            ),
            (
                "0-5:10.0.0.2:1-6",
                out_of_range("HOST_PORT", "0"),
                "HOST_PORT 0 is out of range",
            ),
            (
                "8009-8000:10.0.0.2:80-89",
                reversed("HOST_PORT", "8009-8000"),
                "HOST_PORT range 8009-8000 ends before it starts",
            ),
            (
                "80-89:10.0.0.2:89-80",
                reversed("CONTAINER_PORT", "89-80"),
                "CONTAINER_PORT range 89-80 ends before it starts",
            ),
            (
                "80-:10.0.0.2:80",
                not_a_port("HOST_PORT", ""),
                "HOST_PORT \"\" is not a port number",
            ),
            (
                "80-81-82:10.0.0.2:80",
                not_a_port("HOST_PORT", "81-82"),
                "HOST_PORT \"81-82\" is not a port number",
            ),
            (
                "8000-8009:10.0.0.2:80",
                lengths("8000-8009", "80"),
                "port ranges differ in length: HOST_PORT 8000-8009 has 10 port(s), CONTAINER_PORT 80 has 1",
            ),
            (
                "8000-8001:10.0.0.2:80-82",
                lengths("8000-8001", "80-82"),
                "differ in length",
            ),
        ] {
            assert_eq!(err::<Spec>(bad, says), variant, "{bad:?}");
        }
        assert_eq!(
            syntax.to_string(),
            "expected [HOST_IP:]HOST_PORT[-END]:CONTAINER_IP:CONTAINER_PORT[-END][/tcp|/udp]"
        );
        assert_eq!(
            unknown_proto("sctp").to_string(),
            "unknown protocol \"sctp\" (use tcp or udp)"
        );
    }

    #[test]
    fn port_specs_fill_in_the_container() {
        let c = Ipv4Addr::new(172, 17, 0, 2);
        let p: PortSpec = "8080:80".parse().unwrap();
        assert_eq!(p.to_spec(c), spec("8080:172.17.0.2:80"));
        let p: PortSpec = "127.0.0.1:8000-8001:9000-9001/udp".parse().unwrap();
        assert_eq!(
            p.to_spec(c),
            spec("127.0.0.1:8000-8001:172.17.0.2:9000-9001/udp")
        );
        let syntax = ParseError::Syntax {
            syntax: PORT_SPEC_SYNTAX,
        };
        for (bad, variant, says) in [
            (
                "80",
                syntax.clone(),
                "expected [HOST_IP:]HOST_PORT[-END]:CONTAINER_PORT",
            ),
            (
                "1.2.3.4:80:10.0.0.2:80",
                syntax,
                "expected [HOST_IP:]HOST_PORT[-END]:CONTAINER_PORT",
            ),
            (
                "x:80:80",
                not_an_address("HOST_IP", "x"),
                "HOST_IP \"x\" is not an IPv4 address",
            ),
            (
                "80:0",
                out_of_range("CONTAINER_PORT", "0"),
                "CONTAINER_PORT 0 is out of range",
            ),
            ("80-81:80", lengths("80-81", "80"), "differ in length"),
            (
                "80:80/icmp",
                unknown_proto("icmp"),
                "unknown protocol \"icmp\"",
            ),
        ] {
            assert_eq!(err::<PortSpec>(bad, says), variant, "{bad:?}");
        }
    }

    #[test]
    fn ranges_expand_to_one_mapping_per_port() {
        let m: Vec<Mapping> = spec("192.0.2.1:8000-8002:10.0.0.2:9000-9002/udp")
            .mappings()
            .collect();
        assert_eq!(m.len(), 3);
        assert_eq!((m[2].host_port, m[2].container_port), (8002, 9002));
        assert_eq!(
            m[0].key(),
            PublishKey {
                host_addr: [192, 0, 2, 1],
                host_port: 8000,
                proto: PROTO_UDP,
                _pad: 0
            }
        );
        assert_eq!(
            spec("80:10.0.0.2:80")
                .mappings()
                .next()
                .unwrap()
                .key()
                .host_addr,
            [0; 4]
        );
    }

    fn publishes(specs: &[&str]) -> Result<Publishes, PublishError> {
        specs.iter().map(|s| spec(s)).collect::<Vec<_>>().try_into()
    }

    fn one(s: &str) -> Mapping {
        let mut m = spec(s).mappings();
        let first = m.next().unwrap();
        assert!(m.next().is_none());
        first
    }

    #[test]
    fn duplicates_and_wildcard_conflicts() {
        let mut p = publishes(&["80:10.0.0.2:80", "192.0.2.1:81:10.0.0.2:81"]).unwrap();
        let host = |s: &str| one(s).host();
        let to = |s: &str| s.parse::<SocketAddrV4>().unwrap();
        for (bad, variant, says) in [
            (
                "80:10.0.0.3:80",
                PublishError::AlreadyPublished {
                    host: host("80:10.0.0.3:80"),
                    to: to("10.0.0.2:80"),
                },
                "*:80/tcp is already published (to 10.0.0.2:80)",
            ),
            (
                "80:10.0.0.2:80",
                PublishError::AlreadyPublished {
                    host: host("80:10.0.0.2:80"),
                    to: to("10.0.0.2:80"),
                },
                "already published",
            ),
            (
                "192.0.2.1:80:10.0.0.3:80",
                PublishError::AddressInUse {
                    host: host("192.0.2.1:80:10.0.0.3:80"),
                    other: host("80:10.0.0.2:80"),
                    to: to("10.0.0.2:80"),
                },
                "192.0.2.1:80/tcp conflicts with *:80/tcp",
            ),
            (
                "81:10.0.0.3:81",
                PublishError::AddressInUse {
                    host: host("81:10.0.0.3:81"),
                    other: host("192.0.2.1:81:10.0.0.2:81"),
                    to: to("10.0.0.2:81"),
                },
                "*:81/tcp conflicts with 192.0.2.1:81/tcp (to 10.0.0.2:81): address already in use",
            ),
            (
                "192.0.2.1:81:10.0.0.2:82",
                PublishError::AlreadyPublished {
                    host: host("192.0.2.1:81:10.0.0.2:82"),
                    to: to("10.0.0.2:81"),
                },
                "192.0.2.1:81/tcp is already published",
            ),
        ] {
            let e = p.insert(one(bad), false).expect_err(bad);
            let msg = e.to_string();
            assert!(msg.contains(says), "{bad:?}: {msg:?} lacks {says:?}");
            assert_eq!(e, variant, "{bad:?}");
        }
        // Another protocol or another specific address is another socket.
        assert!(p.insert(one("80:10.0.0.3:80/udp"), false).unwrap());
        assert!(p.insert(one("192.0.2.2:81:10.0.0.3:81"), false).unwrap());
        // The same mapping again is a no-op only when asked for.
        assert!(!p.insert(one("80:10.0.0.2:80"), true).unwrap());
        assert!(matches!(
            p.insert(one("80:10.0.0.9:80"), true),
            Err(PublishError::AlreadyPublished { .. })
        ));
        assert_eq!(p.len(), 4);
        // The state refuses to load conflicting publishes.
        assert!(matches!(
            publishes(&["80:10.0.0.2:80", "1.2.3.4:80:10.0.0.2:80"]),
            Err(PublishError::AddressInUse { .. })
        ));
        assert!(matches!(
            publishes(&["80-90:10.0.0.2:80-90", "85:10.0.0.3:85"]),
            Err(PublishError::AlreadyPublished { .. })
        ));
    }

    #[test]
    fn the_datapath_bounds_the_count() {
        let mut p = publishes(&["1-65535:10.0.0.2:1-65535", "1:10.0.0.2:1/udp"]).unwrap();
        assert_eq!(p.len(), MAX_PUBLISH as usize);
        let e = p.insert(one("2:10.0.0.2:2/udp"), false).unwrap_err();
        assert_eq!(e, PublishError::TooMany);
        assert_eq!(
            e.to_string(),
            "the datapath holds at most 65536 published ports"
        );
    }

    #[test]
    fn remove_needs_the_same_target() {
        let mut p = publishes(&["80:10.0.0.2:80"]).unwrap();
        let e = p.remove(&one("81:10.0.0.2:80")).unwrap_err();
        assert_eq!(e.to_string(), "*:81/tcp is not published");
        assert_eq!(
            e,
            PublishError::NotPublished {
                host: one("81:10.0.0.2:80").host()
            }
        );
        let e = p.remove(&one("80:10.0.0.3:80")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "*:80/tcp is published to 10.0.0.2:80, not to 10.0.0.3:80"
        );
        assert!(matches!(e, PublishError::OtherTarget { .. }));
        for other in ["192.0.2.1:80:10.0.0.2:80", "80:10.0.0.2:80/udp"] {
            assert!(matches!(
                p.remove(&one(other)),
                Err(PublishError::NotPublished { .. })
            ));
        }
        p.remove(&one("80:10.0.0.2:80")).unwrap();
        assert!(p.is_empty());
    }

    #[test]
    fn specs_collapse_runs_into_ranges() {
        let p = publishes(&[
            "8002:10.0.0.2:9002",
            "8000-8001:10.0.0.2:9000-9001",
            "8003:10.0.0.3:9003",
            "8004:10.0.0.3:9005",
            "192.0.2.1:8000:10.0.0.2:80/udp",
            "192.0.2.1:8001:10.0.0.2:81/udp",
            "8005:10.0.0.2:9005/udp",
            "65535:10.0.0.2:65535",
        ])
        .unwrap();
        let listed: Vec<String> = p.specs().iter().map(ToString::to_string).collect();
        assert_eq!(
            listed,
            [
                "8000-8002:10.0.0.2:9000-9002/tcp",
                "8003:10.0.0.3:9003/tcp",
                "8004:10.0.0.3:9005/tcp",
                "65535:10.0.0.2:65535/tcp",
                "8005:10.0.0.2:9005/udp",
                "192.0.2.1:8000-8001:10.0.0.2:80-81/udp",
            ]
        );
        // The state stores the collapsed form and reads back the same set.
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Publishes>(&json).unwrap(), p);
    }
}
