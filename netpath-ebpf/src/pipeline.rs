//! The translation of a packet at a TC ingress hook, start to finish: parsed, matched
//! against conntrack (or opened as a new connection), rewritten, delivered.
use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use aya_log_ebpf::{debug, info};
use netpath_common::{Counter, CtEntry, Direction, DropReason};

use crate::{
    conntrack::{create, forget, lookup, now, renew, reopens, track},
    deliver::redirect,
    frag,
    maps::{count, count_traffic},
    nat,
    open::open,
    parse::{Frag, Headers, Packet, parse},
};

/// The hook a packet came in through, which decides what a new connection may become.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    External,
    Bridge,
    Container,
}

impl Side {
    pub fn direction(self) -> Direction {
        match self {
            Side::External => Direction::FromExternal,
            Side::Bridge | Side::Container => Direction::FromContainers,
        }
    }
}

/// The shared path of the TC ingress programs: ICMP errors and tracked connections first,
/// then what a new connection becomes. The verdict (`TC_ACT_OK` or a redirect), or why the
/// packet must be dropped.
#[inline(always)]
pub fn translate(ctx: &TcContext, side: Side) -> Result<i32, DropReason> {
    let Some(p) = parse(ctx) else {
        return validate(ctx, side, false).map(|()| TC_ACT_OK);
    };
    // A packet that would expire on the way through is the stack's: it sends the ICMP time
    // exceeded a router owes.
    if p.ttl <= 1 {
        return validate(ctx, side, false).map(|()| TC_ACT_OK);
    }
    let now = now();
    if p.frag == Frag::Later {
        validate(ctx, side, false)?;
        return frag::follow(ctx, &p, now, side);
    }
    if let Some(quoted) = &p.quoted {
        validate(ctx, side, false)?;
        return icmp_error(ctx, &p, quoted, now, side);
    }
    let t = &p.h.tuple;
    // An entry the packet does not reopen translates it; one it reopens (a SYN on a closed
    // connection) is renewed below, or forgotten.
    let (tracked, mut reopened) = match lookup(t, now) {
        Some(e) if reopens(e, &p) => (None, Some(e)),
        found => (found, None),
    };
    let bound = tracked.as_ref().is_some_and(|e| {
        // SAFETY: `skb` is the context pointer the kernel hands to every TC program.
        let ifindex = unsafe { (*ctx.skb.skb).ifindex };
        e.from_ifindex == ifindex && e.redirect_ifindex != 0
    });
    validate(ctx, side, bound)?;
    if let Some(e) = tracked {
        track(e, &p, now);
        return apply(ctx, &p, e, side, now, true);
    }
    let mut opened = open(ctx, &p, side);
    // A client that reuses its source port (every connection, under load) usually gets the
    // same translation again: both entries are then rewritten in place, with no map updates.
    // Otherwise the reopened connection's entries go before new ones are made.
    let renewed = match (reopened.as_deref_mut(), opened.as_mut()) {
        (Some(e), Some((xlat, reply, _))) => renew(e, t, xlat, reply, now),
        _ => false,
    };
    if let (Some(e), false) = (reopened, renewed) {
        forget(t, e);
    }
    let Some((mut xlat, mut reply, counter)) = opened else {
        frag::remember(ctx, &p, false);
        return Ok(TC_ACT_OK);
    };
    // Either way `xlat` is now the forward entry, as stored.
    if !renewed {
        create(t, &mut xlat, &mut reply, now)?;
    }
    count(counter);
    info!(
        ctx,
        "new connection from {:i}:{} to {:i}:{}",
        t.src_addr,
        t.src_port,
        xlat.dst_addr,
        xlat.dst_port
    );
    apply(ctx, &p, &mut xlat, side, now, false)
}

/// A frame from a container must come from the source netpath assigned to it
/// (`source::check`), unless it belongs to a connection `bound` to this veth: one whose entry
/// was bound to it when the connection opened (`CtEntry::from_ifindex`, set once the opening
/// packet had passed the check) and that sends it past the bridge. Its tuple's source is the
/// one validated then, and a forged MAC goes nowhere, as the frame gets the entry's. That
/// spares established connections the check's lookup.
#[inline(always)]
fn validate(ctx: &TcContext, side: Side, bound: bool) -> Result<(), DropReason> {
    if side == Side::Container && !bound {
        crate::source::check(ctx.skb.skb)?;
    }
    Ok(())
}

/// An ICMP error (unreachable, fragmentation needed, time exceeded) about a packet netpath
/// translated goes back to the packet's original sender, quoted packet translated back.
#[inline(always)]
fn icmp_error(
    ctx: &TcContext,
    p: &Packet,
    quoted: &Headers,
    now: u64,
    side: Side,
) -> Result<i32, DropReason> {
    // The quoted packet went out translated; the entry of its opposite direction holds the
    // original tuple.
    let back = quoted.tuple.reversed();
    let Some(entry) = lookup(&back, now) else {
        return Ok(TC_ACT_OK);
    };
    nat::rewrite_icmp_error(ctx, p, quoted, entry, entry.redirect_ifindex != 0)?;
    count(Counter::IcmpError);
    debug!(
        ctx,
        "icmp error from {:i} translated for {:i}", p.h.tuple.src_addr, entry.dst_addr
    );
    count_traffic(side.direction(), p.h.tuple.proto, ctx.len(), false);
    redirect(ctx, entry, now)
}

/// Rewrites the packet, then sends it out of the entry's interface or back to the stack;
/// counted as a conntrack hit if `hit` (the entry was found, not made).
#[inline(always)]
fn apply(
    ctx: &TcContext,
    p: &Packet,
    e: &mut CtEntry,
    side: Side,
    now: u64,
    hit: bool,
) -> Result<i32, DropReason> {
    nat::rewrite(ctx, p, e, e.redirect_ifindex != 0)?;
    frag::remember(ctx, p, true);
    count_traffic(side.direction(), p.h.tuple.proto, ctx.len(), hit);
    redirect(ctx, e, now)
}
