//! Stale flows: a UDP client that keeps sending from one port to a published port reaches
//! the new target at once when the publish moves to another container, or when its
//! container is replaced by one on a new address, and never the old target again. (UDP has
//! no close: a tracked flow would otherwise keep its old translation until it times out,
//! Docker's moby#8795.)
use std::time::{Duration, Instant};

use netpath_tests::{EXT_ADDR, Proc, Sandbox, netpath_bin};

/// Prints the CLOCK_MONOTONIC time of every datagram it receives on UDP port 9000.
const SINK: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9000))
print("ready", flush=True)
while True:
    s.recv(2048)
    print(time.monotonic(), flush=True)
"#;

/// Sends a datagram every 10 ms from UDP port 40000 to ADDR:9000, for at most 30 s.
const STREAM: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 40000))
print("ready", flush=True)
end = time.monotonic() + 30
while time.monotonic() < end:
    s.sendto(b"x", (sys.argv[1], 9000))
    time.sleep(0.01)
"#;

/// CLOCK_MONOTONIC in seconds, as Python's `time.monotonic()` reads it.
fn monotonic() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a timespec to write to.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Every receive time the sink printed so far (waiting `wait` for more).
fn received(sink: &Proc, wait: Duration) -> Vec<f64> {
    let mut times = Vec::new();
    let deadline = Instant::now() + wait;
    while let Some(line) = sink.line(deadline.saturating_duration_since(Instant::now())) {
        times.push(line.parse().unwrap_or_else(|e| panic!("{line:?}: {e}")));
    }
    times
}

fn udp_conntrack(sb: &Sandbox) -> String {
    sb.ok(&["conntrack", "--proto", "udp"])
}

#[test]
fn a_moved_publish_and_a_replaced_container_take_the_stream_at_once() {
    let sb = Sandbox::new(&netpath_bin()).expect("sandbox");
    let client = sb.client().expect("client namespace");
    sb.ok(&["up", "-d", "--publish", "9000:172.17.0.2:9000/udp"]);
    let (a, b) = (sb.name("a"), sb.name("b"));
    sb.ok(&["run", &a, "--ip", "172.17.0.2"]);
    sb.ok(&["run", &b, "--ip", "172.17.0.3"]);
    let sink_a = sb.start_python(&a, SINK, &[], "ready");
    let sink_b = sb.start_python(&b, SINK, &[], "ready");
    let _stream = sb.start_python(&client.netns, STREAM, &[EXT_ADDR], "ready");
    assert!(
        !received(&sink_a, Duration::from_secs(1)).is_empty(),
        "the stream reaches a"
    );
    assert!(udp_conntrack(&sb).contains("172.17.0.2:9000"));

    // The publish moves to b.
    sb.ok(&["unpublish", "9000:172.17.0.2:9000/udp"]);
    sb.ok(&["publish", "9000:172.17.0.3:9000/udp"]);
    let moved = monotonic();
    let at_a = received(&sink_a, Duration::from_millis(1500));
    let at_b = received(&sink_b, Duration::ZERO);
    assert!(
        at_a.iter().all(|&t| t <= moved),
        "a received {} datagram(s) after the publish moved",
        at_a.iter().filter(|&&t| t > moved).count()
    );
    let first = at_b.first().expect("the stream reaches b");
    assert!(
        first - moved < 1.0,
        "b's first datagram after {:.3} s",
        first - moved
    );

    // b is replaced by c on a new address, published the same way.
    sb.ok(&["rm", &b]);
    let gone = udp_conntrack(&sb);
    assert!(
        !gone.contains("172.17.0.3"),
        "b's flows went with it: {gone}"
    );
    let c = sb.name("c");
    sb.ok(&["run", &c, "--ip", "172.17.0.4", "-p", "9000:9000/udp"]);
    // The sink starts after `run`: datagrams meanwhile meet a closed port.
    let sink_c = sb.start_python(&c, SINK, &[], "ready");
    let ready = monotonic();
    let at_c = received(&sink_c, Duration::from_millis(1500));
    let first = at_c.first().expect("the stream reaches c");
    assert!(
        first - ready < 1.0,
        "c's first datagram after {:.3} s",
        first - ready
    );
    assert!(
        received(&sink_a, Duration::ZERO).is_empty(),
        "nothing reaches a meanwhile"
    );
    drop(sink_b);
    let now = udp_conntrack(&sb);
    assert!(now.contains("172.17.0.4:9000"), "{now}");
}

#[test]
fn removing_a_container_forgets_its_tcp_connections_too() {
    let sb = Sandbox::new(&netpath_bin()).expect("sandbox");
    let client = sb.client().expect("client namespace");
    sb.ok(&["up", "-d", "--publish", "8080:172.17.0.2:80"]);
    let web = sb.name("web");
    sb.ok(&["run", &web]);
    let _server = sb.start_python(
        &web,
        "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',80))\ns.listen()\nprint('ready',flush=True)\nc,_=s.accept()\nc.recv(1)",
        &[],
        "ready",
    );
    let _conn = sb.start_python(
        &client.netns,
        "import socket,sys,time\nc=socket.create_connection((sys.argv[1],8080),timeout=5)\nprint('ready',flush=True)\ntime.sleep(30)",
        &[EXT_ADDR],
        "ready",
    );
    let before = sb.ok(&["conntrack", "--proto", "tcp"]);
    assert!(before.contains("172.17.0.2:80"), "{before}");
    let out = sb.ok(&["rm", &web]);
    assert!(
        out.contains(&format!("removed 2 conntrack entries of {web}")),
        "{out}"
    );
    let after = sb.ok(&["conntrack", "--proto", "tcp"]);
    assert!(!after.contains("172.17.0.2"), "{after}");
    // Counted as netpath's own removals, not as evictions.
    let stats: serde_json::Value =
        serde_json::from_str(&sb.ok(&["stats", "--json"])).expect("stats --json");
    assert_eq!(stats["conntrack"]["evicted"], 0, "{stats}");
}
