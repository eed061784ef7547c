//! Packet tests: crafted packets pushed through the eBPF programs with BPF_PROG_TEST_RUN,
//! every rewritten byte and both checksums checked against values recomputed from scratch.
//! Each test runs on its own thread inside a fresh network namespace, so the interfaces it
//! names in the skb context exist and nothing outside is touched.
use std::process::Command;

use aya::{
    Ebpf,
    maps::{HashMap, PerCpuArray},
    programs::{CgroupSockAddr, SchedClassifier, TestRun, TestRunOptions},
};
use netpath::datapath::EBPF_OBJECT;
use netpath_common::{
    BridgeInfo, Counter, CtEntry, CtKey, PROTO_TCP, PROTO_UDP, PublishKey, PublishTarget, maps,
    programs,
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
        ip.extend_from_slice(&[64, self.proto, 0, 0]);
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
fn assert_only_tuple_changed(input: &[u8], out: &[u8]) {
    assert_eq!(input.len(), out.len());
    let ihl = usize::from(input[14] & 0x0f) * 4;
    let l4 = 14 + ihl;
    let csum = l4 + if input[23] == PROTO_TCP { 16 } else { 6 };
    let mutable = [
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
        let mut publish: HashMap<_, PublishKey, PublishTarget> =
            HashMap::try_from(ebpf.map_mut(maps::PUBLISH).unwrap()).unwrap();
        let target = |port| PublishTarget {
            container_addr: CONTAINER,
            gateway_addr: GATEWAY,
            bridge_ifindex: br,
            container_port: port,
            _pad: 0,
        };
        let key = |addr, port, proto| PublishKey {
            host_addr: addr,
            host_port: port,
            proto,
            _pad: 0,
        };
        publish
            .insert(key(HOST, 8088, PROTO_TCP), target(80), 0)
            .unwrap();
        publish
            .insert(key(HOST, 5353, PROTO_UDP), target(53), 0)
            .unwrap();
        publish
            .insert(key([0; 4], 9090, PROTO_TCP), target(90), 0)
            .unwrap();
        let mut bridges: HashMap<_, u32, BridgeInfo> =
            HashMap::try_from(ebpf.map_mut(maps::BRIDGES).unwrap()).unwrap();
        bridges.insert(br, BridgeInfo { network_id: 1 }, 0).unwrap();
        for name in [programs::EXT_IN, programs::BR_IN, programs::ISOLATE] {
            let prog: &mut SchedClassifier = ebpf.program_mut(name).unwrap().try_into().unwrap();
            prog.load()
                .unwrap_or_else(|e| panic!("the verifier rejects {name}: {e:?}"));
        }
        Datapath {
            ebpf,
            bridge: br,
            ext,
        }
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
            dp.conntrack().iter().all(|(_, e)| e.state == 1),
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
        let reply_key = CtKey {
            src_addr: [172, 18, 0, 2],
            dst_addr: [172, 17, 0, 2],
            src_port: 53,
            dst_port: 12345,
            proto: PROTO_UDP,
            _pad: [0; 3],
        };
        let entry = CtEntry {
            src_addr: [0; 4],
            dst_addr: [0; 4],
            src_port: 0,
            dst_port: 0,
            redirect_ifindex: 0,
            state: 0,
            flags: 1,
            _pad: [0; 6],
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
