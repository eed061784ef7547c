//! Writing to the packet: the failures of the kernel helpers that rewrite it, named by their
//! drop reasons.
use aya_ebpf::programs::TcContext;
use netpath_common::DropReason;

/// Writes `v` at `off` (`bpf_skb_store_bytes`).
#[inline(always)]
pub fn store<T>(ctx: &TcContext, off: usize, v: &T) -> Result<(), DropReason> {
    ctx.store(off, v, 0).map_err(|_| DropReason::Store)
}

/// The result of a checksum helper (`bpf_l3_csum_replace`, `bpf_l4_csum_replace`).
#[inline(always)]
pub fn csum(r: Result<(), i64>) -> Result<(), DropReason> {
    r.map_err(|_| DropReason::Csum)
}
