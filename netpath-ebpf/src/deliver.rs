//! Where a translated packet goes: the interface and MACs a connection's entries hold, and
//! the redirect that sends each packet there, past the host's stack.
use aya_ebpf::{
    bindings::TC_ACT_OK,
    helpers::{bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    programs::TcContext,
};
use netpath_common::{CT_FLAG_PEER, CtEntry, DropReason};

use crate::{fib, maps::NP_ENDPOINTS, nat, parse::Packet, skb::store};

/// Where a translated packet for `addr` goes: straight into the container when netpath
/// knows it (`bpf_redirect_peer`; every entry is used at a TC ingress hook, where that
/// works), else to the neighbour `addr` on `ifindex`.
#[inline(always)]
pub fn deliver_to(entry: &mut CtEntry, addr: [u8; 4], ifindex: u32) {
    // SAFETY: plain data.
    match unsafe { NP_ENDPOINTS.get(addr) } {
        Some(ep) => {
            entry.redirect_ifindex = ep.host_ifindex;
            entry.flags |= CT_FLAG_PEER;
            entry.dst_mac = ep.mac;
        }
        None => entry.redirect_ifindex = ifindex,
    }
}

/// Straight out of the entry's interface, as a router would forward it: into a container's
/// namespace (`bpf_redirect_peer`, only from TC ingress, which is where entries with that
/// flag are used), or to the next hop on that interface. Either way past the stack, whose
/// routing would drop a translated source that is a local address (the host's) as martian.
/// The redirect helpers themselves cannot fail here (they refuse only flags, and these are
/// 0); a device that has gone away is the kernel's to drop after the program.
#[inline(always)]
pub fn redirect(ctx: &TcContext, p: &Packet, e: &CtEntry) -> Result<i32, DropReason> {
    if e.redirect_ifindex == 0 {
        return Ok(TC_ACT_OK);
    }
    nat::decrement_ttl(ctx, p)?;
    if e.flags & CT_FLAG_PEER != 0 {
        store(ctx, 0, &e.dst_mac)?;
        // SAFETY: no preconditions beyond running at TC ingress.
        return Ok(unsafe { bpf_redirect_peer(e.redirect_ifindex, 0) as i32 });
    }
    if let Some(macs) = next_hop(ctx, e) {
        store(ctx, 0, &macs)?;
        // SAFETY: no preconditions.
        return Ok(unsafe { bpf_redirect(e.redirect_ifindex, 0) as i32 });
    }
    // No resolved neighbour yet (or a route elsewhere): the kernel resolves it.
    // SAFETY: no parameters: the kernel looks up the next hop itself.
    Ok(unsafe { bpf_redirect_neigh(e.redirect_ifindex, core::ptr::null_mut(), 0, 0) as i32 })
}

/// The destination and source MACs of the translated packet's next hop, when the routing
/// table sends it out of the entry's interface and the neighbour is known. Looked up for
/// every packet, as the stack's forwarding does, so route and neighbour changes apply at
/// once; cheaper than `bpf_redirect_neigh`, which builds a route for each packet.
#[inline(always)]
fn next_hop(ctx: &TcContext, e: &CtEntry) -> Option<[u8; 12]> {
    let mut room = core::mem::MaybeUninit::uninit();
    let params = fib::params(&mut room);
    // SAFETY: as in `isolate::check`.
    params.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(e.src_addr);
    params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(e.dst_addr);
    // tot_len 0 has the kernel check the packet itself against the egress MTU (GSO packets
    // pass).
    if !fib::lookup(ctx, params, 0) || params.ifindex != e.redirect_ifindex {
        return None;
    }
    Some(fib::macs(params))
}
