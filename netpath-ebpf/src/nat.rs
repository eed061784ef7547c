//! Rewriting a packet's tuple with incremental checksum updates. The kernel helpers handle
//! checksum offload (CHECKSUM_PARTIAL) and non-linear buffers; a UDP checksum of 0 ("none")
//! stays 0 through BPF_F_MARK_MANGLED_0.
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use netpath_common::{CtEntry, PROTO_UDP};

use crate::parse::Packet;

/// Rewrites `p` in place to the tuple of `to`. Fails only when a helper fails.
#[inline(always)]
pub fn rewrite(ctx: &TcContext, p: &Packet, to: &CtEntry) -> Result<(), i64> {
    let csum = p.csum_off();
    let l4_flags = if p.tuple.proto == PROTO_UDP {
        BPF_F_MARK_MANGLED_0 as u64
    } else {
        0
    };
    if to.src_addr != p.tuple.src_addr {
        addr(
            ctx,
            p,
            p.l3 + 12,
            csum,
            l4_flags,
            p.tuple.src_addr,
            to.src_addr,
        )?;
    }
    if to.dst_addr != p.tuple.dst_addr {
        addr(
            ctx,
            p,
            p.l3 + 16,
            csum,
            l4_flags,
            p.tuple.dst_addr,
            to.dst_addr,
        )?;
    }
    if to.src_port != p.tuple.src_port {
        port(ctx, p.l4, csum, l4_flags, p.tuple.src_port, to.src_port)?;
    }
    if to.dst_port != p.tuple.dst_port {
        port(ctx, p.l4 + 2, csum, l4_flags, p.tuple.dst_port, to.dst_port)?;
    }
    Ok(())
}

#[inline(always)]
fn addr(
    ctx: &TcContext,
    p: &Packet,
    off: usize,
    csum: usize,
    l4_flags: u64,
    old: [u8; 4],
    new: [u8; 4],
) -> Result<(), i64> {
    let (old, new) = (
        u32::from_ne_bytes(old) as u64,
        u32::from_ne_bytes(new) as u64,
    );
    // The address is part of the L4 pseudo-header, hence BPF_F_PSEUDO_HDR; the low bits of
    // the flags give the field size.
    ctx.l4_csum_replace(csum, old, new, BPF_F_PSEUDO_HDR as u64 | l4_flags | 4)?;
    ctx.l3_csum_replace(p.l3 + 10, old, new, 4)?;
    ctx.store(off, &(new as u32), 0)
}

#[inline(always)]
fn port(
    ctx: &TcContext,
    off: usize,
    csum: usize,
    l4_flags: u64,
    old: u16,
    new: u16,
) -> Result<(), i64> {
    let (old, new) = (old.to_be(), new.to_be());
    ctx.l4_csum_replace(csum, old as u64, new as u64, l4_flags | 2)?;
    ctx.store(off, &new, 0)
}
