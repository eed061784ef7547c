//! Rewriting a packet's tuple with incremental checksum updates. The kernel helpers handle
//! checksum offload (CHECKSUM_PARTIAL) and non-linear buffers; a UDP checksum of 0 ("none")
//! stays 0 through BPF_F_MARK_MANGLED_0.
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use netpath_common::{CtEntry, DropReason, PROTO_ICMP, PROTO_UDP};

use crate::{
    access::at,
    parse::{Headers, Packet},
    skb::{csum, put, store},
};

/// Rewrites `p` in place to the tuple of `to`, and decrements its TTL when `forwarded` (it
/// is redirected past the stack, which would have). Headers are written directly and the
/// IPv4 checksum computed here; the transport checksum takes one helper call for the
/// addresses (pseudo-header) and one for the ports, each with the whole difference, because
/// only the kernel knows whether the checksum is still partial (offloaded), where the ports
/// must not be summed in. Fails only when a helper or a write fails.
#[inline(always)]
pub fn rewrite(
    ctx: &TcContext,
    p: &Packet,
    to: &CtEntry,
    forwarded: bool,
) -> Result<(), DropReason> {
    let h = &p.h;
    let t = &h.tuple;
    let addrs = rewrite_l3(ctx, p, to.src_addr, to.dst_addr, forwarded)?;
    let (sport_off, dport_off) = h.port_offs();
    let mut ports = Sum::default();
    if to.src_port != t.src_port {
        ports = ports.replace16(t.src_port.to_be(), to.src_port.to_be());
        put(ctx, sport_off, to.src_port.to_be())?;
    }
    if to.dst_port != t.dst_port {
        ports = ports.replace16(t.dst_port.to_be(), to.dst_port.to_be());
        put(ctx, dport_off, to.dst_port.to_be())?;
    }
    // The helpers come last: each invalidates the packet pointers the writes above use.
    let l4_csum = h.csum_off();
    // UDP's checksum 0 means "none" and stays 0 (BPF_F_MARK_MANGLED_0); a size of 0 in the
    // flags makes `to` the difference.
    let udp = if t.proto == PROTO_UDP {
        BPF_F_MARK_MANGLED_0 as u64
    } else {
        0
    };
    // ICMP has no pseudo-header: addresses only touch the IPv4 checksum.
    if let Some(addrs) = addrs
        && t.proto != PROTO_ICMP
    {
        csum(ctx.l4_csum_replace(l4_csum, 0, addrs.wide(), BPF_F_PSEUDO_HDR as u64 | udp))?;
    }
    if !ports.is_empty() {
        csum(ctx.l4_csum_replace(l4_csum, 0, ports.wide(), udp))?;
    }
    Ok(())
}

/// Rewrites the IPv4 header's addresses to `src` and `dst` and, when `forwarded`, decrements
/// its TTL (as the host does for what it forwards; packets netpath redirects skip the stack's
/// forwarding path), all under one checksum update. The addresses' difference, for the
/// transport checksum's pseudo-header, when they changed. A later fragment needs no more:
/// it holds no transport header (see `frag`).
#[inline(always)]
pub fn rewrite_l3(
    ctx: &TcContext,
    p: &Packet,
    src: [u8; 4],
    dst: [u8; 4],
    forwarded: bool,
) -> Result<Option<Sum>, DropReason> {
    let (l3, t) = (p.h.l3, &p.h.tuple);
    let mut addrs = Sum::default();
    if src != t.src_addr {
        addrs = addrs.replace32(t.src_addr, src);
        put(ctx, l3 + 12, src)?;
    }
    if dst != t.dst_addr {
        addrs = addrs.replace32(t.dst_addr, dst);
        put(ctx, l3 + 16, dst)?;
    }
    let mut header = addrs;
    if forwarded {
        // TTL and protocol share one checksummed word.
        let (old, new) = ([p.ttl, t.proto], [p.ttl - 1, t.proto]);
        header = header.replace16(u16::from_ne_bytes(old), u16::from_ne_bytes(new));
        put(ctx, l3 + 8, p.ttl - 1)?;
    }
    if !header.is_empty() {
        let old: u16 = at(ctx, l3 + 10).ok_or(DropReason::Store)?;
        put(ctx, l3 + 10, header.update(old))?;
    }
    Ok((!addrs.is_empty()).then_some(addrs))
}

/// The difference that replacing words makes to an Internet checksum (RFC 1624), summed in
/// one's complement. Words are taken as they lie in memory: the sum is the same in either
/// byte order, as long as the checksum field is read and written the same way.
#[derive(Clone, Copy, Default)]
pub struct Sum {
    sum: u64,
    /// Whether any word was replaced (a sum can be 0 after one).
    any: bool,
}

impl Sum {
    #[inline(always)]
    fn replace32(self, old: [u8; 4], new: [u8; 4]) -> Self {
        let (old, new) = (u32::from_ne_bytes(old), u32::from_ne_bytes(new));
        Sum {
            sum: self.sum + u64::from(!old) + u64::from(new),
            any: true,
        }
    }

    #[inline(always)]
    fn replace16(self, old: u16, new: u16) -> Self {
        Sum {
            sum: self.sum + u64::from(!old) + u64::from(new),
            any: true,
        }
    }

    #[inline(always)]
    fn is_empty(self) -> bool {
        !self.any
    }

    /// Folded to 32 bits, as the checksum helpers take a difference.
    #[inline(always)]
    fn wide(self) -> u64 {
        let s = (self.sum & 0xffff_ffff) + (self.sum >> 32);
        (s & 0xffff_ffff) + (s >> 32)
    }

    /// The checksum `old` with this difference applied: ~(~old + difference).
    #[inline(always)]
    fn update(self, old: u16) -> u16 {
        let mut s = self.wide() + u64::from(!old);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        !(s as u16)
    }
}

/// Translates an ICMP error about a tracked connection: the quoted packet (which went out
/// translated) back to what its sender sent, and the outer destination (and the outer source,
/// when the error comes from the quoted packet's destination itself) with it, its TTL
/// decremented when `forwarded`. `back` is the entry of the quoted packet's opposite
/// direction.
#[inline(always)]
pub fn rewrite_icmp_error(
    ctx: &TcContext,
    p: &Packet,
    q: &Headers,
    back: &CtEntry,
    forwarded: bool,
) -> Result<(), DropReason> {
    let h = &p.h;
    let icmp_csum = h.csum_off();
    let t = &q.tuple;
    // The quoted transport checksum is updated as the quoted packet's tuple changes, as
    // netfilter does: the sender matches the error to its socket and may check it. It is
    // there if the error quotes it: UDP's and ICMP's lie in the 8 bytes every error quotes,
    // TCP's (bytes 16-17) only in a longer quote; the load fails past the packet's end.
    // A UDP checksum of 0 stays 0 (BPF_F_MARK_MANGLED_0 leaves it alone).
    let q_csum = q.csum_off();
    let before = ctx.load::<u16>(q_csum).ok();
    let (q_addr_flags, q_port_flags) = match t.proto {
        // ICMP has no pseudo-header.
        PROTO_ICMP => (None, 0),
        PROTO_UDP => (
            Some(BPF_F_MARK_MANGLED_0 as u64),
            BPF_F_MARK_MANGLED_0 as u64,
        ),
        _ => (Some(0), 0),
    };
    let q_addr_flags = before.and(q_addr_flags);
    // The quoted IPv4 header carries a valid checksum that the helper keeps valid, so its
    // sum, and with it the ICMP checksum, does not change with its addresses: the quoted
    // ports and the quoted transport checksum need the ICMP checksum updated.
    if back.dst_addr != t.src_addr {
        addr(
            ctx,
            q.l3,
            q.l3 + 12,
            q_csum,
            q_addr_flags,
            t.src_addr,
            back.dst_addr,
        )?;
    }
    if back.src_addr != t.dst_addr {
        addr(
            ctx,
            q.l3,
            q.l3 + 16,
            q_csum,
            q_addr_flags,
            t.dst_addr,
            back.src_addr,
        )?;
    }
    let (sport_off, dport_off) = q.port_offs();
    if back.dst_port != t.src_port {
        if before.is_some() {
            quoted_port_csum(ctx, q_csum, q_port_flags, t.src_port, back.dst_port)?;
        }
        port(ctx, sport_off, icmp_csum, 0, t.src_port, back.dst_port)?;
    }
    if back.src_port != t.dst_port {
        if before.is_some() {
            quoted_port_csum(ctx, q_csum, q_port_flags, t.dst_port, back.src_port)?;
        }
        port(ctx, dport_off, icmp_csum, 0, t.dst_port, back.src_port)?;
    }
    // The ICMP checksum covers the quoted transport checksum: it follows that field's change.
    if let Some(before) = before {
        let after = ctx.load::<u16>(q_csum).map_err(|_| DropReason::Store)?;
        if after != before {
            csum(ctx.l4_csum_replace(icmp_csum, u64::from(before), u64::from(after), 2))?;
        }
    }
    let src = if h.tuple.src_addr == t.dst_addr {
        back.src_addr
    } else {
        h.tuple.src_addr
    };
    rewrite_l3(ctx, p, src, back.dst_addr, forwarded).map(|_| ())
}

/// Replaces the address at `off` of the IPv4 header at `l3`, fixing its checksum and, with
/// `l4_flags`, the transport checksum at `l4_csum`.
#[inline(always)]
fn addr(
    ctx: &TcContext,
    l3: usize,
    off: usize,
    l4_csum: usize,
    l4_flags: Option<u64>,
    old: [u8; 4],
    new: [u8; 4],
) -> Result<(), DropReason> {
    let (old, new) = (
        u32::from_ne_bytes(old) as u64,
        u32::from_ne_bytes(new) as u64,
    );
    if let Some(flags) = l4_flags {
        // The low bits of the flags give the field size.
        csum(ctx.l4_csum_replace(l4_csum, old, new, flags | 4))?;
    }
    csum(ctx.l3_csum_replace(l3 + 10, old, new, 4))?;
    store(ctx, off, &(new as u32))
}

/// Updates the quoted transport checksum at `q_csum` for a quoted port going from `old` to
/// `new` (the port itself is written by `port`, with the ICMP checksum).
#[inline(always)]
fn quoted_port_csum(
    ctx: &TcContext,
    q_csum: usize,
    flags: u64,
    old: u16,
    new: u16,
) -> Result<(), DropReason> {
    let (old, new) = (old.to_be(), new.to_be());
    csum(ctx.l4_csum_replace(q_csum, old as u64, new as u64, flags | 2))
}

#[inline(always)]
fn port(
    ctx: &TcContext,
    off: usize,
    l4_csum: usize,
    flags: u64,
    old: u16,
    new: u16,
) -> Result<(), DropReason> {
    let (old, new) = (old.to_be(), new.to_be());
    csum(ctx.l4_csum_replace(l4_csum, old as u64, new as u64, flags | 2))?;
    store(ctx, off, &new)
}
