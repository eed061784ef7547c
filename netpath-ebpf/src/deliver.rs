//! Where a translated packet goes: the interface and MACs a connection's entries hold, and
//! the redirect that sends each packet there, past the host's stack.
use aya_ebpf::{
    bindings::{__sk_buff, TC_ACT_OK},
    helpers::{bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    programs::TcContext,
};
use netpath_common::{CT_FLAG_NEXT_HOP, CT_FLAG_PEER, CtEntry, DropReason, same_next_hop_tick};

use crate::{fib, maps::NP_ENDPOINTS, skb::put};

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

/// Sends a packet its caller rewrote (TTL included) straight out of the entry's interface,
/// as a router would forward it: into a container's namespace (`bpf_redirect_peer`, only from
/// TC ingress, which is where entries with that flag are used), or to the next hop on that
/// interface. Either way past the stack, whose routing would drop a translated source that
/// is a local address (the host's) as martian. The redirect helpers themselves cannot fail
/// here (they refuse only flags, and these are 0); a device that has gone away is the
/// kernel's to drop after the program.
///
/// The next hop is cached in the entry (`CT_FLAG_NEXT_HOP`) for the current tick
/// (`NEXT_HOP_TICK_SHIFT`), so that an established connection's packets take no FIB lookup
/// of their own: the entry in the map is updated in place (`e` is the map's value; a new
/// connection's first packet works on a copy and leaves the caching to the next one). Two
/// CPUs refreshing one entry at once write what the same FIB gave both.
#[inline(always)]
pub fn redirect(ctx: &TcContext, e: &mut CtEntry, now: u64) -> Result<i32, DropReason> {
    if e.redirect_ifindex == 0 {
        return Ok(TC_ACT_OK);
    }
    if e.flags & CT_FLAG_PEER != 0 {
        put(ctx, 0, e.dst_mac)?;
        // SAFETY: no preconditions beyond running at TC ingress.
        return Ok(unsafe { bpf_redirect_peer(e.redirect_ifindex, 0) as i32 });
    }
    // `track` clears the flag on the first packet of a tick; the other paths (ICMP errors,
    // later fragments) do not track, hence the tick of the entry's last packet.
    let cached = e.flags & CT_FLAG_NEXT_HOP != 0 && same_next_hop_tick(now, e.last_seen_ns);
    if !cached && !next_hop(ctx.skb.skb, e) {
        // No resolved neighbour yet (or a route elsewhere): the kernel resolves it.
        // SAFETY: no parameters: the kernel looks up the next hop itself.
        return Ok(unsafe {
            bpf_redirect_neigh(e.redirect_ifindex, core::ptr::null_mut(), 0, 0) as i32
        });
    }
    // Each MAC on its own: one 12-byte copy is a call to a byte-by-byte memmove here.
    put(ctx, 0, e.dst_mac)?;
    put(ctx, 6, e.src_mac)?;
    // SAFETY: no preconditions.
    Ok(unsafe { bpf_redirect(e.redirect_ifindex, 0) as i32 })
}

/// Asks the FIB for the translated packet's next hop and caches it in `e` when the routing
/// table sends it out of the entry's interface and the neighbour is known; otherwise clears
/// the cache and returns false. Cheaper than `bpf_redirect_neigh`, which builds a route for
/// each packet. A subprogram of its own, called with the context pointer alone (as
/// `source::check`): the lookup's parameters then stay out of the translation's stack frame,
/// which is at the verifier's limit, and out of the cached path.
#[inline(never)]
fn next_hop(skb: *mut __sk_buff, e: &mut CtEntry) -> bool {
    let mut room = core::mem::MaybeUninit::uninit();
    let params = fib::params(&mut room);
    // SAFETY: `skb` is the context pointer the kernel hands to every TC program.
    params.ifindex = unsafe { (*skb).ifindex };
    params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(e.src_addr);
    params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(e.dst_addr);
    // tot_len 0 has the kernel check the packet itself against the egress MTU (GSO packets
    // pass).
    if !fib::lookup(skb, params, 0) || params.ifindex != e.redirect_ifindex {
        e.flags &= !CT_FLAG_NEXT_HOP;
        return false;
    }
    e.dst_mac = params.dmac;
    e.src_mac = params.smac;
    e.flags |= CT_FLAG_NEXT_HOP;
    true
}
