//! Finding the IPv4 5-tuple of a packet. Anything netpath does not translate (not IPv4,
//! fragments, protocols other than TCP, UDP and ICMP echo or error, truncated or malformed
//! headers) yields `None` and is passed on untouched.
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

pub struct Packet {
    pub h: Headers,
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

/// The IPv4 header at `l3` and the first bytes of its transport header: offsets, tuple and
/// ICMP type. Fragments yield `None`: only the first carries ports, and translating it alone
/// would corrupt the datagram.
#[inline(always)]
fn ipv4(r: &impl Read, l3: usize) -> Option<(Headers, u8)> {
    let version_ihl: u8 = r.read(l3)?;
    let ihl = ((version_ihl & 0x0f) as usize) * 4;
    if version_ihl >> 4 != 4 || ihl < 20 {
        return None;
    }
    if u16::from_be(r.read::<u16>(l3 + 6)?) & 0x3fff != 0 {
        return None;
    }
    let proto: u8 = r.read(l3 + 9)?;
    let l4 = l3 + ihl;
    let mut tuple = CtKey::new(r.read(l3 + 12)?, r.read(l3 + 16)?, 0, 0, proto);
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
    Some((Headers { l3, l4, tuple }, icmp_type))
}

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
#[inline(always)]
fn linear_headers(ctx: &TcContext) -> Option<()> {
    let byte = |off| at::<u8>(ctx, off).or_else(|| ctx.load::<u8>(off).ok());
    let ihl = usize::from(byte(ETH_HLEN)? & 0x0f) * 4;
    let need = ETH_HLEN + ihl + l4_len(byte(ETH_HLEN + 9)?);
    if ctx.data_end() - ctx.data() < need {
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
    let (h, icmp_type) = ipv4(&Direct(ctx), ETH_HLEN)?;
    let quoted = match (h.tuple.proto, icmp_type) {
        (PROTO_ICMP, ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY) => None,
        (PROTO_ICMP, ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM) => {
            // RFC 792: the error quotes at least 8 bytes of the transport header, which
            // `ipv4` reads.
            Some(ipv4(&Helper(ctx), h.l4 + 8)?.0)
        }
        (PROTO_ICMP, _) => return None,
        _ => None,
    };
    Some(Packet {
        h,
        ttl: at(ctx, h.l3 + 8)?,
        tcp_flags: if h.tuple.proto == PROTO_TCP {
            at(ctx, h.l4 + 13)?
        } else {
            0
        },
        quoted,
    })
}
