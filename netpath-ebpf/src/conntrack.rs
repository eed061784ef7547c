//! Connection tracking in an LRU hash: one entry per direction, keyed by the tuple as it
//! arrives and holding the tuple to rewrite it to. An entry idle for longer than its state's
//! timeout counts as absent, so correctness needs no garbage collector; the LRU reclaims
//! the least recently used entries when the map is full.
use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_coarse_ns},
};
use bytemuck::Zeroable as _;
use netpath_common::{
    CT_FLAG_NEXT_HOP, CT_FLAG_REPLY, Counter, CtEntry, CtKey, CtState, DEFAULT_NAT_PORTS,
    DropReason, ct_timeout_secs, same_next_hop_tick,
};

use crate::{
    maps::{NP_CONFIG, NP_CT, count, count_n},
    parse::{Packet, TCP_FIN, TCP_RST},
};

const SEC: u64 = 1_000_000_000;
/// Other source ports tried for a new connection whose own is taken; a range this small or
/// smaller is searched completely, so exhaustion is exact there.
const PORT_TRIES: u32 = 32;
/// The errno of an insert with `BPF_NOEXIST` whose key exists.
const EEXIST: i32 = 17;

#[inline(always)]
fn timeout(proto: u8, state: u8) -> u64 {
    ct_timeout_secs(proto, state) * SEC
}

/// The configured source port range for NAT, inclusive.
#[inline(always)]
fn nat_ports() -> (u32, u32) {
    match NP_CONFIG.get(0) {
        Some(c) if c.nat_port_min != 0 && c.nat_port_min <= c.nat_port_max => {
            (u32::from(c.nat_port_min), u32::from(c.nat_port_max))
        }
        _ => (
            u32::from(DEFAULT_NAT_PORTS.0),
            u32::from(DEFAULT_NAT_PORTS.1),
        ),
    }
}

pub fn now() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// The key of the other direction: the reverse of the translated tuple.
#[inline(always)]
pub fn counterpart(e: &CtEntry, proto: u8) -> CtKey {
    CtKey::new(e.dst_addr, e.src_addr, e.dst_port, e.src_port, proto)
}

/// The entry under `key`, in place in the map: the one place where conntrack turns a map
/// value pointer into a reference, so that nothing else dereferences one.
#[inline(always)]
fn in_map(key: &CtKey) -> Option<&'static mut CtEntry> {
    let e = NP_CT.get_ptr_mut(key)?;
    // SAFETY: a map value stays valid for the program's run, even if its entry is deleted
    // or replaced meanwhile (RCU), and its fields are plain data. A run holds no two
    // references to one entry: it looks up a packet's tuple and the counterparts of entries,
    // the other direction of their connection, which is another entry. Other CPUs may write
    // the entry at the same time; such races are benign (last writer wins).
    Some(unsafe { &mut *e })
}

#[inline(always)]
fn fresh(e: &CtEntry, proto: u8, now: u64) -> bool {
    now.saturating_sub(e.last_seen_ns) <= timeout(proto, e.state)
}

/// The live entry for `key`. A direction that has gone quiet is still live while the other
/// direction is (one-way streams).
#[inline(always)]
pub fn lookup(key: &CtKey, now: u64) -> Option<&'static mut CtEntry> {
    let e = in_map(key)?;
    if fresh(e, key.proto, now) {
        return Some(e);
    }
    let live = in_map(&counterpart(e, key.proto)).is_some_and(|other| fresh(other, key.proto, now));
    if !live {
        count(Counter::CtExpired);
    }
    live.then_some(e)
}

/// Whether a packet should start a new connection over an existing entry: a TCP SYN on a
/// connection that was closing or closed reuses the tuple (as netfilter reopens TIME_WAIT).
#[inline(always)]
pub fn reopens(e: &CtEntry, p: &Packet) -> bool {
    p.is_tcp_syn() && e.state >= CtState::Closing as u8
}

/// Removes both entries of a connection, `e` being the one found under `key`.
#[inline(always)]
pub fn forget(key: &CtKey, e: &CtEntry) {
    let removed = u64::from(NP_CT.remove(counterpart(e, key.proto)).is_ok())
        + u64::from(NP_CT.remove(key).is_ok());
    count_n(Counter::CtRemove, removed);
}

/// Advances the connection's state with this packet and marks the direction as seen.
#[inline(always)]
pub fn track(entry: &mut CtEntry, p: &Packet, now: u64) {
    let state = if p.tcp_flags & TCP_RST != 0 {
        CtState::Closed as u8
    } else if p.tcp_flags & TCP_FIN != 0 {
        CtState::Closing as u8
    } else if entry.state == CtState::New as u8 && entry.flags & CT_FLAG_REPLY != 0 {
        CtState::Established as u8
    } else {
        entry.state
    };
    // States only move forward (New, Established, Closing, Closed) until a SYN reopens.
    if state > entry.state {
        entry.state = state;
        if let Some(other) = in_map(&counterpart(entry, p.h.tuple.proto)) {
            other.state = state;
        }
    }
    // The first packet of a tick asks the FIB for the next hop again (`deliver::redirect`).
    if !same_next_hop_tick(now, entry.last_seen_ns) {
        entry.flags &= !CT_FLAG_NEXT_HOP;
    }
    // Written only when the coarse clock has moved (once per tick of it, 1-4 ms by the
    // kernel's HZ), not per packet: a store takes the cache line from every other CPU, and
    // a connection's two entries, made together, usually share lines of the map's memory
    // while its two directions are handled on different CPUs. Stored on every packet, that
    // false sharing made the lookup's first read of an entry the costliest instruction of
    // an established packet.
    if entry.last_seen_ns != now {
        entry.last_seen_ns = now;
    }
}

/// The entry that translates the replies of `orig` back to it; where they go is the
/// caller's to fill in.
#[inline(always)]
pub fn reply_to(orig: &CtKey) -> CtEntry {
    CtEntry {
        src_addr: orig.dst_addr,
        dst_addr: orig.src_addr,
        src_port: orig.dst_port,
        dst_port: orig.src_port,
        state: CtState::New as u8,
        flags: CT_FLAG_REPLY,
        ..CtEntry::zeroed()
    }
}

/// Renews a connection that `orig` reopens, in place, when its translation `xlat` is the
/// one the old entry `old` holds (its source port may have been reassigned) and the old
/// reply entry still translates back to `orig`; `xlat` then becomes the renewed forward
/// entry, as stored. Cheaper than forgetting and creating both entries, which takes two
/// deletes and two LRU inserts. Returns whether it renewed.
#[inline(always)]
pub fn renew(
    old: &mut CtEntry,
    orig: &CtKey,
    xlat: &mut CtEntry,
    reply: &CtEntry,
    now: u64,
) -> bool {
    if (old.src_addr, old.dst_addr, old.dst_port) != (xlat.src_addr, xlat.dst_addr, xlat.dst_port) {
        return false;
    }
    let Some(back) = in_map(&counterpart(old, orig.proto)) else {
        return false;
    };
    let to_orig = (back.src_addr, back.dst_addr, back.src_port, back.dst_port);
    if to_orig != (orig.dst_addr, orig.src_addr, orig.dst_port, orig.src_port) {
        return false;
    }
    *back = CtEntry {
        last_seen_ns: now,
        ..*reply
    };
    xlat.src_port = old.src_port;
    xlat.state = CtState::New as u8;
    xlat.last_seen_ns = now;
    *old = *xlat;
    true
}

/// Frees the tuple of the entry `e` found under `key` if its connection is over: both of
/// its directions idle past their timeouts (as `lookup` sees it: a quiet direction of a live
/// one-way stream is not free). The expired entry is removed explicitly, with its other
/// direction when that still belongs to it, so that an insert with `BPF_NOEXIST` can take
/// the tuple; counted as `lookup` counts an expired entry, and as removals. Returns whether
/// the tuple is free now (another CPU may still take it first: the insert decides). Not
/// inlined: its keys would add to the translation's stack frame, which with logging on is
/// close to the verifier's 512 bytes.
#[inline(never)]
fn reclaim(key: &CtKey, e: &CtEntry, now: u64) -> bool {
    if fresh(e, key.proto, now) {
        return false;
    }
    let other_key = counterpart(e, key.proto);
    let mut removed = 0;
    if let Some(other) = in_map(&other_key) {
        if fresh(other, key.proto, now) {
            return false;
        }
        if counterpart(other, key.proto) == *key {
            removed += u64::from(NP_CT.remove(other_key).is_ok());
        }
    }
    removed += u64::from(NP_CT.remove(key).is_ok());
    count(Counter::CtExpired);
    count_n(Counter::CtRemove, removed);
    true
}

/// Creates both entries of a new connection from `orig` (as it arrived) to `xlat` (what it
/// becomes), `reply` being the translation back to `orig` (see `reply_to`) and where it
/// goes; `xlat` is then the forward entry, as stored.
///
/// The reply entry claims the translated tuple: it is inserted with `BPF_NOEXIST` (as
/// Cilium's `__snat_update`), so that of two CPUs choosing the same tuple at once only one
/// gets it and the other moves on, rather than overwriting the first connection's reply
/// entry and taking its replies. A tuple held by an expired connection is freed and claimed
/// again (`reclaim`). When the connection's own source port is taken, other source ports (ICMP
/// identifiers) from the NAT range are tried. Fails when no port was free, or when the map
/// refused an entry for another reason.
#[inline(always)]
pub fn create(
    orig: &CtKey,
    xlat: &mut CtEntry,
    reply: &mut CtEntry,
    now: u64,
) -> Result<(), DropReason> {
    reply.last_seen_ns = now;
    // Borrowed, not copied, into the inserts: the translation's stack frame is at the
    // verifier's limit.
    let reply: &CtEntry = reply;
    let (min, max) = nat_ports();
    // Never 0 (nat_ports keeps min <= max); `max(1)` lets the compiler see it, so that no
    // division-by-zero panic path reaches the verifier.
    let span = (max - min + 1).max(1);
    // SAFETY: no preconditions.
    let start = unsafe { bpf_get_prandom_u32() } % span;
    // The connection's own port first, then the range from a random point on.
    for i in 0..=PORT_TRIES {
        if i > 0 {
            if i > span {
                return Err(DropReason::NoPort);
            }
            count(Counter::PortRetry);
            xlat.src_port = (min + (start + i - 1) % span) as u16;
        }
        let reply_key = counterpart(xlat, orig.proto);
        let claim = || NP_CT.insert(reply_key, reply, u64::from(BPF_NOEXIST));
        // Usually free: claimed at once, with no lookup first. A tuple held by an expired
        // connection is freed, then claimed again.
        let mut claimed = claim();
        if claimed == Err(-EEXIST)
            && in_map(&reply_key).is_some_and(|existing| reclaim(&reply_key, existing, now))
        {
            claimed = claim();
        }
        match claimed {
            Ok(()) => {}
            // A live connection holds the tuple (another CPU may just have taken it): next
            // port.
            Err(e) if e == -EEXIST => continue,
            Err(_) => return Err(DropReason::CtInsert),
        }
        xlat.state = CtState::New as u8;
        xlat.last_seen_ns = now;
        // The forward entry's key is the connection's own tuple, which this packet owns:
        // BPF_ANY replaces an expired entry left under it (Cilium does the same).
        let forward: &CtEntry = xlat;
        if NP_CT.insert(orig, forward, u64::from(BPF_ANY)).is_err() {
            let _ = NP_CT.remove(reply_key);
            return Err(DropReason::CtInsert);
        }
        count_n(Counter::CtInsert, 2);
        return Ok(());
    }
    Err(DropReason::NoPort)
}
