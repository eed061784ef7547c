//! Types and names shared by the eBPF programs and userspace. Everything that crosses the
//! kernel/userspace boundary is defined here once, `#[repr(C)]`, with no implicit padding.
//! Addresses are stored as their four bytes and ports in host byte order, so that `bpftool
//! map dump` shows readable values.
#![no_std]

/// Program names, as the functions are called in netpath-ebpf.
pub mod programs {
    /// TC egress on every netpath bridge: drops traffic routed in from another netpath
    /// network, unless it belongs to a translated (published) flow.
    pub const ISOLATE: &str = "np_isolate";
    /// TC ingress on the external interfaces: DNAT of published ports.
    pub const EXT_IN: &str = "np_ext_in";
    /// TC ingress on every netpath bridge: reverse translation of replies and hairpin NAT.
    pub const BR_IN: &str = "np_br_in";
    /// TC ingress on the host end of each container's veth: what BR_IN does, before the
    /// bridge.
    pub const VETH_IN: &str = "np_veth_in";
    /// cgroup connect4 / sendmsg4 / recvmsg4 / getpeername4: published ports reached from the
    /// host itself (local traffic never crosses a TC hook of an external interface).
    pub const CONNECT4: &str = "np_connect4";
    pub const SENDMSG4: &str = "np_sendmsg4";
    pub const RECVMSG4: &str = "np_recvmsg4";
    pub const GETPEERNAME4: &str = "np_getpeername4";
}

/// Map names (kernel map names are cut at 15 bytes, so keep them short and prefixed).
pub mod maps {
    /// Bridge ifindex -> [`crate::BridgeInfo`].
    pub const BRIDGES: &str = "NP_BRIDGES";
    /// Per-CPU `u64` counters indexed by [`crate::Counter`].
    pub const COUNTERS: &str = "NP_COUNTERS";
    /// [`crate::PublishKey`] -> [`crate::PublishTarget`]: the published ports.
    pub const PUBLISH: &str = "NP_PUBLISH";
    /// [`crate::CtKey`] -> [`crate::CtEntry`]: connection tracking, one entry per direction.
    pub const CONNTRACK: &str = "NP_CT";
    /// IPv4 address (4 bytes) -> `u32` 1: the addresses local to the namespace, where
    /// publishes without a host address apply.
    pub const LOCAL_ADDRS: &str = "NP_LOCAL_ADDRS";
    /// Socket cookie -> [`crate::SockOrig`]: what a socket program rewrote, to undo it on
    /// recvmsg/getpeername.
    pub const SOCK_ORIG: &str = "NP_SOCK_ORIG";
    /// Single-slot array of [`crate::Config`].
    pub const CONFIG: &str = "NP_CONFIG";
    /// LPM trie of IPv4 prefixes (`u32` value 1) that containers reach with their own
    /// address: every netpath subnet and `--masquerade-exclude`.
    pub const MASQ_EXCLUDE: &str = "NP_MASQ_EXCL";
    /// ifindex -> `u32` 1: the external interfaces, the only ones masquerade sends out of
    /// (their ingress program translates the replies back).
    pub const EXTERNALS: &str = "NP_EXTERNALS";
    /// Per-CPU [`crate::Traffic`] indexed by [`crate::traffic_slot`].
    pub const TRAFFIC: &str = "NP_TRAFFIC";
    /// Container address (4 bytes) -> [`crate::Endpoint`].
    pub const ENDPOINTS: &str = "NP_ENDPOINTS";
    /// [`crate::FragKey`] -> [`crate::FragEntry`] (a [`crate::CtKey`]): what became of the
    /// first fragment of an IPv4 datagram, for its other fragments (LRU).
    pub const FRAGS: &str = "NP_FRAGS";
    /// Host-side veth ifindex -> [`crate::SourceGuard`]: the only source a container may
    /// send from through that veth.
    pub const SOURCES: &str = "NP_SOURCES";
    /// aya-log's ring buffer, shared by every program instance.
    pub const LOGS: &str = "AYA_LOGS";
    /// Its size in bytes, as aya-log-ebpf defines it.
    pub const LOGS_SIZE: u32 = 1 << 17;
}

/// Most netpath networks (bridges) one namespace can hold.
pub const MAX_NETWORKS: u32 = 1024;
/// Most published (host address, port, protocol) triples; a range counts one per port.
pub const MAX_PUBLISH: u32 = 65536;
/// Conntrack entries (two per connection); the LRU evicts the least recently used.
pub const MAX_CONNTRACK: u32 = 262144;
/// Local addresses of the namespace known to the socket programs.
pub const MAX_LOCAL_ADDRS: u32 = 256;
/// Sockets with a translated destination remembered at once (LRU).
pub const MAX_SOCK_ORIG: u32 = 65536;
/// Prefixes excluded from masquerade.
pub const MAX_MASQ_EXCLUDE: u32 = 4096;
/// External interfaces.
pub const MAX_EXTERNALS: u32 = 64;
/// Fragmented datagrams remembered at once (LRU): those in flight through the namespace.
pub const MAX_FRAGS: u32 = 4096;
/// Source ports masquerade and hairpin NAT allocate from when none are configured.
pub const DEFAULT_NAT_PORTS: (u16, u16) = (32768, 60999);

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// The name netpath shows for a protocol number.
pub const fn proto_name(proto: u8) -> &'static str {
    match proto {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        PROTO_ICMP => "icmp",
        _ => "other",
    }
}

/// What the datapath knows about one bridge, keyed by its ifindex.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BridgeInfo {
    /// netpath's identifier of the network the bridge belongs to (never 0).
    pub network_id: u32,
    /// [`BRIDGE_NO_MASQUERADE`].
    pub flags: u32,
}
const _: () = assert!(size_of::<BridgeInfo>() == 8);

/// The network's containers reach the outside with their own address: their new
/// connections are routed as they are, never masqueraded (Docker's
/// `enable_ip_masquerade=false`, CNI's `ipMasq: false`).
pub const BRIDGE_NO_MASQUERADE: u32 = 1;

/// A published port: `host_addr` all zero publishes on every local address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PublishKey {
    pub host_addr: [u8; 4],
    pub host_port: u16,
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<PublishKey>() == 8);

/// Where a published port leads.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PublishTarget {
    pub container_addr: [u8; 4],
    /// The gateway of the container's network: the source address hairpin traffic from other
    /// containers gets, so that the replies come back through the host.
    pub gateway_addr: [u8; 4],
    /// The bridge of the container's network.
    pub bridge_ifindex: u32,
    pub container_port: u16,
    pub _pad: u16,
}
const _: () = assert!(size_of::<PublishTarget>() == 16);

/// A connection tuple as seen on the wire, in one direction. For ICMP echo the identifier
/// stands in for a port: `src_port` of a request, `dst_port` of a reply (the other is 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, bytemuck::Pod, bytemuck::Zeroable)]
pub struct CtKey {
    pub src_addr: [u8; 4],
    pub dst_addr: [u8; 4],
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    // Two fields rather than [u8; 3]: a zeroed 3-byte array compiles to a memset call in
    // eBPF, and keys are built for every packet.
    pub _pad0: u8,
    pub _pad1: u16,
}
const _: () = assert!(size_of::<CtKey>() == 16);

impl CtKey {
    pub const fn new(
        src_addr: [u8; 4],
        dst_addr: [u8; 4],
        src_port: u16,
        dst_port: u16,
        proto: u8,
    ) -> CtKey {
        CtKey {
            src_addr,
            dst_addr,
            src_port,
            dst_port,
            proto,
            _pad0: 0,
            _pad1: 0,
        }
    }

    /// The tuple of the other direction.
    pub const fn reversed(&self) -> CtKey {
        CtKey::new(
            self.dst_addr,
            self.src_addr,
            self.dst_port,
            self.src_port,
            self.proto,
        )
    }
}

/// Connection states; see [`ct_timeout_secs`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtState {
    /// TCP: SYN seen, no reply yet. UDP: no reply yet.
    New = 0,
    /// Both directions seen.
    Established = 1,
    /// TCP: a FIN was seen.
    Closing = 2,
    /// TCP: a RST was seen.
    Closed = 3,
}

/// How long an entry may stay idle in a state before it counts as gone (netfilter's
/// defaults). Shared so that `netpath conntrack` shows what the programs enforce.
pub const fn ct_timeout_secs(proto: u8, state: u8) -> u64 {
    const NEW: u8 = CtState::New as u8;
    const ESTABLISHED: u8 = CtState::Established as u8;
    const CLOSING: u8 = CtState::Closing as u8;
    match (proto, state) {
        (PROTO_TCP, NEW) => 120,
        (PROTO_TCP, ESTABLISHED) => 5 * 24 * 3600,
        (PROTO_TCP, CLOSING) => 120,
        (PROTO_TCP, _) => 10,
        (PROTO_UDP, NEW) => 30,
        (PROTO_UDP, _) => 180,
        // ICMP echo: one request and its reply.
        _ => 30,
    }
}

/// One direction of a translated connection: the tuple to rewrite the packet to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct CtEntry {
    /// The tuple after translation.
    pub src_addr: [u8; 4],
    pub dst_addr: [u8; 4],
    pub src_port: u16,
    pub dst_port: u16,
    /// Send the translated packet straight out of this interface instead of handing it back
    /// to the stack: into the container with [`CT_FLAG_PEER`] (`bpf_redirect_peer`), else to
    /// the next hop the FIB resolves (`bpf_redirect`), or that the kernel resolves when the
    /// FIB has no neighbour yet (`bpf_redirect_neigh`). 0 lets the stack route it.
    pub redirect_ifindex: u32,
    /// The container veth (host side) whose packets in this direction had their source
    /// validated when the connection opened (see `np_veth_in`): its later packets through
    /// that veth skip the check. 0 for every other direction.
    pub from_ifindex: u32,
    /// A [`CtState`].
    pub state: u8,
    /// [`CT_FLAG_REPLY`] and friends.
    pub flags: u8,
    /// With [`CT_FLAG_PEER`]: the container's MAC, the frame's new destination. With
    /// [`CT_FLAG_NEXT_HOP`]: the next hop's MAC.
    pub dst_mac: [u8; 6],
    /// With [`CT_FLAG_NEXT_HOP`]: the MAC of `redirect_ifindex`, the frame's new source.
    pub src_mac: [u8; 6],
    pub _pad: [u8; 6],
    /// `bpf_ktime_get_coarse_ns` of the last packet in this direction.
    pub last_seen_ns: u64,
}
const _: () = assert!(size_of::<CtEntry>() == 48);

/// The entry is the reply direction of its connection.
pub const CT_FLAG_REPLY: u8 = 1;
/// `redirect_ifindex` is a container's host-side veth: the packet goes straight into the
/// container (`bpf_redirect_peer`), past the bridge, with `dst_mac` as its destination.
pub const CT_FLAG_PEER: u8 = 2;
/// `dst_mac` and `src_mac` hold the next hop on `redirect_ifindex` as the FIB gave it during
/// the current tick (see [`NEXT_HOP_TICK_SHIFT`]): the other packets of that tick are sent
/// there without a FIB lookup of their own.
pub const CT_FLAG_NEXT_HOP: u8 = 4;

/// A connection's cached next hop lasts until the coarse clock's `ns >> NEXT_HOP_TICK_SHIFT`
/// changes (every 1.07 s): the first packet of each tick asks the FIB again, so that a route
/// or neighbour change reaches an established connection within a tick (the kernel's own
/// forwarding sees it at once), at one FIB lookup per tick and direction instead of one per
/// packet. Ticks rather than a timestamp: the entry has no room for one without growing the
/// programs' stack past the verifier's limit.
pub const NEXT_HOP_TICK_SHIFT: u32 = 30;

/// Whether `a` and `b` (`bpf_ktime_get_coarse_ns`) fall in one next-hop tick.
pub const fn same_next_hop_tick(a: u64, b: u64) -> bool {
    a >> NEXT_HOP_TICK_SHIFT == b >> NEXT_HOP_TICK_SHIFT
}

/// A container interface the datapath can deliver to directly, keyed by its address: a
/// translated packet for it goes to the peer of `host_ifindex` (`bpf_redirect_peer`), into
/// the container past the bridge, with `mac` as the frame's destination.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Endpoint {
    /// The veth end in the host namespace (on the bridge).
    pub host_ifindex: u32,
    /// The bridge that veth is on: its [`BridgeInfo`] says whether the container's new
    /// connections to the outside are masqueraded.
    pub bridge_ifindex: u32,
    /// The container interface's MAC.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<Endpoint>() == 16);

/// A fragmented IPv4 datagram as it arrives: what its fragments have in common (RFC 791's
/// reassembly key).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, bytemuck::Pod, bytemuck::Zeroable)]
pub struct FragKey {
    pub src_addr: [u8; 4],
    pub dst_addr: [u8; 4],
    /// The IPv4 identification, in host byte order.
    pub id: u16,
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<FragKey>() == 12);

/// The conntrack key a first fragment was translated with: its own tuple, the key of the
/// entry its later fragments follow. A key with protocol [`FRAG_PASS`] (no protocol netpath
/// translates) records a first fragment left alone, so that a later fragment without any
/// record is known to have come first (an orphan).
pub type FragEntry = CtKey;

/// The protocol of a [`FragEntry`] that records an untranslated first fragment.
pub const FRAG_PASS: u8 = 0;

/// Container interfaces known to the datapath.
pub const MAX_ENDPOINTS: u32 = 65536;

/// The source a container interface must send from, keyed by its host-side veth's ifindex:
/// `np_veth_in` drops an IPv4 frame from another address or MAC ([`DropReason::Spoofed`]),
/// unless [`SOURCE_ANY`] is set.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SourceGuard {
    /// The address netpath assigned to the container interface.
    pub addr: [u8; 4],
    /// Its MAC.
    pub mac: [u8; 6],
    /// [`SOURCE_ANY`].
    pub flags: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<SourceGuard>() == 12);

/// The container may send from any source (`netpath run --allow-spoofed-source`: it routes
/// other addresses).
pub const SOURCE_ANY: u8 = 1;

/// The original destination of a socket whose destination a socket program rewrote.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SockOrig {
    /// What the application asked for.
    pub orig_addr: [u8; 4],
    /// What the socket really talks to.
    pub real_addr: [u8; 4],
    pub orig_port: u16,
    pub real_port: u16,
}
const _: () = assert!(size_of::<SockOrig>() == 12);

/// Settings of one netpath namespace, read by the programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Config {
    /// The network namespace the socket programs act in (`bpf_get_netns_cookie`): they are
    /// attached to a cgroup, which spans namespaces, and must leave others alone.
    pub netns_cookie: u64,
    /// Source ports (inclusive) for masquerade and hairpin NAT when a connection's own is
    /// taken; 0/0 means [`DEFAULT_NAT_PORTS`].
    pub nat_port_min: u16,
    pub nat_port_max: u16,
    /// The programs' log level (aya-log: 0 off, 1 error ... 5 trace), applied when they are
    /// loaded; off keeps logging out of the hot path entirely (the verifier prunes it).
    pub log_level: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<Config>() == 16);

/// Event counters kept per CPU; userspace sums them.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// A packet routed from one netpath network into another was dropped.
    DropIsolation = 0,
    /// A new connection to a published port was translated (from outside or by hairpin).
    /// (Packets of tracked connections are counted with their traffic: [`Traffic::hits`].)
    NatNew = 1,
    /// No free source port for a new connection (hairpin or masquerade); the packet was
    /// dropped rather than mistranslated.
    DropNoPort = 2,
    /// A checksum helper (`bpf_l4_csum_replace`; `bpf_l3_csum_replace` for the header an
    /// ICMP error quotes) failed while the packet was rewritten; it was dropped.
    DropCsum = 3,
    /// A container's new connection to the outside was masqueraded.
    MasqNew = 4,
    /// An ICMP error about a translated connection was translated back.
    IcmpError = 5,
    /// Conntrack entries inserted (two per connection).
    CtInsert = 6,
    /// Conntrack entries the datapath removed (a closed connection's tuple reopened with
    /// another translation).
    CtRemove = 7,
    /// Lookups that met an entry past its timeout and treated it as absent.
    CtExpired = 8,
    /// Source ports tried beyond a new connection's own (port allocation retries).
    PortRetry = 9,
    /// Writing the packet (addresses, ports, TTL, MACs: in place, or with
    /// `bpf_skb_store_bytes` in the headers an ICMP error quotes) failed; it was dropped.
    DropStore = 10,
    /// A new connection's conntrack entries could not be inserted (the map refused them);
    /// the packet was dropped rather than sent untracked.
    DropCtInsert = 11,
    /// A non-first IPv4 fragment of a TCP or UDP datagram whose first fragment was never
    /// seen (arrived later, or its record was evicted): dropped, since whether and how to
    /// translate it is unknown.
    DropFragOrphan = 12,
    /// Non-first IPv4 fragments translated the way their first fragment was.
    FragTranslated = 13,
    /// A frame from a container with a source address or MAC that netpath did not assign to
    /// its interface was dropped, before any translation.
    DropSpoofed = 14,
}

impl Counter {
    /// Every counter, in slot order.
    pub const ALL: [Counter; 15] = [
        Counter::DropIsolation,
        Counter::NatNew,
        Counter::DropNoPort,
        Counter::DropCsum,
        Counter::MasqNew,
        Counter::IcmpError,
        Counter::CtInsert,
        Counter::CtRemove,
        Counter::CtExpired,
        Counter::PortRetry,
        Counter::DropStore,
        Counter::DropCtInsert,
        Counter::DropFragOrphan,
        Counter::FragTranslated,
        Counter::DropSpoofed,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Counter::DropIsolation => "drop_isolation",
            Counter::NatNew => "nat_new",
            Counter::DropNoPort => "drop_no_port",
            Counter::DropCsum => "drop_csum",
            Counter::MasqNew => "masq_new",
            Counter::IcmpError => "icmp_error",
            Counter::CtInsert => "ct_insert",
            Counter::CtRemove => "ct_remove",
            Counter::CtExpired => "ct_expired",
            Counter::PortRetry => "port_retry",
            Counter::DropStore => "drop_store",
            Counter::DropCtInsert => "drop_ct_insert",
            Counter::DropFragOrphan => "drop_frag_orphan",
            Counter::FragTranslated => "frag_translated",
            Counter::DropSpoofed => "drop_spoofed",
        }
    }
}

// `Counter::ALL` is in slot order, so that its length is the number of slots.
const _: () = {
    let mut i = 0;
    while i < Counter::ALL.len() {
        assert!(Counter::ALL[i] as usize == i);
        i += 1;
    }
};

/// Why the datapath dropped a packet: what a program's pipeline fails with. The program's
/// entry point counts it, in the [`Counter`] slot of the same number, and logs it; nothing
/// else drops.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// [`Counter::DropIsolation`].
    Isolation = Counter::DropIsolation as u32,
    /// [`Counter::DropNoPort`].
    NoPort = Counter::DropNoPort as u32,
    /// [`Counter::DropCsum`].
    Csum = Counter::DropCsum as u32,
    /// [`Counter::DropStore`].
    Store = Counter::DropStore as u32,
    /// [`Counter::DropCtInsert`].
    CtInsert = Counter::DropCtInsert as u32,
    /// [`Counter::DropFragOrphan`].
    FragOrphan = Counter::DropFragOrphan as u32,
    /// [`Counter::DropSpoofed`].
    Spoofed = Counter::DropSpoofed as u32,
}

impl DropReason {
    pub const ALL: [DropReason; 7] = [
        DropReason::Isolation,
        DropReason::NoPort,
        DropReason::Csum,
        DropReason::Store,
        DropReason::CtInsert,
        DropReason::FragOrphan,
        DropReason::Spoofed,
    ];

    /// The counter of this reason: its slot is the reason's number.
    pub const fn counter(self) -> Counter {
        match self {
            DropReason::Isolation => Counter::DropIsolation,
            DropReason::NoPort => Counter::DropNoPort,
            DropReason::Csum => Counter::DropCsum,
            DropReason::Store => Counter::DropStore,
            DropReason::CtInsert => Counter::DropCtInsert,
            DropReason::FragOrphan => Counter::DropFragOrphan,
            DropReason::Spoofed => Counter::DropSpoofed,
        }
    }
}

const _: () = {
    let mut i = 0;
    while i < DropReason::ALL.len() {
        assert!(DropReason::ALL[i] as u32 == DropReason::ALL[i].counter() as u32);
        i += 1;
    }
};

/// Where a translated packet came in: from an external interface (clients, replies to
/// masquerade) or from a netpath bridge (containers).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    FromExternal = 0,
    FromContainers = 1,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::FromExternal, Direction::FromContainers];

    pub const fn name(self) -> &'static str {
        match self {
            Direction::FromExternal => "from_external",
            Direction::FromContainers => "from_containers",
        }
    }
}

/// Protocols counted in [`maps::TRAFFIC`], in slot order.
pub const TRAFFIC_PROTOS: [u8; 3] = [PROTO_TCP, PROTO_UDP, PROTO_ICMP];

/// The [`maps::TRAFFIC`] slot of a direction and protocol (TCP, UDP or ICMP).
pub const fn traffic_slot(dir: Direction, proto: u8) -> u32 {
    let p = match proto {
        PROTO_TCP => 0,
        PROTO_UDP => 1,
        _ => 2,
    };
    dir as u32 * 3 + p
}

/// Slots in the traffic map.
pub const TRAFFIC_SLOTS: u32 = 6;

/// Packets and bytes translated, per CPU, in one [`traffic_slot`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
    /// Of `packets`, those a tracked connection's entry translated (conntrack hits; the
    /// others opened connections, or were ICMP errors or later fragments). Kept here rather
    /// than in [`maps::COUNTERS`], so that such a packet, the common one, touches one slot.
    pub hits: u64,
}
const _: () = assert!(size_of::<Traffic>() == 24);

/// One direction of the benchmark's bare forwarder (`cargo xtask bench`, configuration
/// "forward"; never used by netpath): the interface to redirect to and the frame's new
/// MACs, filled in by the bench before any traffic, so that no packet needs a lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ForwardHop {
    pub ifindex: u32,
    /// Destination MAC then source MAC.
    pub macs: [u8; 12],
}
const _: () = assert!(size_of::<ForwardHop>() == 16);

/// The bare forwarder's map: [`ForwardHop`] 0 leads into the container
/// (`bpf_redirect_peer`), 1 out of the host (`bpf_redirect`).
pub const BENCH_FORWARD_MAP: &str = "NP_BENCH_FWD";

/// Number of slots in the counters map.
pub const COUNTER_SLOTS: u32 = Counter::ALL.len() as u32;

#[cfg(feature = "user")]
mod user {
    use super::*;

    /// `aya::Pod` for map types, each checked to be `bytemuck::Pod` as well.
    macro_rules! aya_pod {
        ($($t:ty),* $(,)?) => {$(
            const _: fn() = || {
                fn bytemuck_pod<T: bytemuck::Pod>() {}
                bytemuck_pod::<$t>();
            };
            // SAFETY: bytemuck's derive, checked above, proved the type repr(C), free of
            // padding and valid for every bit pattern: what aya::Pod requires.
            unsafe impl aya::Pod for $t {}
        )*};
    }

    aya_pod!(
        BridgeInfo,
        PublishKey,
        PublishTarget,
        CtKey,
        CtEntry,
        SockOrig,
        Config,
        Traffic,
        Endpoint,
        FragKey,
        SourceGuard,
        ForwardHop,
    );
}
