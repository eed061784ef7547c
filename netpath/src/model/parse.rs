//! What can be wrong with the text forms users type (publish SPECs, `-p`, CIDRs, port
//! ranges, protocols), shared by every parser in `model` so that `Exclude` or `Spec` hand on
//! what `Subnet` or `Proto` found without wrapping it. Each message names the part at fault.
use std::net::Ipv4Addr;

use thiserror::Error;

use crate::model::{ipam::Subnet, publish::PortRange};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// The value does not have the form `syntax` describes (wrong number of fields).
    #[error("expected {syntax}")]
    Syntax { syntax: &'static str },
    /// `expected` lists the protocols the field takes.
    #[error("unknown protocol {proto:?} (use {expected})")]
    UnknownProto {
        proto: String,
        expected: &'static str,
    },
    /// `field` names the part at fault (`HOST_PORT`, `masquerade port`, ...), as do those below.
    #[error("{field} {value:?} is not a port number")]
    NotAPort { field: &'static str, value: String },
    #[error("{field} {value} is out of range (1-65535)")]
    PortOutOfRange { field: &'static str, value: String },
    #[error("{field} range {range} ends before it starts")]
    ReversedRange { field: &'static str, range: String },
    #[error(
        "port ranges differ in length: HOST_PORT {host} has {} port(s), CONTAINER_PORT {container} has {}",
        host.count(),
        container.count()
    )]
    RangeLengths {
        host: PortRange,
        container: PortRange,
    },
    #[error("{field} {value:?} is not an IPv4 address")]
    NotAnAddress { field: &'static str, value: String },
    #[error("invalid CIDR {cidr:?}: expected ADDRESS/PREFIX, e.g. 172.18.0.0/16")]
    CidrSyntax { cidr: String },
    #[error("invalid CIDR {cidr:?}: {addr:?} is not an IPv4 address")]
    CidrAddress { cidr: String, addr: String },
    #[error("invalid CIDR {cidr:?}: prefix length must be 0-32")]
    CidrPrefix { cidr: String },
    /// `network` is what the user probably meant.
    #[error("invalid CIDR {cidr:?}: host bits are set (did you mean {network}?)")]
    HostBitsSet { cidr: String, network: Subnet },
    #[error("masquerade port range {range:?}: expected START-END, e.g. 40000-49999")]
    NatPortsSyntax { range: String },
    #[error("masquerade port range {range} is empty (it ends before it starts)")]
    NatPortsEmpty { range: String },
    #[error("invalid network mode {mode:?}: use bridge, none, host or container:NAME")]
    NetMode { mode: String },
}

/// A port number, digits only: u32's parser would also take "+80". `field` names it in errors.
pub(crate) fn port(field: &'static str, s: &str) -> Result<u16, ParseError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::NotAPort {
            field,
            value: s.to_owned(),
        });
    }
    match s.parse::<u32>() {
        Ok(port @ 1..=65535) => Ok(port as u16),
        _ => Err(ParseError::PortOutOfRange {
            field,
            value: s.to_owned(),
        }),
    }
}

pub(crate) fn ipv4(field: &'static str, s: &str) -> Result<Ipv4Addr, ParseError> {
    s.parse().map_err(|_| ParseError::NotAnAddress {
        field,
        value: s.to_owned(),
    })
}
