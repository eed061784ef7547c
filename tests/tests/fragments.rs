//! IPv4 fragments end to end: 4,000-byte UDP datagrams over 1,500-byte MTU links, which
//! the senders fragment, through a published UDP port and through masquerade, request and
//! reply each, arrive intact (both sides compare SHA-256 digests of what they sent and got)
//! and the datapath counts the later fragments it translated. Everything runs in the
//! sandbox's own namespaces; every wait is bounded.
use netpath_common::Counter;
use netpath_tests::{CLIENT_ADDR, EXT_ADDR, Sandbox, helpers::counter, netpath_bin};

/// The server address outside, on the client namespace's lo (as in masquerade.rs).
const SERVER: &str = netpath_tests::SERVER_ADDR;

/// `PORT ADDR`: answers every datagram with the SHA-256 hex digest of what it got, a space
/// and the datagram reversed (so the reply is as large). Prints "ready", then "from PEER"
/// for every datagram. Path MTU discovery is off (IP_PMTUDISC_DONT), so that a datagram
/// larger than the MTU is fragmented and its fragments carry no DF flag.
const SERVER_PY: &str = r#"
import sys, socket, hashlib
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_MTU_DISCOVER = IP_PMTUDISC_DONT
s.bind((sys.argv[2], int(sys.argv[1])))
print('ready', flush=True)
while True:
    data, peer = s.recvfrom(65535)
    print('from %s:%d' % peer, flush=True)
    s.sendto(hashlib.sha256(data).hexdigest().encode() + b' ' + data[::-1], peer)
"#;

/// `HOST PORT N`: sends N random bytes in one datagram (3 tries, 2 s each) and prints "ok"
/// or "bad" (whether the reply holds the digest of what was sent and the datagram reversed),
/// the reply's source and its length; or "timeout".
const CLIENT_PY: &str = r#"
import sys, socket, hashlib, os
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_MTU_DISCOVER = IP_PMTUDISC_DONT
s.settimeout(2)
data = os.urandom(n)
for _ in range(3):
    s.sendto(data, (host, port))
    try:
        reply, peer = s.recvfrom(65535)
    except socket.timeout:
        continue
    ok = reply[:64] == hashlib.sha256(data).hexdigest().encode() and reply[65:] == data[::-1]
    print('%s %s:%d %d' % ('ok' if ok else 'bad', peer[0], peer[1], len(reply)), flush=True)
    sys.exit(0)
print('timeout', flush=True)
"#;

const SIZE: usize = 4000;

/// Every link on the way has a 1,500-byte MTU (the veth default), smaller than the datagrams.
fn assert_mtu(netns: &str, dev: &str) {
    let link = netpath_tests::ip_json(Some(netns), &["link", "show", dev]);
    assert_eq!(link[0]["mtu"].as_u64(), Some(1500), "{dev} in {netns}");
}

/// Sends one large datagram from `netns` to `host:port`; the client's line.
fn exchange(sb: &Sandbox, netns: &str, host: &str, port: u16) -> String {
    let lines = sb.run_python(
        netns,
        20,
        CLIENT_PY,
        &[host, &port.to_string(), &SIZE.to_string()],
    );
    assert_eq!(lines.len(), 1, "{lines:?}");
    lines.into_iter().next().unwrap()
}

/// 4,008 bytes of UDP in 1,480-byte pieces: at least two later fragments each way were
/// translated since `before`, and no orphan dropped.
fn assert_fragments_translated(sb: &Sandbox, before: u64) {
    let translated = counter(sb, Counter::FragTranslated) - before;
    assert!(translated >= 4, "frag_translated rose by {translated}");
    assert_eq!(counter(sb, Counter::DropFragOrphan), 0);
}

#[test]
fn large_udp_datagrams_through_a_published_port_arrive_intact() {
    let sb = Sandbox::new(&netpath_bin()).expect("sandbox");
    let cl = sb.client().expect("client namespace");
    let web = sb.name("web");
    sb.ok(&["up", "-d"]);
    sb.ok(&["run", &web, "-p", "9053:53/udp"]);
    assert_mtu(&cl.netns, "eth0");
    assert_mtu(&sb.host, "ext0");
    let server = sb.start_python(&web, SERVER_PY, &["53", "0.0.0.0"], "ready");
    let before = counter(&sb, Counter::FragTranslated);

    let line = exchange(&sb, &cl.netns, EXT_ADDR, 9053);
    // The reply: 64 hex digits, a space, the datagram.
    assert_eq!(line, format!("ok {EXT_ADDR}:9053 {}", SIZE + 65));
    let seen = server
        .line(std::time::Duration::from_secs(5))
        .expect("the server saw the datagram");
    assert!(
        seen.starts_with(&format!("from {CLIENT_ADDR}:")),
        "the container must see the client: {seen}"
    );
    assert_fragments_translated(&sb, before);
}

#[test]
fn large_udp_datagrams_through_masquerade_arrive_intact() {
    let sb = Sandbox::new(&netpath_bin()).expect("sandbox");
    let cl = sb.outside().expect("outside namespace");
    let web = sb.name("web");
    sb.ok(&["up", "-d"]);
    sb.ok(&["run", &web]);
    assert_mtu(&web, "eth0");
    assert_mtu(&cl.netns, "eth0");
    let server = sb.start_python(&cl.netns, SERVER_PY, &["53", SERVER], "ready");
    let before = counter(&sb, Counter::FragTranslated);

    let line = exchange(&sb, &web, SERVER, 53);
    assert_eq!(line, format!("ok {SERVER}:53 {}", SIZE + 65));
    let seen = server
        .line(std::time::Duration::from_secs(5))
        .expect("the server saw the datagram");
    assert!(
        seen.starts_with(&format!("from {EXT_ADDR}:")),
        "the server must see the external address: {seen}"
    );
    assert_fragments_translated(&sb, before);
}
