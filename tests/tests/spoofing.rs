//! Source validation on the containers' veths (`np_veth_in`): a container that forges a
//! neighbour's address, an unassigned address of its subnet, or its MAC gets nothing
//! through (to the outside, to a published port by hairpin, to another container), and
//! every forged frame is counted as `drop_spoofed`; a container run with
//! `--allow-spoofed-source` gets its forged packets through. Receivers are UDP sockets that
//! print what they get; every wait and command is bounded.
use std::time::Duration;

use netpath::system::datapath::Datapath;
use netpath_common::Counter;
use netpath_tests::{EXT_ADDR, Proc, Sandbox, ip, netpath_bin, wait_until};

/// The server address outside, on the client namespace's lo.
const SERVER: &str = "198.51.100.10";
const FORGER: &str = "172.17.0.2";
const NEIGHBOUR: &str = "172.17.0.3";
const TARGET: &str = "172.17.0.4";
const ROUTER: &str = "172.17.0.5";
/// In the default subnet, given to no container.
const UNASSIGNED: &str = "172.17.0.200";
const OTHER_UNASSIGNED: &str = "172.17.0.201";
/// The host port published to TARGET's UDP 53.
const PUBLISHED: &str = "8053";
/// Datagrams sent per forged source and destination.
const EACH: u32 = 5;

/// `ADDR PORT`: prints "ready", then the payload of every datagram to ADDR:PORT.
const RECEIVER: &str = r#"
import sys, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print('ready', flush=True)
while True:
    data, peer = s.recvfrom(65535)
    print(data.decode(), flush=True)
"#;

/// `SRC DST PORT COUNT PAYLOAD`: COUNT datagrams from SRC (any when empty) to DST:PORT.
const SENDER: &str = r#"
import sys, socket, time
src, dst, port, n, payload = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if src: s.bind((src, 0))
for i in range(n):
    s.sendto(('%s %d' % (payload, i)).encode(), (dst, port))
    time.sleep(0.01)
"#;

fn spoofed(sb: &Sandbox) -> u64 {
    Datapath::existing(&sb.host)
        .expect("netpath pins exist")
        .counters()
        .expect("reading counters")
        .into_iter()
        .find(|(c, _)| *c == Counter::DropSpoofed)
        .map(|(_, n)| n)
        .expect("drop_spoofed exists")
}

fn send(sb: &Sandbox, netns: &str, src: &str, dst: &str, port: &str, n: u32, payload: &str) {
    sb.run_python(
        netns,
        20,
        SENDER,
        &[src, dst, port, &n.to_string(), payload],
    );
}

/// Reads `proc`'s lines until one starts with `until` (10 s at most); the lines before it.
fn lines_until(proc: &Proc, until: &str, what: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let line = proc
            .line(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{what}: no {until:?} within 10 s; got {seen:?}"));
        if line.starts_with(until) {
            return seen;
        }
        seen.push(line);
    }
}

#[test]
fn forged_sources_are_dropped_and_counted_unless_allowed() {
    let sb = Sandbox::new(&netpath_bin()).expect("sandbox");
    let cl = sb.outside().expect("outside namespace");
    let [forger, neighbour, target, router] =
        ["forger", "neighbour", "target", "router"].map(|n| sb.name(n));
    sb.ok(&["up", "-d"]);
    sb.ok(&["run", &forger, "--ip", FORGER]);
    sb.ok(&["run", &neighbour, "--ip", NEIGHBOUR]);
    let publish = format!("{PUBLISHED}:53/udp");
    sb.ok(&["run", &target, "--ip", TARGET, "-p", &publish]);
    sb.ok(&["run", &router, "--ip", ROUTER, "--allow-spoofed-source"]);

    let outside_rx = sb.start_python(&cl.netns, RECEIVER, &[SERVER, "53"], "ready");
    let target_rx = sb.start_python(&target, RECEIVER, &["0.0.0.0", "53"], "ready");
    // Outside (masquerade), a published port through a host address (hairpin), another
    // container directly.
    let destinations = [(SERVER, "53"), (EXT_ADDR, PUBLISHED), (TARGET, "53")];
    let before = spoofed(&sb);

    // (a) a neighbour's address, (b) an unassigned address of the subnet.
    let mut sent = 0;
    for forged in [NEIGHBOUR, UNASSIGNED] {
        let with_prefix = format!("{forged}/32");
        ip(&["-n", &forger, "addr", "add", &with_prefix, "dev", "eth0"]).unwrap();
        for (dst, port) in destinations {
            send(&sb, &forger, forged, dst, port, EACH, "forged");
            sent += EACH;
        }
        ip(&["-n", &forger, "addr", "del", &with_prefix, "dev", "eth0"]).unwrap();
    }
    // (c) its own address from a forged MAC.
    let mac = sb
        .exec(&forger, &["cat", "/sys/class/net/eth0/address"])
        .stdout;
    let mac = String::from_utf8(mac).unwrap().trim().to_owned();
    ip(&[
        "-n",
        &forger,
        "link",
        "set",
        "eth0",
        "address",
        "02:00:00:00:be:ef",
    ])
    .unwrap();
    for (dst, port) in destinations {
        send(&sb, &forger, FORGER, dst, port, EACH, "forged");
        sent += EACH;
    }
    ip(&["-n", &forger, "link", "set", "eth0", "address", &mac]).unwrap();

    let expected = before + u64::from(sent);
    wait_until(50, Duration::from_millis(100), || spoofed(&sb) >= expected);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        spoofed(&sb),
        expected,
        "drop_spoofed must count exactly the {sent} forged datagrams"
    );

    // The forger's own source still works, on every path; nothing forged arrived before.
    for (dst, port) in destinations {
        send(&sb, &forger, FORGER, dst, port, 1, "genuine");
    }
    let got = lines_until(&outside_rx, "genuine", "outside");
    assert!(
        got.is_empty(),
        "forged datagrams reached the outside: {got:?}"
    );
    for path in ["hairpin", "direct"] {
        let got = lines_until(&target_rx, "genuine", path);
        assert!(
            got.is_empty(),
            "forged datagrams reached the target: {got:?}"
        );
    }

    // The opt-out: forged sources pass, uncounted.
    let before = spoofed(&sb);
    let with_prefix = format!("{OTHER_UNASSIGNED}/32");
    ip(&["-n", &router, "addr", "add", &with_prefix, "dev", "eth0"]).unwrap();
    send(&sb, &router, OTHER_UNASSIGNED, SERVER, "53", 3, "routed");
    send(&sb, &router, OTHER_UNASSIGNED, TARGET, "53", 3, "routed");
    for (rx, what) in [(&outside_rx, "outside"), (&target_rx, "target")] {
        for i in 0..3 {
            let line = rx
                .line(Duration::from_secs(10))
                .unwrap_or_else(|| panic!("{what}: routed datagram {i} missing"));
            assert!(line.starts_with("routed "), "{what}: {line}");
        }
    }
    assert_eq!(
        spoofed(&sb),
        before,
        "an allowed source was counted as spoofed"
    );

    // `up` again registers every veth anew: the check and the opt-out both stay.
    sb.ok(&["up", "-d"]);
    let before = spoofed(&sb);
    let forged = format!("{UNASSIGNED}/32");
    ip(&["-n", &forger, "addr", "add", &forged, "dev", "eth0"]).unwrap();
    send(&sb, &forger, UNASSIGNED, TARGET, "53", EACH, "forged");
    send(&sb, &router, OTHER_UNASSIGNED, TARGET, "53", 1, "routed");
    let got = lines_until(&target_rx, "routed", "target after up");
    assert!(
        got.is_empty(),
        "forged datagrams reached the target: {got:?}"
    );
    let expected = before + u64::from(EACH);
    wait_until(50, Duration::from_millis(100), || spoofed(&sb) >= expected);
    assert_eq!(spoofed(&sb), expected, "drop_spoofed after up");
}
