//! netpath's kernel side. Entry points only: each function is one attach point, the logic
//! lives in modules by concern (isolate, pipeline, open, conntrack, nat, deliver, fib, frag, parse,
//! sock, skb) and every map in `maps`. A TC program's logic returns its verdict or a drop
//! reason; the entry point is its one drop exit (`drop::notify`).
#![no_std]
#![no_main]

mod access;
mod conntrack;
mod deliver;
mod drop;
mod fib;
mod frag;
mod isolate;
mod maps;
mod nat;
mod object;
mod open;
mod parse;
mod pipeline;
mod skb;
mod sock;
mod source;

use aya_ebpf::{
    macros::{cgroup_sock_addr, classifier},
    programs::{SockAddrContext, TcContext},
};

use crate::pipeline::{Side, translate};

/// TC egress on each netpath bridge. A packet the host routed in from another netpath
/// bridge is dropped (Docker's network isolation, without iptables) unless it belongs to a
/// translated connection (a published port reached from another network). Traffic the host
/// originates (ingress ifindex 0) or that comes from elsewhere is left alone.
#[classifier]
pub fn np_isolate(ctx: TcContext) -> i32 {
    isolate::check(&ctx).unwrap_or_else(|reason| drop::notify(&ctx, reason))
}

/// TC ingress on the external interfaces: packets of tracked connections (published ports,
/// replies to masqueraded connections, ICMP errors about either) are translated, and a new
/// connection to a published port is DNATed to its container (the client's address is kept,
/// as Docker does) and sent straight to the container's bridge.
#[classifier]
pub fn np_ext_in(ctx: TcContext) -> i32 {
    translate(&ctx, Side::External).unwrap_or_else(|reason| drop::notify(&ctx, reason))
}

/// TC ingress on each netpath bridge: replies of published connections (back out of the
/// interface the client came in on), hairpin connections (a container reaching a published
/// port through a host address, SNATed to the target network's gateway so that the replies
/// come back through the host, as with Docker's proxy), and masquerade of containers'
/// connections to the outside.
#[classifier]
pub fn np_br_in(ctx: TcContext) -> i32 {
    translate(&ctx, Side::Bridge).unwrap_or_else(|reason| drop::notify(&ctx, reason))
}

/// TC ingress on the host end of each container's veth: what `np_br_in` does, one hop
/// earlier, so that translated packets skip the bridge and the second pass through the
/// stack. A new connection from an address that is not this veth's container is left to
/// `np_br_in`. Before anything else, a frame whose source is not the one netpath assigned
/// to the container is dropped (`source::check`).
#[classifier]
pub fn np_veth_in(ctx: TcContext) -> i32 {
    translate(&ctx, Side::Container).unwrap_or_else(|reason| drop::notify(&ctx, reason))
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
