//! Finding the IPv4 5-tuple of a packet. Anything netpath does not translate (not IPv4,
//! fragments, protocols other than TCP and UDP, truncated or malformed headers) yields `None`
//! and is passed on untouched.
use aya_ebpf::programs::TcContext;
use netpath_common::{CtKey, PROTO_TCP, PROTO_UDP};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
/// Longest headers we read: Ethernet, IPv4 with 40 bytes of options, TCP without options.
const MAX_HEADERS: usize = ETH_HLEN + 60 + 20;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

pub struct Packet {
    /// Offset of the IPv4 header.
    pub l3: usize,
    /// Offset of the TCP or UDP header (after any IP options).
    pub l4: usize,
    pub tuple: CtKey,
    /// TCP flags; 0 for UDP.
    pub tcp_flags: u8,
}

impl Packet {
    /// Offset of the L4 checksum.
    pub fn csum_off(&self) -> usize {
        self.l4 + if self.tuple.proto == PROTO_TCP { 16 } else { 6 }
    }

    pub fn is_tcp_syn(&self) -> bool {
        self.tuple.proto == PROTO_TCP && self.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    }
}

#[inline(always)]
fn at<T: Copy>(ctx: &TcContext, off: usize) -> Option<T> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + off + size_of::<T>() > end {
        return None;
    }
    // SAFETY: bounds checked against data_end just above (the verifier checks it too).
    Some(unsafe { ((start + off) as *const T).read_unaligned() })
}

#[inline(always)]
pub fn parse(ctx: &TcContext) -> Option<Packet> {
    // Headers may sit partly outside the linear area; pull what we read into it once.
    if ctx.data() + MAX_HEADERS > ctx.data_end()
        && (ctx.len() as usize) > ctx.data_end() - ctx.data()
    {
        let want = core::cmp::min(ctx.len() as usize, MAX_HEADERS);
        ctx.pull_data(want as u32).ok()?;
    }
    if u16::from_be(at::<u16>(ctx, 12)?) != ETH_P_IP {
        return None;
    }
    let l3 = ETH_HLEN;
    let version_ihl: u8 = at(ctx, l3)?;
    let ihl = ((version_ihl & 0x0f) as usize) * 4;
    if version_ihl >> 4 != 4 || ihl < 20 {
        return None;
    }
    // More-fragments or a fragment offset: only the first fragment carries ports, and
    // translating it alone would corrupt the datagram. Fragments pass untouched.
    if u16::from_be(at::<u16>(ctx, l3 + 6)?) & 0x3fff != 0 {
        return None;
    }
    let proto: u8 = at(ctx, l3 + 9)?;
    let l4 = l3 + ihl;
    let l4_len = match proto {
        PROTO_TCP => 20,
        PROTO_UDP => 8,
        _ => return None,
    };
    // The whole L4 header must be present, or the packet is truncated.
    at::<u8>(ctx, l4 + l4_len - 1)?;
    Some(Packet {
        l3,
        l4,
        tuple: CtKey {
            src_addr: at(ctx, l3 + 12)?,
            dst_addr: at(ctx, l3 + 16)?,
            src_port: u16::from_be(at::<u16>(ctx, l4)?),
            dst_port: u16::from_be(at::<u16>(ctx, l4 + 2)?),
            proto,
            _pad: [0; 3],
        },
        tcp_flags: if proto == PROTO_TCP {
            at(ctx, l4 + 13)?
        } else {
            0
        },
    })
}
