//! The benchmark's bare forwarder (`cargo xtask bench`, configuration "forward"): the fast path
//! netpath takes, with nothing else. No NAT, no conntrack, no maps: a FIB lookup, the MACs
//! written, and `bpf_redirect_peer` into a container or `bpf_redirect` out of the host. It
//! measures what skipping the host's stack can reach on the machine, so that netpath's own
//! cost shows as the difference. Never loaded by netpath itself.
#![no_std]
#![no_main]

mod access;
mod fib;
mod object;

use aya_ebpf::{
    bindings::TC_ACT_OK,
    helpers::{bpf_redirect, bpf_redirect_peer},
    macros::classifier,
    programs::TcContext,
};

use crate::access::at;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;

/// TC ingress on the external interface: towards a container's veth, into the container.
#[classifier]
pub fn bench_forward_in(ctx: TcContext) -> i32 {
    forward(&ctx, true)
}

/// TC ingress on a container's host-side veth: out of the interface the FIB picks.
#[classifier]
pub fn bench_forward_out(ctx: TcContext) -> i32 {
    forward(&ctx, false)
}

/// Forwards an IPv4 packet whose next hop the FIB knows (route and neighbour); anything else
/// goes to the stack, which resolves the neighbour for the next packets.
#[inline(always)]
fn forward(ctx: &TcContext, into_peer: bool) -> i32 {
    if at::<u16>(ctx, 12).map(u16::from_be) != Some(ETH_P_IP) {
        return TC_ACT_OK;
    }
    let Some(src) = at::<u32>(ctx, ETH_HLEN + 12) else {
        return TC_ACT_OK;
    };
    let Some(dst) = at::<u32>(ctx, ETH_HLEN + 16) else {
        return TC_ACT_OK;
    };
    let mut room = core::mem::MaybeUninit::uninit();
    let params = fib::params(&mut room);
    // SAFETY: `skb` is the context pointer the kernel hands to every TC program.
    params.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    params.__bindgen_anon_3.ipv4_src = src;
    params.__bindgen_anon_4.ipv4_dst = dst;
    if !fib::lookup(ctx, params, 0) || ctx.store(0, &fib::macs(params), 0).is_err() {
        return TC_ACT_OK;
    }
    // SAFETY: no preconditions beyond running at TC ingress.
    unsafe {
        if into_peer {
            bpf_redirect_peer(params.ifindex, 0) as i32
        } else {
            bpf_redirect(params.ifindex, 0) as i32
        }
    }
}
