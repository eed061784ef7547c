//! Rewriting a packet's tuple with incremental checksum updates. The kernel helpers handle
//! checksum offload (CHECKSUM_PARTIAL) and non-linear buffers; a UDP checksum of 0 ("none")
//! stays 0 through BPF_F_MARK_MANGLED_0.
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use netpath_common::{CtEntry, DropReason, PROTO_ICMP, PROTO_UDP};

use crate::{
    parse::{Headers, Packet},
    skb::{csum, store},
};

/// Rewrites `p` in place to the tuple of `to`. Fails only when a helper fails.
#[inline(always)]
pub fn rewrite(ctx: &TcContext, p: &Packet, to: &CtEntry) -> Result<(), DropReason> {
    let h = &p.h;
    let l4_csum = h.csum_off();
    let l4_flags = match h.tuple.proto {
        // ICMP has no pseudo-header: addresses only touch the IPv4 checksum.
        PROTO_ICMP => None,
        PROTO_UDP => Some(BPF_F_PSEUDO_HDR as u64 | BPF_F_MARK_MANGLED_0 as u64),
        _ => Some(BPF_F_PSEUDO_HDR as u64),
    };
    if to.src_addr != h.tuple.src_addr {
        addr(
            ctx,
            h.l3,
            h.l3 + 12,
            l4_csum,
            l4_flags,
            h.tuple.src_addr,
            to.src_addr,
        )?;
    }
    if to.dst_addr != h.tuple.dst_addr {
        addr(
            ctx,
            h.l3,
            h.l3 + 16,
            l4_csum,
            l4_flags,
            h.tuple.dst_addr,
            to.dst_addr,
        )?;
    }
    // Ports are not in the pseudo-header; keep only the mangled-0 rule of UDP.
    let port_flags = if h.tuple.proto == PROTO_UDP {
        BPF_F_MARK_MANGLED_0 as u64
    } else {
        0
    };
    let (sport_off, dport_off) = h.port_offs();
    if to.src_port != h.tuple.src_port {
        port(
            ctx,
            sport_off,
            l4_csum,
            port_flags,
            h.tuple.src_port,
            to.src_port,
        )?;
    }
    if to.dst_port != h.tuple.dst_port {
        port(
            ctx,
            dport_off,
            l4_csum,
            port_flags,
            h.tuple.dst_port,
            to.dst_port,
        )?;
    }
    Ok(())
}

/// Rewrites the addresses of a later fragment to those of `to`: the IPv4 checksum only, as
/// the fragment holds no transport header (see `frag`).
#[inline(always)]
pub fn rewrite_addrs(ctx: &TcContext, p: &Packet, to: &CtEntry) -> Result<(), DropReason> {
    let h = &p.h;
    if to.src_addr != h.tuple.src_addr {
        addr(ctx, h.l3, h.l3 + 12, 0, None, h.tuple.src_addr, to.src_addr)?;
    }
    if to.dst_addr != h.tuple.dst_addr {
        addr(ctx, h.l3, h.l3 + 16, 0, None, h.tuple.dst_addr, to.dst_addr)?;
    }
    Ok(())
}

/// Translates an ICMP error about a tracked connection: the quoted packet (which went out
/// translated) back to what its sender sent, and the outer destination (and the outer source,
/// when the error comes from the quoted packet's destination itself) with it. `back` is the
/// entry of the quoted packet's opposite direction.
#[inline(always)]
pub fn rewrite_icmp_error(
    ctx: &TcContext,
    p: &Packet,
    q: &Headers,
    back: &CtEntry,
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
    if h.tuple.src_addr == t.dst_addr && back.src_addr != t.dst_addr {
        addr(
            ctx,
            h.l3,
            h.l3 + 12,
            0,
            None,
            h.tuple.src_addr,
            back.src_addr,
        )?;
    }
    if back.dst_addr != h.tuple.dst_addr {
        addr(
            ctx,
            h.l3,
            h.l3 + 16,
            0,
            None,
            h.tuple.dst_addr,
            back.dst_addr,
        )?;
    }
    Ok(())
}

/// Decrements the time to live, as the host does for what it forwards (packets netpath
/// redirects skip the stack's forwarding path). TTL and protocol share one checksummed word.
#[inline(always)]
pub fn decrement_ttl(ctx: &TcContext, p: &Packet) -> Result<(), DropReason> {
    let proto = p.h.tuple.proto;
    let old = u16::from_be_bytes([p.ttl, proto]).to_be();
    let new = u16::from_be_bytes([p.ttl - 1, proto]).to_be();
    csum(ctx.l3_csum_replace(p.h.l3 + 10, old as u64, new as u64, 2))?;
    store(ctx, p.h.l3 + 8, &(p.ttl - 1))
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
