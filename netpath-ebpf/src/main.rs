//! netpath's kernel side. Each `#[classifier]` is one attach point; maps and shared types come
//! from netpath-common so the kernel and userspace views cannot drift apart.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    btf_maps::{HashMap, PerCpuArray},
    macros::{btf_map, classifier},
    programs::TcContext,
};
use netpath_common::{BridgeInfo, COUNTER_SLOTS, Counter, MAX_NETWORKS};

#[btf_map]
static NP_BRIDGES: HashMap<u32, BridgeInfo, { MAX_NETWORKS as usize }> = HashMap::new();

#[btf_map]
static NP_COUNTERS: PerCpuArray<u64, { COUNTER_SLOTS as usize }> = PerCpuArray::new();

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = NP_COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while the program runs.
        unsafe { *slot += 1 };
    }
}

/// TC egress on each netpath bridge. A packet that the host routed in from another netpath
/// bridge (its ingress device) is dropped: Docker's network isolation, without iptables.
/// Traffic the host originates (ingress ifindex 0) or that comes from a non-netpath
/// interface is left alone.
#[classifier]
pub fn np_isolate(ctx: TcContext) -> i32 {
    // SAFETY: `skb` is the context pointer the kernel hands to every TC program.
    let (egress, ingress) = unsafe { ((*ctx.skb.skb).ifindex, (*ctx.skb.skb).ingress_ifindex) };
    if ingress == egress {
        return TC_ACT_OK;
    }
    // SAFETY: values are plain integers; a concurrent update can only change them, not free them.
    let (to, from) = unsafe { (NP_BRIDGES.get(egress), NP_BRIDGES.get(ingress)) };
    match (to, from) {
        (Some(to), Some(from)) if to.network_id != from.network_id => {
            count(Counter::DropIsolation);
            TC_ACT_SHOT
        }
        _ => TC_ACT_OK,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
