//! The one drop exit of the TC programs, as Cilium's `send_drop_notify`: every failure of a
//! program's logic comes back to its entry point as a [`DropReason`], which is counted and
//! logged here, once, and the packet dropped.
use aya_ebpf::{bindings::TC_ACT_SHOT, programs::TcContext};
use aya_log_ebpf::{debug, warn};
use netpath_common::DropReason;

use crate::maps::count;

/// Counts and logs the drop of the packet in `ctx`; returns the verdict that drops it.
#[inline(always)]
pub fn notify(ctx: &TcContext, reason: DropReason) -> i32 {
    count(reason.counter());
    // SAFETY: `skb` is the context pointer the kernel hands to every TC program.
    let (ifindex, ingress) = unsafe { ((*ctx.skb.skb).ifindex, (*ctx.skb.skb).ingress_ifindex) };
    let name = reason.counter().name();
    match reason {
        // Isolation and source validation are policy at work, possibly for every packet of a
        // flow (or a flood): logged only when asked for. Everything else means a connection
        // that could not go through.
        DropReason::Isolation | DropReason::Spoofed => debug!(
            ctx,
            "drop: {} on ifindex {} from ifindex {}", name, ifindex, ingress
        ),
        _ => warn!(
            ctx,
            "drop: {} on ifindex {} from ifindex {}", name, ifindex, ingress
        ),
    }
    TC_ACT_SHOT
}
