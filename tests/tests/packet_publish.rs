//! Packet tests of published ports: TCP and UDP (with and without checksum) to a published
//! port and back, the every-address publish with IP options, reopened connections, hairpin,
//! the fast path straight into a known container, translation on a container's veth, the
//! frame addressed to a resolved next hop and that next hop cached in the conntrack entry. The harness is [`netpath_tests::packet`].
use netpath_common::{
    CT_FLAG_NEXT_HOP, CT_FLAG_PEER, Counter, CtKey, CtState, NEXT_HOP_TICK_SHIFT, PROTO_TCP,
    programs,
};
use netpath_tests::packet::{
    ACK, CLIENT, CONTAINER, Datapath, ENDPOINT_MAC, GATEWAY, HOST, NEXT_HOP_MAC, OTHER_CONTAINER,
    Pkt, SERVER, SYN, TC_ACT_OK, TC_ACT_REDIRECT, assert_checksums, assert_only_tuple_changed,
    bridge, in_fresh_netns, masquerading, tuple,
};

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
        assert_eq!(dp.hits(), 2);
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
        let entry = dp.ct_entry(|k| k.src_addr == CLIENT);
        assert_eq!(
            (entry.redirect_ifindex, entry.flags, entry.dst_mac),
            (4242, CT_FLAG_PEER, mac)
        );
        // The replies come from the container's veth: their entry is bound to it, so that
        // they skip its source check there (`packet_spoofing`).
        let reply = dp.ct_entry(|k| k.src_addr == CONTAINER);
        assert_eq!((entry.from_ifindex, reply.from_ifindex), (0, 4242));
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
        let router_mac = NEXT_HOP_MAC;
        dp.resolve_next_hop();
        let ext_mac = interface_mac("ext0");

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

/// `bpf_ktime_get_coarse_ns` as the programs read it: CLOCK_MONOTONIC_COARSE.
fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The coarse clock now, at least 100 ms before the next next-hop tick (waiting for the
/// next one if need be), so that a packet run right after it falls in the same tick.
fn early_in_a_tick() -> u64 {
    let tick = 1u64 << NEXT_HOP_TICK_SHIFT;
    let now = coarse_now_ns();
    let left = tick - now % tick;
    if left > 100_000_000 {
        return now;
    }
    std::thread::sleep(std::time::Duration::from_nanos(left + 10_000_000));
    coarse_now_ns()
}

#[test]
fn an_established_flow_takes_its_next_hop_from_its_conntrack_entry() {
    in_fresh_netns(|| {
        let mut dp = masquerading((50000, 50009));
        dp.resolve_next_hop();
        let ext_mac = interface_mac("ext0");
        let key = CtKey::new(CONTAINER, SERVER, 40000, 80, PROTO_TCP);
        let cached = |dp: &Datapath| {
            let e = dp.ct_entry(|k| *k == key);
            (e.flags & CT_FLAG_NEXT_HOP != 0, e.dst_mac, e.src_mac)
        };
        // Sends a packet of the flow through np_br_in: translated, redirected, every byte
        // but the tuple's, the TTL and the checksums as sent, except the MACs `to` gives
        // (destination, source; none: left as they were).
        let send = |dp: &mut Datapath, flags: u8, to: Option<([u8; 6], [u8; 6])>| {
            let input = Pkt::tcp(CONTAINER, 40000, SERVER, 80, flags).build();
            let (verdict, out) = dp.run(programs::BR_IN, dp.bridge, &input);
            assert_eq!(
                (verdict, tuple(&out)),
                (TC_ACT_REDIRECT, (HOST, 40000, SERVER, 80))
            );
            let mut expected = input.clone();
            if let Some((dst, src)) = to {
                expected[..6].copy_from_slice(&dst);
                expected[6..12].copy_from_slice(&src);
            }
            assert_only_tuple_changed(&expected, &out);
            assert_checksums(&out);
        };
        let fib = Some((NEXT_HOP_MAC, ext_mac));

        // The first packet works on a copy of the new entry: the FIB addresses it, nothing
        // is cached yet.
        send(&mut dp, SYN, fib);
        assert!(!cached(&dp).0);

        // The next one caches the FIB's answer in the entry.
        send(&mut dp, ACK, fib);
        assert_eq!(cached(&dp), (true, NEXT_HOP_MAC, ext_mac));

        // Within the tick, the frame is addressed from the entry alone: MACs put there (no
        // neighbour has them) are the ones it leaves with.
        let fake = ([0x02, 0, 0, 0, 0, 0x99], [0x02, 0, 0, 0, 0, 0x98]);
        let now = early_in_a_tick();
        dp.edit_conntrack(|k, e| {
            if *k == key {
                (e.dst_mac, e.src_mac, e.last_seen_ns) = (fake.0, fake.1, now);
            }
        });
        send(&mut dp, ACK, Some(fake));

        // The first packet of a later tick asks the FIB again and refreshes the entry: a
        // neighbour or route change reaches an established flow that way.
        let earlier = early_in_a_tick() - (1 << NEXT_HOP_TICK_SHIFT);
        dp.edit_conntrack(|k, e| {
            if *k == key {
                e.last_seen_ns = earlier;
            }
        });
        send(&mut dp, ACK, fib);
        assert_eq!(cached(&dp), (true, NEXT_HOP_MAC, ext_mac));

        // With the neighbour gone, the cache is dropped at the next tick and the kernel
        // resolves the neighbour (bpf_redirect_neigh): the frame keeps its MACs.
        netpath_tests::ip(&["neigh", "del", "203.0.113.2", "dev", "ext0"]).unwrap();
        let earlier = early_in_a_tick() - (1 << NEXT_HOP_TICK_SHIFT);
        dp.edit_conntrack(|k, e| {
            if *k == key {
                e.last_seen_ns = earlier;
            }
        });
        send(&mut dp, ACK, None);
        assert!(!cached(&dp).0, "the stale next hop is forgotten");
    });
}

/// The MAC of `name` in the current namespace.
fn interface_mac(name: &str) -> [u8; 6] {
    let link = netpath_tests::ip_json(None, &["link", "show", name]);
    netpath::model::ipam::parse_mac(link[0]["address"].as_str().unwrap()).expect("a MAC")
}
