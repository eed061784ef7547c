//! The packet-test harness: crafted frames pushed through the eBPF programs with
//! BPF_PROG_TEST_RUN, every rewritten byte and both checksums checked against values
//! recomputed from scratch. Each test runs on its own thread inside a fresh network namespace
//! ([`in_fresh_netns`]), so the interfaces it names in the skb context exist and nothing
//! outside is touched.
use aya::{
    Ebpf,
    maps::{
        Array, HashMap, PerCpuArray,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{SchedClassifier, TestRun, TestRunOptions},
};
use netpath::system::datapath::EBPF_OBJECT;
use netpath_common::{
    BridgeInfo, Config, Counter, CtEntry, CtKey, Endpoint, FragKey, PROTO_ICMP, PROTO_TCP,
    PROTO_UDP, PublishKey, PublishTarget, SourceGuard, TRAFFIC_SLOTS, maps, programs,
};

use crate::{ip, ip_json};

/// TC verdicts, as the programs return them.
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;

/// The addresses the packets carry: a client outside, the host's external address, two
/// containers behind the bridge and its gateway, a server and a router outside.
pub const CLIENT: [u8; 4] = [203, 0, 113, 2];
pub const HOST: [u8; 4] = [203, 0, 113, 1];
pub const CONTAINER: [u8; 4] = [172, 17, 0, 2];
pub const OTHER_CONTAINER: [u8; 4] = [172, 17, 0, 3];
pub const GATEWAY: [u8; 4] = [172, 17, 0, 1];
pub const SERVER: [u8; 4] = [198, 51, 100, 10];
pub const ROUTER: [u8; 4] = [203, 0, 113, 254];

/// TCP flags.
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;

/// Runs `f` on a thread that lives in a new, empty network namespace.
pub fn in_fresh_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        f()
    })
    .join()
    .expect("test thread panicked")
}

/// Creates a bridge in the current thread's namespace (children inherit it), up, with an
/// optional address; returns its ifindex.
pub fn bridge(name: &str, addr: Option<&str>) -> u32 {
    ip(&["link", "add", name, "type", "bridge"]).unwrap();
    if let Some(addr) = addr {
        ip(&["addr", "add", addr, "dev", name]).unwrap();
    }
    ip(&["link", "set", name, "up"]).unwrap();
    // Not /sys/class/net: this process's sysfs shows the namespace it was mounted in.
    let v = ip_json(None, &["link", "show", name]);
    u32::try_from(v[0]["ifindex"].as_u64().unwrap()).unwrap()
}

/// A `struct __sk_buff` prefix with only the fields BPF_PROG_TEST_RUN lets us set here.
pub fn skb_ctx(ingress_ifindex: u32, ifindex: u32) -> [u8; 44] {
    let mut ctx = [0u8; 44];
    ctx[36..40].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

/// The Internet checksum of `data` folded into 16 bits, starting from `sum`.
pub fn fold(mut sum: u32, data: &[u8]) -> u16 {
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A TCP or UDP packet to build; fields beyond the tuple vary one case at a time.
pub struct Pkt {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub tcp_flags: u8,
    pub ip_options: usize,
    pub frag: u16,
    pub udp_csum: bool,
    pub ttl: u8,
}

impl Pkt {
    pub fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8) -> Pkt {
        Pkt {
            src,
            dst,
            sport,
            dport,
            proto: PROTO_TCP,
            tcp_flags: flags,
            ip_options: 0,
            frag: 0,
            udp_csum: true,
            ttl: 64,
        }
    }

    pub fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Pkt {
        Pkt {
            proto: PROTO_UDP,
            tcp_flags: 0,
            ..Pkt::tcp(src, sport, dst, dport, 0)
        }
    }

    /// Ethernet + IPv4 (with options if asked) + TCP or UDP + 6 bytes of payload, with
    /// correct checksums.
    pub fn build(&self) -> Vec<u8> {
        let mut p = vec![
            0x02, 0x42, 0xac, 0x11, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00,
        ];
        let payload = b"netpth";
        let l4_len = if self.proto == PROTO_TCP { 20 } else { 8 } + payload.len();
        let ihl = 20 + self.ip_options;
        let total = (ihl + l4_len) as u16;
        let mut ip = vec![0x40 | (ihl / 4) as u8, 0];
        ip.extend_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&[0x12, 0x34]);
        ip.extend_from_slice(&self.frag.to_be_bytes());
        ip.extend_from_slice(&[self.ttl, self.proto, 0, 0]);
        ip.extend_from_slice(&self.src);
        ip.extend_from_slice(&self.dst);
        // Options: NOPs then End of list, a valid header however long.
        ip.extend(std::iter::repeat_n(1u8, self.ip_options.saturating_sub(1)));
        if self.ip_options > 0 {
            ip.push(0);
        }
        let c = fold(0, &ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut l4 = Vec::new();
        l4.extend_from_slice(&self.sport.to_be_bytes());
        l4.extend_from_slice(&self.dport.to_be_bytes());
        if self.proto == PROTO_TCP {
            l4.extend_from_slice(&[
                0,
                0,
                0,
                1,
                0,
                0,
                0,
                0,
                0x50,
                self.tcp_flags,
                0xff,
                0xff,
                0,
                0,
                0,
                0,
            ]);
        } else {
            l4.extend_from_slice(&(l4_len as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
        }
        l4.extend_from_slice(payload);
        if self.proto == PROTO_TCP || self.udp_csum {
            let c = l4_checksum(&self.src, &self.dst, self.proto, &l4);
            let off = if self.proto == PROTO_TCP { 16 } else { 6 };
            l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
        }
        p.extend(ip);
        p.extend(l4);
        p
    }
}

pub fn l4_checksum(src: &[u8], dst: &[u8], proto: u8, l4: &[u8]) -> u16 {
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(src);
    pseudo.extend_from_slice(dst);
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    let c = fold(0, &[pseudo, l4.to_vec()].concat());
    // UDP sends a computed 0 as 0xffff (0 means "no checksum").
    if proto == PROTO_UDP && c == 0 {
        0xffff
    } else {
        c
    }
}

/// Asserts that `out` carries valid IPv4 and L4 checksums, recomputed from scratch.
pub fn assert_checksums(out: &[u8]) {
    let ihl = usize::from(out[14] & 0x0f) * 4;
    let ip = &out[14..14 + ihl];
    assert_eq!(fold(0, ip), 0, "IPv4 header checksum");
    let l4 = &out[14 + ihl..];
    let proto = ip[9];
    if proto == PROTO_ICMP {
        assert_eq!(fold(0, l4), 0, "ICMP checksum");
        return;
    }
    let mut zeroed = l4.to_vec();
    let off = if proto == PROTO_TCP { 16 } else { 6 };
    let stored = u16::from_be_bytes([l4[off], l4[off + 1]]);
    if proto == PROTO_UDP && stored == 0 {
        return;
    }
    zeroed[off..off + 2].copy_from_slice(&[0, 0]);
    assert_eq!(
        stored,
        l4_checksum(&ip[12..16], &ip[16..20], proto, &zeroed),
        "L4 checksum"
    );
}

/// The tuple of a built packet.
pub fn tuple(p: &[u8]) -> ([u8; 4], u16, [u8; 4], u16) {
    let ihl = usize::from(p[14] & 0x0f) * 4;
    let l4 = 14 + ihl;
    (
        p[26..30].try_into().unwrap(),
        u16::from_be_bytes([p[l4], p[l4 + 1]]),
        p[30..34].try_into().unwrap(),
        u16::from_be_bytes([p[l4 + 2], p[l4 + 3]]),
    )
}

/// Asserts that only the IPv4 checksum, the addresses, the ports and the L4 checksum differ.
/// A packet netpath forwards (redirects) has its time to live decremented, as a router's.
pub fn assert_only_tuple_changed(input: &[u8], out: &[u8]) {
    assert_eq!(input.len(), out.len());
    assert_eq!(out[22], input[22] - 1, "TTL decremented");
    let ihl = usize::from(input[14] & 0x0f) * 4;
    let l4 = 14 + ihl;
    let csum = l4 + if input[23] == PROTO_TCP { 16 } else { 6 };
    let mutable = [
        22,
        24,
        25,
        26,
        27,
        28,
        29,
        30,
        31,
        32,
        33,
        l4,
        l4 + 1,
        l4 + 2,
        l4 + 3,
        csum,
        csum + 1,
    ];
    for (i, (a, b)) in input.iter().zip(out).enumerate() {
        if !mutable.contains(&i) {
            assert_eq!(a, b, "byte {i} changed");
        }
    }
}

/// The object loaded with its maps private to the test, publishing HOST:8088/tcp,
/// HOST:5353/udp and every local address's 9090/tcp to the container.
pub struct Datapath {
    ebpf: Ebpf,
    pub bridge: u32,
    pub ext: u32,
}

impl Datapath {
    #[expect(
        clippy::new_without_default,
        reason = "loads programs and creates interfaces: not a default value"
    )]
    pub fn new() -> Datapath {
        let (br, ext) = (
            bridge("np0", Some("172.17.0.1/16")),
            bridge("ext0", Some("203.0.113.1/24")),
        );
        let mut ebpf = Ebpf::load(EBPF_OBJECT).expect("load object");
        // What userspace keeps there: the namespace's own addresses.
        let mut local: HashMap<_, [u8; 4], u32> =
            HashMap::try_from(ebpf.map_mut(maps::LOCAL_ADDRS).unwrap()).unwrap();
        for addr in [HOST, GATEWAY] {
            local.insert(addr, 1, 0).unwrap();
        }
        let mut bridges: HashMap<_, u32, BridgeInfo> =
            HashMap::try_from(ebpf.map_mut(maps::BRIDGES).unwrap()).unwrap();
        bridges
            .insert(
                br,
                BridgeInfo {
                    network_id: 1,
                    flags: 0,
                },
                0,
            )
            .unwrap();
        for name in [
            programs::EXT_IN,
            programs::BR_IN,
            programs::VETH_IN,
            programs::ISOLATE,
        ] {
            let prog: &mut SchedClassifier = ebpf.program_mut(name).unwrap().try_into().unwrap();
            prog.load()
                .unwrap_or_else(|e| panic!("the verifier rejects {name}: {e:?}"));
        }
        let mut dp = Datapath {
            ebpf,
            bridge: br,
            ext,
        };
        dp.publish(HOST, 8088, PROTO_TCP, 80);
        dp.publish(HOST, 5353, PROTO_UDP, 53);
        dp.publish([0; 4], 9090, PROTO_TCP, 90);
        dp
    }

    /// Publishes (or re-targets) `host_addr:host_port/proto` to the container's `port`.
    pub fn publish(&mut self, host_addr: [u8; 4], host_port: u16, proto: u8, port: u16) {
        let mut publish: HashMap<_, PublishKey, PublishTarget> =
            HashMap::try_from(self.ebpf.map_mut(maps::PUBLISH).unwrap()).unwrap();
        let key = PublishKey {
            host_addr,
            host_port,
            proto,
            _pad: 0,
        };
        let target = PublishTarget {
            container_addr: CONTAINER,
            gateway_addr: GATEWAY,
            bridge_ifindex: self.bridge,
            container_port: port,
            _pad: 0,
        };
        publish.insert(key, target, 0).unwrap();
    }

    /// Runs `prog` on `input` arriving on `ifindex`; returns the verdict and the packet.
    pub fn run(&mut self, prog: &str, ifindex: u32, input: &[u8]) -> (u32, Vec<u8>) {
        self.run_ctx(prog, 0, ifindex, input)
    }

    /// Runs `prog` on `input` with the skb's `ingress_ifindex` and `ifindex` set (an egress
    /// program such as np_isolate sees where the packet came from and where it leaves).
    pub fn run_ctx(
        &mut self,
        prog: &str,
        ingress_ifindex: u32,
        ifindex: u32,
        input: &[u8],
    ) -> (u32, Vec<u8>) {
        let prog: &mut SchedClassifier = self.ebpf.program_mut(prog).unwrap().try_into().unwrap();
        let ctx = skb_ctx(ingress_ifindex, ifindex);
        let mut out = vec![0u8; input.len() + 64];
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(input),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                ..TestRunOptions::new()
            })
            .expect("BPF_PROG_TEST_RUN");
        out.truncate(result.data_size_out as usize);
        (result.return_value, out)
    }

    /// What `netpath run` registers for a container: its host-side veth and its MAC (here
    /// [`ENDPOINT_MAC`]).
    pub fn add_endpoint(&mut self, addr: [u8; 4], host_ifindex: u32) {
        self.add_endpoint_on(addr, host_ifindex, self.bridge);
    }

    /// [`Datapath::add_endpoint`] with its veth on the bridge `bridge_ifindex`.
    pub fn add_endpoint_on(&mut self, addr: [u8; 4], host_ifindex: u32, bridge_ifindex: u32) {
        let mut endpoints: HashMap<_, [u8; 4], Endpoint> =
            HashMap::try_from(self.ebpf.map_mut(maps::ENDPOINTS).unwrap()).unwrap();
        let endpoint = Endpoint {
            host_ifindex,
            bridge_ifindex,
            mac: ENDPOINT_MAC,
            _pad: [0; 2],
        };
        endpoints.insert(addr, endpoint, 0).unwrap();
    }

    /// What `netpath run` sets for a container's host-side veth: the only source (address
    /// and MAC) the container may send from, or with `SOURCE_ANY` in `flags` any.
    pub fn set_source(&mut self, host_ifindex: u32, addr: [u8; 4], mac: [u8; 6], flags: u8) {
        let mut sources: HashMap<_, u32, SourceGuard> =
            HashMap::try_from(self.ebpf.map_mut(maps::SOURCES).unwrap()).unwrap();
        let guard = SourceGuard {
            addr,
            mac,
            flags,
            _pad: 0,
        };
        sources.insert(host_ifindex, guard, 0).unwrap();
    }

    /// A counter summed over the CPUs.
    pub fn counter(&self, c: Counter) -> u64 {
        let counters: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map(maps::COUNTERS).unwrap()).unwrap();
        counters.get(&(c as u32), 0).unwrap().iter().sum()
    }

    /// The conntrack hits: [`netpath_common::Traffic::hits`] summed over the slots and CPUs.
    pub fn hits(&self) -> u64 {
        self.per_cpu_sums(maps::TRAFFIC, TRAFFIC_SLOTS as usize, 3)
            .iter()
            .map(|words| words[2])
            .sum()
    }

    /// Every counter summed over the CPUs, in slot order ([`Counter::ALL`]), then the
    /// conntrack hits ([`Datapath::hits`]), read with two BPF_MAP_LOOKUP_BATCH: the fuzzer
    /// reads them around every packet.
    pub fn counters(&self) -> Vec<u64> {
        let mut counters: Vec<u64> = self
            .per_cpu_sums(maps::COUNTERS, Counter::ALL.len(), 1)
            .into_iter()
            .map(|words| words[0])
            .collect();
        counters.push(self.hits());
        counters
    }

    /// Each slot of the per-CPU array `name` (`slots` values of `words` u64s) summed word by
    /// word over the CPUs, read with one BPF_MAP_LOOKUP_BATCH (aya 0.14 has no batch
    /// operations).
    fn per_cpu_sums(&self, name: &str, slots: usize, words: usize) -> Vec<Vec<u64>> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        /// `union bpf_attr`'s `batch` member.
        #[repr(C)]
        struct Batch {
            in_batch: u64,
            out_batch: u64,
            keys: u64,
            values: u64,
            count: u32,
            map_fd: u32,
            elem_flags: u64,
            flags: u64,
        }
        const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
        let Some(aya::maps::Map::PerCpuArray(data)) = self.ebpf.map(name) else {
            panic!("{name} is not a per-CPU array");
        };
        let cpus = aya::util::nr_cpus().unwrap();
        let mut keys = vec![0u32; slots];
        // Per-CPU values come 8-byte aligned, one per possible CPU.
        let mut values = vec![0u64; slots * cpus * words];
        let mut out_batch = 0u32;
        let mut attr = Batch {
            in_batch: 0,
            out_batch: &raw mut out_batch as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: slots as u32,
            map_fd: data.fd().as_fd().as_raw_fd() as u32,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: `attr` is a valid `bpf_attr` batch member of the size passed; the kernel
        // writes at most `count` keys and `count` per-CPU values into buffers of that size,
        // and one key into `out_batch`; all outlive the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                size_of::<Batch>(),
            )
        };
        // ENOENT: the end of the map was reached, which a full read does.
        let err = std::io::Error::last_os_error();
        assert!(
            ret == 0 || err.raw_os_error() == Some(libc::ENOENT),
            "BPF_MAP_LOOKUP_BATCH: {err}"
        );
        assert_eq!(attr.count as usize, slots, "every slot of {name} read");
        let mut sums = vec![vec![0u64; words]; slots];
        for (i, &key) in keys.iter().enumerate() {
            for cpu in values[i * cpus * words..(i + 1) * cpus * words].chunks(words) {
                for (sum, v) in sums[key as usize].iter_mut().zip(cpu) {
                    *sum += v;
                }
            }
        }
        sums
    }

    /// Registers another bridge, of network `network_id`, with `flags`
    /// (`BRIDGE_NO_MASQUERADE`).
    pub fn add_bridge(&mut self, ifindex: u32, network_id: u32, flags: u32) {
        let mut bridges: HashMap<_, u32, BridgeInfo> =
            HashMap::try_from(self.ebpf.map_mut(maps::BRIDGES).unwrap()).unwrap();
        bridges
            .insert(ifindex, BridgeInfo { network_id, flags }, 0)
            .unwrap();
    }

    /// Puts conntrack back to exactly `entries` (e.g. an earlier [`Datapath::conntrack`]):
    /// every other entry goes, these are written back as they were.
    pub fn reset_conntrack(&mut self, entries: &[(CtKey, CtEntry)]) {
        // A fragment recorded by one case must not steer the next one's.
        let mut frags: HashMap<_, FragKey, CtKey> =
            HashMap::try_from(self.ebpf.map_mut(maps::FRAGS).unwrap()).unwrap();
        let recorded: Vec<FragKey> = frags.keys().map(Result::unwrap).collect();
        for key in recorded {
            frags.remove(&key).unwrap();
        }
        let mut ct: HashMap<_, CtKey, CtEntry> =
            HashMap::try_from(self.ebpf.map_mut(maps::CONNTRACK).unwrap()).unwrap();
        let extra: Vec<CtKey> = ct
            .keys()
            .map(Result::unwrap)
            .filter(|k| !entries.iter().any(|(e, _)| e == k))
            .collect();
        for key in extra {
            ct.remove(&key).unwrap();
        }
        for (key, entry) in entries {
            ct.insert(key, entry, 0).unwrap();
        }
    }

    /// Every conntrack entry.
    pub fn conntrack(&self) -> Vec<(CtKey, CtEntry)> {
        let ct: HashMap<_, CtKey, CtEntry> =
            HashMap::try_from(self.ebpf.map(maps::CONNTRACK).unwrap()).unwrap();
        ct.iter().map(Result::unwrap).collect()
    }

    /// The conntrack entry whose key `which` picks (the first, in map order).
    pub fn ct_entry(&self, which: impl Fn(&CtKey) -> bool) -> CtEntry {
        self.conntrack()
            .into_iter()
            .find(|(k, _)| which(k))
            .expect("the conntrack entry")
            .1
    }

    /// Rewrites every conntrack entry with `f` (which may leave one as it is).
    pub fn edit_conntrack(&mut self, mut f: impl FnMut(&CtKey, &mut CtEntry)) {
        let mut entries = self.conntrack();
        for (k, e) in &mut entries {
            f(k, e);
        }
        self.reset_conntrack(&entries);
    }
}

/// The source MAC of every frame [`Pkt`] and [`ipv4_frame`] build.
pub const PKT_SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];

/// The MAC [`Datapath::resolve_next_hop`] gives the default route's next hop.
pub const NEXT_HOP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

impl Datapath {
    /// Makes the next hop of [`masquerading`]'s default route (203.0.113.2 on ext0) a known
    /// neighbour, with [`NEXT_HOP_MAC`]: redirected frames are then addressed to it.
    pub fn resolve_next_hop(&self) {
        ip(&[
            "neigh",
            "replace",
            "203.0.113.2",
            "lladdr",
            "02:00:00:00:00:02",
            "dev",
            "ext0",
            "nud",
            "permanent",
        ])
        .unwrap();
    }
}

/// A registered container's MAC: unlike any address `Pkt` frames carry, so that a rewrite
/// of the destination shows.
pub const ENDPOINT_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0xee, 0x02];

/// Ethernet + an IPv4 header (valid checksum) around `l4`.
pub fn ipv4_frame(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0xab, 0xcd, 0x40, 0, 64, proto, 0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = fold(0, &ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut frame = vec![
        0x02, 0x42, 0xac, 0x11, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00,
    ];
    frame.extend(ip);
    frame.extend_from_slice(l4);
    frame
}

/// An ICMP message of `icmp_type`/`code` with `rest` after the checksum, checksum valid.
pub fn icmp(src: [u8; 4], dst: [u8; 4], icmp_type: u8, code: u8, rest: &[u8]) -> Vec<u8> {
    let mut m = vec![icmp_type, code, 0, 0];
    m.extend_from_slice(rest);
    let c = fold(0, &m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4_frame(src, dst, PROTO_ICMP, &m)
}

/// An ICMP echo request (type 8) or reply (type 0) with identifier `id`.
pub fn echo(src: [u8; 4], dst: [u8; 4], icmp_type: u8, id: u16) -> Vec<u8> {
    let mut rest = id.to_be_bytes().to_vec();
    rest.extend_from_slice(&[0, 1, b'p', b'i', b'n', b'g']);
    icmp(src, dst, icmp_type, 0, &rest)
}

/// The object set up for masquerade: the default route leaves through ext0 (registered as
/// external), 172.17.0.0/16 and 192.0.2.0/24 are excluded, NAT ports are `ports`.
pub fn masquerading(ports: (u16, u16)) -> Datapath {
    let mut dp = Datapath::new();
    ip(&[
        "route",
        "add",
        "default",
        "via",
        "203.0.113.2",
        "dev",
        "ext0",
    ])
    .unwrap();
    // The FIB lookup for a forwarded packet needs forwarding on, as `netpath up` sets it.
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
    let mut externals: HashMap<_, u32, u32> =
        HashMap::try_from(dp.ebpf.map_mut(maps::EXTERNALS).unwrap()).unwrap();
    externals.insert(dp.ext, 1, 0).unwrap();
    let mut excl: LpmTrie<_, [u8; 4], u32> =
        LpmTrie::try_from(dp.ebpf.map_mut(maps::MASQ_EXCLUDE).unwrap()).unwrap();
    excl.insert(&Key::new(16, [172, 17, 0, 0]), 1, 0).unwrap();
    excl.insert(&Key::new(24, [192, 0, 2, 0]), 1, 0).unwrap();
    let mut config: Array<_, Config> =
        Array::try_from(dp.ebpf.map_mut(maps::CONFIG).unwrap()).unwrap();
    let value = Config {
        netns_cookie: 0,
        nat_port_min: ports.0,
        nat_port_max: ports.1,
        log_level: 0,
        _pad: [0; 3],
    };
    config.set(0, value, 0).unwrap();
    dp
}
