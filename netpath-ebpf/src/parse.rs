//! Finding the IPv4 5-tuple of a packet. Anything netpath does not translate (not IPv4,
//! protocols other than TCP, UDP and ICMP echo or error, fragmented ICMP errors, truncated
//! or malformed headers) yields `None` and is passed on untouched. A fragment is parsed with
//! its place in the datagram: the first carries the transport header, the later ones only
//! their addresses (see `frag`).
use aya_ebpf::programs::TcContext;
use netpath_common::{CtKey, PROTO_ICMP, PROTO_TCP, PROTO_UDP};

use crate::access::at;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;

/// Where a packet's tuple sits, so that it can be rewritten.
#[derive(Clone, Copy)]
pub struct Headers {
    /// Offset of the IPv4 header.
    pub l3: usize,
    /// Offset of the TCP, UDP or ICMP header (after any IP options).
    pub l4: usize,
    pub tuple: CtKey,
}

impl Headers {
    /// Offset of the L4 checksum.
    pub fn csum_off(&self) -> usize {
        self.l4
            + match self.tuple.proto {
                PROTO_TCP => 16,
                PROTO_UDP => 6,
                _ => 2,
            }
    }

    /// Offsets of the source and destination "ports": for ICMP echo both name the
    /// identifier, of which the tuple uses one side.
    pub fn port_offs(&self) -> (usize, usize) {
        match self.tuple.proto {
            PROTO_ICMP => (self.l4 + 4, self.l4 + 4),
            _ => (self.l4, self.l4 + 2),
        }
    }
}

/// Where a packet stands in its IPv4 datagram.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Frag {
    /// Not fragmented.
    Whole,
    /// Offset 0, more fragments: the transport header is here.
    First,
    /// Offset > 0: no transport header; `Headers::tuple` has ports 0 and `l4` is where the
    /// fragment's payload starts.
    Later,
}

pub struct Packet {
    pub h: Headers,
    pub frag: Frag,
    /// The IPv4 time to live.
    pub ttl: u8,
    /// TCP flags; 0 for other protocols.
    pub tcp_flags: u8,
    /// For an ICMP error: the quoted packet that caused it.
    pub quoted: Option<Headers>,
}

impl Packet {
    pub fn is_tcp_syn(&self) -> bool {
        self.h.tuple.proto == PROTO_TCP && self.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    }

    /// Whether this packet may open a connection: a TCP SYN, any UDP datagram, an ICMP echo
    /// request (its tuple has the identifier as source port).
    pub fn opens(&self) -> bool {
        match self.h.tuple.proto {
            PROTO_TCP => self.is_tcp_syn(),
            PROTO_UDP => true,
            _ => self.quoted.is_none() && self.h.tuple.src_port != 0,
        }
    }
}

/// How header fields are read: directly from the packet (fast), or with a helper for the
/// headers an ICMP error quotes, whose offset is the sum of two variable header lengths,
/// which the verifier cannot bound on direct access.
trait Read {
    fn read<T: Copy>(&self, off: usize) -> Option<T>;
}

struct Direct<'a>(&'a TcContext);
struct Helper<'a>(&'a TcContext);

impl Read for Direct<'_> {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        at(self.0, off)
    }
}

impl Read for Helper<'_> {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        self.0.load(off).ok()
    }
}

/// The IPv4 header at `l3` and the first bytes of its transport header: offsets, tuple,
/// ICMP type and place in a fragmented datagram. A later fragment has no transport header:
/// its tuple has ports 0 and its ICMP type is 0.
#[inline(always)]
fn ipv4(r: &impl Read, l3: usize) -> Option<(Headers, u8, Frag)> {
    let version_ihl: u8 = r.read(l3)?;
    let ihl = ((version_ihl & 0x0f) as usize) * 4;
    if version_ihl >> 4 != 4 || ihl < 20 {
        return None;
    }
    let proto: u8 = r.read(l3 + 9)?;
    if !matches!(proto, PROTO_TCP | PROTO_UDP | PROTO_ICMP) {
        return None;
    }
    let frag_off = u16::from_be(r.read::<u16>(l3 + 6)?);
    let frag = if frag_off & IP_OFFSET != 0 {
        Frag::Later
    } else if frag_off & IP_MF != 0 {
        Frag::First
    } else {
        Frag::Whole
    };
    // A total length that ends inside the headers describes no packet to translate: the
    // bytes past it are padding, which a rewrite must not touch (found by the fuzzer).
    let tot_len = usize::from(u16::from_be(r.read::<u16>(l3 + 2)?));
    let headers = match frag {
        Frag::Later => ihl,
        Frag::First | Frag::Whole => ihl + l4_len(proto),
    };
    if tot_len < headers {
        return None;
    }
    let l4 = l3 + ihl;
    let mut tuple = CtKey::new(r.read(l3 + 12)?, r.read(l3 + 16)?, 0, 0, proto);
    if frag == Frag::Later {
        return Some((Headers { l3, l4, tuple }, 0, frag));
    }
    // The first 8 bytes of every transport header we handle, read at once: separate reads
    // at a variable offset lose the verifier's range tracking.
    let l4_head: [u8; 8] = r.read(l4)?;
    let port = |i: usize| u16::from_be_bytes([l4_head[i], l4_head[i + 1]]);
    let icmp_type = match proto {
        PROTO_TCP | PROTO_UDP => {
            tuple.src_port = port(0);
            tuple.dst_port = port(2);
            0
        }
        PROTO_ICMP => {
            match l4_head[0] {
                ICMP_ECHO_REQUEST => tuple.src_port = port(4),
                ICMP_ECHO_REPLY => tuple.dst_port = port(4),
                _ => {}
            }
            l4_head[0]
        }
        _ => return None,
    };
    Some((Headers { l3, l4, tuple }, icmp_type, frag))
}

/// IPv4 "more fragments" flag and fragment offset mask (RFC 791).
const IP_MF: u16 = 0x2000;
const IP_OFFSET: u16 = 0x1fff;

/// The transport header's length without options: what must be present to translate.
#[inline(always)]
fn l4_len(proto: u8) -> usize {
    match proto {
        PROTO_TCP => 20,
        _ => 8,
    }
}

/// Makes sure the IPv4 and whole transport headers, which are read directly, are in the
/// linear area (the Ethernet header always is at TC). Usually they are; a driver may leave
/// them in fragments. Only the headers are pulled: pulling payload in would copy the head of
/// every cloned TCP packet. `None` when the packet is too short to hold them (truncated).
/// A later fragment has no transport header: its IPv4 header is enough (only looked at when
/// the common case, everything linear, does not hold).
#[inline(always)]
fn linear_headers(ctx: &TcContext) -> Option<()> {
    let byte = |off| at::<u8>(ctx, off).or_else(|| ctx.load::<u8>(off).ok());
    let ihl = usize::from(byte(ETH_HLEN)? & 0x0f) * 4;
    let mut need = ETH_HLEN + ihl + l4_len(byte(ETH_HLEN + 9)?);
    if ctx.data_end() - ctx.data() < need {
        let offset = u16::from_be_bytes([byte(ETH_HLEN + 6)?, byte(ETH_HLEN + 7)?]) & IP_OFFSET;
        if offset != 0 {
            need = ETH_HLEN + ihl;
        }
        if (ctx.len() as usize) < need {
            return None;
        }
        ctx.pull_data(need as u32).ok()?;
    }
    Some(())
}

#[inline(always)]
pub fn parse(ctx: &TcContext) -> Option<Packet> {
    if u16::from_be(at::<u16>(ctx, 12)?) != ETH_P_IP {
        return None;
    }
    linear_headers(ctx)?;
    let (h, icmp_type, frag) = ipv4(&Direct(ctx), ETH_HLEN)?;
    let quoted = match (h.tuple.proto, icmp_type, frag) {
        (_, _, Frag::Later) => None,
        (PROTO_ICMP, ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY, _) => None,
        // An error is small (RFC 1812: at most 576 bytes) and never fragmented in practice.
        (
            PROTO_ICMP,
            ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM,
            Frag::Whole,
        ) => {
            // RFC 792: the error quotes at least 8 bytes of the transport header, which
            // `ipv4` reads. A quoted later fragment has no ports (0 in its tuple), so no
            // connection matches it and the error passes untouched.
            Some(ipv4(&Helper(ctx), h.l4 + 8)?.0)
        }
        (PROTO_ICMP, _, _) => return None,
        _ => None,
    };
    Some(Packet {
        h,
        frag,
        ttl: at(ctx, h.l3 + 8)?,
        tcp_flags: if h.tuple.proto == PROTO_TCP && frag != Frag::Later {
            at(ctx, h.l4 + 13)?
        } else {
            0
        },
        quoted,
    })
}
