//! Packet tests: crafted packets pushed through the eBPF programs with BPF_PROG_TEST_RUN,
//! every rewritten byte and both checksums checked against values recomputed from scratch.
//! Each test runs on its own thread inside a fresh network namespace, so the interfaces it
//! names in the skb context exist and nothing outside is touched.
use std::process::Command;

use aya::{
    Ebpf,
    maps::{
        Array, HashMap, PerCpuArray,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{CgroupSockAddr, SchedClassifier, TestRun, TestRunOptions},
};
use netpath::system::datapath::EBPF_OBJECT;
use netpath_common::{
    BridgeInfo, CT_FLAG_PEER, CT_FLAG_REPLY, Config, Counter, CtEntry, CtKey, CtState, Endpoint,
    PROTO_ICMP, PROTO_TCP, PROTO_UDP, PublishKey, PublishTarget, maps, programs,
};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

const CLIENT: [u8; 4] = [203, 0, 113, 2];
const HOST: [u8; 4] = [203, 0, 113, 1];
const CONTAINER: [u8; 4] = [172, 17, 0, 2];
const OTHER_CONTAINER: [u8; 4] = [172, 17, 0, 3];
const GATEWAY: [u8; 4] = [172, 17, 0, 1];

/// Runs `f` on a thread that lives in a new, empty network namespace.
fn in_fresh_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        f()
    })
    .join()
    .expect("test thread panicked")
}

/// Creates a bridge in the current thread's namespace (children inherit it), up, with an
/// optional address; returns its ifindex.
fn bridge(name: &str, addr: Option<&str>) -> u32 {
    let ip = |args: &[&str]| assert!(Command::new("ip").args(args).status().unwrap().success());
    ip(&["link", "add", name, "type", "bridge"]);
    if let Some(addr) = addr {
        ip(&["addr", "add", addr, "dev", name]);
    }
    ip(&["link", "set", name, "up"]);
    // Not /sys/class/net: this process's sysfs shows the namespace it was mounted in.
    let out = Command::new("ip")
        .args(["-j", "link", "show", name])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    u32::try_from(v[0]["ifindex"].as_u64().unwrap()).unwrap()
}

/// A `struct __sk_buff` prefix with only the fields BPF_PROG_TEST_RUN lets us set here.
fn skb_ctx(ingress_ifindex: u32, ifindex: u32) -> [u8; 44] {
    let mut ctx = [0u8; 44];
    ctx[36..40].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

/// The Internet checksum of `data` folded into 16 bits, starting from `sum`.
fn fold(mut sum: u32, data: &[u8]) -> u16 {
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

struct Pkt {
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    proto: u8,
    tcp_flags: u8,
    ip_options: usize,
    frag: u16,
    udp_csum: bool,
    ttl: u8,
}

impl Pkt {
    fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8) -> Pkt {
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

    fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Pkt {
        Pkt {
            proto: PROTO_UDP,
            tcp_flags: 0,
            ..Pkt::tcp(src, sport, dst, dport, 0)
        }
    }

    /// Ethernet + IPv4 (with options if asked) + TCP or UDP + 6 bytes of payload, with
    /// correct checksums.
    fn build(&self) -> Vec<u8> {
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

fn l4_checksum(src: &[u8], dst: &[u8], proto: u8, l4: &[u8]) -> u16 {
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
fn assert_checksums(out: &[u8]) {
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
fn tuple(p: &[u8]) -> ([u8; 4], u16, [u8; 4], u16) {
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
fn assert_only_tuple_changed(input: &[u8], out: &[u8]) {
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
struct Datapath {
    ebpf: Ebpf,
    bridge: u32,
    ext: u32,
}

impl Datapath {
    fn new() -> Datapath {
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
        bridges.insert(br, BridgeInfo { network_id: 1 }, 0).unwrap();
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
    fn publish(&mut self, host_addr: [u8; 4], host_port: u16, proto: u8, port: u16) {
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
    fn run(&mut self, prog: &str, ifindex: u32, input: &[u8]) -> (u32, Vec<u8>) {
        let prog: &mut SchedClassifier = self.ebpf.program_mut(prog).unwrap().try_into().unwrap();
        let ctx = skb_ctx(0, ifindex);
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
    fn add_endpoint(&mut self, addr: [u8; 4], host_ifindex: u32) {
        let mut endpoints: HashMap<_, [u8; 4], Endpoint> =
            HashMap::try_from(self.ebpf.map_mut(maps::ENDPOINTS).unwrap()).unwrap();
        let endpoint = Endpoint {
            host_ifindex,
            mac: ENDPOINT_MAC,
            _pad: [0; 2],
        };
        endpoints.insert(addr, endpoint, 0).unwrap();
    }

    fn counter(&self, c: Counter) -> u64 {
        let counters: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map(maps::COUNTERS).unwrap()).unwrap();
        counters.get(&(c as u32), 0).unwrap().iter().sum()
    }

    fn conntrack(&self) -> Vec<(CtKey, CtEntry)> {
        let ct: HashMap<_, CtKey, CtEntry> =
            HashMap::try_from(self.ebpf.map(maps::CONNTRACK).unwrap()).unwrap();
        ct.iter().map(Result::unwrap).collect()
    }
}

/// A registered container's MAC: unlike any address `Pkt` frames carry, so that a rewrite
/// of the destination shows.
const ENDPOINT_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0xee, 0x02];

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

#[test]
fn tcp_syn_to_a_published_port_and_its_reply() {
    in_fresh_netns(|| {
        let mut dp = Datapath::new();
        let syn = Pkt::tcp(CLIENT, 40000, HOST, 8088, SYN).build();
        let (verdict, out) = dp.run(programs::EXT_IN, dp.ext, &syn);
        assert_eq!(verdict, TC_ACT_REDIRECT, "sent straight to the bridge");
        assert_eq!(
            tuple(&out),
            (CLIENT, 40000, CONTAINER, 80),
            "DNAT keeps the client's address"
        );
        assert_only_tuple_changed(&syn, &out);
        assert_checksums(&out);
        assert_eq!(dp.counter(Counter::NatNew), 1);
        let ct = dp.conntrack();
        assert_eq!(ct.len(), 2, "a forward and a reply entry: {ct:?}");

        // The container answers; the reply leaves with the published address and port.
        let syn_ack = Pkt::tcp(CONTAINER, 80, CLIENT, 40000, SYN | ACK).build();
        let (verdict, out) = dp.run(programs::BR_IN, dp.bridge, &syn_ack);
        assert_eq!(
            verdict, TC_ACT_REDIRECT,
            "sent straight out of the client's interface"
        );
        assert_eq!(tuple(&out), (HOST, 8088, CLIENT, 40000));
        assert_only_tuple_changed(&syn_ack, &out);
        assert_checksums(&out);
        // The handshake completed: both directions are established.
        assert!(
            dp.conntrack()
                .iter()
                .all(|(_, e)| e.state == CtState::Established as u8),
            "{:?}",
            dp.conntrack()
        );

        // The rest of the connection follows the entries, with no new ones.
        let ack = Pkt::tcp(CLIENT, 40000, HOST, 8088, ACK).build();
        let (verdict, out) = dp.run(programs::EXT_IN, dp.ext, &ack);
        assert_eq!(
            (verdict, tuple(&out)),
            (TC_ACT_REDIRECT, (CLIENT, 40000, CONTAINER, 80))
        );
        assert_checksums(&out);
        assert_eq!(dp.counter(Counter::NatNew), 1);
        assert_eq!(dp.counter(Counter::NatHit), 2);
    });
}

#[test]
fn udp_with_and_without_checksum() {
    in_fresh_netns(|| {
        let mut dp = Datapath::new();
        let query = Pkt::udp(CLIENT, 33333, HOST, 5353).build();
        let (verdict, out) = dp.run(programs::EXT_IN, dp.ext, &query);
        assert_eq!(
            (verdict, tuple(&out)),
            (TC_ACT_REDIRECT, (CLIENT, 33333, CONTAINER, 53))
        );
        assert_only_tuple_changed(&query, &out);
        assert_checksums(&out);
        let answer = Pkt::udp(CONTAINER, 53, CLIENT, 33333).build();
        let (_, out) = dp.run(programs::BR_IN, dp.bridge, &answer);
        assert_eq!(tuple(&out), (HOST, 5353, CLIENT, 33333));
        assert_checksums(&out);

        // A checksum of 0 means "none" and stays 0.
        let bare = Pkt {
            udp_csum: false,
            ..Pkt::udp(CLIENT, 33334, HOST, 5353)
        }
        .build();
        let (verdict, out) = dp.run(programs::EXT_IN, dp.ext, &bare);
        assert_eq!(
            (verdict, tuple(&out)),
            (TC_ACT_REDIRECT, (CLIENT, 33334, CONTAINER, 53))
        );
        assert_eq!(&out[40..42], &[0, 0], "UDP checksum must stay 0");
        assert_checksums(&out);
    });
}

#[test]
fn packets_that_match_nothing_pass_untouched() {
    in_fresh_netns(|| {
        let mut dp = Datapath::new();
        let cases = [
            (
                "an unpublished port",
                Pkt::tcp(CLIENT, 40000, HOST, 8089, SYN),
            ),
            (
                "another host address than the publish's",
                Pkt::tcp(CLIENT, 40000, [203, 0, 113, 9], 8088, SYN),
            ),
            ("UDP to a TCP publish", Pkt::udp(CLIENT, 40000, HOST, 8088)),
            (
                "TCP without SYN and no connection",
                Pkt::tcp(CLIENT, 40000, HOST, 8088, ACK),
            ),
            (
                "a non-first fragment",
                Pkt {
                    frag: 100,
                    ..Pkt::udp(CLIENT, 40000, HOST, 5353)
                },
            ),
            (
                "a first fragment (more fragments)",
                Pkt {
                    frag: 0x2000,
                    ..Pkt::udp(CLIENT, 40000, HOST, 5353)
                },
            ),
            (
                "a packet that would expire on the way (TTL 1)",
                Pkt {
                    ttl: 1,
                    ..Pkt::tcp(CLIENT, 40000, HOST, 8088, SYN)
                },
            ),
            (
                "the wildcard port on a non-local address",
                Pkt::tcp(CLIENT, 40000, [198, 51, 100, 7], 9090, SYN),
            ),
        ];
        for (what, pkt) in cases {
            let input = pkt.build();
            let (verdict, out) = dp.run(programs::EXT_IN, dp.ext, &input);
            assert_eq!((verdict, &out), (TC_ACT_OK, &input), "{what}");
        }
        // Truncated: the TCP header is cut short.
        let mut cut = Pkt::tcp(CLIENT, 40000, HOST, 8088, SYN).build();
        cut.truncate(14 + 20 + 12);
        let (verdict, out) = dp.run(programs::EXT_IN, dp.ext, &cut);
        assert_eq!((verdict, &out), (TC_ACT_OK, &cut), "truncated");
        assert_eq!(dp.counter(Counter::NatNew), 0);
        assert!(dp.conntrack().is_empty());
    });
}

#[test]
fn wildcard_publish_and_ip_options() {
    in_fresh_netns(|| {
        let mut dp = Datapath::new();
        // The every-address publish answers on each local address, the gateway included.
        for (local, port) in [(HOST, 40001), (GATEWAY, 40002)] {
            let input = Pkt {
                ip_options: 8,
                ..Pkt::tcp(CLIENT, port, local, 9090, SYN)
            }
            .build();
            let (verdict, out) = dp.run(programs::EXT_IN, dp.ext, &input);
            assert_eq!(
                (verdict, tuple(&out)),
                (TC_ACT_REDIRECT, (CLIENT, port, CONTAINER, 90))
            );
            assert_eq!(&out[34..42], &input[34..42], "IP options kept");
            assert_only_tuple_changed(&input, &out);
            assert_checksums(&out);
            let reply = Pkt::tcp(CONTAINER, 90, CLIENT, port, SYN | ACK).build();
            let (_, out) = dp.run(programs::BR_IN, dp.bridge, &reply);
            assert_eq!(tuple(&out), (local, 9090, CLIENT, port));
            // A connection closed by RST is reopened by the next SYN on the same tuple.
            let rst = Pkt::tcp(CLIENT, port, local, 9090, 0x04).build();
            dp.run(programs::EXT_IN, dp.ext, &rst);
            let syn = Pkt::tcp(CLIENT, port, local, 9090, SYN).build();
            assert_eq!(
                dp.run(programs::EXT_IN, dp.ext, &syn).0,
                TC_ACT_REDIRECT,
                "a SYN reopens"
            );
            dp.run(programs::EXT_IN, dp.ext, &rst);
        }
    });
}

#[test]
fn a_reopened_connection_is_renewed_in_place_unless_its_translation_changed() {
    in_fresh_netns(|| {
        let mut dp = Datapath::new();
        let syn = Pkt::tcp(CLIENT, 40000, HOST, 8088, SYN).build();
        let reply = Pkt::tcp(CONTAINER, 80, CLIENT, 40000, SYN | ACK).build();
        let fin = Pkt::tcp(CONTAINER, 80, CLIENT, 40000, 0x01 | ACK).build();
        dp.run(programs::EXT_IN, dp.ext, &syn);
        dp.run(programs::BR_IN, dp.bridge, &reply);
        dp.run(programs::BR_IN, dp.bridge, &fin);
        let churn = |dp: &Datapath| {
            (
                dp.counter(Counter::CtInsert),
                dp.counter(Counter::CtRemove),
                dp.counter(Counter::NatNew),
            )
        };
        assert_eq!(churn(&dp), (2, 0, 1));
        // The client reuses its port once the connection is closing: same translation, the
        // two entries are renewed where they are.
        let (verdict, out) = dp.run(programs::EXT_IN, dp.ext, &syn);
        assert_eq!(
            (verdict, tuple(&out)),
            (TC_ACT_REDIRECT, (CLIENT, 40000, CONTAINER, 80))
        );
        assert_checksums(&out);
        assert_eq!(churn(&dp), (2, 0, 2), "renewed without map updates");
        let ct = dp.conntrack();
        assert_eq!(ct.len(), 2);
        assert!(
            ct.iter().all(|(_, e)| e.state == CtState::New as u8),
            "both directions start over: {ct:?}"
        );
        let (verdict, out) = dp.run(programs::BR_IN, dp.bridge, &reply);
        assert_eq!(
            (verdict, tuple(&out)),
            (TC_ACT_REDIRECT, (HOST, 8088, CLIENT, 40000))
        );
        assert_checksums(&out);
        // Re-published to another container port: the next reuse gets new entries and the
        // old ones go.
        dp.run(programs::BR_IN, dp.bridge, &fin);
        dp.publish(HOST, 8088, PROTO_TCP, 81);
        let (verdict, out) = dp.run(programs::EXT_IN, dp.ext, &syn);
        assert_eq!(
            (verdict, tuple(&out)),
            (TC_ACT_REDIRECT, (CLIENT, 40000, CONTAINER, 81))
        );
        assert_eq!(churn(&dp), (4, 2, 3));
        let mut keys: Vec<_> = dp
            .conntrack()
            .into_iter()
            .map(|(k, _)| (k.src_addr, k.src_port, k.dst_addr, k.dst_port))
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [(CONTAINER, 81, CLIENT, 40000), (CLIENT, 40000, HOST, 8088)]
        );
    });
}

#[test]
fn hairpin_from_a_container_is_snated_to_the_gateway() {
    in_fresh_netns(|| {
        let mut dp = Datapath::new();
        let syn = Pkt::tcp(OTHER_CONTAINER, 50000, HOST, 8088, SYN).build();
        let (verdict, out) = dp.run(programs::BR_IN, dp.bridge, &syn);
        assert_eq!(
            (verdict, tuple(&out)),
            (TC_ACT_REDIRECT, (GATEWAY, 50000, CONTAINER, 80))
        );
        assert_only_tuple_changed(&syn, &out);
        assert_checksums(&out);
        let reply = Pkt::tcp(CONTAINER, 80, GATEWAY, 50000, SYN | ACK).build();
        let (verdict, out) = dp.run(programs::BR_IN, dp.bridge, &reply);
        assert_eq!(
            (verdict, tuple(&out)),
            (TC_ACT_REDIRECT, (HOST, 8088, OTHER_CONTAINER, 50000))
        );
        assert_checksums(&out);

        // A second container using the same source port gets another one: no collision.
        let syn2 = Pkt::tcp([172, 17, 0, 4], 50000, HOST, 8088, SYN).build();
        let (verdict, out) = dp.run(programs::BR_IN, dp.bridge, &syn2);
        let (src, sport, dst, dport) = tuple(&out);
        assert_eq!(
            (verdict, src, dst, dport),
            (TC_ACT_REDIRECT, GATEWAY, CONTAINER, 80)
        );
        assert_ne!(sport, 50000, "source port collision not resolved");
        assert_checksums(&out);
        assert_eq!(dp.conntrack().len(), 4);
    });
}

#[test]
fn isolate_drops_only_traffic_routed_between_netpath_networks() {
    in_fresh_netns(|| {
        let (br_a, br_b, other) = (
            bridge("bra", None),
            bridge("brb", None),
            bridge("foreign", None),
        );
        let mut ebpf = Ebpf::load(EBPF_OBJECT).expect("load object");
        let mut bridges: HashMap<_, u32, BridgeInfo> =
            HashMap::try_from(ebpf.take_map(maps::BRIDGES).unwrap()).unwrap();
        bridges
            .insert(br_a, BridgeInfo { network_id: 1 }, 0)
            .unwrap();
        bridges
            .insert(br_b, BridgeInfo { network_id: 2 }, 0)
            .unwrap();
        let counters: PerCpuArray<_, u64> =
            PerCpuArray::try_from(ebpf.take_map(maps::COUNTERS).unwrap()).unwrap();
        let mut ct: HashMap<_, CtKey, CtEntry> =
            HashMap::try_from(ebpf.take_map(maps::CONNTRACK).unwrap()).unwrap();
        let prog: &mut SchedClassifier = ebpf
            .program_mut(programs::ISOLATE)
            .unwrap()
            .try_into()
            .unwrap();
        prog.load().expect("the verifier accepts np_isolate");

        let input = Pkt::udp([172, 17, 0, 2], 12345, [172, 18, 0, 2], 53).build();
        let run = |ingress: u32, egress: u32| {
            let ctx = skb_ctx(ingress, egress);
            let mut out = vec![0u8; input.len()];
            let result = prog
                .test_run(TestRunOptions {
                    data_in: Some(&input),
                    data_out: Some(&mut out),
                    ctx_in: Some(&ctx),
                    ..TestRunOptions::new()
                })
                .expect("BPF_PROG_TEST_RUN");
            // np_isolate decides, it never rewrites.
            assert_eq!(out[..result.data_size_out as usize], input[..]);
            result.return_value
        };
        let drops = || -> u64 {
            counters
                .get(&(Counter::DropIsolation as u32), 0)
                .unwrap()
                .iter()
                .sum()
        };

        assert_eq!(run(br_a, br_b), TC_ACT_SHOT, "network 1 -> network 2");
        assert_eq!(run(br_b, br_a), TC_ACT_SHOT, "network 2 -> network 1");
        assert_eq!(drops(), 2);
        assert_eq!(run(0, br_b), TC_ACT_OK, "sent by the host itself");
        assert_eq!(
            run(other, br_b),
            TC_ACT_OK,
            "from an interface netpath does not own"
        );
        assert_eq!(
            run(br_a, other),
            TC_ACT_OK,
            "to an interface netpath does not own"
        );
        // A translated connection (its reply entry exists) may cross.
        let reply_key = CtKey::new([172, 18, 0, 2], [172, 17, 0, 2], 53, 12345, PROTO_UDP);
        let entry = CtEntry {
            src_addr: [0; 4],
            dst_addr: [0; 4],
            src_port: 0,
            dst_port: 0,
            redirect_ifindex: 0,
            state: CtState::New as u8,
            flags: CT_FLAG_REPLY,
            dst_mac: [0; 6],
            last_seen_ns: 0,
        };
        ct.insert(reply_key, entry, 0).unwrap();
        assert_eq!(
            run(br_a, br_b),
            TC_ACT_OK,
            "a published connection across networks"
        );
        bridges
            .insert(br_b, BridgeInfo { network_id: 1 }, 0)
            .unwrap();
        assert_eq!(run(br_b, br_a), TC_ACT_OK, "two bridges of one network");
        assert_eq!(drops(), 2, "passes are not counted as drops");
    });
}

#[test]
fn the_verifier_accepts_the_socket_programs() {
    let mut ebpf = Ebpf::load(EBPF_OBJECT).expect("load object");
    for name in [
        programs::CONNECT4,
        programs::SENDMSG4,
        programs::RECVMSG4,
        programs::GETPEERNAME4,
    ] {
        let prog: &mut CgroupSockAddr = ebpf.program_mut(name).unwrap().try_into().unwrap();
        prog.load()
            .unwrap_or_else(|e| panic!("the verifier rejects {name}: {e:?}"));
    }
}

const SERVER: [u8; 4] = [198, 51, 100, 10];
const ROUTER: [u8; 4] = [203, 0, 113, 254];

/// Ethernet + an IPv4 header (valid checksum) around `l4`.
fn ipv4_frame(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
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
fn icmp(src: [u8; 4], dst: [u8; 4], icmp_type: u8, code: u8, rest: &[u8]) -> Vec<u8> {
    let mut m = vec![icmp_type, code, 0, 0];
    m.extend_from_slice(rest);
    let c = fold(0, &m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4_frame(src, dst, PROTO_ICMP, &m)
}

fn echo(src: [u8; 4], dst: [u8; 4], icmp_type: u8, id: u16) -> Vec<u8> {
    let mut rest = id.to_be_bytes().to_vec();
    rest.extend_from_slice(&[0, 1, b'p', b'i', b'n', b'g']);
    icmp(src, dst, icmp_type, 0, &rest)
}

/// The object set up for masquerade: the default route leaves through ext0 (registered as
/// external), 172.17.0.0/16 and 192.0.2.0/24 are excluded, NAT ports are `ports`.
fn masquerading(ports: (u16, u16)) -> Datapath {
    let mut dp = Datapath::new();
    let ok = Command::new("ip")
        .args([
            "route",
            "add",
            "default",
            "via",
            "203.0.113.2",
            "dev",
            "ext0",
        ])
        .status()
        .unwrap();
    assert!(ok.success());
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

#[test]
fn masquerade_of_an_outgoing_tcp_flow_and_a_colliding_one() {
    in_fresh_netns(|| {
        let mut dp = masquerading((50000, 50009));
        let syn = Pkt::tcp(CONTAINER, 40000, SERVER, 80, SYN).build();
        let (verdict, out) = dp.run(programs::BR_IN, dp.bridge, &syn);
        assert_eq!(
            verdict, TC_ACT_REDIRECT,
            "sent straight out of the external interface"
        );
        assert_eq!(
            tuple(&out),
            (HOST, 40000, SERVER, 80),
            "source port kept when free"
        );
        assert_only_tuple_changed(&syn, &out);
        assert_checksums(&out);
        assert_eq!(dp.counter(Counter::MasqNew), 1);

        let reply = Pkt::tcp(SERVER, 80, HOST, 40000, SYN | ACK).build();
        let (verdict, out) = dp.run(programs::EXT_IN, dp.ext, &reply);
        assert_eq!(
            (verdict, tuple(&out)),
            (TC_ACT_REDIRECT, (SERVER, 80, CONTAINER, 40000))
        );
        assert_only_tuple_changed(&reply, &out);
        assert_checksums(&out);

        // Another container, same source port, same server: another port from the range.
        let syn2 = Pkt::tcp(OTHER_CONTAINER, 40000, SERVER, 80, SYN).build();
        let (verdict, out) = dp.run(programs::BR_IN, dp.bridge, &syn2);
        let (src, sport, dst, dport) = tuple(&out);
        assert_eq!(
            (verdict, src, dst, dport),
            (TC_ACT_REDIRECT, HOST, SERVER, 80)
        );
        assert!(
            (50000..=50009).contains(&sport),
            "port {sport} outside the NAT range"
        );
        assert_checksums(&out);
        let reply2 = Pkt::tcp(SERVER, 80, HOST, sport, SYN | ACK).build();
        let (_, out) = dp.run(programs::EXT_IN, dp.ext, &reply2);
        assert_eq!(tuple(&out), (SERVER, 80, OTHER_CONTAINER, 40000));
        assert_checksums(&out);
    });
}

#[test]
fn masquerade_leaves_excluded_destinations_and_exhaustion_drops() {
    in_fresh_netns(|| {
        let mut dp = masquerading((50000, 50001));
        for dst in [[192, 0, 2, 7], OTHER_CONTAINER] {
            let input = Pkt::udp(CONTAINER, 5000, dst, 53).build();
            let (verdict, out) = dp.run(programs::BR_IN, dp.bridge, &input);
            assert_eq!(
                (verdict, &out),
                (TC_ACT_OK, &input),
                "to {dst:?} keeps its source"
            );
        }
        // Four containers, one source port, one server, two NAT ports: the first keeps its
        // own, two get the range, the fourth is dropped and counted, never mistranslated.
        let mut ports = Vec::new();
        for last in 2..=5 {
            let input = Pkt::udp([172, 17, 0, last], 5000, SERVER, 53).build();
            let (verdict, out) = dp.run(programs::BR_IN, dp.bridge, &input);
            if last == 5 {
                assert_eq!(verdict, TC_ACT_SHOT);
            } else {
                assert_eq!(verdict, TC_ACT_REDIRECT);
                ports.push(tuple(&out).1);
            }
        }
        ports.sort();
        assert_eq!(ports, [5000, 50000, 50001]);
        assert_eq!(dp.counter(Counter::DropNoPort), 1);
    });
}

#[test]
fn masquerade_of_icmp_echo() {
    in_fresh_netns(|| {
        let mut dp = masquerading((50000, 50009));
        let request = echo(CONTAINER, SERVER, 8, 0x1234);
        let (verdict, out) = dp.run(programs::BR_IN, dp.bridge, &request);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(&out[26..34], &[HOST, SERVER].concat()[..]);
        assert_eq!(&out[38..40], &[0x12, 0x34], "identifier kept when free");
        assert_checksums(&out);
        // A second container pinging with the same identifier gets another one.
        let request2 = echo(OTHER_CONTAINER, SERVER, 8, 0x1234);
        let (_, out2) = dp.run(programs::BR_IN, dp.bridge, &request2);
        let id2 = u16::from_be_bytes([out2[38], out2[39]]);
        assert!((50000..=50009).contains(&id2));
        assert_checksums(&out2);

        let reply = echo(SERVER, HOST, 0, id2);
        let (verdict, out) = dp.run(programs::EXT_IN, dp.ext, &reply);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(&out[26..34], &[SERVER, OTHER_CONTAINER].concat()[..]);
        assert_eq!(&out[38..40], &[0x12, 0x34], "identifier translated back");
        assert_checksums(&out);
    });
}

#[test]
fn icmp_errors_about_a_translated_flow_are_translated_back() {
    in_fresh_netns(|| {
        let mut dp = masquerading((50000, 50009));
        // Two flows from one source port, so that the second's port is translated.
        for container in [CONTAINER, OTHER_CONTAINER] {
            let syn = Pkt::udp(container, 40000, SERVER, 4433).build();
            assert_eq!(dp.run(programs::BR_IN, dp.bridge, &syn).0, TC_ACT_REDIRECT);
        }
        let (_, sent) = dp.run(
            programs::BR_IN,
            dp.bridge,
            &Pkt::udp(OTHER_CONTAINER, 40000, SERVER, 4433).build(),
        );
        let nat_port = tuple(&sent).1;
        assert_ne!(nat_port, 40000);
        // A router on the way cannot forward it: fragmentation needed (type 3, code 4, MTU
        // 1280), quoting the packet as it left the host.
        let quoted = &sent[14..14 + 28];
        let mut rest = vec![0, 0, 0x05, 0x00];
        rest.extend_from_slice(quoted);
        let error = icmp(ROUTER, HOST, 3, 4, &rest);
        let (verdict, out) = dp.run(programs::EXT_IN, dp.ext, &error);
        assert_eq!(verdict, TC_ACT_REDIRECT, "sent to the container's bridge");
        assert_eq!(
            &out[26..34],
            &[ROUTER, OTHER_CONTAINER].concat()[..],
            "outer destination"
        );
        let inner = &out[42..];
        assert_eq!(
            &inner[12..20],
            &[OTHER_CONTAINER, SERVER].concat()[..],
            "quoted addresses"
        );
        assert_eq!(
            &inner[20..24],
            &[&40000u16.to_be_bytes()[..], &4433u16.to_be_bytes()[..]].concat()[..],
            "quoted ports"
        );
        assert_eq!(fold(0, &inner[..20]), 0, "quoted IPv4 header checksum");
        assert_checksums(&out);
        // Everything else is as the router sent it.
        assert_eq!(out[22], error[22] - 1, "TTL decremented");
        for i in (0..out.len()).filter(|i| {
            ![22, 24, 25, 30, 31, 32, 33, 36, 37].contains(i) && !(42 + 10..42 + 24).contains(i)
        }) {
            assert_eq!(out[i], error[i], "byte {i} changed");
        }
        assert_eq!(dp.counter(Counter::IcmpError), 1);

        // An error about a flow netpath does not know passes untouched.
        let mut stray = sent[14..14 + 28].to_vec();
        stray[20..22].copy_from_slice(&1u16.to_be_bytes());
        let stray = icmp(ROUTER, HOST, 11, 0, &[vec![0; 4], stray].concat());
        let (verdict, out) = dp.run(programs::EXT_IN, dp.ext, &stray);
        assert_eq!((verdict, &out), (TC_ACT_OK, &stray));
    });
}

#[test]
fn published_connections_go_straight_into_a_known_container() {
    in_fresh_netns(|| {
        let mut dp = Datapath::new();
        dp.add_endpoint(CONTAINER, 4242);
        let mac = ENDPOINT_MAC;

        let syn = Pkt::tcp(CLIENT, 40000, HOST, 8088, SYN).build();
        let (verdict, out) = dp.run(programs::EXT_IN, dp.ext, &syn);
        assert_eq!(verdict, TC_ACT_REDIRECT, "into the container's namespace");
        assert_eq!(out[..6], mac, "the container's MAC as destination");
        assert_eq!(tuple(&out), (CLIENT, 40000, CONTAINER, 80));
        let mut expected = syn.clone();
        expected[..6].copy_from_slice(&mac);
        assert_only_tuple_changed(&expected, &out);
        assert_checksums(&out);
        let entry = dp
            .conntrack()
            .into_iter()
            .find(|(k, _)| k.src_addr == CLIENT)
            .unwrap()
            .1;
        assert_eq!(
            (entry.redirect_ifindex, entry.flags, entry.dst_mac),
            (4242, CT_FLAG_PEER, mac)
        );
        // The rest of the connection follows the same way.
        let ack = Pkt::tcp(CLIENT, 40000, HOST, 8088, ACK).build();
        let (verdict, out) = dp.run(programs::EXT_IN, dp.ext, &ack);
        assert_eq!((verdict, &out[..6]), (TC_ACT_REDIRECT, &mac[..]));
    });
}

#[test]
fn a_containers_veth_translates_before_the_bridge() {
    in_fresh_netns(|| {
        let mut dp = masquerading((50000, 50009));
        let veth = bridge("vethhost", None);
        dp.add_endpoint(CONTAINER, veth);
        let mac = ENDPOINT_MAC;

        // Masquerade: out of the external interface from the veth, the reply straight back in.
        let syn = Pkt::tcp(CONTAINER, 40000, SERVER, 80, SYN).build();
        let (verdict, out) = dp.run(programs::VETH_IN, veth, &syn);
        assert_eq!(
            (verdict, tuple(&out)),
            (TC_ACT_REDIRECT, (HOST, 40000, SERVER, 80))
        );
        assert_only_tuple_changed(&syn, &out);
        assert_checksums(&out);
        let reply = Pkt::tcp(SERVER, 80, HOST, 40000, SYN | ACK).build();
        let (verdict, out) = dp.run(programs::EXT_IN, dp.ext, &reply);
        assert_eq!(
            (verdict, tuple(&out), &out[..6]),
            (TC_ACT_REDIRECT, (SERVER, 80, CONTAINER, 40000), &mac[..])
        );
        let mut expected = reply.clone();
        expected[..6].copy_from_slice(&mac);
        assert_only_tuple_changed(&expected, &out);
        assert_checksums(&out);
        assert_eq!(dp.counter(Counter::MasqNew), 1);

        // A published connection's reply leaves from the veth too.
        let syn = Pkt::tcp(CLIENT, 40001, HOST, 8088, SYN).build();
        assert_eq!(dp.run(programs::EXT_IN, dp.ext, &syn).0, TC_ACT_REDIRECT);
        let syn_ack = Pkt::tcp(CONTAINER, 80, CLIENT, 40001, SYN | ACK).build();
        let (verdict, out) = dp.run(programs::VETH_IN, veth, &syn_ack);
        assert_eq!(
            (verdict, tuple(&out)),
            (TC_ACT_REDIRECT, (HOST, 8088, CLIENT, 40001))
        );
        assert_only_tuple_changed(&syn_ack, &out);
        assert_checksums(&out);

        // Hairpin from this container: straight into the target, and the reply back into
        // this one, both past the bridge.
        let syn = Pkt::tcp(CONTAINER, 40002, HOST, 8088, SYN).build();
        let (verdict, out) = dp.run(programs::VETH_IN, veth, &syn);
        assert_eq!(
            (verdict, tuple(&out), &out[..6]),
            (TC_ACT_REDIRECT, (GATEWAY, 40002, CONTAINER, 80), &mac[..])
        );
        assert_checksums(&out);
        let back = Pkt::tcp(CONTAINER, 80, GATEWAY, 40002, SYN | ACK).build();
        let (verdict, out) = dp.run(programs::VETH_IN, veth, &back);
        assert_eq!(
            (verdict, tuple(&out), &out[..6]),
            (TC_ACT_REDIRECT, (HOST, 8088, CONTAINER, 40002), &mac[..])
        );
        assert_checksums(&out);

        // A new connection from an address that is not this veth's container is the
        // bridge's business: untouched here.
        let stranger = Pkt::tcp(OTHER_CONTAINER, 40003, SERVER, 80, SYN).build();
        assert_eq!(
            dp.run(programs::VETH_IN, veth, &stranger),
            (TC_ACT_OK, stranger.clone())
        );
        assert_eq!(dp.counter(Counter::MasqNew), 1);
    });
}

#[test]
fn a_resolved_next_hop_gets_the_frame_addressed_to_it() {
    in_fresh_netns(|| {
        let mut dp = masquerading((50000, 50009));
        // The router's MAC is known: the frame leaves addressed to it, from ext0's MAC,
        // without the kernel's neighbour output path.
        let router_mac = [0x02, 0, 0, 0, 0, 0x02];
        netpath_tests::ip(&[
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
        let link = netpath_tests::ip_json(None, &["link", "show", "ext0"]);
        let ext_mac: Vec<u8> = link[0]["address"]
            .as_str()
            .unwrap()
            .split(':')
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect();

        let syn = Pkt::tcp(CONTAINER, 40000, SERVER, 80, SYN).build();
        let (verdict, out) = dp.run(programs::BR_IN, dp.bridge, &syn);
        assert_eq!(
            (verdict, tuple(&out)),
            (TC_ACT_REDIRECT, (HOST, 40000, SERVER, 80))
        );
        assert_eq!(out[..6], router_mac, "destination: the next hop");
        assert_eq!(out[6..12], ext_mac[..], "source: the external interface");
        let mut expected = syn.clone();
        expected[..6].copy_from_slice(&router_mac);
        expected[6..12].copy_from_slice(&ext_mac);
        assert_only_tuple_changed(&expected, &out);
        assert_checksums(&out);
    });
}

// ---- Source validation on a container's veth (np_veth_in) ----

/// What `netpath run` sets for a container's host-side veth: the only source (address and
/// MAC) the container may send from, or with `SOURCE_ANY` any.
fn set_source(dp: &mut Datapath, host_ifindex: u32, addr: [u8; 4], mac: [u8; 6], flags: u8) {
    let mut sources: HashMap<_, u32, netpath_common::SourceGuard> =
        HashMap::try_from(dp.ebpf.map_mut(maps::SOURCES).unwrap()).unwrap();
    let guard = netpath_common::SourceGuard {
        addr,
        mac,
        flags,
        _pad: 0,
    };
    sources.insert(host_ifindex, guard, 0).unwrap();
}

/// The source MAC of every frame `Pkt` builds.
const PKT_SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];

/// A broadcast ARP request from `mac`, `sender` asking for `target`.
fn arp_request(mac: [u8; 6], sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&sender);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f
}

#[test]
fn a_forged_source_is_dropped_on_the_veth_before_any_translation() {
    in_fresh_netns(|| {
        let mut dp = masquerading((50000, 50009));
        let veth = bridge("vethhost", None);
        dp.add_endpoint(CONTAINER, veth);
        set_source(&mut dp, veth, CONTAINER, PKT_SRC_MAC, 0);

        // The container's own source is translated as always.
        let syn = Pkt::tcp(CONTAINER, 40000, SERVER, 80, SYN).build();
        assert_eq!(dp.run(programs::VETH_IN, veth, &syn).0, TC_ACT_REDIRECT);
        let ct = dp.conntrack().len();

        // A neighbour's address, an unassigned one, 0.0.0.0 (DHCP), a forged MAC: dropped,
        // counted, nothing tracked.
        let mut forged_mac = Pkt::tcp(CONTAINER, 40001, SERVER, 80, SYN).build();
        forged_mac[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0xbe, 0xef]);
        let forged = [
            Pkt::tcp(OTHER_CONTAINER, 40002, SERVER, 80, SYN).build(),
            Pkt::udp([172, 17, 0, 200], 40003, HOST, 5353).build(),
            Pkt::udp([0; 4], 68, [255; 4], 67).build(),
            forged_mac,
        ];
        for frame in &forged {
            assert_eq!(dp.run(programs::VETH_IN, veth, frame).0, TC_ACT_SHOT);
        }
        assert_eq!(dp.counter(Counter::DropSpoofed), forged.len() as u64);
        assert_eq!(dp.conntrack().len(), ct, "a forged packet was tracked");
        assert_eq!(dp.counter(Counter::MasqNew), 1);
        assert_eq!(dp.counter(Counter::NatNew), 0);

        // ARP passes, even with a forged sender (IPv4 only is checked).
        for arp in [
            arp_request(PKT_SRC_MAC, CONTAINER, GATEWAY),
            arp_request([0x02, 0, 0, 0, 0xbe, 0xef], OTHER_CONTAINER, GATEWAY),
        ] {
            assert_eq!(
                dp.run(programs::VETH_IN, veth, &arp),
                (TC_ACT_OK, arp.clone())
            );
        }

        // A veth netpath knows no source for passes everything, as before.
        let elsewhere = bridge("vethother", None);
        let stranger = Pkt::tcp(OTHER_CONTAINER, 40004, SERVER, 80, SYN).build();
        assert_eq!(
            dp.run(programs::VETH_IN, elsewhere, &stranger),
            (TC_ACT_OK, stranger.clone())
        );

        // The opt-out: forged sources go on (to the bridge, untranslated here).
        set_source(
            &mut dp,
            veth,
            CONTAINER,
            PKT_SRC_MAC,
            netpath_common::SOURCE_ANY,
        );
        assert_eq!(
            dp.run(programs::VETH_IN, veth, &stranger),
            (TC_ACT_OK, stranger.clone())
        );
        assert_eq!(dp.counter(Counter::DropSpoofed), forged.len() as u64);
    });
}
