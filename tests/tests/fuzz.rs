//! The datapath fuzzer (issue #14, item 7): crafted and mutated packets pushed through every TC
//! program with BPF_PROG_TEST_RUN, against a state with publishes, a container endpoint,
//! masquerade and tracked connections, checking per packet that nothing is ever corrupted:
//! a valid TC verdict; an untouched packet byte-identical; a rewritten one changed only in its
//! tuple, TTL, checksums and (redirected) MACs, with checksums that were valid still valid
//! from scratch and a UDP checksum of 0 still 0; every drop counted under exactly one reason.
//!
//! `NETPATH_FUZZ_CASES` (default 100,000), `NETPATH_FUZZ_SEED` (default fixed) and
//! `NETPATH_FUZZ_SECS` (default unbounded) size a run; `cargo xtask fuzz --secs N` runs a long
//! one with a random seed. Each case is a short sequence of packets run from the same saved
//! conntrack state, so a failure reproduces from its seed and proptest shrinks it.
use std::{
    cell::RefCell,
    time::{Duration, Instant},
};

use netpath_common::{Counter, CtEntry, CtKey, PROTO_ICMP, PROTO_TCP, PROTO_UDP, programs};
use netpath_tests::packet::{
    ACK, CLIENT, CONTAINER, Datapath, GATEWAY, HOST, OTHER_CONTAINER, PKT_SRC_MAC, Pkt, ROUTER,
    SERVER, SYN, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, bridge, echo, fold, in_fresh_netns,
    masquerading,
};
use proptest::{
    prelude::*,
    test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner},
};

/// What CI runs: enough to reach every path many times, in seconds.
const DEFAULT_CASES: u64 = 100_000;
const DEFAULT_SEED: u64 = 0x6e65_7470_6174_6814;
/// Cases per proptest run; each chunk has its own seed derived from the run's.
const CHUNK: u32 = 2_000;
/// The NAT port range of the fuzzed state: two ports, both taken by the saved connections to
/// SERVER:80 from source port 40000, so that another one runs out.
const NAT_PORTS: (u16, u16) = (50000, 50001);

const ETH_P_IP: u16 = 0x0800;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={v}: {e}")))
}

// ---------------------------------------------------------------------------------------
// Packets: a structured description (what proptest generates and shrinks) and its bytes.

#[derive(Clone, Debug)]
enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    /// `csum: false` sends 0, "no checksum".
    Udp {
        sport: u16,
        dport: u16,
        csum: bool,
    },
    Echo {
        request: bool,
        id: u16,
    },
    /// An ICMP error (type 3, 11, 12 or any other) quoting the first `quoted_len` bytes of
    /// `quoted` (which may well be bogus itself).
    Error {
        icmp_type: u8,
        code: u8,
        quoted: Box<Ip>,
        quoted_len: usize,
    },
    /// Another protocol, random bytes after the IPv4 header.
    Other {
        proto: u8,
    },
}

#[derive(Clone, Debug)]
struct Ip {
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    /// Flags and fragment offset (MF 0x2000, DF 0x4000).
    frag: u16,
    /// Option bytes, padded with zeros to a multiple of 4 (at most 40).
    options: Vec<u8>,
    l4: L4,
    payload: Vec<u8>,
}

impl Ip {
    fn proto(&self) -> u8 {
        match &self.l4 {
            L4::Tcp { .. } => PROTO_TCP,
            L4::Udp { .. } => PROTO_UDP,
            L4::Echo { .. } | L4::Error { .. } => PROTO_ICMP,
            L4::Other { proto } => *proto,
        }
    }

    /// The IPv4 packet with every checksum correct.
    fn build(&self) -> Vec<u8> {
        let mut l4 = match &self.l4 {
            L4::Tcp {
                sport,
                dport,
                flags,
            } => {
                let mut h = [0u8; 20];
                h[..2].copy_from_slice(&sport.to_be_bytes());
                h[2..4].copy_from_slice(&dport.to_be_bytes());
                h[4..8].copy_from_slice(&[0, 0, 0, 1]);
                h[12] = 0x50;
                h[13] = *flags;
                h[14..16].copy_from_slice(&[0xff, 0xff]);
                h.to_vec()
            }
            L4::Udp { sport, dport, .. } => {
                let mut h = [0u8; 8];
                h[..2].copy_from_slice(&sport.to_be_bytes());
                h[2..4].copy_from_slice(&dport.to_be_bytes());
                h[4..6].copy_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                h.to_vec()
            }
            L4::Echo { request, id } => {
                let mut h = vec![if *request { 8 } else { 0 }, 0, 0, 0];
                h.extend_from_slice(&id.to_be_bytes());
                h.extend_from_slice(&[0, 1]);
                h
            }
            L4::Error {
                icmp_type,
                code,
                quoted,
                quoted_len,
            } => {
                let mut h = vec![*icmp_type, *code, 0, 0, 0, 0, 0x05, 0x00];
                let q = quoted.build();
                h.extend_from_slice(&q[..(*quoted_len).min(q.len())]);
                h
            }
            L4::Other { .. } => Vec::new(),
        };
        l4.extend_from_slice(&self.payload);
        let mut options = self.options.clone();
        options.truncate(40);
        while !options.len().is_multiple_of(4) {
            options.push(0);
        }
        let ihl = 20 + options.len();
        let mut p = vec![0x40 | (ihl / 4) as u8, 0];
        p.extend_from_slice(&((ihl + l4.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0x12, 0x34]);
        p.extend_from_slice(&self.frag.to_be_bytes());
        p.extend_from_slice(&[self.ttl, self.proto(), 0, 0]);
        p.extend_from_slice(&self.src);
        p.extend_from_slice(&self.dst);
        p.extend(options);
        p.extend(l4);
        let mut frame = eth(ETH_P_IP);
        frame.extend(p);
        if !matches!(&self.l4, L4::Udp { csum: false, .. }) {
            fix_checksums(&mut frame);
        } else {
            fix_ip_checksum(&mut frame);
        }
        frame.split_off(14)
    }
}

fn eth(ethertype: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0x42, 0xac, 0x11, 0, 2, 0x02, 0, 0, 0, 0, 1];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// How a checksum is left after the packet is built.
#[derive(Clone, Debug)]
enum Csum {
    Valid,
    Zero,
    /// Off by this (nonzero) amount.
    Wrong(u16),
}

/// A frame: an IPv4 packet, then header fields overridden, checksums spoilt, bytes flipped,
/// checksums possibly recomputed over the result, and the frame possibly cut short.
#[derive(Clone, Debug)]
struct Frame {
    ethertype: u16,
    ip: Ip,
    ihl: Option<u8>,
    tot_len: Option<u16>,
    ip_csum: Csum,
    l4_csum: Csum,
    /// (position modulo the length, value to XOR there).
    flips: Vec<(usize, u8)>,
    /// Recompute both checksums after the flips, so that a mutated packet that gets
    /// translated is checked from scratch.
    refix: bool,
    /// Cut to this length (modulo the length, at least the Ethernet and IPv4 headers).
    cut: Option<usize>,
}

impl Frame {
    fn build(&self) -> Vec<u8> {
        let mut f = eth(self.ethertype);
        f.extend(self.ip.build());
        if let Some(ihl) = self.ihl {
            f[14] = (f[14] & 0xf0) | (ihl & 0x0f);
        }
        if let Some(tot_len) = self.tot_len {
            f[16..18].copy_from_slice(&tot_len.to_be_bytes());
        }
        if self.ihl.is_some() || self.tot_len.is_some() {
            fix_ip_checksum(&mut f);
        }
        spoil(&mut f, 24, &self.ip_csum);
        if let Some(off) = l4_csum_off(&f) {
            spoil(&mut f, off, &self.l4_csum);
        }
        for &(pos, x) in &self.flips {
            let i = pos % f.len();
            f[i] ^= x;
        }
        if self.refix {
            fix_checksums(&mut f);
        }
        // BPF_PROG_TEST_RUN refuses frames shorter than their L3 header (the kernel's skbs
        // always hold it): cut no shorter, pad (as Ethernet does) what is.
        let min = match u16::from_be_bytes([f[12], f[13]]) {
            ETH_P_IP => 34,
            0x86dd => 54,
            _ => 15,
        };
        if let Some(cut) = self.cut
            && f.len() > min
        {
            f.truncate(min + cut % (f.len() - min + 1));
        }
        if f.len() < min {
            f.resize(min, 0);
        }
        f
    }
}

fn spoil(f: &mut [u8], off: usize, how: &Csum) {
    if off + 2 > f.len() {
        return;
    }
    let v = u16::from_be_bytes([f[off], f[off + 1]]);
    let new = match how {
        Csum::Valid => v,
        Csum::Zero => 0,
        Csum::Wrong(d) => v.wrapping_add(*d),
    };
    f[off..off + 2].copy_from_slice(&new.to_be_bytes());
}

// ---------------------------------------------------------------------------------------
// Checksums, recomputed from scratch over a frame.

/// The IPv4 header of a frame: its offset (14) and length, when it is all there.
fn ip_header(f: &[u8]) -> Option<usize> {
    if f.len() < 34 || u16::from_be_bytes([f[12], f[13]]) != ETH_P_IP {
        return None;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    (ihl >= 20 && 14 + ihl <= f.len()).then_some(ihl)
}

fn is_fragment(f: &[u8]) -> bool {
    u16::from_be_bytes([f[20], f[21]]) & 0x3fff != 0
}

/// The offset of the L4 checksum of a TCP, UDP or ICMP packet, when its header is there.
fn l4_csum_off(f: &[u8]) -> Option<usize> {
    let ihl = ip_header(f)?;
    let l4 = 14 + ihl;
    let (off, need) = match f[23] {
        PROTO_TCP => (16, 20),
        PROTO_UDP => (6, 8),
        PROTO_ICMP => (2, 8),
        _ => return None,
    };
    (l4 + need <= f.len()).then_some(l4 + off)
}

fn ip_checksum_ok(f: &[u8]) -> Option<bool> {
    let ihl = ip_header(f)?;
    Some(fold(0, &f[14..14 + ihl]) == 0)
}

/// The L4 checksum's state: valid, wrong, or (UDP) absent; over the rest of the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum L4Sum {
    Valid,
    Wrong,
    Absent,
}

fn l4_sum(f: &[u8]) -> Option<L4Sum> {
    let off = l4_csum_off(f)?;
    let ihl = ip_header(f)?;
    let l4 = &f[14 + ihl..];
    let proto = f[23];
    if proto == PROTO_UDP && f[off..off + 2] == [0, 0] {
        return Some(L4Sum::Absent);
    }
    let sum = if proto == PROTO_ICMP {
        fold(0, l4)
    } else {
        let mut pseudo = f[26..34].to_vec();
        pseudo.extend_from_slice(&[0, proto]);
        pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        fold(0, &[pseudo, l4.to_vec()].concat())
    };
    Some(if sum == 0 { L4Sum::Valid } else { L4Sum::Wrong })
}

fn fix_ip_checksum(f: &mut [u8]) {
    if let Some(ihl) = ip_header(f) {
        f[24..26].copy_from_slice(&[0, 0]);
        let c = fold(0, &f[14..14 + ihl]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
    }
}

fn fix_checksums(f: &mut [u8]) {
    fix_ip_checksum(f);
    let Some(off) = l4_csum_off(f) else { return };
    f[off..off + 2].copy_from_slice(&[0, 0]);
    let l4 = 14 + ip_header(f).unwrap();
    let proto = f[23];
    let c = if proto == PROTO_ICMP {
        fold(0, &f[l4..])
    } else {
        let mut pseudo = f[26..34].to_vec();
        pseudo.extend_from_slice(&[0, proto]);
        pseudo.extend_from_slice(&((f.len() - l4) as u16).to_be_bytes());
        let c = fold(0, &[pseudo, f[l4..].to_vec()].concat());
        if proto == PROTO_UDP && c == 0 {
            0xffff
        } else {
            c
        }
    };
    f[off..off + 2].copy_from_slice(&c.to_be_bytes());
}

// ---------------------------------------------------------------------------------------
// Generators.

fn addr() -> impl Strategy<Value = [u8; 4]> {
    prop_oneof![
        Just(CLIENT),
        Just(HOST),
        Just(CONTAINER),
        Just(OTHER_CONTAINER),
        Just(GATEWAY),
        Just(SERVER),
        Just(ROUTER),
        Just([192, 0, 2, 7]),
        Just([172, 18, 0, 2]),
        any::<[u8; 4]>(),
    ]
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![
        prop::sample::select(vec![
            8088u16, 5353, 9090, 80, 53, 90, 40000, 40001, 40002, 33333, 4433, 0
        ]),
        NAT_PORTS.0..=NAT_PORTS.1,
        any::<u16>(),
    ]
}

/// TCP, UDP, echo or another protocol between addresses and ports of the state.
fn plain_l4() -> impl Strategy<Value = L4> {
    prop_oneof![
        3 => (port(), port(), any::<u8>()).prop_map(|(sport, dport, flags)| L4::Tcp {
            sport,
            dport,
            flags
        }),
        3 => (port(), port(), prop::bool::weighted(0.8))
            .prop_map(|(sport, dport, csum)| L4::Udp { sport, dport, csum }),
        2 => (any::<bool>(), port()).prop_map(|(request, id)| L4::Echo { request, id }),
        1 => any::<u8>().prop_map(|proto| L4::Other { proto }),
    ]
}

/// The L4 header of a tracked tuple, as it is on the wire.
fn l4_of(k: &CtKey, flags: u8, csum: bool) -> L4 {
    match k.proto {
        PROTO_TCP => L4::Tcp {
            sport: k.src_port,
            dport: k.dst_port,
            flags,
        },
        PROTO_UDP => L4::Udp {
            sport: k.src_port,
            dport: k.dst_port,
            csum,
        },
        _ if k.src_port != 0 => L4::Echo {
            request: true,
            id: k.src_port,
        },
        _ => L4::Echo {
            request: false,
            id: k.dst_port,
        },
    }
}

/// New connections: to the published ports from anywhere, and from containers to the
/// outside, often from source ports that saved connections use (port allocation, exhaustion).
fn opener() -> impl Strategy<Value = Ip> {
    let published = prop_oneof![
        Just((HOST, 8088, PROTO_TCP)),
        Just((HOST, 5353, PROTO_UDP)),
        Just((HOST, 9090, PROTO_TCP)),
        Just((GATEWAY, 9090, PROTO_TCP)),
    ];
    let inbound = (addr(), port(), published)
        .prop_map(|(src, sport, (dst, dport, proto))| CtKey::new(src, dst, sport, dport, proto));
    let outbound = (
        (2u8..8).prop_map(|x| [172, 17, 0, x]),
        prop::sample::select(vec![40000u16, 40002, 50000]),
        prop_oneof![Just(SERVER), addr()],
        prop::sample::select(vec![80u16, 4433, 53]),
        prop::sample::select(vec![PROTO_TCP, PROTO_UDP]),
    )
        .prop_map(|(src, sport, dst, dport, proto)| CtKey::new(src, dst, sport, dport, proto));
    let flags = prop_oneof![4 => Just(SYN), 1 => any::<u8>()];
    (
        prop_oneof![inbound, outbound],
        flags,
        prop::bool::weighted(0.8),
    )
        .prop_flat_map(|(k, flags, csum)| {
            ip_with(Just(l4_of(&k, flags, csum)), Just((k.src_addr, k.dst_addr)))
        })
}

fn options() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => Just(Vec::new()),
        // NOPs then End of list.
        1 => (1usize..=40).prop_map(|n| {
            let mut o = vec![1u8; n - 1];
            o.push(0);
            o
        }),
        1 => prop::collection::vec(any::<u8>(), 1..=40),
    ]
}

fn ip_with(
    l4: impl Strategy<Value = L4>,
    src_dst: impl Strategy<Value = ([u8; 4], [u8; 4])>,
) -> impl Strategy<Value = Ip> {
    let ttl = prop_oneof![6 => Just(64u8), 1 => Just(1u8), 1 => Just(0u8), 1 => Just(2u8), 1 => any::<u8>()];
    let frag = prop_oneof![
        8 => Just(0u16),
        4 => Just(0x4000u16),
        1 => Just(0x2000u16),
        1 => 1u16..0x2000,
        1 => any::<u16>(),
    ];
    let payload = prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..8),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ];
    (src_dst, ttl, frag, options(), l4, payload).prop_map(
        |((src, dst), ttl, frag, options, l4, payload)| Ip {
            src,
            dst,
            ttl,
            frag,
            options,
            l4,
            payload,
        },
    )
}

/// Packets about the state: of its tracked tuples, random ones, and ICMP errors quoting
/// either (the quoted packet as it left translated: the reverse of a tracked tuple).
fn packet(flows: Vec<CtKey>) -> impl Strategy<Value = Ip> {
    let flow = prop::sample::select(flows);
    let tracked =
        (flow.clone(), any::<u8>(), prop::bool::weighted(0.8)).prop_flat_map(|(k, flags, csum)| {
            ip_with(Just(l4_of(&k, flags, csum)), Just((k.src_addr, k.dst_addr)))
        });
    let random = ip_with(plain_l4(), (addr(), addr()));
    let error_type = prop_oneof![
        4 => prop::sample::select(vec![3u8, 11, 12]),
        1 => any::<u8>(),
    ];
    let quoted_len = prop_oneof![4 => Just(28usize), 2 => 20usize..=80, 1 => 0usize..20];
    let about_flow = (flow, any::<u8>(), any::<bool>()).prop_flat_map(|(k, flags, csum)| {
        let q = k.reversed();
        let quoted = ip_with(Just(l4_of(&q, flags, csum)), Just((q.src_addr, q.dst_addr)));
        // From a router on the way or from the quoted packet's destination itself.
        let outer = prop_oneof![
            Just((ROUTER, q.src_addr)),
            Just((q.dst_addr, q.src_addr)),
            (addr(), addr())
        ];
        (quoted, outer)
    });
    let about_flow = (
        about_flow,
        error_type.clone(),
        any::<u8>(),
        quoted_len.clone(),
    )
        .prop_flat_map(|((quoted, outer), icmp_type, code, quoted_len)| {
            let l4 = L4::Error {
                icmp_type,
                code,
                quoted: Box::new(quoted),
                quoted_len,
            };
            ip_with(Just(l4), Just(outer))
        });
    let about_random = (
        ip_with(plain_l4(), (addr(), addr())),
        error_type,
        any::<u8>(),
        quoted_len,
    )
        .prop_flat_map(|(quoted, icmp_type, code, quoted_len)| {
            let l4 = L4::Error {
                icmp_type,
                code,
                quoted: Box::new(quoted),
                quoted_len,
            };
            ip_with(Just(l4), (addr(), addr()))
        });
    prop_oneof![
        4 => tracked,
        2 => opener(),
        3 => random,
        2 => about_flow,
        1 => about_random,
    ]
}

fn frame(flows: Vec<CtKey>) -> impl Strategy<Value = Frame> {
    let csum = || {
        prop_oneof![
            12 => Just(Csum::Valid),
            1 => Just(Csum::Zero),
            1 => (1u16..=0xffff).prop_map(Csum::Wrong),
        ]
    };
    let ethertype = prop_oneof![30 => Just(ETH_P_IP), 1 => any::<u16>()];
    let ihl = prop_oneof![12 => Just(None), 1 => (0u8..16).prop_map(Some)];
    let tot_len = prop_oneof![12 => Just(None), 1 => any::<u16>().prop_map(Some)];
    let flips = prop_oneof![
        4 => Just(Vec::new()),
        1 => prop::collection::vec((any::<usize>(), 1u8..=255), 1..4),
    ];
    let cut = prop_oneof![10 => Just(None), 1 => any::<usize>().prop_map(Some)];
    (
        ethertype,
        packet(flows),
        ihl,
        tot_len,
        csum(),
        csum(),
        flips,
        any::<bool>(),
        cut,
    )
        .prop_map(
            |(ethertype, ip, ihl, tot_len, ip_csum, l4_csum, flips, refix, cut)| Frame {
                ethertype,
                ip,
                ihl,
                tot_len,
                ip_csum,
                l4_csum,
                flips,
                refix,
                cut,
            },
        )
}

/// Which program runs the packet, and on which interfaces (indices into [`State::ifaces`]
/// for np_isolate, whose ingress and egress interfaces decide).
#[derive(Clone, Copy, Debug)]
enum Hook {
    External,
    Bridge,
    Veth,
    Isolate { from: usize, to: usize },
}

fn hook() -> impl Strategy<Value = Hook> {
    prop_oneof![
        3 => Just(Hook::External),
        3 => Just(Hook::Bridge),
        2 => Just(Hook::Veth),
        2 => (0usize..4, 0usize..4).prop_map(|(from, to)| Hook::Isolate { from, to }),
    ]
}

// ---------------------------------------------------------------------------------------
// The state the packets meet, and the invariants.

struct State {
    dp: Datapath,
    veth: u32,
    /// The host (0), the bridge of network 1, a bridge of network 2, the external interface.
    ifaces: [u32; 4],
    saved: Vec<(CtKey, CtEntry)>,
    /// Conntrack may differ from `saved`.
    dirty: bool,
}

impl State {
    /// Publishes (the harness's), masquerade with a resolved next hop, a container
    /// endpoint on a veth, a second network, and connections of every kind tracked.
    fn new() -> State {
        let mut dp = masquerading(NAT_PORTS);
        dp.resolve_next_hop();
        let veth = bridge("vethhost", None);
        dp.add_endpoint(CONTAINER, veth);
        // Its source is checked: forged frames through the veth are dropped as spoofed.
        dp.set_source(veth, CONTAINER, PKT_SRC_MAC, 0);
        let other = bridge("np1", Some("172.18.0.1/16"));
        dp.add_bridge(other, 2, 0);
        let (ext, br) = (dp.ext, dp.bridge);
        let (ext_in, br_in, veth_in) = (programs::EXT_IN, programs::BR_IN, programs::VETH_IN);
        let setup = [
            // Published TCP, answered; published UDP; the every-address publish; hairpin.
            (
                ext_in,
                ext,
                Pkt::tcp(CLIENT, 40000, HOST, 8088, SYN).build(),
            ),
            (
                br_in,
                br,
                Pkt::tcp(CONTAINER, 80, CLIENT, 40000, SYN | ACK).build(),
            ),
            (ext_in, ext, Pkt::udp(CLIENT, 33333, HOST, 5353).build()),
            (
                ext_in,
                ext,
                Pkt::tcp(CLIENT, 40001, GATEWAY, 9090, SYN).build(),
            ),
            (
                br_in,
                br,
                Pkt::tcp(OTHER_CONTAINER, 50000, HOST, 8088, SYN).build(),
            ),
            // Masquerade from the veth and from the bridge (whose source port is taken, so
            // it gets the NAT range, which the third takes up), UDP, ICMP echo; and a
            // connection from the other network.
            (
                veth_in,
                veth,
                Pkt::tcp(CONTAINER, 40000, SERVER, 80, SYN).build(),
            ),
            (
                br_in,
                br,
                Pkt::tcp(OTHER_CONTAINER, 40000, SERVER, 80, SYN).build(),
            ),
            (
                br_in,
                br,
                Pkt::tcp([172, 17, 0, 4], 40000, SERVER, 80, SYN).build(),
            ),
            (
                br_in,
                br,
                Pkt::udp(OTHER_CONTAINER, 40002, SERVER, 4433).build(),
            ),
            (br_in, br, echo(CONTAINER, SERVER, 8, 0x1234)),
            (
                br_in,
                other,
                Pkt::udp([172, 18, 0, 2], 40003, HOST, 5353).build(),
            ),
        ];
        for (prog, ifindex, input) in setup {
            let (verdict, _) = dp.run(prog, ifindex, &input);
            assert_eq!(verdict, TC_ACT_REDIRECT, "setting up the state");
        }
        // Entries that never expire while the fuzzer runs (the timeouts use saturating
        // arithmetic): the state stays the same however long it runs.
        let saved: Vec<_> = dp
            .conntrack()
            .into_iter()
            .map(|(k, e)| {
                (
                    k,
                    CtEntry {
                        last_seen_ns: u64::MAX,
                        ..e
                    },
                )
            })
            .collect();
        assert_eq!(saved.len(), 20, "ten connections tracked: {saved:?}");
        State {
            ifaces: [0, br, other, ext],
            dp,
            veth,
            saved,
            dirty: true,
        }
    }

    fn run(&mut self, hook: Hook, input: &[u8]) -> (u32, Vec<u8>) {
        let (prog, ingress, ifindex) = match hook {
            Hook::External => (programs::EXT_IN, 0, self.dp.ext),
            Hook::Bridge => (programs::BR_IN, 0, self.dp.bridge),
            Hook::Veth => (programs::VETH_IN, 0, self.veth),
            Hook::Isolate { from, to } => (programs::ISOLATE, self.ifaces[from], self.ifaces[to]),
        };
        self.dp.run_ctx(prog, ingress, ifindex, input)
    }
}

const TRANSLATIONS: [Counter; 3] = [Counter::NatNew, Counter::MasqNew, Counter::IcmpError];
/// Where the conntrack hits are in a [`Datapath::counters`] reading: after the counters.
const HITS: usize = Counter::ALL.len();

fn is_drop(c: Counter) -> bool {
    c.name().starts_with("drop_")
}

/// Conntrack's own bookkeeping, which a packet may cause without being translated.
const BOOKKEEPING: [Counter; 4] = [
    Counter::CtInsert,
    Counter::CtRemove,
    Counter::CtExpired,
    Counter::PortRetry,
];

/// Whether `c` counts translated packets: every counter but the drops and the bookkeeping
/// (so that counters added later, e.g. of translated fragments, count as well).
fn is_translation(c: Counter) -> bool {
    !is_drop(c) && !BOOKKEEPING.contains(&c)
}

/// The invariants of one packet's run.
fn check(
    input: &[u8],
    verdict: u32,
    out: &[u8],
    before: &[u64],
    after: &[u64],
) -> Result<(), TestCaseError> {
    prop_assert!(
        [TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT].contains(&verdict),
        "verdict {verdict} is not one the programs return"
    );
    let delta = |c: Counter| after[c as usize] - before[c as usize];
    let drops: Vec<(&str, u64)> = Counter::ALL
        .iter()
        .filter(|&&c| is_drop(c) && delta(c) != 0)
        .map(|&c| (c.name(), delta(c)))
        .collect();
    if verdict == TC_ACT_SHOT {
        prop_assert!(
            drops.len() == 1 && drops[0].1 == 1,
            "a drop counted under exactly one reason, once: {drops:?}"
        );
        return Ok(());
    }
    prop_assert!(
        drops.is_empty(),
        "drops counted for a packet that passed: {drops:?}"
    );
    let translated = after[HITS] != before[HITS]
        || Counter::ALL
            .iter()
            .any(|&c| is_translation(c) && delta(c) != 0);
    let redirected = verdict == TC_ACT_REDIRECT;
    prop_assert!(
        !redirected || translated,
        "redirected without a translation counted"
    );
    if !translated {
        prop_assert_eq!(out, input, "untouched: byte-identical");
        return Ok(());
    }
    check_rewrite(input, out, redirected)
}

/// A translated packet: only tuple fields, TTL (when redirected), MACs (when redirected) and
/// checksums changed; checksums valid before are valid after, recomputed from scratch.
fn check_rewrite(input: &[u8], out: &[u8], redirected: bool) -> Result<(), TestCaseError> {
    prop_assert_eq!(out.len(), input.len(), "length kept");
    let Some(ihl) = ip_header(input) else {
        return Err(TestCaseError::fail(
            "translated a frame with no whole IPv4 header",
        ));
    };
    let ttl = if redirected {
        input[22].wrapping_sub(1)
    } else {
        input[22]
    };
    prop_assert_eq!(out[22], ttl, "TTL (decremented when forwarded)");
    let l4 = 14 + ihl;
    // What was rewritten lies within the IP total length: past it is padding.
    let later_fragment = u16::from_be_bytes([input[20], input[21]]) & 0x1fff != 0;
    let headers = match (later_fragment, input[23]) {
        (true, _) => ihl,
        (false, PROTO_TCP) => ihl + 20,
        (false, _) => ihl + 8,
    };
    let total = usize::from(u16::from_be_bytes([input[16], input[17]]));
    prop_assert!(
        total >= headers,
        "translated a packet whose total length {total} ends inside its headers"
    );
    let mut mutable: Vec<usize> = (22..34).filter(|&i| i != 23).collect();
    if redirected {
        mutable.extend(0..12);
    }
    match input[23] {
        PROTO_TCP => mutable.extend([l4, l4 + 1, l4 + 2, l4 + 3, l4 + 16, l4 + 17]),
        PROTO_UDP => mutable.extend([l4, l4 + 1, l4 + 2, l4 + 3, l4 + 6, l4 + 7]),
        PROTO_ICMP => {
            // Checksum and echo identifier; for an error, the quoted header's checksum,
            // addresses and ports (or identifier), and the quoted transport checksum when
            // the quote holds it.
            mutable.extend(l4 + 2..l4 + 6);
            let q = l4 + 8;
            if let (Some(&b), Some(&proto)) = (input.get(q), input.get(q + 9)) {
                let ql4 = q + usize::from(b & 0x0f) * 4;
                mutable.extend(q + 10..q + 20);
                mutable.extend(ql4..ql4 + 6);
                let csum = match proto {
                    PROTO_TCP => 16,
                    PROTO_UDP => 6,
                    _ => 2,
                };
                mutable.extend([ql4 + csum, ql4 + csum + 1]);
            }
        }
        p => return Err(TestCaseError::fail(format!("translated protocol {p}"))),
    }
    for (i, (a, b)) in input.iter().zip(out).enumerate() {
        prop_assert!(
            a == b || mutable.contains(&i),
            "byte {} changed: {:#04x} -> {:#04x}",
            i,
            a,
            b
        );
    }
    if ip_checksum_ok(input) == Some(true) {
        prop_assert_eq!(
            ip_checksum_ok(out),
            Some(true),
            "IPv4 checksum from scratch"
        );
    }
    if !is_fragment(input) {
        match l4_sum(input) {
            Some(L4Sum::Valid) => {
                prop_assert_eq!(l4_sum(out), Some(L4Sum::Valid), "L4 checksum from scratch")
            }
            Some(L4Sum::Absent) => {
                prop_assert_eq!(l4_sum(out), Some(L4Sum::Absent), "UDP checksum 0 stays 0")
            }
            _ => {}
        }
    }
    if input[23] == PROTO_ICMP {
        let q = l4 + 8;
        let quoted_ok = |f: &[u8]| {
            let b = *f.get(q)?;
            let qihl = usize::from(b & 0x0f) * 4;
            (qihl >= 20 && q + qihl <= f.len()).then(|| fold(0, &f[q..q + qihl]) == 0)
        };
        if quoted_ok(input) == Some(true) {
            prop_assert_eq!(quoted_ok(out), Some(true), "quoted IPv4 checksum");
        }
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn no_packet_is_ever_corrupted() {
    let cases = env_u64("NETPATH_FUZZ_CASES").unwrap_or(DEFAULT_CASES);
    let seed = env_u64("NETPATH_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let secs = env_u64("NETPATH_FUZZ_SECS");
    // The nested strategies need more stack than a test thread has (in debug builds); a
    // thread started in the fresh namespace is in it too.
    let (ran, elapsed, totals) = in_fresh_netns(move || {
        std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(move || fuzz(cases, seed, secs))
            .unwrap()
            .join()
            .unwrap()
    });
    report(ran, seed, elapsed, &totals);
    if secs.is_none() {
        assert_eq!(ran, cases);
    }
    // The translation paths, not only the pass-through, were exercised.
    for c in TRANSLATIONS {
        assert!(totals[c as usize] > 0, "no packet counted {}", c.name());
    }
    assert!(totals[HITS] > 0, "no conntrack hit");
}

/// Runs `cases` cases (or until `secs` have passed) from `seed`; returns how many ran, how
/// long they took and what the counters counted meanwhile.
fn fuzz(cases: u64, seed: u64, secs: Option<u64>) -> (u64, Duration, Vec<u64>) {
    {
        let state = RefCell::new(State::new());
        let flows: Vec<CtKey> = state.borrow().saved.iter().map(|(k, _)| *k).collect();
        let strategy = prop::collection::vec((hook(), frame(flows)), 1..=3);
        let start = Instant::now();
        let first = state.borrow().dp.counters();
        let deadline = secs.map(|s| start + Duration::from_secs(s));
        let mut ran = 0u64;
        let mut chunk = 0u64;
        while ran < cases && deadline.is_none_or(|d| Instant::now() < d) {
            let n = u32::try_from((cases - ran).min(u64::from(CHUNK))).unwrap();
            let mut rng_seed = [0u8; 32];
            rng_seed[..8].copy_from_slice(&seed.to_le_bytes());
            rng_seed[8..16].copy_from_slice(&chunk.to_le_bytes());
            let config = Config {
                cases: n,
                failure_persistence: None,
                max_shrink_iters: 10_000,
                ..Config::default()
            };
            let mut runner = TestRunner::new_with_rng(
                config,
                TestRng::from_seed(RngAlgorithm::ChaCha, &rng_seed),
            );
            let result = runner.run(&strategy, |case| {
                let mut s = state.borrow_mut();
                // Back to the saved conntrack when the last case changed it (cheaper than
                // always: a map update per entry).
                if s.dirty {
                    let saved = std::mem::take(&mut s.saved);
                    s.dp.reset_conntrack(&saved);
                    s.saved = saved;
                    s.dirty = false;
                }
                let mut before = s.dp.counters();
                for (i, (hook, frame)) in case.iter().enumerate() {
                    let input = frame.build();
                    let (verdict, out) = s.run(*hook, &input);
                    let after = s.dp.counters();
                    // Whatever translated or tracked may have written conntrack.
                    s.dirty |= after[HITS] != before[HITS]
                        || Counter::ALL
                            .iter()
                            .any(|&c| !is_drop(c) && before[c as usize] != after[c as usize]);
                    let checked = check(&input, verdict, &out, &before, &after);
                    before = after;
                    checked.map_err(|e| {
                        TestCaseError::fail(format!(
                            "packet {i} ({hook:?}): {e}\n  in:  {}\n  out: {} (verdict {verdict})",
                            hex(&input),
                            hex(&out)
                        ))
                    })?;
                }
                Ok(())
            });
            match result {
                Ok(()) => {}
                Err(TestError::Fail(reason, case)) => panic!(
                    "NETPATH_FUZZ_SEED={seed:#x}, chunk {chunk}: {reason}\nminimal case: {case:?}"
                ),
                Err(TestError::Abort(reason)) => panic!("aborted: {reason}"),
            }
            ran += u64::from(n);
            chunk += 1;
        }
        let last = state.borrow().dp.counters();
        let totals = last.iter().zip(&first).map(|(l, f)| l - f).collect();
        (ran, start.elapsed(), totals)
    }
}

#[allow(clippy::print_stderr, reason = "the fuzzer reports what it ran")]
fn report(cases: u64, seed: u64, elapsed: Duration, totals: &[u64]) {
    let counted: Vec<String> = Counter::ALL
        .iter()
        .filter(|&&c| totals[c as usize] > 0)
        .map(|&c| format!("{} {}", c.name(), totals[c as usize]))
        .chain([format!("conntrack hits {}", totals[HITS])])
        .collect();
    eprintln!(
        "fuzz: {cases} cases (NETPATH_FUZZ_SEED={seed:#x}) in {:.1} s; counted: {}",
        elapsed.as_secs_f64(),
        counted.join(", ")
    );
}
