//! Writing to the packet: directly where the headers sit in the linear area (the fast path),
//! with kernel helpers where they must (checksums of what the kernel may not have summed yet,
//! headers an ICMP error quotes), their failures named by drop reasons.
use aya_ebpf::programs::TcContext;
use netpath_common::DropReason;

/// Writes `v` at `off` of the linear area. A program that writes directly gets a prologue
/// from the verifier that unclones the packet's head at entry (what `bpf_skb_store_bytes`
/// does on its first call), so that a clone's other users never see the change.
#[inline(always)]
pub fn put<T: Copy>(ctx: &TcContext, off: usize, v: T) -> Result<(), DropReason> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + off + size_of::<T>() > end {
        return Err(DropReason::Store);
    }
    // SAFETY: bounds checked against data_end just above (the verifier checks it too).
    unsafe { ((start + off) as *mut T).write_unaligned(v) };
    Ok(())
}

/// Writes `v` at `off` (`bpf_skb_store_bytes`): for offsets the verifier cannot bound on
/// direct access.
#[inline(always)]
pub fn store<T>(ctx: &TcContext, off: usize, v: &T) -> Result<(), DropReason> {
    ctx.store(off, v, 0).map_err(|_| DropReason::Store)
}

/// The result of a checksum helper (`bpf_l3_csum_replace`, `bpf_l4_csum_replace`).
#[inline(always)]
pub fn csum(r: Result<(), i64>) -> Result<(), DropReason> {
    r.map_err(|_| DropReason::Csum)
}
