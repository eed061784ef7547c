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
    let (start, end) = (ctx.data(), ctx.data_end());
    if hop.ifindex == 0 || start + 12 > end {
        return TC_ACT_OK;
    }
    let [d0, d1, d2, d3, d4, d5, s0, s1, s2, s3, s4, s5] = hop.macs;
    // Written in place, as netpath writes them, and only what the next hop reads: into the
    // container the destination alone (its stack ignores the source).
    // SAFETY: the 12 bytes are within the packet, checked against data_end just above; no
    // other precondition beyond running at TC ingress.
    unsafe {
        (start as *mut [u8; 6]).write_unaligned([d0, d1, d2, d3, d4, d5]);
        if slot == INTO_CONTAINER {
            return bpf_redirect_peer(hop.ifindex, 0) as i32;
        }
        ((start + 6) as *mut [u8; 6]).write_unaligned([s0, s1, s2, s3, s4, s5]);
        bpf_redirect(hop.ifindex, 0) as i32
    }
}
