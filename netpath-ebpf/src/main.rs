//! netpath's kernel side. Entry points only: each function is one attach point, the logic
//! lives in modules by concern (parse, conntrack, nat, fib, sock) and every map in `maps`.
#![no_std]
#![no_main]

mod access;
mod conntrack;
mod fib;
mod maps;
mod nat;
mod object;
mod parse;
mod sock;

use aya_ebpf::{
    bindings::{BPF_FIB_LOOKUP_SKIP_NEIGH, BPF_FIB_LOOKUP_SRC, TC_ACT_OK, TC_ACT_SHOT},
    btf_maps::lpm_trie::Key,
    helpers::{bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    macros::{cgroup_sock_addr, classifier},
    programs::{SockAddrContext, TcContext},
};
use aya_log_ebpf::{debug, info, warn};
use netpath_common::{CT_FLAG_PEER, Counter, CtEntry, CtKey, Direction, PublishTarget};

use crate::{
    conntrack::{create, forget, lookup, now, renew, reopens, reply_to, track},
    maps::{
        NP_BRIDGES, NP_CT, NP_ENDPOINTS, NP_EXTERNALS, NP_LOCAL_ADDRS, NP_MASQ_EXCL, count,
        count_traffic, find_publish,
    },
    parse::{Headers, Packet, parse},
};

/// TC egress on each netpath bridge. A packet the host routed in from another netpath
/// bridge is dropped (Docker's network isolation, without iptables) unless it belongs to a
/// translated connection (a published port reached from another network). Traffic the host
/// originates (ingress ifindex 0) or that comes from elsewhere is left alone.
#[classifier]
pub fn np_isolate(ctx: TcContext) -> i32 {
    // SAFETY: `skb` is the context pointer the kernel hands to every TC program.
    let (egress, ingress) = unsafe { ((*ctx.skb.skb).ifindex, (*ctx.skb.skb).ingress_ifindex) };
    if ingress == egress {
        return TC_ACT_OK;
    }
    // SAFETY: plain data; a concurrent update can only replace it whole.
    let (to, from) = unsafe { (NP_BRIDGES.get(egress), NP_BRIDGES.get(ingress)) };
    match (to, from) {
        (Some(to), Some(from)) if to.network_id != from.network_id => {
            let translated =
                parse(&ctx).is_some_and(|p| NP_CT.get_ptr(p.h.tuple.reversed()).is_some());
            if translated {
                return TC_ACT_OK;
            }
            count(Counter::DropIsolation);
            debug!(
                &ctx,
                "drop: network {} to network {}", from.network_id, to.network_id
            );
            TC_ACT_SHOT
        }
        _ => TC_ACT_OK,
    }
}

/// TC ingress on the external interfaces: packets of tracked connections (published ports,
/// replies to masqueraded connections, ICMP errors about either) are translated, and a new
/// connection to a published port is DNATed to its container (the client's address is kept,
/// as Docker does) and sent straight to the container's bridge.
#[classifier]
pub fn np_ext_in(ctx: TcContext) -> i32 {
    translate(&ctx, Side::External)
}

/// TC ingress on each netpath bridge: replies of published connections (back out of the
/// interface the client came in on), hairpin connections (a container reaching a published
/// port through a host address, SNATed to the target network's gateway so that the replies
/// come back through the host, as with Docker's proxy), and masquerade of containers'
/// connections to the outside.
#[classifier]
pub fn np_br_in(ctx: TcContext) -> i32 {
    translate(&ctx, Side::Bridge)
}

/// TC ingress on the host end of each container's veth: what `np_br_in` does, one hop
/// earlier, so that translated packets skip the bridge and the second pass through the
/// stack. A new connection from an address that is not this veth's container is left to
/// `np_br_in`.
#[classifier]
pub fn np_veth_in(ctx: TcContext) -> i32 {
    translate(&ctx, Side::Container)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    External,
    Bridge,
    Container,
}

impl Side {
    fn direction(self) -> Direction {
        match self {
            Side::External => Direction::FromExternal,
            Side::Bridge | Side::Container => Direction::FromContainers,
        }
    }
}

/// Where a translated packet for `addr` goes: straight into the container when netpath
/// knows it (`bpf_redirect_peer`; every entry is used at a TC ingress hook, where that
/// works), else to the neighbour `addr` on `ifindex`.
#[inline(always)]
fn deliver_to(entry: &mut CtEntry, addr: [u8; 4], ifindex: u32) {
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
        redirect_ifindex: 0,
        state: 0,
        flags: 0,
        dst_mac: [0; 6],
        last_seen_ns: 0,
    };
    deliver_to(&mut entry, target.container_addr, target.bridge_ifindex);
    entry
}

/// The shared path of the TC ingress programs: ICMP errors and tracked connections first,
/// then what a new connection becomes.
#[inline(always)]
fn translate(ctx: &TcContext, side: Side) -> i32 {
    let Some(p) = parse(ctx) else {
        return TC_ACT_OK;
    };
    // A packet that would expire on the way through is the stack's: it sends the ICMP time
    // exceeded a router owes.
    if p.ttl <= 1 {
        return TC_ACT_OK;
    }
    let now = now();
    if let Some(quoted) = &p.quoted {
        return icmp_error(ctx, &p, quoted, now, side);
    }
    let t = &p.h.tuple;
    // An entry the packet does not reopen translates it; one it reopens (a SYN on a closed
    // connection) is renewed below, or forgotten.
    let reopened = match lookup(t, now) {
        Some(e) => {
            // SAFETY: map values stay valid for the program's run.
            let entry = unsafe { &*e };
            if !reopens(entry, &p) {
                track(e, &p, now);
                count(Counter::NatHit);
                return apply(ctx, &p, entry, side);
            }
            Some(e)
        }
        None => None,
    };
    let opened = open(ctx, &p, side);
    // A client that reuses its source port (every connection, under load) usually gets the
    // same translation again: both entries are then rewritten in place, with no map updates.
    // Otherwise the reopened connection's entries go before new ones are made.
    let renewed = match (reopened, &opened) {
        // SAFETY: as above.
        (Some(e), Some((xlat, reply, _))) => renew(unsafe { &mut *e }, t, xlat, reply, now),
        _ => None,
    };
    if let (Some(e), None) = (reopened, &renewed) {
        // SAFETY: as above.
        forget(t, unsafe { &*e });
    }
    let Some((mut xlat, reply, counter)) = opened else {
        return TC_ACT_OK;
    };
    let entry = match renewed {
        Some(entry) => entry,
        None => match create(t, &mut xlat, reply, now) {
            Some(entry) => entry,
            None => {
                count(Counter::DropNoPort);
                warn!(
                    ctx,
                    "drop: no free source port for {:i}:{}", t.src_addr, t.src_port
                );
                return TC_ACT_SHOT;
            }
        },
    };
    count(counter);
    info!(
        ctx,
        "new connection from {:i}:{} to {:i}:{}",
        t.src_addr,
        t.src_port,
        entry.dst_addr,
        entry.dst_port
    );
    apply(ctx, &p, &entry, side)
}

/// What a new connection becomes, and the entry that translates its replies back: `None`
/// when it is not netpath's to translate (not a published port, not a container's own
/// connection to the outside).
#[inline(always)]
fn open(ctx: &TcContext, p: &Packet, side: Side) -> Option<(CtEntry, CtEntry, Counter)> {
    if !p.opens() {
        return None;
    }
    let t = &p.h.tuple;
    // SAFETY: as in `np_isolate`.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if side == Side::Container {
        // SAFETY: plain data.
        let own =
            unsafe { NP_ENDPOINTS.get(t.src_addr) }.is_some_and(|ep| ep.host_ifindex == ifindex);
        if !own {
            return None;
        }
    }
    // The FIB cannot tell a local address from an unroutable one (both are "not forwarded"),
    // so userspace keeps the namespace's addresses in a map.
    let local = || unsafe { NP_LOCAL_ADDRS.get(t.dst_addr) }.is_some();
    let (xlat, counter) = match (find_publish(t.dst_addr, t.dst_port, t.proto, local), side) {
        (Some(target), side) => (to_target(t, target, side), Counter::NatNew),
        (None, Side::Bridge | Side::Container) => (masquerade(ctx, t, ifindex)?, Counter::MasqNew),
        (None, Side::External) => return None,
    };
    let mut reply = reply_to(t);
    // A client outside is never one of the containers: no need to look it up.
    match side {
        Side::External => reply.redirect_ifindex = ifindex,
        Side::Bridge | Side::Container => deliver_to(&mut reply, t.src_addr, ifindex),
    }
    Some((xlat, reply, counter))
}

/// What a container's new connection to the outside becomes: its source replaced by the
/// address the kernel would pick on the way out (so an address change is picked up by the
/// next connection), sent straight out of that interface. Only towards an external
/// interface, whose ingress program translates the replies, and never to an excluded
/// destination (netpath's own networks, `--masquerade-exclude`).
#[inline(always)]
fn masquerade(ctx: &TcContext, t: &CtKey, ifindex: u32) -> Option<CtEntry> {
    let excluded = Key::new(32, t.dst_addr);
    if NP_MASQ_EXCL.get(&excluded).is_some() {
        return None;
    }
    let mut room = core::mem::MaybeUninit::uninit();
    let params = fib::params(&mut room);
    params.l4_protocol = t.proto;
    params.sport = t.src_port.to_be();
    params.dport = t.dst_port.to_be();
    params.ifindex = ifindex;
    params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(t.src_addr);
    params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(t.dst_addr);
    if !fib::lookup(ctx, params, BPF_FIB_LOOKUP_SRC | BPF_FIB_LOOKUP_SKIP_NEIGH) {
        return None;
    }
    // SAFETY: plain data.
    unsafe { NP_EXTERNALS.get(params.ifindex) }?;
    Some(CtEntry {
        // SAFETY: BPF_FIB_LOOKUP_SRC filled in the source address.
        src_addr: unsafe { params.__bindgen_anon_3.ipv4_src }.to_ne_bytes(),
        dst_addr: t.dst_addr,
        src_port: t.src_port,
        dst_port: t.dst_port,
        redirect_ifindex: params.ifindex,
        state: 0,
        flags: 0,
        dst_mac: [0; 6],
        last_seen_ns: 0,
    })
}

/// An ICMP error (unreachable, fragmentation needed, time exceeded) about a packet netpath
/// translated goes back to the packet's original sender, quoted packet translated back.
#[inline(always)]
fn icmp_error(ctx: &TcContext, p: &Packet, quoted: &Headers, now: u64, side: Side) -> i32 {
    // The quoted packet went out translated; the entry of its opposite direction holds the
    // original tuple.
    let back = quoted.tuple.reversed();
    let Some(e) = lookup(&back, now) else {
        return TC_ACT_OK;
    };
    // SAFETY: map values stay valid for the program's run.
    let entry = unsafe { *e };
    if nat::rewrite_icmp_error(ctx, p, quoted, &entry).is_err() {
        return dropped();
    }
    count(Counter::IcmpError);
    debug!(
        ctx,
        "icmp error from {:i} translated for {:i}", p.h.tuple.src_addr, entry.dst_addr
    );
    count_traffic(side.direction(), p.h.tuple.proto, ctx.len());
    redirect(ctx, p, &entry)
}

/// Rewrites the packet, then sends it out of the entry's interface or back to the stack.
#[inline(always)]
fn apply(ctx: &TcContext, p: &Packet, e: &CtEntry, side: Side) -> i32 {
    if nat::rewrite(ctx, p, e).is_err() {
        return dropped();
    }
    count_traffic(side.direction(), p.h.tuple.proto, ctx.len());
    redirect(ctx, p, e)
}

/// A packet the helpers failed to rewrite: dropped, and counted.
#[inline(always)]
fn dropped() -> i32 {
    count(Counter::DropRewrite);
    TC_ACT_SHOT
}

/// Straight out of the entry's interface, as a router would forward it: into a container's
/// namespace (`bpf_redirect_peer`, only from TC ingress, which is where entries with that
/// flag are used), or to the next hop on that interface. Either way past the stack, whose
/// routing would drop a translated source that is a local address (the host's) as martian.
#[inline(always)]
fn redirect(ctx: &TcContext, p: &Packet, e: &CtEntry) -> i32 {
    if e.redirect_ifindex == 0 {
        return TC_ACT_OK;
    }
    if nat::decrement_ttl(ctx, p).is_err() {
        return dropped();
    }
    if e.flags & CT_FLAG_PEER != 0 {
        if ctx.store(0, &e.dst_mac, 0).is_err() {
            return dropped();
        }
        // SAFETY: no preconditions beyond running at TC ingress.
        return unsafe { bpf_redirect_peer(e.redirect_ifindex, 0) as i32 };
    }
    if let Some(macs) = next_hop(ctx, e) {
        if ctx.store(0, &macs, 0).is_err() {
            return dropped();
        }
        // SAFETY: no preconditions.
        return unsafe { bpf_redirect(e.redirect_ifindex, 0) as i32 };
    }
    // No resolved neighbour yet (or a route elsewhere): the kernel resolves it.
    // SAFETY: no parameters: the kernel looks up the next hop itself.
    unsafe { bpf_redirect_neigh(e.redirect_ifindex, core::ptr::null_mut(), 0, 0) as i32 }
}

/// The destination and source MACs of the translated packet's next hop, when the routing
/// table sends it out of the entry's interface and the neighbour is known. Looked up for
/// every packet, as the stack's forwarding does, so route and neighbour changes apply at
/// once; cheaper than `bpf_redirect_neigh`, which builds a route for each packet.
#[inline(always)]
fn next_hop(ctx: &TcContext, e: &CtEntry) -> Option<[u8; 12]> {
    let mut room = core::mem::MaybeUninit::uninit();
    let params = fib::params(&mut room);
    // SAFETY: as in `np_isolate`.
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

#[cgroup_sock_addr(connect4)]
pub fn np_connect4(ctx: SockAddrContext) -> i32 {
    sock::translate(&ctx);
    1
}

#[cgroup_sock_addr(sendmsg4)]
pub fn np_sendmsg4(ctx: SockAddrContext) -> i32 {
    sock::translate(&ctx);
    1
}

#[cgroup_sock_addr(recvmsg4)]
pub fn np_recvmsg4(ctx: SockAddrContext) -> i32 {
    sock::restore(&ctx);
    1
}

#[cgroup_sock_addr(getpeername4)]
pub fn np_getpeername4(ctx: SockAddrContext) -> i32 {
    sock::restore(&ctx);
    1
}
