//! Packet tests of source validation on a container's veth (`np_veth_in`): a frame whose
//! source address or MAC is not the one netpath assigned is dropped and counted before any
//! translation; ARP, unregistered veths and opted-out containers pass. The harness is
//! [`netpath_tests::packet`].
use netpath_common::{Counter, SOURCE_ANY, programs};
use netpath_tests::packet::*;

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
        dp.set_source(veth, CONTAINER, PKT_SRC_MAC, 0);

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
        dp.set_source(veth, CONTAINER, PKT_SRC_MAC, SOURCE_ANY);
        assert_eq!(
            dp.run(programs::VETH_IN, veth, &stranger),
            (TC_ACT_OK, stranger.clone())
        );
        assert_eq!(dp.counter(Counter::DropSpoofed), forged.len() as u64);
    });
}

#[test]
fn a_connection_is_bound_to_the_veth_it_opened_through() {
    in_fresh_netns(|| {
        let mut dp = masquerading((50000, 50009));
        let (veth, neighbour) = (bridge("vethhost", None), bridge("vethnext", None));
        dp.add_endpoint(CONTAINER, veth);
        dp.set_source(veth, CONTAINER, PKT_SRC_MAC, 0);
        let neighbour_mac = [0x02, 0, 0, 0, 0, 3];
        dp.add_endpoint(OTHER_CONTAINER, neighbour);
        dp.set_source(neighbour, OTHER_CONTAINER, neighbour_mac, 0);

        let syn = Pkt::tcp(CONTAINER, 40000, SERVER, 80, SYN).build();
        assert_eq!(dp.run(programs::VETH_IN, veth, &syn).0, TC_ACT_REDIRECT);
        let forward = dp.ct_entry(|k| k.src_addr == CONTAINER);
        assert_eq!(
            forward.from_ifindex, veth,
            "bound to the veth it came through"
        );

        // The neighbour forging the connection's packets, its own MAC or the container's:
        // the entry is not bound to its veth, so the check runs and drops them.
        let ack = Pkt::tcp(CONTAINER, 40000, SERVER, 80, ACK).build();
        let mut as_neighbour = ack.clone();
        as_neighbour[6..12].copy_from_slice(&neighbour_mac);
        for frame in [&ack, &as_neighbour] {
            assert_eq!(dp.run(programs::VETH_IN, neighbour, frame).0, TC_ACT_SHOT);
        }
        assert_eq!(dp.counter(Counter::DropSpoofed), 2);

        // Through its own veth the connection goes on without the check; a forged MAC there
        // reaches nobody: the frame leaves with the entry's MACs, past the bridge.
        dp.resolve_next_hop();
        let mut forged_mac = ack.clone();
        forged_mac[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0xbe, 0xef]);
        let (verdict, out) = dp.run(programs::VETH_IN, veth, &forged_mac);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let ack_out = dp.run(programs::VETH_IN, veth, &ack).1;
        assert_eq!(out[..6], NEXT_HOP_MAC, "to the next hop");
        assert_eq!(
            out[..12],
            ack_out[..12],
            "the entry's MACs, whatever the frame's"
        );
        assert_eq!(dp.counter(Counter::DropSpoofed), 2);

        // A SYN reopening the connection is a new one: checked again.
        let mut reopen = Pkt::tcp(CONTAINER, 40000, SERVER, 80, SYN).build();
        reopen[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0xbe, 0xef]);
        let rst = Pkt::tcp(CONTAINER, 40000, SERVER, 80, 0x04).build();
        assert_eq!(dp.run(programs::VETH_IN, veth, &rst).0, TC_ACT_REDIRECT);
        assert_eq!(dp.run(programs::VETH_IN, veth, &reopen).0, TC_ACT_SHOT);
        assert_eq!(dp.counter(Counter::DropSpoofed), 3);
    });
}
