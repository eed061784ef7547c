//! Direct packet access.
use aya_ebpf::programs::TcContext;

/// The `T` at offset `off` of the linear area, if it is all there.
#[inline(always)]
pub fn at<T: Copy>(ctx: &TcContext, off: usize) -> Option<T> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + off + size_of::<T>() > end {
        return None;
    }
    // SAFETY: bounds checked against data_end just above (the verifier checks it too).
    Some(unsafe { ((start + off) as *const T).read_unaligned() })
}
