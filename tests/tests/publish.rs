//! Port publishing end to end: a client namespace outside the sandbox host reaches servers
//! in containers through published ports of the host (DNAT by the eBPF programs, no
//! iptables), and the host itself, other containers and the container itself do too.
//! Servers and clients are the python3 scripts of [`netpath_tests::scripts`], started with
//! `ip netns exec`; every wait and every command is bounded.
#![allow(
    clippy::print_stderr,
    reason = "says which checks it skipped and how long the bulk publish took"
)]
use std::{collections::BTreeSet, process::Command};

use netpath_common::{Counter, CtEntry, CtKey, PROTO_TCP};
use netpath_tests::{
    CLIENT_ADDR, EXT_ADDR, Sandbox,
    helpers::{counter, curl, curl_cmd, datapath, hits, ip_port, parse_curl},
    sandbox,
    scripts::{client, connected, connects, roundtrip, server},
};
use serde_json::Value;

const WEB: &str = "172.17.0.2";

fn ip4(s: &str) -> [u8; 4] {
    s.parse::<std::net::Ipv4Addr>().unwrap().octets()
}

/// The entries of NP_PUBLISH, as a set of their JSON texts (hash order is not stable).
fn publish_entries(sb: &Sandbox) -> BTreeSet<String> {
    sb.map_dump("NP_PUBLISH")
        .expect("dumping NP_PUBLISH")
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(Value::to_string)
        .collect()
}

// 1
#[test]
fn tcp_publish_reaches_the_container_with_the_clients_address() {
    let sb = sandbox();
    let cl = sb.client().expect("client namespace");
    let web = sb.up_with_web(&[
        "--publish",
        "8088:172.17.0.2:80",
        "--publish",
        "8081:172.17.0.2:81",
    ]);
    let _http = server(&sb, &web, &["http", "80"]);
    let _echo = server(&sb, &web, &["echo", "81"]);
    let nat_new = counter(&sb, Counter::NatNew);

    let (body, remote) = curl(&sb, &cl.netns, "http://203.0.113.1:8088/").unwrap();
    let (seen_ip, _) = ip_port(&body);
    assert_eq!(
        seen_ip, CLIENT_ADDR,
        "the container must see the client's own address (DNAT only)"
    );
    assert_eq!(remote, "203.0.113.1:8088");

    // A connection held open: its two conntrack entries translate 203.0.113.1:8081 to the
    // container and the replies back from 203.0.113.1:8081.
    let (mut conn, line) = connected(&sb, &cl.netns, EXT_ADDR, 8081);
    let local = line.split(' ').nth(1).unwrap().to_owned();
    assert_eq!(line, format!("connected {local} 203.0.113.1:8081"));
    let (local_ip, cport) = ip_port(&local);
    assert_eq!(local_ip, CLIENT_ADDR);
    assert_eq!(roundtrip(&mut conn, "hi"), format!("{local} hi"));
    let ct = datapath(&sb).conntrack().expect("reading NP_CT");
    let find = |key: CtKey| -> Option<CtEntry> {
        ct.iter()
            .find(|(k, _)| {
                (k.src_addr, k.dst_addr, k.src_port, k.dst_port, k.proto)
                    == (
                        key.src_addr,
                        key.dst_addr,
                        key.src_port,
                        key.dst_port,
                        key.proto,
                    )
            })
            .map(|(_, e)| *e)
    };
    let key = |src: &str, sport: u16, dst: &str, dport: u16| {
        CtKey::new(ip4(src), ip4(dst), sport, dport, PROTO_TCP)
    };
    let orig = find(key(CLIENT_ADDR, cport, EXT_ADDR, 8081))
        .unwrap_or_else(|| panic!("no conntrack entry for {local} -> 203.0.113.1:8081: {ct:?}"));
    assert_eq!(
        (orig.src_addr, orig.src_port, orig.dst_addr, orig.dst_port),
        (ip4(CLIENT_ADDR), cport, ip4(WEB), 81),
        "original direction: {orig:?}"
    );
    let reply = find(key(WEB, 81, CLIENT_ADDR, cport))
        .unwrap_or_else(|| panic!("no conntrack entry for 172.17.0.2:81 -> {local}: {ct:?}"));
    assert_eq!(
        (
            reply.src_addr,
            reply.src_port,
            reply.dst_addr,
            reply.dst_port
        ),
        (ip4(EXT_ADDR), 8081, ip4(CLIENT_ADDR), cport),
        "reply direction: {reply:?}"
    );
    assert!(
        counter(&sb, Counter::NatNew) >= nat_new + 2,
        "nat_new not counted"
    );
}

// 2
#[test]
fn udp_publish_and_udp_port_range() {
    let sb = sandbox();
    let cl = sb.client().expect("client namespace");
    let web = sb.name("web");
    sb.ok(&["up", "-d"]);
    sb.ok(&["run", &web, "-p", "9053:53/udp"]);
    sb.ok(&["publish", "9000-9002:172.17.0.2:7000-7002/udp"]);
    let _udp = server(&sb, &web, &["udp", "0.0.0.0", "53", "7000", "7001", "7002"]);
    let ports = [(9053, 53), (9000, 7000), (9001, 7001), (9002, 7002)];
    let args: Vec<String> = ["udp".to_owned(), EXT_ADDR.to_owned()]
        .into_iter()
        .chain(ports.iter().map(|(h, _)| h.to_string()))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let lines = client(&sb, &cl.netns, 30, &args);
    assert_eq!(lines.len(), ports.len(), "{lines:?}");
    for ((hport, cport), line) in ports.iter().zip(&lines) {
        // "HPORT FROM REPLY" with REPLY = "PEER CPORT hello-HPORT"
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 5, "udp {hport}: {line}");
        assert_eq!(f[0], hport.to_string());
        assert_eq!(
            f[1],
            format!("{EXT_ADDR}:{hport}"),
            "udp {hport}: the reply must come from the published address: {line}"
        );
        assert_eq!(
            ip_port(f[2]).0,
            CLIENT_ADDR,
            "udp {hport}: the container must see the client: {line}"
        );
        assert_eq!(f[3], cport.to_string(), "udp {hport}: wrong container port");
        assert_eq!(f[4], format!("hello-{hport}"));
    }
    // Published for UDP only: TCP to the same port is not translated (nothing listens on
    // the host, so the connection is refused).
    assert!(connects(&sb, &cl.netns, EXT_ADDR, 9000).is_err());
}

// 3
#[test]
fn many_concurrent_connections_and_a_long_transfer() {
    let sb = sandbox();
    let cl = sb.client().expect("client namespace");
    let web = sb.up_with_web(&[
        "--publish",
        "8088:172.17.0.2:80",
        "--publish",
        "8089:172.17.0.2:5000",
    ]);
    let _http = server(&sb, &web, &["http", "80"]);
    let _stream = server(&sb, &web, &["echo", "5000"]);

    let url = "http://203.0.113.1:8088/";
    let children: Vec<_> = (0..50)
        .map(|_| {
            Command::new("ip")
                .args(["netns", "exec", &cl.netns])
                .args(curl_cmd(url, "20"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("starting curl")
        })
        .collect();
    let mut peers = BTreeSet::new();
    let mut failures = vec![];
    for child in children {
        match parse_curl(url, &child.wait_with_output().unwrap()) {
            Ok((body, remote)) => {
                assert_eq!(ip_port(&body).0, CLIENT_ADDR, "{body}");
                assert_eq!(remote, "203.0.113.1:8088");
                peers.insert(body);
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 50 parallel requests failed: {failures:?}",
        failures.len()
    );
    assert_eq!(peers.len(), 50, "50 distinct connections expected");

    // 300 MiB each way through the published port, byte count and sha256 compared.
    let bridge_rx = || {
        sb.ip_json(&["-s", "link", "show", "netpath0"])[0]["stats64"]["rx"]["packets"]
            .as_u64()
            .expect("bridge rx packets")
    };
    let rx_before = bridge_rx();
    let n = 300u64 << 20;
    let lines = client(
        &sb,
        &cl.netns,
        240,
        &["stream", EXT_ADDR, "8089", &n.to_string()],
    );
    assert_eq!(lines.len(), 3, "{lines:?}");
    let sent = lines[0].strip_prefix("sent ").expect("sent line");
    assert!(sent.starts_with(&format!("{n} ")), "{sent}");
    assert_eq!(
        lines[1],
        format!("put {sent}"),
        "upload arrived changed or short"
    );
    assert_eq!(
        lines[2],
        format!("got {sent}"),
        "download arrived changed or short"
    );
    // What the container sent left from its veth straight out of ext0 (np_veth_in): the
    // bridge passed up next to none of it (the odd ARP at most).
    let through_bridge = bridge_rx() - rx_before;
    assert!(
        through_bridge < 20,
        "{through_bridge} packets went up through the bridge"
    );
}

// 4
#[test]
fn published_ports_are_reachable_from_the_host_itself() {
    let sb = sandbox();
    let _cl = sb.client().expect("client namespace");
    let web = sb.up_with_web(&[
        "--publish",
        "8088:172.17.0.2:80",
        "--publish",
        "9053:172.17.0.2:53/udp",
    ]);
    let _http = server(&sb, &web, &["http", "80"]);
    let _udp = server(&sb, &web, &["udp", "0.0.0.0", "53"]);
    for (url, addr) in [
        ("http://127.0.0.1:8088/", "127.0.0.1:8088"),
        ("http://203.0.113.1:8088/", "203.0.113.1:8088"),
    ] {
        let (body, remote) =
            curl(&sb, &sb.host, url).unwrap_or_else(|e| panic!("from the host: {e}"));
        assert!(body.contains(':'), "{url}: unexpected body {body:?}");
        assert_eq!(
            remote, addr,
            "{url}: getpeername must show the published address"
        );
    }
    // UDP from an unconnected socket: the reply appears to come from the published address.
    for host in ["127.0.0.1", EXT_ADDR] {
        let lines = client(&sb, &sb.host, 20, &["udp", host, "9053"]);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let f: Vec<&str> = lines[0].split(' ').collect();
        assert_eq!(f.len(), 5, "udp to {host}:9053 from the host: {}", lines[0]);
        assert_eq!(
            f[1],
            format!("{host}:9053"),
            "recvfrom must show the published address: {}",
            lines[0]
        );
        assert_eq!((f[3], f[4]), ("53", "hello-9053"));
    }
}

// 5
#[test]
fn hairpin_from_containers_through_the_hosts_address() {
    let sb = sandbox();
    let _cl = sb.client().expect("client namespace");
    let (web, other) = (sb.name("web"), sb.name("other"));
    sb.ok(&["up", "-d", "--publish", "8088:172.17.0.2:80"]);
    sb.ok(&["run", &web]);
    sb.ok(&["run", &other]);
    let _http = server(&sb, &web, &["http", "80"]);
    for (who, name) in [
        ("another container", &other),
        ("the container itself", &web),
    ] {
        let (body, remote) = curl(&sb, name, "http://203.0.113.1:8088/")
            .unwrap_or_else(|e| panic!("hairpin from {who}: {e}"));
        assert!(body.contains(':'), "{who}: unexpected body {body:?}");
        assert_eq!(remote, "203.0.113.1:8088", "{who}");
        // Twice: a second connection (new source port) works as well.
        curl(&sb, name, "http://203.0.113.1:8088/")
            .unwrap_or_else(|e| panic!("second hairpin from {who}: {e}"));
    }
}

// 6
#[test]
fn unpublish_stops_new_connections_and_keeps_established_ones() {
    let sb = sandbox();
    let cl = sb.client().expect("client namespace");
    let web = sb.up_with_web(&[]);
    let _echo = server(&sb, &web, &["echo", "81"]);
    sb.ok(&["publish", "8081:172.17.0.2:81"]);
    let (mut conn, line) = connected(&sb, &cl.netns, EXT_ADDR, 8081);
    let local = line.split(' ').nth(1).unwrap().to_owned();
    assert_eq!(roundtrip(&mut conn, "one"), format!("{local} one"));

    sb.ok(&["unpublish", "8081:172.17.0.2:81"]);
    assert!(
        publish_entries(&sb).is_empty(),
        "NP_PUBLISH not emptied by unpublish"
    );
    assert!(
        connects(&sb, &cl.netns, EXT_ADDR, 8081).is_err(),
        "a new connection succeeded right after unpublish"
    );
    assert_eq!(
        roundtrip(&mut conn, "two"),
        format!("{local} two"),
        "the established connection broke on unpublish"
    );

    sb.ok(&["publish", "8081:172.17.0.2:81"]);
    connects(&sb, &cl.netns, EXT_ADDR, 8081)
        .unwrap_or_else(|e| panic!("publishing again: new connection failed: {e}"));
    let (mut conn2, line2) = connected(&sb, &cl.netns, EXT_ADDR, 8081);
    let local2 = line2.split(' ').nth(1).unwrap().to_owned();
    assert_eq!(roundtrip(&mut conn2, "three"), format!("{local2} three"));
    assert_eq!(roundtrip(&mut conn, "four"), format!("{local} four"));
}

// 7
#[test]
fn traffic_to_unpublished_ports_is_untouched() {
    let sb = sandbox();
    let cl = sb.client().expect("client namespace");
    let web = sb.up_with_web(&["--publish", "8088:172.17.0.2:80"]);
    let _http = server(&sb, &web, &["http", "80"]);
    let _host_http = server(&sb, &sb.host, &["http", "8000"]);

    let before = (counter(&sb, Counter::NatNew), hits(&sb));
    let (body, remote) = curl(&sb, &cl.netns, "http://203.0.113.1:8000/")
        .unwrap_or_else(|e| panic!("a server of the host itself: {e}"));
    assert_eq!(
        ip_port(&body).0,
        CLIENT_ADDR,
        "the host's server saw {body}"
    );
    assert_eq!(remote, "203.0.113.1:8000");
    assert!(sb.ping(&cl.netns, EXT_ADDR), "ping to the host failed");
    assert!(
        connects(&sb, &cl.netns, EXT_ADDR, 8090).is_err(),
        "nothing listens on 8090"
    );
    let after = (counter(&sb, Counter::NatNew), hits(&sb));
    assert_eq!(
        before, after,
        "(nat_new, nat_hit) changed by untranslated traffic"
    );
    // While the published port is translated.
    curl(&sb, &cl.netns, "http://203.0.113.1:8088/").expect("the published port works");
    // The socket programs sit on the root cgroup, which spans namespaces: another
    // namespace's own 127.0.0.1:8088 stays its own.
    let _client_http = server(&sb, &cl.netns, &["http", "8088"]);
    let (body, remote) = curl(&sb, &cl.netns, "http://127.0.0.1:8088/")
        .unwrap_or_else(|e| panic!("the client's own 127.0.0.1:8088: {e}"));
    assert_eq!(
        (ip_port(&body).0.as_str(), remote.as_str()),
        ("127.0.0.1", "127.0.0.1:8088"),
        "the client's loopback connection was translated: {body}"
    );

    for cmd in [&["nft", "list", "ruleset"][..], &["iptables-save"][..]] {
        let out = Command::new("ip")
            .args(["netns", "exec", &sb.host])
            .args(cmd)
            .output();
        match out {
            Ok(out) if out.status.success() => {
                let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
                assert!(
                    !text.contains("netpath"),
                    "{cmd:?} mentions netpath: {text}"
                );
                assert!(!text.contains("dnat"), "{cmd:?} has DNAT rules: {text}");
            }
            // The tool is absent (or unusable here): nothing to check.
            _ => eprintln!("skipping {cmd:?}"),
        }
    }
}

// 8
#[test]
fn bad_input_is_a_one_line_error_and_changes_nothing() {
    let sb = sandbox();
    let _cl = sb.client().expect("client namespace");
    let _web = sb.up_with_web(&[]);
    sb.ok(&["publish", "8088:172.17.0.2:80"]);
    let state = |sb: &Sandbox| {
        (
            publish_entries(sb),
            sb.ok(&["publish"]),
            sb.ok(&["ps", "--json"]),
        )
    };
    let before = state(&sb);
    assert_eq!(before.0.len(), 1, "one publish expected: {:?}", before.0);
    let x = sb.name("x");
    let bad_file = format!("/tmp/{}-bad-publish", sb.name(""));
    std::fs::write(&bad_file, "8093:172.17.0.2:80\nbogus\n").unwrap();
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("malformed", vec!["publish", "8088"]),
        ("malformed", vec!["publish", "x:172.17.0.2:80"]),
        ("malformed", vec!["publish", "8089:172.17.0.2"]),
        ("malformed", vec!["publish", "8089:172.17.0.300:80"]),
        ("malformed", vec!["publish", "8089:172.17.0.2:80/sctp"]),
        ("malformed", vec!["publish", "8089:172.17.0.2:80:81"]),
        (
            "reversed range",
            vec!["publish", "9002-9000:172.17.0.2:7002-7000"],
        ),
        ("port 0", vec!["publish", "0:172.17.0.2:80"]),
        ("port 0", vec!["publish", "8089:172.17.0.2:0"]),
        ("port 65536", vec!["publish", "65536:172.17.0.2:80"]),
        ("port 65536", vec!["publish", "8089:172.17.0.2:65536"]),
        (
            "ranges of different length",
            vec!["publish", "9000-9002:172.17.0.2:7000-7001/udp"],
        ),
        (
            "HOST_IP not local",
            vec!["publish", "192.0.2.99:8089:172.17.0.2:80"],
        ),
        ("duplicate", vec!["publish", "8088:172.17.0.2:80"]),
        ("duplicate host port", vec!["publish", "8088:172.17.0.3:80"]),
        (
            "range overlapping a publish",
            vec!["publish", "8087-8089:172.17.0.2:80-82"],
        ),
        (
            "duplicate within one command",
            vec!["publish", "8091:172.17.0.2:80", "8091:172.17.0.2:81"],
        ),
        (
            "a good SPEC then a bad one",
            vec!["publish", "8092:172.17.0.2:80", "bogus"],
        ),
        (
            "container address in no network",
            vec!["publish", "8090:198.51.100.7:80"],
        ),
        ("not published", vec!["unpublish", "8095:172.17.0.2:80"]),
        (
            "not published (udp)",
            vec!["unpublish", "8088:172.17.0.2:80/udp"],
        ),
        (
            "not published (target)",
            vec!["unpublish", "8088:172.17.0.2:81"],
        ),
        ("malformed unpublish", vec!["unpublish", "bogus"]),
        (
            "from a file with a bad line",
            vec!["publish", "--from-file", &bad_file],
        ),
        (
            "from a missing file",
            vec!["publish", "--from-file", "/nonexistent/netpath-specs"],
        ),
        ("run -p port 0", vec!["run", &x, "-p", "0:80"]),
        ("run -p malformed", vec!["run", &x, "-p", "80"]),
        ("run -p duplicate", vec!["run", &x, "-p", "8088:80"]),
    ];
    let mut problems = vec![];
    for (what, args) in &cases {
        // Judged against the state just before, so that one failure does not cascade.
        let pre = state(&sb);
        if let Some(problem) = sb.refusal_problem(args) {
            problems.push(format!("{what}: {problem}"));
        }
        let post = state(&sb);
        if post != pre {
            problems.push(format!(
                "{what}: {args:?} changed the state: {pre:?} -> {post:?}"
            ));
            let _ = sb.netpath(&["rm", &x]);
        }
    }
    let stdin_bad = sb.netpath_stdin(
        &["publish", "--from-file", "-"],
        b"8094:172.17.0.2:80\n8094:172.17.0.2:0\n",
    );
    let err = String::from_utf8_lossy(&stdin_bad.stderr);
    if stdin_bad.status.success() || err.trim().lines().count() != 1 {
        problems.push(format!(
            "stdin with a bad line: {} {err:?}",
            stdin_bad.status
        ));
    }
    let after = state(&sb);
    if after != before {
        problems.push(format!(
            "the state changed overall: {before:?} -> {after:?}"
        ));
    }
    let _ = std::fs::remove_file(&bad_file);
    assert!(
        !std::path::Path::new(&format!("/run/netns/{x}")).exists(),
        "a failed run left its namespace"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// 9
#[test]
fn bulk_publish_and_unpublish_from_a_file() {
    let sb = sandbox();
    let cl = sb.client().expect("client namespace");
    let web = sb.up_with_web(&[]);
    let _http = server(&sb, &web, &["http", "80"]);
    let specs: String = (20000..30000)
        .map(|p| format!("{p}:172.17.0.2:80\n"))
        .collect();
    let started = std::time::Instant::now();
    let out = sb.netpath_stdin(&["publish", "--from-file", "-"], specs.as_bytes());
    assert!(
        out.status.success(),
        "publish --from-file - (10,000 lines): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("10,000 publishes took {:?}", started.elapsed());
    assert_eq!(publish_entries(&sb).len(), 10_000, "NP_PUBLISH entries");
    for port in [20000, 25000, 29999] {
        let (body, _) = curl(&sb, &cl.netns, &format!("http://203.0.113.1:{port}/"))
            .unwrap_or_else(|e| panic!("bulk-published port {port}: {e}"));
        assert_eq!(ip_port(&body).0, CLIENT_ADDR);
    }

    let file = format!("/tmp/{}-specs", sb.name(""));
    std::fs::write(&file, &specs).unwrap();
    let out = sb.netpath(&["unpublish", "--from-file", &file]);
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "unpublish --from-file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        publish_entries(&sb).is_empty(),
        "NP_PUBLISH not empty after unpublish"
    );
    assert!(connects(&sb, &cl.netns, EXT_ADDR, 25000).is_err());
}

// run -p, ps and rm
#[test]
fn run_publish_shorthand_shows_in_ps_and_goes_with_rm() {
    let sb = sandbox();
    let cl = sb.client().expect("client namespace");
    let web = sb.name("web");
    sb.ok(&["up", "-d"]);
    sb.ok(&["run", &web, "-p", "8088:80"]);
    let _http = server(&sb, &web, &["http", "80"]);
    let (body, _) = curl(&sb, &cl.netns, "http://203.0.113.1:8088/").expect("run -p 8088:80");
    assert_eq!(ip_port(&body).0, CLIENT_ADDR);
    let ps = sb.ok(&["ps"]);
    assert!(ps.contains("8088"), "ps shows no port: {ps}");
    let ps_json = sb.ok(&["ps", "--json"]);
    let _: Value = serde_json::from_str(&ps_json).expect("ps --json is JSON");
    assert!(
        ps_json.contains("8088"),
        "ps --json shows no port: {ps_json}"
    );
    let listing = sb.ok(&["publish"]);
    assert!(listing.contains("8088"), "publish lists nothing: {listing}");

    sb.ok(&["rm", &web]);
    assert!(
        publish_entries(&sb).is_empty(),
        "rm left its publishes in NP_PUBLISH"
    );
    let listing = sb.ok(&["publish"]);
    assert!(
        !listing.contains("8088"),
        "rm left its publish listed: {listing}"
    );
    assert!(
        connects(&sb, &cl.netns, EXT_ADDR, 8088).is_err(),
        "a new connection succeeded after rm"
    );

    // down takes the publishes, the programs and the pins with it.
    sb.ok(&["run", &web, "-p", "8088:80"]);
    sb.ok(&["down"]);
    let pins = format!("/sys/fs/bpf/netpath/{}", sb.host);
    assert!(
        !std::path::Path::new(&pins).exists(),
        "{pins} left behind by down"
    );
    assert!(connects(&sb, &cl.netns, EXT_ADDR, 8088).is_err());
}

#[test]
fn host_ip_restricts_a_publish_to_that_address() {
    let sb = sandbox();
    let cl = sb.client().expect("client namespace");
    let web = sb.name("web");
    // A second address of the host on the client's link.
    let out = sb.exec(
        &sb.host,
        &["ip", "addr", "add", "203.0.113.10/24", "dev", "ext0"],
    );
    assert!(out.status.success(), "{out:?}");
    sb.ok(&["up", "-d"]);
    sb.ok(&["run", &web]);
    let _http = server(&sb, &web, &["http", "80"]);
    sb.ok(&["publish", "203.0.113.10:8090:172.17.0.2:80"]);
    let (body, remote) = curl(&sb, &cl.netns, "http://203.0.113.10:8090/")
        .unwrap_or_else(|e| panic!("the published address: {e}"));
    assert_eq!(ip_port(&body).0, CLIENT_ADDR);
    assert_eq!(remote, "203.0.113.10:8090");
    assert!(
        connects(&sb, &cl.netns, EXT_ADDR, 8090).is_err(),
        "203.0.113.1:8090 reached the container: only 203.0.113.10 is published"
    );
    curl(&sb, &sb.host, "http://203.0.113.10:8090/")
        .unwrap_or_else(|e| panic!("the published address from the host: {e}"));
    assert!(
        curl(&sb, &sb.host, "http://127.0.0.1:8090/").is_err(),
        "127.0.0.1:8090 reached the container: only 203.0.113.10 is published"
    );
    // The same port on the other address can go elsewhere.
    let other = sb.name("other");
    sb.ok(&["run", &other]);
    let _other_http = server(&sb, &other, &["http", "80"]);
    sb.ok(&["publish", "203.0.113.1:8090:172.17.0.3:80"]);
    curl(&sb, &cl.netns, "http://203.0.113.1:8090/")
        .unwrap_or_else(|e| panic!("203.0.113.1:8090 to the other container: {e}"));
    curl(&sb, &cl.netns, "http://203.0.113.10:8090/")
        .unwrap_or_else(|e| panic!("203.0.113.10:8090 after publishing 203.0.113.1:8090: {e}"));
}
