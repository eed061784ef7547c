//! Packet tests of what passes untouched or is dropped: packets that match nothing, the
//! isolation between netpath networks, and the socket programs the verifier must accept.
//! The harness is [`netpath_tests::packet`].
use aya::{
    Ebpf,
    maps::{HashMap, PerCpuArray},
    programs::{CgroupSockAddr, SchedClassifier, TestRun, TestRunOptions},
};
use netpath::system::datapath::EBPF_OBJECT;
use netpath_common::{
    BridgeInfo, CT_FLAG_REPLY, Counter, CtEntry, CtKey, CtState, PROTO_UDP, maps, programs,
};
use netpath_tests::packet::{
    ACK, CLIENT, Datapath, HOST, Pkt, SYN, TC_ACT_OK, TC_ACT_SHOT, bridge, fold, in_fresh_netns,
    skb_ctx,
};

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
            // Fragments are translated (packet_fragments.rs): the ones of a datagram to an
            // unpublished port pass, the later following the first.
            (
                "a first fragment (more fragments) to an unpublished port",
                Pkt {
                    frag: 0x2000,
                    ..Pkt::udp(CLIENT, 40000, HOST, 5354)
                },
            ),
            (
                "a non-first fragment of that datagram",
                Pkt {
                    frag: 100,
                    ..Pkt::udp(CLIENT, 40000, HOST, 5354)
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
        // An IP total length that ends inside the transport header: whatever follows is
        // padding, not a header to rewrite (the stack drops such a packet).
        for (what, pkt) in [
            ("TCP", Pkt::tcp(CLIENT, 40000, HOST, 8088, SYN)),
            ("UDP", Pkt::udp(CLIENT, 40000, HOST, 5353)),
        ] {
            let mut short = pkt.build();
            short[16..18].copy_from_slice(&24u16.to_be_bytes());
            short[24..26].fill(0);
            let ip_csum = fold(0, &short[14..34]);
            short[24..26].copy_from_slice(&ip_csum.to_be_bytes());
            let (verdict, out) = dp.run(programs::EXT_IN, dp.ext, &short);
            assert_eq!(
                (verdict, &out),
                (TC_ACT_OK, &short),
                "{what} total length 24"
            );
        }
        assert_eq!(dp.counter(Counter::NatNew), 0);
        assert!(dp.conntrack().is_empty());
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
            .insert(
                br_a,
                BridgeInfo {
                    network_id: 1,
                    flags: 0,
                },
                0,
            )
            .unwrap();
        bridges
            .insert(
                br_b,
                BridgeInfo {
                    network_id: 2,
                    flags: 0,
                },
                0,
            )
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
            from_ifindex: 0,
            state: CtState::New as u8,
            flags: CT_FLAG_REPLY,
            dst_mac: [0; 6],
            src_mac: [0; 6],
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
            .insert(
                br_b,
                BridgeInfo {
                    network_id: 1,
                    flags: 0,
                },
                0,
            )
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
