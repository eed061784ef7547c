//! Docker's network isolation without iptables: a packet the host routed from one netpath
//! bridge into another is dropped unless it belongs to a translated connection.
use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use netpath_common::DropReason;

use crate::{
    maps::{NP_BRIDGES, NP_CT},
    parse::parse,
};

/// The verdict on a packet leaving through a netpath bridge.
#[inline(always)]
pub fn check(ctx: &TcContext) -> Result<i32, DropReason> {
    // SAFETY: `skb` is the context pointer the kernel hands to every TC program.
    let (egress, ingress) = unsafe { ((*ctx.skb.skb).ifindex, (*ctx.skb.skb).ingress_ifindex) };
    if ingress == egress {
        return Ok(TC_ACT_OK);
    }
    // SAFETY: plain data; a concurrent update can only replace it whole.
    let (to, from) = unsafe { (NP_BRIDGES.get(egress), NP_BRIDGES.get(ingress)) };
    match (to, from) {
        (Some(to), Some(from)) if to.network_id != from.network_id => {
            let translated =
                parse(ctx).is_some_and(|p| NP_CT.get_ptr(p.h.tuple.reversed()).is_some());
            if translated {
                Ok(TC_ACT_OK)
            } else {
                Err(DropReason::Isolation)
            }
        }
        _ => Ok(TC_ACT_OK),
    }
}
