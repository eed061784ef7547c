//! What a new connection becomes: DNAT to a published port's container (hairpin SNAT to its
//! gateway from another container), or masquerade of a container's connection to the outside.
use aya_ebpf::{
    bindings::{__sk_buff, BPF_FIB_LOOKUP_SKIP_NEIGH, BPF_FIB_LOOKUP_SRC},
    btf_maps::lpm_trie::Key,
    programs::TcContext,
};
use bytemuck::Zeroable as _;
use netpath_common::{BRIDGE_NO_MASQUERADE, CT_FLAG_PEER, Counter, CtEntry, CtKey, PublishTarget};

use crate::{
    conntrack::reply_to,
    deliver::deliver_to,
    fib,
    maps::{NP_BRIDGES, NP_ENDPOINTS, NP_EXTERNALS, NP_LOCAL_ADDRS, NP_MASQ_EXCL, find_publish},
    parse::Packet,
    pipeline::Side,
};

/// The translation of a new connection to a published port.
fn to_target(t: &CtKey, target: PublishTarget, side: Side) -> CtEntry {
    let mut entry = CtEntry {
        src_addr: if side == Side::External {
            t.src_addr
        } else {
            target.gateway_addr
        },
        dst_addr: target.container_addr,
        src_port: t.src_port,
        dst_port: target.container_port,
        ..CtEntry::zeroed()
    };
    deliver_to(&mut entry, target.container_addr, target.bridge_ifindex);
    entry
}

/// What a new connection becomes, and the entry that translates its replies back: `None`
/// when it is not netpath's to translate (not a published port, not a container's own
/// connection to the outside).
#[inline(always)]
pub fn open(ctx: &TcContext, p: &Packet, side: Side) -> Option<(CtEntry, CtEntry, Counter)> {
    if !p.opens() {
        return None;
    }
    let t = &p.h.tuple;
    // SAFETY: as in `isolate::check`.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // The bridge of the sender's network: the packet's own, or the container's veth's.
    let bridge = match side {
        // SAFETY: plain data.
        Side::Container => match unsafe { NP_ENDPOINTS.get(t.src_addr) } {
            Some(ep) if ep.host_ifindex == ifindex => ep.bridge_ifindex,
            _ => return None,
        },
        Side::Bridge | Side::External => ifindex,
    };
    // The FIB cannot tell a local address from an unroutable one (both are "not forwarded"),
    // so userspace keeps the namespace's addresses in a map.
    // SAFETY: plain data.
    let local = || unsafe { NP_LOCAL_ADDRS.get(t.dst_addr) }.is_some();
    let (mut xlat, counter) = match (find_publish(t.dst_addr, t.dst_port, t.proto, local), side) {
        (Some(target), side) => (to_target(t, target, side), Counter::NatNew),
        (None, Side::Bridge | Side::Container) => {
            (masquerade(ctx, t, ifindex, bridge)?, Counter::MasqNew)
        }
        (None, Side::External) => return None,
    };
    let mut reply = reply_to(t);
    // A client outside is never one of the containers: no need to look it up.
    match side {
        Side::External => reply.redirect_ifindex = ifindex,
        Side::Bridge | Side::Container => deliver_to(&mut reply, t.src_addr, ifindex),
    }
    // Bound to the veths whose source check this connection's packets passed, or will
    // pass: this one (the opening packet's, checked before it got here), and the target
    // container's, whose replies come from the address they go to.
    if side == Side::Container {
        xlat.from_ifindex = ifindex;
    }
    if xlat.flags & CT_FLAG_PEER != 0 {
        reply.from_ifindex = xlat.redirect_ifindex;
    }
    Some((xlat, reply, counter))
}

/// What a container's new connection to the outside becomes: its source replaced by the
/// address the kernel would pick on the way out (so an address change is picked up by the
/// next connection), sent straight out of that interface. Only towards an external
/// interface, whose ingress program translates the replies, never to an excluded
/// destination (netpath's own networks, `--masquerade-exclude`), and never from a network
/// with masquerade off (`bridge`'s): the stack routes those as they are, untracked.
#[inline(always)]
fn masquerade(ctx: &TcContext, t: &CtKey, ifindex: u32, bridge: u32) -> Option<CtEntry> {
    // SAFETY: plain data.
    let off =
        unsafe { NP_BRIDGES.get(bridge) }.is_some_and(|b| b.flags & BRIDGE_NO_MASQUERADE != 0);
    if off {
        return None;
    }
    let excluded = Key::new(32, t.dst_addr);
    if NP_MASQ_EXCL.get(&excluded).is_some() {
        return None;
    }
    let route = route_out(ctx.skb.skb, t, ifindex);
    if route == 0 {
        return None;
    }
    Some(CtEntry {
        src_addr: ((route >> 32) as u32).to_ne_bytes(),
        dst_addr: t.dst_addr,
        src_port: t.src_port,
        dst_port: t.dst_port,
        redirect_ifindex: route as u32,
        ..CtEntry::zeroed()
    })
}

/// The route of `t` out of the host: the source address the kernel picks (as stored, in
/// the upper half) and the external interface (the lower half), or 0 when it does not
/// leave through an external interface. A subprogram of its own, called with the context
/// pointer alone (as `source::check`): the lookup's parameters then stay out of the
/// translation's stack frame, which is at the verifier's limit.
#[inline(never)]
fn route_out(skb: *mut __sk_buff, t: &CtKey, ifindex: u32) -> u64 {
    let mut room = core::mem::MaybeUninit::uninit();
    let params = fib::params(&mut room);
    params.l4_protocol = t.proto;
    params.sport = t.src_port.to_be();
    params.dport = t.dst_port.to_be();
    params.ifindex = ifindex;
    params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(t.src_addr);
    params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(t.dst_addr);
    if !fib::lookup(skb, params, BPF_FIB_LOOKUP_SRC | BPF_FIB_LOOKUP_SKIP_NEIGH) {
        return 0;
    }
    // SAFETY: plain data.
    if unsafe { NP_EXTERNALS.get(params.ifindex) }.is_none() {
        return 0;
    }
    // SAFETY: BPF_FIB_LOOKUP_SRC filled in the source address.
    let src = unsafe { params.__bindgen_anon_3.ipv4_src };
    (u64::from(src) << 32) | u64::from(params.ifindex)
}
