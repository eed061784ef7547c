//! Packet tests of masquerade: outgoing TCP and ICMP echo flows translated to the host's
//! address and back, colliding source ports, excluded destinations, an exhausted port range
//! and ICMP errors about translated flows. The harness is [`netpath_tests::packet`].
use netpath_common::{BRIDGE_NO_MASQUERADE, Counter, PROTO_TCP, programs};
use netpath_tests::packet::{
    ACK, CONTAINER, Datapath, HOST, OTHER_CONTAINER, Pkt, ROUTER, SERVER, SYN, TC_ACT_OK,
    TC_ACT_REDIRECT, TC_ACT_SHOT, assert_checksums, assert_only_tuple_changed, bridge, echo, fold,
    icmp, in_fresh_netns, l4_checksum, masquerading, tuple,
};

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
fn an_expired_connection_gives_its_port_to_a_colliding_one() {
    in_fresh_netns(|| {
        let mut dp = masquerading((50000, 50009));
        let syn = Pkt::tcp(CONTAINER, 40000, SERVER, 80, SYN).build();
        assert_eq!(dp.run(programs::BR_IN, dp.bridge, &syn).0, TC_ACT_REDIRECT);
        // Both of its entries idle since boot: long past any timeout.
        dp.edit_conntrack(|_, e| e.last_seen_ns = 1);

        // The same source port from another container: the expired connection's tuple is
        // freed and claimed again, so the port is kept.
        let syn2 = Pkt::tcp(OTHER_CONTAINER, 40000, SERVER, 80, SYN).build();
        let (verdict, out) = dp.run(programs::BR_IN, dp.bridge, &syn2);
        assert_eq!(
            (verdict, tuple(&out)),
            (TC_ACT_REDIRECT, (HOST, 40000, SERVER, 80))
        );
        assert_checksums(&out);
        assert_eq!(
            (
                dp.counter(Counter::CtExpired),
                dp.counter(Counter::CtRemove),
                dp.counter(Counter::PortRetry),
                dp.counter(Counter::CtInsert),
            ),
            (1, 2, 0, 4)
        );
        let reply = Pkt::tcp(SERVER, 80, HOST, 40000, SYN | ACK).build();
        let (_, out) = dp.run(programs::EXT_IN, dp.ext, &reply);
        assert_eq!(tuple(&out), (SERVER, 80, OTHER_CONTAINER, 40000));
        assert_eq!(
            dp.conntrack().len(),
            2,
            "the expired connection's entries are gone"
        );
    });
}

#[test]
fn a_network_with_masquerade_off_leaves_untranslated_and_untracked() {
    in_fresh_netns(|| {
        let mut dp = masquerading((50000, 50009));
        // A second network, masquerade off: its bridge and a container's veth on it.
        let plain = bridge("np1", Some("10.20.0.1/24"));
        dp.add_bridge(plain, 2, BRIDGE_NO_MASQUERADE);
        let veth = bridge("vethplain", None);
        let own = [10, 20, 0, 2];
        dp.add_endpoint_on(own, veth, plain);
        // New TCP, UDP and ICMP echo flows to the outside, through the bridge and through
        // the container's veth: handed to the stack as they are, nothing tracked.
        for (prog, ifindex, sport) in [
            (programs::BR_IN, plain, 40000),
            (programs::VETH_IN, veth, 40001),
        ] {
            for input in [
                Pkt::tcp(own, sport, SERVER, 80, SYN).build(),
                Pkt::udp(own, sport, SERVER, 53).build(),
                echo(own, SERVER, 8, sport),
            ] {
                assert_eq!(dp.run(prog, ifindex, &input), (TC_ACT_OK, input.clone()));
            }
        }
        assert!(dp.conntrack().is_empty(), "{:?}", dp.conntrack());
        assert_eq!(dp.counter(Counter::MasqNew), 0);
        // The reply, to the container's own address, is the stack's to route.
        let reply = Pkt::tcp(SERVER, 80, own, 40000, SYN | ACK).build();
        assert_eq!(dp.run(programs::EXT_IN, dp.ext, &reply), (TC_ACT_OK, reply));

        // The masquerading network beside it is translated still, from its bridge and from
        // a container's veth on it.
        let masq_veth = bridge("vethmasq", None);
        dp.add_endpoint(OTHER_CONTAINER, masq_veth);
        for (prog, ifindex, src) in [
            (programs::BR_IN, dp.bridge, CONTAINER),
            (programs::VETH_IN, masq_veth, OTHER_CONTAINER),
        ] {
            let syn = Pkt::tcp(src, 40000, SERVER, 80, SYN).build();
            let (verdict, out) = dp.run(prog, ifindex, &syn);
            let (from, _, to, dport) = tuple(&out);
            assert_eq!(
                (verdict, from, to, dport),
                (TC_ACT_REDIRECT, HOST, SERVER, 80)
            );
            assert_checksums(&out);
        }
        assert_eq!(dp.counter(Counter::MasqNew), 2);
        assert_eq!(dp.conntrack().len(), 4, "two entries per masqueraded flow");
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
        // The quoted UDP checksum is the one the container's datagram carried (the quote is
        // too short to recompute it from scratch: see the quoted checksum tests below).
        let original = Pkt::udp(OTHER_CONTAINER, 40000, SERVER, 4433).build();
        assert_eq!(&inner[26..28], &original[40..42], "quoted UDP checksum");
        for i in (0..out.len()).filter(|i| {
            ![22, 24, 25, 30, 31, 32, 33, 36, 37].contains(i)
                && !(42 + 10..42 + 24).contains(i)
                && !(42 + 26..42 + 28).contains(i)
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

/// Asserts that the transport checksum of the packet an ICMP error in `out` quotes (whole),
/// recomputed from scratch, is valid, and so is the ICMP checksum.
fn assert_quoted_checksum(out: &[u8]) {
    assert_checksums(out);
    let inner = &out[42..];
    assert_eq!(fold(0, &inner[..20]), 0, "quoted IPv4 header checksum");
    let proto = inner[9];
    let l4 = &inner[20..];
    let off = if proto == PROTO_TCP { 16 } else { 6 };
    let mut zeroed = l4.to_vec();
    zeroed[off..off + 2].copy_from_slice(&[0, 0]);
    assert_eq!(
        u16::from_be_bytes([l4[off], l4[off + 1]]),
        l4_checksum(&inner[12..16], &inner[16..20], proto, &zeroed),
        "quoted transport checksum"
    );
}

/// Asserts that a translated quote is the packet the container sent, transport checksum
/// included, but for the TTL the host decremented on the way out (and the IPv4 header
/// checksum with it).
fn assert_quote_is(quote: &[u8], original: &[u8]) {
    assert_eq!(quote.len(), original.len());
    assert_eq!(quote[8], original[8] - 1, "quoted TTL");
    for (i, (a, b)) in quote.iter().zip(original).enumerate() {
        if ![8, 10, 11].contains(&i) {
            assert_eq!(a, b, "quoted byte {i}");
        }
    }
}

#[test]
fn icmp_errors_fix_the_quoted_transport_checksum() {
    in_fresh_netns(|| {
        let mut dp = masquerading((50000, 50009));
        let mk: [fn([u8; 4]) -> Pkt; 2] = [
            |c| Pkt::udp(c, 40000, SERVER, 4433),
            |c| Pkt::tcp(c, 40000, SERVER, 443, SYN),
        ];
        for (i, mk) in mk.into_iter().enumerate() {
            let sent = colliding(&mut dp, |c| mk(c).build());
            assert_ne!(tuple(&sent).1, 40000);
            // Port unreachable, quoting the whole packet as it left (as Linux does).
            let out = port_unreachable(&mut dp, &sent);
            assert_eq!(
                &out[42 + 12..42 + 20],
                &[OTHER_CONTAINER, SERVER].concat()[..]
            );
            assert_quoted_checksum(&out);
            // It is the checksum the container's packet carried.
            let original = mk(OTHER_CONTAINER).build();
            assert_quote_is(&out[42..], &original[14..]);
            assert_eq!(dp.counter(Counter::IcmpError), 2 * i as u64 + 1);

            // A router quoting only 8 transport bytes: TCP's checksum is not there; the ICMP
            // checksum is still right.
            let mut rest = vec![0; 4];
            rest.extend_from_slice(&sent[14..14 + 28]);
            let error = icmp(ROUTER, HOST, 11, 0, &rest);
            let (verdict, out) = dp.run(programs::EXT_IN, dp.ext, &error);
            assert_eq!(verdict, TC_ACT_REDIRECT);
            assert_checksums(&out);
            assert_quote_is(&out[42..], &original[14..14 + 28]);
        }

        // A quoted UDP checksum of 0 stays 0.
        let bare = |c| {
            Pkt {
                udp_csum: false,
                ..Pkt::udp(c, 41000, SERVER, 4433)
            }
            .build()
        };
        let sent = colliding(&mut dp, bare);
        assert_ne!(tuple(&sent).1, 41000);
        let out = port_unreachable(&mut dp, &sent);
        assert_eq!(
            &out[42 + 26..42 + 28],
            &[0, 0],
            "quoted UDP checksum stays 0"
        );
        assert_checksums(&out);
        assert_quote_is(&out[42..], &bare(OTHER_CONTAINER)[14..]);
    });
}

/// Two flows from one source port, so that the second's port is translated too: the second
/// (from [`OTHER_CONTAINER`]) as it left.
fn colliding(dp: &mut Datapath, frame: impl Fn([u8; 4]) -> Vec<u8>) -> Vec<u8> {
    let mut sent = Vec::new();
    for container in [CONTAINER, OTHER_CONTAINER] {
        let (verdict, out) = dp.run(programs::BR_IN, dp.bridge, &frame(container));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        sent = out;
    }
    sent
}

/// A port unreachable from the server quoting the whole of `sent` (as Linux does), through
/// the external interface; it must be redirected. The frame out.
fn port_unreachable(dp: &mut Datapath, sent: &[u8]) -> Vec<u8> {
    let mut rest = vec![0; 4];
    rest.extend_from_slice(&sent[14..]);
    let (verdict, out) = dp.run(programs::EXT_IN, dp.ext, &icmp(SERVER, HOST, 3, 3, &rest));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    out
}
