//! IPv4 FIB lookups.
use aya_ebpf::{
    bindings::{__sk_buff, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup},
    helpers::bpf_fib_lookup,
};

const AF_INET: u8 = 2;

/// Room for the parameters of a FIB lookup, zeroed in place by `params`.
#[repr(C, align(8))]
pub struct Room([u64; size_of::<bpf_fib_lookup>() / 8]);

/// Zeroed IPv4 FIB lookup parameters, in `room`. Zeroed word by word, in place: a zeroed
/// value becomes a call to a byte-by-byte memset, 64 iterations on every forwarded packet.
#[inline(always)]
pub fn params(room: &mut core::mem::MaybeUninit<Room>) -> &mut bpf_fib_lookup {
    const _: () = assert!(size_of::<Room>() == size_of::<bpf_fib_lookup>());
    let words = room.as_mut_ptr().cast::<u64>();
    for i in 0..size_of::<Room>() / 8 {
        // SAFETY: in bounds; volatile, so that LLVM cannot fold the stores into a memset.
        unsafe { words.add(i).write_volatile(0) };
    }
    // SAFETY: every byte is written, all-zero is a valid bpf_fib_lookup (plain integers),
    // and `room` has the size and more than the alignment it needs.
    let params = unsafe { &mut *room.as_mut_ptr().cast::<bpf_fib_lookup>() };
    params.family = AF_INET;
    params
}

/// Looks `params` up with `flags` for the packet `skb`; true when the FIB found a route to
/// forward on (and, unless the flags skip it, a resolved neighbour), with the results in
/// `params`. Takes the context pointer alone, so that subprograms need no `TcContext` on
/// their stack.
#[inline(always)]
pub fn lookup(skb: *mut __sk_buff, params: &mut bpf_fib_lookup, flags: u32) -> bool {
    // SAFETY: params is a valid, writable bpf_fib_lookup of the size given, and `skb` the
    // context pointer the kernel hands to every TC program.
    let rc = unsafe {
        bpf_fib_lookup(
            skb.cast(),
            params,
            size_of::<bpf_fib_lookup>() as i32,
            flags,
        )
    };
    rc == i64::from(BPF_FIB_LKUP_RET_SUCCESS)
}
