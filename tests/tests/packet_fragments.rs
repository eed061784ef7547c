//! Packet tests of IPv4 fragments: the first fragment of a datagram is translated as a whole
//! packet would be and records its translation; the later ones (no transport header) follow
//! it, each way, through a published port and through masquerade; a later fragment whose first
//! never came is dropped and counted. The harness is [`netpath_tests::packet`].
use netpath_common::{Counter, PROTO_ICMP, PROTO_UDP, programs};
use netpath_tests::packet::*;

/// An Ethernet frame with one IPv4 fragment: identification `id`, flags and offset `frag`,
/// `data` after the header, header checksum valid.
fn fragment_frame(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    id: u16,
    frag: u16,
    data: &[u8],
) -> Vec<u8> {
    let mut frame = ipv4_frame(src, dst, proto, data);
    frame[18..20].copy_from_slice(&id.to_be_bytes());
    frame[20..22].copy_from_slice(&frag.to_be_bytes());
    frame[24..26].copy_from_slice(&[0, 0]);
    let c = fold(0, &frame[14..34]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
    frame
}

/// A UDP datagram of `len` payload bytes, checksum valid, cut into fragments of 1480 data
/// bytes (a 1500-byte MTU), in order.
fn udp_fragments(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    id: u16,
    len: usize,
) -> Vec<Vec<u8>> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&((8 + len) as u16).to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend((0..len).map(|i| (i * 7 % 251) as u8));
    let c = l4_checksum(&src, &dst, PROTO_UDP, &l4);
    l4[6..8].copy_from_slice(&c.to_be_bytes());
    let chunk = 1480;
    l4.chunks(chunk)
        .enumerate()
        .map(|(i, part)| {
            let off = i * chunk;
            let more = if off + part.len() < l4.len() {
                0x2000
            } else {
                0
            };
            fragment_frame(src, dst, PROTO_UDP, id, (off / 8) as u16 | more, part)
        })
        .collect()
}

/// Reassembles fragment frames (each header checksum checked, all with the same addresses
/// and identification); returns the addresses and the transport bytes.
fn reassemble(frames: &[Vec<u8>]) -> ([u8; 4], [u8; 4], Vec<u8>) {
    let mut data = Vec::new();
    for f in frames {
        assert_eq!(fold(0, &f[14..34]), 0, "IPv4 header checksum");
        assert_eq!(f[18..20], frames[0][18..20], "identification");
        assert_eq!(f[26..34], frames[0][26..34], "addresses");
        let off = usize::from(u16::from_be_bytes([f[20], f[21]]) & 0x1fff) * 8;
        assert_eq!(off, data.len(), "fragments in order");
        data.extend_from_slice(&f[34..]);
    }
    let f = &frames[0];
    (
        f[26..30].try_into().unwrap(),
        f[30..34].try_into().unwrap(),
        data,
    )
}

/// Asserts that the reassembled datagram's UDP checksum, recomputed from scratch, is valid.
fn assert_udp_datagram_checksum(src: [u8; 4], dst: [u8; 4], l4: &[u8]) {
    let mut zeroed = l4.to_vec();
    zeroed[6..8].copy_from_slice(&[0, 0]);
    assert_eq!(
        u16::from_be_bytes([l4[6], l4[7]]),
        l4_checksum(&src, &dst, PROTO_UDP, &zeroed),
        "UDP checksum of the reassembled datagram"
    );
}

/// Asserts that a later fragment changed only in its TTL, addresses and header checksum.
fn assert_only_addresses_changed(input: &[u8], out: &[u8]) {
    assert_eq!(input.len(), out.len());
    assert_eq!(out[22], input[22] - 1, "TTL decremented");
    for (i, (a, b)) in input.iter().zip(out).enumerate() {
        if ![22, 24, 25].contains(&i) && !(26..34).contains(&i) {
            assert_eq!(a, b, "byte {i} changed");
        }
    }
}

/// Pushes every fragment through `prog`; each must be redirected. The frames out.
fn run_all(
    dp: &mut Datapath,
    prog: &str,
    ifindex: fn(&Datapath) -> u32,
    frames: &[Vec<u8>],
) -> Vec<Vec<u8>> {
    let ifindex = ifindex(dp);
    frames
        .iter()
        .map(|f| {
            let (verdict, out) = dp.run(prog, ifindex, f);
            assert_eq!(verdict, TC_ACT_REDIRECT, "fragment at {:?}", &f[20..22]);
            out
        })
        .collect()
}

/// Pushes a fragmented datagram through `prog`: every fragment redirected, the first
/// translated to `to` (only its tuple changed), the later ones to `to`'s addresses (only
/// TTL, addresses and header checksum changed), the reassembled UDP checksum valid.
fn assert_datagram_translated(
    dp: &mut Datapath,
    prog: &str,
    ifindex: fn(&Datapath) -> u32,
    frames: &[Vec<u8>],
    to: ([u8; 4], u16, [u8; 4], u16),
) {
    let out = run_all(dp, prog, ifindex, frames);
    assert_eq!(tuple(&out[0]), to);
    assert_only_tuple_changed(&frames[0], &out[0]);
    for (input, out) in frames.iter().zip(&out).skip(1) {
        assert_only_addresses_changed(input, out);
    }
    let (src, dst, l4) = reassemble(&out);
    assert_eq!((src, dst), (to.0, to.2));
    assert_udp_datagram_checksum(src, dst, &l4);
}

#[test]
fn fragments_to_a_published_udp_port_follow_their_first_each_way() {
    in_fresh_netns(|| {
        let mut dp = Datapath::new();
        // 3,000 bytes: a first fragment with the UDP header and two later ones.
        let query = udp_fragments(CLIENT, 33333, HOST, 5353, 0x4242, 3000);
        assert_eq!(query.len(), 3);
        let to = (CLIENT, 33333, CONTAINER, 53);
        assert_datagram_translated(&mut dp, programs::EXT_IN, |dp| dp.ext, &query, to);
        assert_eq!(dp.counter(Counter::NatNew), 1);
        assert_eq!(dp.counter(Counter::FragTranslated), 2);

        // The container's answer, as large, goes back with the published address.
        let answer = udp_fragments(CONTAINER, 53, CLIENT, 33333, 0x0707, 4000);
        assert_eq!(answer.len(), 3);
        let to = (HOST, 5353, CLIENT, 33333);
        assert_datagram_translated(&mut dp, programs::BR_IN, |dp| dp.bridge, &answer, to);
        assert_eq!(dp.counter(Counter::FragTranslated), 4);
        assert_eq!(dp.counter(Counter::DropFragOrphan), 0);
    });
}

#[test]
fn masqueraded_fragments_follow_their_first_each_way() {
    in_fresh_netns(|| {
        let mut dp = masquerading((50000, 50009));
        let request = udp_fragments(CONTAINER, 40000, SERVER, 514, 0x1111, 3500);
        let to = (HOST, 40000, SERVER, 514);
        assert_datagram_translated(&mut dp, programs::BR_IN, |dp| dp.bridge, &request, to);
        let reply = udp_fragments(SERVER, 514, HOST, 40000, 0x2222, 3500);
        let to = (SERVER, 514, CONTAINER, 40000);
        assert_datagram_translated(&mut dp, programs::EXT_IN, |dp| dp.ext, &reply, to);
        assert_eq!(dp.counter(Counter::FragTranslated), 4);
    });
}

#[test]
fn an_orphan_fragment_is_dropped_and_counted() {
    in_fresh_netns(|| {
        let mut dp = Datapath::new();
        let query = udp_fragments(CLIENT, 33333, HOST, 5353, 0x4242, 3000);
        // The second fragment overtakes the first: its fate is unknown, it is dropped.
        let (verdict, _) = dp.run(programs::EXT_IN, dp.ext, &query[1]);
        assert_eq!(verdict, TC_ACT_SHOT);
        assert_eq!(dp.counter(Counter::DropFragOrphan), 1);
        // The first and the rest still go through.
        let out = run_all(
            &mut dp,
            programs::EXT_IN,
            |dp| dp.ext,
            &[query[0].clone(), query[2].clone()],
        );
        assert_eq!(&out[1][26..34], &[CLIENT, CONTAINER].concat()[..]);
        assert_eq!(dp.counter(Counter::FragTranslated), 1);
        // Another identification is another datagram: an orphan too.
        let mut other = query[2].clone();
        other[18..20].copy_from_slice(&0x4243u16.to_be_bytes());
        let c = fold(0, &[&other[14..24], &[0, 0], &other[26..34]].concat());
        other[24..26].copy_from_slice(&c.to_be_bytes());
        assert_eq!(dp.run(programs::EXT_IN, dp.ext, &other).0, TC_ACT_SHOT);
        assert_eq!(dp.counter(Counter::DropFragOrphan), 2);
        // An ICMP orphan passes: its first fragment may have been one netpath records nothing
        // for.
        let icmp_later = fragment_frame(CLIENT, HOST, PROTO_ICMP, 9, 185, &[0; 64]);
        assert_eq!(
            dp.run(programs::EXT_IN, dp.ext, &icmp_later),
            (TC_ACT_OK, icmp_later.clone())
        );
        assert_eq!(dp.counter(Counter::DropFragOrphan), 2);
    });
}
