//! The benchmark's bare forwarder (`cargo xtask bench`, configuration "forward"): the least a
//! TC forwarder between the client and the container can do, so that it shows what the
//! topology allows. `bpf_redirect_peer` into the container and `bpf_redirect` out of the
//! host, with the interfaces and MACs the bench filled in (`NP_BENCH_FWD`) before any
//! traffic: no FIB lookup, no NAT, no conntrack, one array lookup per packet. Never loaded by
//! netpath itself.
#![no_std]
#![no_main]

mod object;

use aya_ebpf::{
    bindings::TC_ACT_OK,
    btf_maps::Array,
    helpers::{bpf_redirect, bpf_redirect_peer},
    macros::{btf_map, classifier},
    programs::TcContext,
};
use netpath_common::ForwardHop;

/// `skb->protocol` of an IPv4 frame (network byte order).
const ETH_P_IP_BE: u32 = 0x0800u16.to_be() as u32;
/// Hop 0 leads into the container, hop 1 out of the host.
const INTO_CONTAINER: u32 = 0;
const OUT_OF_HOST: u32 = 1;

#[btf_map]
static NP_BENCH_FWD: Array<ForwardHop, 2> = Array::new();

/// TC ingress on the external interface: into the container.
#[classifier]
pub fn bench_forward_in(ctx: TcContext) -> i32 {
    forward(&ctx, INTO_CONTAINER)
}

/// TC ingress on the container's host-side veth: out of the external interface.
#[classifier]
pub fn bench_forward_out(ctx: TcContext) -> i32 {
    forward(&ctx, OUT_OF_HOST)
}

/// Readdresses an IPv4 frame to hop `slot` and redirects it there; anything else (ARP) goes
/// to the stack.
#[inline(always)]
fn forward(ctx: &TcContext, slot: u32) -> i32 {
    // SAFETY: `skb` is the context pointer the kernel hands to every TC program.
    if unsafe { (*ctx.skb.skb).protocol } != ETH_P_IP_BE {
        return TC_ACT_OK;
    }
    let Some(hop) = NP_BENCH_FWD.get(slot) else {
        return TC_ACT_OK;
    };
    if hop.ifindex == 0 || ctx.store(0, &hop.macs, 0).is_err() {
        return TC_ACT_OK;
    }
    // SAFETY: no preconditions beyond running at TC ingress.
    unsafe {
        if slot == INTO_CONTAINER {
            bpf_redirect_peer(hop.ifindex, 0) as i32
        } else {
            bpf_redirect(hop.ifindex, 0) as i32
        }
    }
}
