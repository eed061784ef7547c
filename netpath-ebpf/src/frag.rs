//! IPv4 fragments. Only a datagram's first fragment carries the transport header, so only
//! it can be matched against conntrack: it is translated as any packet, and what became of
//! it is recorded under the datagram's reassembly key (source, destination, protocol,
//! identification, as it arrived): the key of the conntrack entry that translated it, or
//! that it was left alone. The later fragments look that record up and follow the entry:
//! their addresses rewritten with the IPv4 checksum only (the transport checksum lives in
//! the first fragment, and its pseudo-header-aware update there already accounts for the
//! whole datagram's new addresses and ports), their TTL decremented, and sent where the
//! first went. Whole packets never get here: the fast path pays one comparison.
use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use netpath_common::{Counter, CtKey, DropReason, FRAG_PASS, FragKey, PROTO_ICMP};

use crate::{
    access::at,
    conntrack::lookup,
    deliver::redirect,
    maps::{NP_FRAGS, count, count_traffic},
    nat,
    parse::{Frag, Packet},
    pipeline::Side,
};

/// The datagram's reassembly key. The identification is read here, not kept by `parse`:
/// only fragments need it, and every value the pipeline keeps live costs stack room.
#[inline(always)]
fn key(ctx: &TcContext, p: &Packet) -> Option<FragKey> {
    Some(FragKey {
        src_addr: p.h.tuple.src_addr,
        dst_addr: p.h.tuple.dst_addr,
        id: u16::from_be(at(ctx, p.h.l3 + 4)?),
        proto: p.h.tuple.proto,
        _pad: 0,
    })
}

/// Records what became of `p` if it is a first fragment: translated by the conntrack entry
/// under its own tuple (`translated`), or left alone. A failed insert only makes the later
/// fragments orphans (counted). Only the key is stored, not a copy of the entry: the
/// pipeline's stack frame is close to the verifier's limit.
#[inline(always)]
pub fn remember(ctx: &TcContext, p: &Packet, translated: bool) {
    if p.frag != Frag::First {
        return;
    }
    let Some(key) = key(ctx, p) else {
        return;
    };
    let _ = if translated {
        NP_FRAGS.insert(key, p.h.tuple, 0)
    } else {
        NP_FRAGS.insert(key, CtKey::new([0; 4], [0; 4], 0, 0, FRAG_PASS), 0)
    };
}

/// A later fragment: translated and sent as its first fragment was, or left alone if that
/// was. One whose first fragment was never seen (it came first, or its record or entry is
/// gone) is an orphan: netpath cannot know whether or how to translate it. Passing it on
/// untranslated would send a container's private source address out (masquerade) or hand
/// the host a fragment of a datagram whose other fragments went to a container (published
/// port), which can never be reassembled; so a TCP or UDP orphan is dropped and counted,
/// as the lost fragment it would have become anyway, and the sender's (or application's)
/// retransmission recovers. An ICMP orphan passes: its first fragment may have been an
/// error or a type netpath leaves alone, which record nothing.
#[inline(always)]
pub fn follow(ctx: &TcContext, p: &Packet, now: u64, side: Side) -> Result<i32, DropReason> {
    let orphan = || {
        if p.h.tuple.proto == PROTO_ICMP {
            Ok(TC_ACT_OK)
        } else {
            Err(DropReason::FragOrphan)
        }
    };
    let Some(key) = key(ctx, p) else {
        return orphan();
    };
    // SAFETY: plain data; a concurrent update can only replace it whole.
    let Some(ct) = (unsafe { NP_FRAGS.get(key) }) else {
        return orphan();
    };
    if ct.proto == FRAG_PASS {
        return Ok(TC_ACT_OK);
    }
    let Some(e) = lookup(ct, now) else {
        return orphan();
    };
    nat::rewrite_l3(ctx, p, e.src_addr, e.dst_addr, e.redirect_ifindex != 0)?;
    count(Counter::FragTranslated);
    count_traffic(side.direction(), p.h.tuple.proto, ctx.len(), false);
    redirect(ctx, e, now)
}
