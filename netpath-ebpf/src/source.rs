//! Source validation on a container's host-side veth, as Cilium does (Docker does not):
//! an IPv4 frame from a container must carry the address and MAC netpath assigned to its
//! interface. Otherwise a container could forge a neighbour's address and take over its
//! flows (the replies of its published and masqueraded connections), or have a forged
//! source masqueraded out of the host.
use aya_ebpf::{bindings::__sk_buff, programs::TcContext};
use netpath_common::{DropReason, SOURCE_ANY};

use crate::{access::at, maps::NP_SOURCES};

/// `skb->protocol` of an IPv4 frame (network byte order).
const ETH_P_IP_BE: u32 = 0x0800u16.to_be() as u32;
/// Offsets in the Ethernet frame: the source MAC, and the IPv4 source address after a
/// 14-byte Ethernet header.
const ETH_SRC: usize = 6;
const IPV4_SRC: usize = 14 + 12;

/// Whether the frame in `skb`, arriving from a container, may go on.
///
/// - Only IPv4 is checked. ARP and everything else pass: ARP must keep working, and its
///   sender fields are not checked (a forged ARP reply can still poison a neighbour's cache
///   on the bridge; that is the bridge's business, not translation's).
/// - A source of 0.0.0.0 (a DHCP client's DISCOVER) is dropped like any other address the
///   container was not given: netpath assigns addresses statically and runs no DHCP
///   server. Broadcasts from the container's own address pass.
/// - A veth with no entry passes: `netpath run` fills the entry before it attaches the
///   program, so that only a veth netpath does not manage has none.
/// - An entry with [`SOURCE_ANY`] (`--allow-spoofed-source`) passes everything.
///
/// A subprogram of its own, called with the context pointer alone: inlined, or given the
/// `TcContext` (which then has to live on the stack), it grows the stack frame of
/// `np_veth_in`, which with logging on is at the verifier's limit.
#[inline(never)]
pub fn check(skb: *mut __sk_buff) -> Result<(), DropReason> {
    let ctx = &TcContext::new(skb);
    // SAFETY: `skb` is the context pointer the kernel hands to every TC program.
    let (protocol, ifindex) = unsafe { ((*skb).protocol, (*skb).ifindex) };
    if protocol != ETH_P_IP_BE {
        return Ok(());
    }
    // SAFETY: plain data; a concurrent update can only replace it whole.
    let Some(guard) = (unsafe { NP_SOURCES.get(ifindex) }) else {
        return Ok(());
    };
    if guard.flags & SOURCE_ANY != 0 {
        return Ok(());
    }
    // Compared as scalars, each read and compared on its own with an early return:
    // comparing `Option`s lets LLVM read a `None`'s undefined payload, which the verifier
    // refuses. A frame too short to hold the addresses is dropped too.
    let m = guard.mac;
    let Some(mac_hi) = at::<u32>(ctx, ETH_SRC) else {
        return Err(DropReason::Spoofed);
    };
    if mac_hi != u32::from_ne_bytes([m[0], m[1], m[2], m[3]]) {
        return Err(DropReason::Spoofed);
    }
    let Some(mac_lo) = at::<u16>(ctx, ETH_SRC + 4) else {
        return Err(DropReason::Spoofed);
    };
    if mac_lo != u16::from_ne_bytes([m[4], m[5]]) {
        return Err(DropReason::Spoofed);
    }
    let Some(addr) = at::<u32>(ctx, IPV4_SRC) else {
        return Err(DropReason::Spoofed);
    };
    if addr != u32::from_ne_bytes(guard.addr) {
        return Err(DropReason::Spoofed);
    }
    Ok(())
}
