//! Writing to the packet: the kernel helpers that rewrite it, each failure named by its
//! drop reason.
use aya_ebpf::programs::TcContext;
use netpath_common::DropReason;

/// Writes `v` at `off` (`bpf_skb_store_bytes`).
#[inline(always)]
pub fn store<T>(ctx: &TcContext, off: usize, v: &T) -> Result<(), DropReason> {
    ctx.store(off, v, 0).map_err(|_| DropReason::Store)
}

/// Updates the IPv4 checksum at `off` for a field of `size` bytes going from `old` to `new`.
#[inline(always)]
pub fn l3_csum(
    ctx: &TcContext,
    off: usize,
    old: u64,
    new: u64,
    size: u64,
) -> Result<(), DropReason> {
    ctx.l3_csum_replace(off, old, new, size)
        .map_err(|_| DropReason::Csum)
}

/// Updates the transport checksum at `off`; the low bits of `flags` give the field's size.
#[inline(always)]
pub fn l4_csum(
    ctx: &TcContext,
    off: usize,
    old: u64,
    new: u64,
    flags: u64,
) -> Result<(), DropReason> {
    ctx.l4_csum_replace(off, old, new, flags)
        .map_err(|_| DropReason::Csum)
}
