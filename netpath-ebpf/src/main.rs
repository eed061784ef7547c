//! netpath's kernel side. Entry points only: each function is one attach point, the logic
//! lives in modules by concern (parse, conntrack, nat, sock) and every map in `maps`.
#![no_std]
#![no_main]

mod conntrack;
mod maps;
mod nat;
mod parse;
mod sock;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::bpf_redirect_neigh,
    macros::{cgroup_sock_addr, classifier},
    programs::{SockAddrContext, TcContext},
};
use netpath_common::{Counter, CtEntry, CtKey, PROTO_TCP, PublishTarget};

use crate::{
    conntrack::{create, forget, lookup, now, reopens, track},
    maps::{NP_BRIDGES, NP_CT, NP_LOCAL_ADDRS, count, find_publish},
    parse::{Packet, parse},
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
            let translated = parse(&ctx).is_some_and(|p| {
                let t = &p.tuple;
                let reverse = CtKey {
                    src_addr: t.dst_addr,
                    dst_addr: t.src_addr,
                    src_port: t.dst_port,
                    dst_port: t.src_port,
                    proto: t.proto,
                    _pad: [0; 3],
                };
                NP_CT.get_ptr(reverse).is_some()
            });
            if translated {
                return TC_ACT_OK;
            }
            count(Counter::DropIsolation);
            TC_ACT_SHOT
        }
        _ => TC_ACT_OK,
    }
}

/// TC ingress on the external interfaces: packets of tracked connections are translated,
/// and a new connection to a published port is DNATed to its container (the client's
/// address is kept, as Docker does) and sent straight to the container's bridge.
#[classifier]
pub fn np_ext_in(ctx: TcContext) -> i32 {
    translate(&ctx, |p, target| CtEntry {
        src_addr: p.tuple.src_addr,
        src_port: p.tuple.src_port,
        ..xlat_to(target)
    })
}

/// TC ingress on each netpath bridge: replies of published connections (back to the client
/// through the interface it came in on) and hairpin connections, where a container reaches
/// a published port through a host address. Those are also SNATed to the target network's
/// gateway so that the replies come back through the host, as with Docker's proxy.
#[classifier]
pub fn np_br_in(ctx: TcContext) -> i32 {
    translate(&ctx, |p, target| CtEntry {
        src_addr: target.gateway_addr,
        src_port: p.tuple.src_port,
        ..xlat_to(target)
    })
}

fn xlat_to(target: PublishTarget) -> CtEntry {
    CtEntry {
        src_addr: [0; 4],
        dst_addr: target.container_addr,
        src_port: 0,
        dst_port: target.container_port,
        redirect_ifindex: target.bridge_ifindex,
        state: 0,
        flags: 0,
        _pad: [0; 6],
        last_seen_ns: 0,
    }
}

/// The shared path of both TC ingress programs: conntrack first, then publish lookup for a
/// packet that may open a connection; `xlat` says what a new connection becomes.
#[inline(always)]
fn translate(ctx: &TcContext, xlat: impl FnOnce(&Packet, PublishTarget) -> CtEntry) -> i32 {
    let Some(p) = parse(ctx) else {
        return TC_ACT_OK;
    };
    let now = now();
    if let Some(e) = lookup(&p.tuple, now) {
        // SAFETY: map values stay valid for the program's run.
        let entry = unsafe { &*e };
        if !reopens(entry, &p) {
            track(e, &p, now);
            count(Counter::NatHit);
            return apply(ctx, &p, entry);
        }
        forget(&p.tuple, entry);
    }
    // Only a TCP SYN or a UDP datagram opens a connection.
    if p.tuple.proto == PROTO_TCP && !p.is_tcp_syn() {
        return TC_ACT_OK;
    }
    // SAFETY: as in `np_isolate`.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // The FIB cannot tell a local address from an unroutable one (both are "not forwarded"),
    // so userspace keeps the namespace's addresses in a map.
    let local = || unsafe { NP_LOCAL_ADDRS.get(p.tuple.dst_addr) }.is_some();
    let Some(target) = find_publish(p.tuple.dst_addr, p.tuple.dst_port, p.tuple.proto, local)
    else {
        return TC_ACT_OK;
    };
    let mut entry = xlat(&p, target);
    let Some(entry) = create(&p.tuple, &mut entry, ifindex, now) else {
        count(Counter::DropNoPort);
        return TC_ACT_SHOT;
    };
    count(Counter::NatNew);
    apply(ctx, &p, &entry)
}

/// Rewrites the packet, then sends it out of the entry's interface or back to the stack.
#[inline(always)]
fn apply(ctx: &TcContext, p: &Packet, e: &CtEntry) -> i32 {
    if nat::rewrite(ctx, p, e).is_err() {
        count(Counter::DropRewrite);
        return TC_ACT_SHOT;
    }
    if e.redirect_ifindex == 0 {
        return TC_ACT_OK;
    }
    // Straight to the neighbour on that interface: the translated source may be a local
    // address (the host's), which the stack would drop as martian.
    // SAFETY: no parameters: the kernel looks up the next hop itself.
    unsafe { bpf_redirect_neigh(e.redirect_ifindex, core::ptr::null_mut(), 0, 0) as i32 }
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
