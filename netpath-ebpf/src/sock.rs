//! Published ports reached from the host itself. Locally originated traffic never crosses
//! the TC hook of an external interface, so the socket's destination is translated when it
//! connects or sends, and translated back when it reads the peer's address: the application
//! sees the address it asked for. The programs sit on the root cgroup, which spans network
//! namespaces, and act only on sockets of netpath's namespace.
use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    programs::SockAddrContext,
};
use netpath_common::{PROTO_TCP, PROTO_UDP, SockOrig};

use crate::maps::{NP_CONFIG, NP_LOCAL_ADDRS, NP_SOCK_ORIG, find_publish};

const AF_INET: u32 = 2;

#[inline(always)]
fn ours(ctx: &SockAddrContext) -> bool {
    // SAFETY: the helper takes the program's context.
    let cookie = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    NP_CONFIG
        .get(0)
        .is_some_and(|c| c.netns_cookie != 0 && c.netns_cookie == cookie)
}

/// connect4 and sendmsg4: a published (address, port) becomes the container's.
#[inline(always)]
pub fn translate(ctx: &SockAddrContext) {
    if !ours(ctx) {
        return;
    }
    // SAFETY: the kernel hands every sock_addr program a valid bpf_sock_addr.
    let sa = unsafe { &mut *ctx.sock_addr };
    if sa.user_family != AF_INET {
        return;
    }
    let proto = match sa.protocol as u8 {
        p @ (PROTO_TCP | PROTO_UDP) => p,
        _ => return,
    };
    let addr = sa.user_ip4.to_ne_bytes();
    let port = u16::from_be(sa.user_port as u16);
    // SAFETY: plain data.
    let local = || addr[0] == 127 || unsafe { NP_LOCAL_ADDRS.get(addr) }.is_some();
    let Some(target) = find_publish(addr, port, proto, local) else {
        return;
    };
    sa.user_ip4 = u32::from_ne_bytes(target.container_addr);
    sa.user_port = u32::from(target.container_port.to_be());
    let orig = SockOrig {
        orig_addr: addr,
        real_addr: target.container_addr,
        orig_port: port,
        real_port: target.container_port,
    };
    // SAFETY: the helper takes the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let _ = NP_SOCK_ORIG.insert(cookie, orig, 0);
}

/// recvmsg4 and getpeername4: the container's address reads as the published one.
#[inline(always)]
pub fn restore(ctx: &SockAddrContext) {
    if !ours(ctx) {
        return;
    }
    // SAFETY: as in `translate`.
    let sa = unsafe { &mut *ctx.sock_addr };
    // SAFETY: the helper takes the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: plain data, copied at once.
    let Some(orig) = (unsafe { NP_SOCK_ORIG.get(cookie) }).copied() else {
        return;
    };
    if sa.user_ip4.to_ne_bytes() == orig.real_addr
        && u16::from_be(sa.user_port as u16) == orig.real_port
    {
        sa.user_ip4 = u32::from_ne_bytes(orig.orig_addr);
        sa.user_port = u32::from(orig.orig_port.to_be());
    }
}
