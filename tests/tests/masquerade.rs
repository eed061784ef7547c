//! Masquerade end to end: containers reach servers outside the sandbox host, which see the
//! address of the host's external interface, through the eBPF programs and their conntrack
//! maps (no iptables). The client namespace of [`Sandbox::client`] is the "outside"; servers
//! there listen on 198.51.100.10 (on its lo, reached through the host's default route).
//! Servers and clients are the python3 scripts of [`netpath_tests::scripts`]; every wait and
//! every command is bounded.
use std::{collections::BTreeSet, time::Duration};

use aya::maps::{HashMap, Map, MapData};
use netpath_common::{CT_FLAG_REPLY, Counter, CtEntry, CtKey, CtState, MAX_CONNTRACK, PROTO_UDP};
use netpath_tests::{
    CLIENT_ADDR, Client, EXT_ADDR, Proc, Sandbox,
    helpers::{counter, ip_port, veth},
    ip, sandbox,
    scripts::{client, hold, one, roundtrip, server},
};
use serde_json::Value;

/// The server address outside, on the client namespace's lo.
const SERVER: &str = netpath_tests::SERVER_ADDR;
const WEB: &str = "172.17.0.2";
const OTHER: &str = "172.17.0.3";

/// The source the server saw for a one-line TCP exchange from `netns` (SPORT 0: any).
fn tcp_source(sb: &Sandbox, netns: &str, host: &str, sport: u16) -> String {
    let line = one(sb, netns, &["ask", host, "80", &sport.to_string()]);
    line.strip_suffix(" hi")
        .unwrap_or_else(|| panic!("TCP from {netns} to {host}:80: {line}"))
        .to_owned()
}

/// The source the server sees on a held connection.
fn seen(proc: &mut Proc, what: &str) -> String {
    let line = roundtrip(proc, "hi");
    line.strip_suffix(" hi")
        .unwrap_or_else(|| panic!("{what}: {line}"))
        .to_owned()
}

/// `netpath conntrack --json ARGS`, parsed.
fn conntrack(sb: &Sandbox, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["conntrack", "--json"];
    all.extend_from_slice(args);
    match sb.ok_json(&all) {
        Value::Array(v) => v,
        other => panic!("conntrack --json: not a JSON array: {other}"),
    }
}

// 1
#[test]
fn tcp_udp_and_a_long_transfer_leave_with_the_external_address() {
    let sb = sandbox();
    let cl = sb.outside().expect("outside namespace");
    let web = sb.up_with_web(&[]);
    let _tcp = server(&sb, &cl.netns, &["echo", "80"]);
    let _udp = server(&sb, &cl.netns, &["udp", SERVER, "53"]);
    let masq_new = counter(&sb, Counter::MasqNew);

    let src = tcp_source(&sb, &web, SERVER, 0);
    assert_eq!(ip_port(&src).0, EXT_ADDR, "TCP: the server saw {src}");
    let reply = one(&sb, &web, &["query", SERVER, "53", "0"]);
    assert!(
        reply.starts_with(&format!("{EXT_ADDR}:")) && reply.ends_with(" query"),
        "UDP request/response: {reply}"
    );
    assert!(
        counter(&sb, Counter::MasqNew) >= masq_new + 2,
        "masq_new not counted"
    );

    // 64 MiB upload, byte count and sha256 compared.
    let lines = client(
        &sb,
        &web,
        120,
        &["put", SERVER, "80", &(64u32 << 20).to_string()],
    );
    assert_eq!(lines.len(), 2, "{lines:?}");
    let sent = lines[0].strip_prefix("sent ").expect("sent line");
    assert_eq!(lines[1], sent, "the upload arrived changed or short");
}

// 2
#[test]
fn source_ports_are_kept_when_free_and_allocated_from_the_range() {
    let sb = sandbox();
    let cl = sb.outside().expect("outside namespace");
    let (web, other) = (sb.name("web"), sb.name("other"));
    sb.ok(&["up", "-d", "--masquerade-ports", "45000-45009"]);
    sb.ok(&["run", &web]);
    sb.ok(&["run", &other]);
    let _tcp = server(&sb, &cl.netns, &["echo", "80"]);
    let _udp = server(&sb, &cl.netns, &["udp", SERVER, "53"]);

    // The same source port towards the same server from two containers, at once.
    let (mut a, line) = hold(&sb, &web, SERVER, 80, 40000);
    assert!(line.starts_with("connected "), "{line}");
    let (mut b, line) = hold(&sb, &other, SERVER, 80, 40000);
    assert!(line.starts_with("connected "), "{line}");
    let seen_a = seen(&mut a, "first container");
    let seen_b = seen(&mut b, "second container");
    assert_eq!(
        seen_a,
        format!("{EXT_ADDR}:40000"),
        "a free source port is kept"
    );
    let (ip_b, port_b) = ip_port(&seen_b);
    assert_eq!(ip_b, EXT_ADDR);
    assert!(
        (45000..=45009).contains(&port_b),
        "a taken source port is replaced from --masquerade-ports: {seen_b}"
    );
    // Both keep working side by side.
    assert_eq!(seen(&mut a, "first container again"), seen_a);
    assert_eq!(seen(&mut b, "second container again"), seen_b);

    // UDP: the same.
    let ua = one(&sb, &web, &["query", SERVER, "53", "5353"]);
    let ub = one(&sb, &other, &["query", SERVER, "53", "5353"]);
    assert!(ua.starts_with(&format!("{EXT_ADDR}:")), "{ua}");
    assert!(ub.starts_with(&format!("{EXT_ADDR}:")), "{ub}");
    assert_ne!(ua, ub, "two UDP flows got the same translated source");
}

// 2, exhaustion
#[test]
fn an_exhausted_port_range_drops_and_counts() {
    let sb = sandbox();
    let cl = sb.outside().expect("outside namespace");
    let names: Vec<String> = ["a", "b", "c"].iter().map(|n| sb.name(n)).collect();
    sb.ok(&["up", "-d", "--masquerade-ports", "45000-45000"]);
    for n in &names {
        sb.ok(&["run", n]);
    }
    let _tcp = server(&sb, &cl.netns, &["echo", "80"]);
    let (mut a, line) = hold(&sb, &names[0], SERVER, 80, 40000);
    assert!(line.starts_with("connected "), "{line}");
    let (mut b, line) = hold(&sb, &names[1], SERVER, 80, 40000);
    assert!(line.starts_with("connected "), "{line}");
    assert_eq!(seen(&mut a, "a"), format!("{EXT_ADDR}:40000"));
    assert_eq!(seen(&mut b, "b"), format!("{EXT_ADDR}:45000"));

    let drops = counter(&sb, Counter::DropNoPort);
    let (_c, line) = hold(&sb, &names[2], SERVER, 80, 40000);
    assert!(
        line.starts_with("error "),
        "a third connection with no port left must fail, got: {line}"
    );
    assert!(
        counter(&sb, Counter::DropNoPort) > drops,
        "drop_no_port not counted"
    );
    // The two translated connections are untouched.
    assert_eq!(seen(&mut a, "a after"), format!("{EXT_ADDR}:40000"));
    assert_eq!(seen(&mut b, "b after"), format!("{EXT_ADDR}:45000"));
}

/// host ext0 203.0.113.1 — router (the client namespace, 203.0.113.2; 198.51.100.1/24 with
/// MTU 1280 towards the far side) — far 198.51.100.2 (MTU 1500: only the router's side is
/// narrow, so that TCP needs path MTU discovery).
fn routed(sb: &Sandbox) -> (Client, Client) {
    let router = sb.client().expect("router namespace");
    let far = sb.extra_netns("far").expect("far namespace");
    let (r, f) = (router.netns.as_str(), far.netns.as_str());
    veth(
        (r, "eth1", "198.51.100.1/24"),
        (f, "eth0", "198.51.100.2/24"),
    )
    .unwrap();
    ip(&["-n", r, "link", "set", "eth1", "mtu", "1280"]).unwrap();
    ip(&["-n", f, "route", "add", "default", "via", "198.51.100.1"]).unwrap();
    sb.exec_ok(r, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    (router, far)
}

// 3
#[test]
fn ping_and_icmp_errors_are_translated_back() {
    let sb = sandbox();
    let (_router, far) = routed(&sb);
    let web = sb.up_with_web(&[]);
    let _tcp = server(&sb, &far.netns, &["echo", "80"]);

    assert!(sb.ping(&web, "198.51.100.2"), "ping through masquerade");
    let icmp = conntrack(&sb, &["--proto", "icmp"]);
    assert!(!icmp.is_empty(), "the ping left no conntrack entry");

    // Each kind of error is checked on its own, so that one failure hides no other.
    let mut problems = vec![];
    let output = |cmd: &[&str]| {
        let out = sb.exec(&web, cmd);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    // Path MTU discovery for TCP, first (ping -M do below leaves a PMTU in the cache): an
    // 8 MiB upload over the narrow link.
    let errors = counter(&sb, Counter::IcmpError);
    let n = (8u32 << 20).to_string();
    let lines = client(&sb, &web, 60, &["put", "198.51.100.2", "80", &n]);
    let sent = lines.first().and_then(|l| l.strip_prefix("sent "));
    if lines.len() != 2 || Some(lines[1].as_str()) != sent {
        problems.push(format!("TCP upload through the MTU 1280 link: {lines:?}"));
    }
    if counter(&sb, Counter::IcmpError) == errors {
        problems.push("no fragmentation needed translated for the TCP upload".to_owned());
    }
    // TTL 2: the host forwards it (TTL 1), the router drops it and answers "time exceeded"
    // to the host's address, which must reach the container.
    let errors = counter(&sb, Counter::IcmpError);
    let text = output(&["ping", "-c", "1", "-W", "2", "-t", "2", "198.51.100.2"]);
    if !(text.contains("From 203.0.113.2") && text.contains("Time to live exceeded")) {
        problems.push(format!(
            "ping -t 2: no time exceeded from the router: {text}"
        ));
    }
    // DF and too big for the router's far link: "fragmentation needed".
    let text = output(&[
        "ping",
        "-c",
        "2",
        "-i",
        "0.5",
        "-W",
        "2",
        "-M",
        "do",
        "-s",
        "1400",
        "198.51.100.2",
    ]);
    if !(text.contains("mtu = 1280") || text.contains("mtu=1280")) {
        problems.push(format!(
            "ping -M do -s 1400: no frag needed (MTU 1280): {text}"
        ));
    }
    // Destination unreachable (port), about a masqueraded UDP flow.
    let got = one(&sb, &web, &["refused", "198.51.100.2", "9"]);
    if got != "refused" {
        problems.push(format!("UDP to a closed port: {got}, not refused"));
    }
    // Time exceeded and port unreachable; the ping's "fragmentation needed" may be answered
    // from the path MTU the TCP upload already taught the container, without a packet.
    let counted = counter(&sb, Counter::IcmpError) - errors;
    if counted < 2 {
        problems.push(format!("icmp_error counted {counted} of 2 errors"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// 4
#[test]
fn networks_and_exclusions_keep_their_source() {
    let sb = sandbox();
    let cl = sb.outside().expect("outside namespace");
    let (web, other, db) = (sb.name("web"), sb.name("other"), sb.name("db"));
    sb.ok(&["up", "-d"]);
    sb.ok(&["network", "create", "backend", "--subnet", "10.10.0.0/24"]);
    sb.ok(&["run", &web]);
    sb.ok(&["run", &other]);
    sb.ok(&["run", &db, "--network", "backend"]);
    sb.ok(&["connect", &web, "backend"]);
    let _srv_other = server(&sb, &other, &["echo", "80"]);
    let _srv_db = server(&sb, &db, &["echo", "80"]);
    let _srv_out = server(&sb, &cl.netns, &["echo", "80"]);

    // The trie holds both networks.
    let trie = sb.map_dump("NP_MASQ_EXCL").expect("dumping NP_MASQ_EXCL");
    assert_eq!(
        trie.as_array().map(Vec::len),
        Some(2),
        "NP_MASQ_EXCL: {trie}"
    );

    let masq = counter(&sb, Counter::MasqNew);
    assert_eq!(
        ip_port(&tcp_source(&sb, &web, OTHER, 0)).0,
        WEB,
        "same network"
    );
    assert_eq!(
        ip_port(&tcp_source(&sb, &web, "10.10.0.2", 0)).0,
        "10.10.0.3",
        "the other network, through web's eth1"
    );
    assert_eq!(
        counter(&sb, Counter::MasqNew),
        masq,
        "netpath traffic was masqueraded"
    );

    // Excluded: the outside sees the container (and routes back to it).
    ip(&[
        "-n",
        &cl.netns,
        "route",
        "add",
        "172.17.0.0/16",
        "via",
        EXT_ADDR,
    ])
    .unwrap();
    assert_eq!(ip_port(&tcp_source(&sb, &web, SERVER, 0)).0, EXT_ADDR);
    sb.ok(&["up", "-d", "--masquerade-exclude", "198.51.100.0/24"]);
    let trie = sb.map_dump("NP_MASQ_EXCL").expect("dumping NP_MASQ_EXCL");
    assert_eq!(
        trie.as_array().map(Vec::len),
        Some(3),
        "NP_MASQ_EXCL: {trie}"
    );
    assert_eq!(
        ip_port(&tcp_source(&sb, &web, SERVER, 0)).0,
        WEB,
        "--masquerade-exclude 198.51.100.0/24 still masqueraded"
    );
    // Kept by a plain `up`, dropped by `none`.
    sb.ok(&["up", "-d"]);
    assert_eq!(ip_port(&tcp_source(&sb, &web, SERVER, 0)).0, WEB);
    sb.ok(&["up", "-d", "--masquerade-exclude", "none"]);
    assert_eq!(ip_port(&tcp_source(&sb, &web, SERVER, 0)).0, EXT_ADDR);

    // A removed network leaves the trie.
    sb.ok(&["rm", &db]);
    sb.ok(&["rm", &web]);
    sb.ok(&["network", "rm", "backend"]);
    let trie = sb.map_dump("NP_MASQ_EXCL").expect("dumping NP_MASQ_EXCL");
    assert_eq!(
        trie.as_array().map(Vec::len),
        Some(1),
        "NP_MASQ_EXCL: {trie}"
    );
}

// 4b
#[test]
fn a_network_with_masquerade_off_leaves_with_the_containers_address() {
    let sb = sandbox();
    let cl = sb.outside().expect("outside namespace");
    let web = sb.up_with_web(&[]);
    let plain = sb.name("plain");
    sb.ok(&[
        "network",
        "create",
        "plain",
        "--subnet",
        "10.30.0.0/24",
        "--masquerade",
        "false",
    ]);
    sb.ok(&["run", &plain, "--network", "plain"]);
    // Routed: the outside knows its way back to the subnet, through the host.
    ip(&[
        "-n",
        &cl.netns,
        "route",
        "add",
        "10.30.0.0/24",
        "via",
        EXT_ADDR,
    ])
    .unwrap();
    let _tcp = server(&sb, &cl.netns, &["echo", "80"]);
    let _udp = server(&sb, &cl.netns, &["udp", SERVER, "53"]);
    let masq_new = counter(&sb, Counter::MasqNew);

    assert_eq!(ip_port(&tcp_source(&sb, &plain, SERVER, 0)).0, "10.30.0.2");
    let reply = one(&sb, &plain, &["query", SERVER, "53", "0"]);
    assert!(reply.starts_with("10.30.0.2:"), "UDP: {reply}");
    assert_eq!(counter(&sb, Counter::MasqNew), masq_new, "masqueraded");
    let tracked = conntrack(&sb, &[]);
    assert!(
        !tracked.iter().any(|e| e.to_string().contains("10.30.0.2")),
        "untranslated flows are not tracked: {tracked:?}"
    );
    // The default network beside it masquerades as before.
    assert_eq!(ip_port(&tcp_source(&sb, &web, SERVER, 0)).0, EXT_ADDR);
    assert_eq!(counter(&sb, Counter::MasqNew), masq_new + 1);

    // Shown, kept in the state, and honoured after `up` re-attaches everything.
    let nets = sb.ok_json(&["network", "ls", "--json"]);
    let masq_of = |name: &str| {
        nets.as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .map(|n| n["masquerade"].clone())
    };
    assert_eq!(masq_of("plain"), Some(Value::Bool(false)), "{nets}");
    assert_eq!(masq_of("default"), Some(Value::Bool(true)), "{nets}");
    let table = sb.ok(&["network", "ls"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("plain ") && l.contains(" off ")),
        "{table}"
    );
    sb.ok(&["up", "-d"]);
    assert_eq!(ip_port(&tcp_source(&sb, &plain, SERVER, 0)).0, "10.30.0.2");
    let err = sb.fails(&["network", "create", "x", "--masquerade", "maybe"]);
    assert!(err.contains("maybe"), "{err}");
}

// 5
#[test]
fn several_externals_and_an_address_change() {
    let sb = sandbox();
    let cl = sb.outside().expect("outside namespace");
    let (h, c) = (sb.host.as_str(), cl.netns.as_str());
    // A second link to the outside: ext1 192.0.2.1 — eth1 192.0.2.2, with 198.51.100.20
    // routed through it.
    veth((h, "ext1", "192.0.2.1/24"), (c, "eth1", "192.0.2.2/24")).unwrap();
    for args in [
        &["-n", c, "addr", "add", "198.51.100.20/32", "dev", "lo"][..],
        &[
            "-n",
            h,
            "route",
            "add",
            "198.51.100.20/32",
            "via",
            "192.0.2.2",
        ],
    ] {
        ip(args).unwrap();
    }
    let web = sb.up_with_web(&["--external", "ext0", "--external", "ext1"]);
    let _tcp = server(&sb, c, &["echo", "80"]);
    assert_eq!(ip_port(&tcp_source(&sb, &web, SERVER, 0)).0, EXT_ADDR);
    assert_eq!(
        ip_port(&tcp_source(&sb, &web, "198.51.100.20", 0)).0,
        "192.0.2.1"
    );

    // A new address on ext1, no netpath command in between.
    for args in [
        &["-n", h, "addr", "del", "192.0.2.1/24", "dev", "ext1"][..],
        &["-n", h, "addr", "add", "192.0.2.5/24", "dev", "ext1"],
        &[
            "-n",
            h,
            "route",
            "replace",
            "198.51.100.20/32",
            "via",
            "192.0.2.2",
        ],
    ] {
        ip(args).unwrap();
    }
    assert_eq!(
        ip_port(&tcp_source(&sb, &web, "198.51.100.20", 0)).0,
        "192.0.2.5",
        "the address change on ext1 was not picked up"
    );
    assert_eq!(ip_port(&tcp_source(&sb, &web, SERVER, 0)).0, EXT_ADDR);
}

// 6
#[test]
fn conntrack_lists_flushes_and_expired_entries_free_their_port() {
    let sb = sandbox();
    let cl = sb.outside().expect("outside namespace");
    let (web, other) = (sb.name("web"), sb.name("other"));
    sb.ok(&["up", "-d"]);
    sb.ok(&["run", &web]);
    sb.ok(&["run", &other]);
    let _tcp = server(&sb, &cl.netns, &["echo", "80"]);
    let _udp = server(&sb, &cl.netns, &["udp", SERVER, "53"]);

    let (mut conn, line) = hold(&sb, &web, SERVER, 80, 40001);
    assert!(line.starts_with("connected "), "{line}");
    seen(&mut conn, "held");
    one(&sb, &web, &["query", SERVER, "53", "5353"]);
    let listed = conntrack(&sb, &["--addr", WEB]);
    let tcp = listed
        .iter()
        .find(|c| c["proto"] == "tcp" && c["original"]["sport"] == 40001)
        .unwrap_or_else(|| panic!("the held connection is not listed: {listed:?}"));
    assert_eq!(tcp["original"]["src"], WEB);
    assert_eq!(tcp["original"]["dst"], SERVER);
    assert_eq!(tcp["translated"]["src"], EXT_ADDR);
    assert_eq!(tcp["state"], "established");
    assert_eq!(tcp["entries"], 2);
    assert_eq!(tcp["expired"], false);
    assert!(
        listed
            .iter()
            .any(|c| c["proto"] == "udp" && c["original"]["sport"] == 5353)
    );
    // Filters match the translated side too; the text form has a line per connection.
    assert!(!conntrack(&sb, &["--addr", EXT_ADDR, "--port", "40001"]).is_empty());
    assert!(conntrack(&sb, &["--proto", "icmp", "--addr", WEB]).is_empty());
    let text = sb.ok(&["conntrack", "--proto", "tcp", "--port", "40001"]);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.contains("172.17.0.2:40001 -> 198.51.100.10:80"),
        "{text}"
    );

    let out = sb.ok(&["conntrack", "flush"]);
    let n: usize = out
        .strip_prefix("flushed ")
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("conntrack flush: {out}"));
    assert!(
        n >= 4,
        "flush removed {n} entries, 4 at least expected: {out}"
    );
    assert!(
        conntrack(&sb, &[]).is_empty(),
        "conntrack not empty after flush"
    );
    drop(conn);

    // A connection closed by a RST expires after 10 s; its source port is then free again
    // for another container.
    let src = one(&sb, &web, &["ask", SERVER, "80", "40002", "rst"]);
    assert_eq!(src, format!("{EXT_ADDR}:40002 hi"));
    std::thread::sleep(Duration::from_secs(12));
    let listed = conntrack(&sb, &["--port", "40002"]);
    assert!(
        listed.iter().all(|c| c["expired"] == true),
        "the RST connection has not expired after 12 s: {listed:?}"
    );
    assert_eq!(
        tcp_source(&sb, &other, SERVER, 40002),
        format!("{EXT_ADDR}:40002"),
        "an expired entry blocked its source port"
    );
}

// 6, a full table
#[test]
fn a_full_conntrack_table_evicts_the_oldest() {
    let sb = sandbox();
    let cl = sb.outside().expect("outside namespace");
    let web = sb.up_with_web(&[]);
    let _tcp = server(&sb, &cl.netns, &["echo", "80"]);

    // Fill the table with stale UDP entries of a made-up flow.
    let path = format!("/sys/fs/bpf/netpath/{}/NP_CT", sb.host);
    let map = Map::from_map_data(MapData::from_pin(&path).expect("opening NP_CT")).unwrap();
    let mut ct: HashMap<_, CtKey, CtEntry> = HashMap::try_from(map).unwrap();
    for i in 0..MAX_CONNTRACK {
        let key = CtKey::new(
            [10, 99, (i >> 8) as u8, i as u8],
            [192, 0, 2, 99],
            (i >> 16) as u16 + 1,
            53,
            PROTO_UDP,
        );
        let entry = CtEntry {
            src_addr: key.src_addr,
            dst_addr: key.dst_addr,
            src_port: key.src_port,
            dst_port: key.dst_port,
            redirect_ifindex: 0,
            from_ifindex: 0,
            state: CtState::Established as u8,
            flags: if i % 2 == 0 { 0 } else { CT_FLAG_REPLY },
            dst_mac: [0; 6],
            src_mac: [0; 6],
            _pad: [0; 6],
            last_seen_ns: 1,
        };
        ct.insert(key, entry, 0).expect("filling NP_CT");
    }
    // New connections still work (the LRU makes room).
    let sources: BTreeSet<String> = (0..5)
        .map(|_| ip_port(&tcp_source(&sb, &web, SERVER, 0)).0)
        .collect();
    assert_eq!(sources, BTreeSet::from([EXT_ADDR.to_owned()]));
    let listed = conntrack(&sb, &["--addr", WEB, "--proto", "tcp"]);
    assert!(!listed.is_empty(), "no new connection in a full table");
}

// 7
#[test]
fn published_ports_work_alongside_and_across_masquerade() {
    let sb = sandbox();
    let cl = sb.outside().expect("outside namespace");
    let web = sb.name("web");
    // A second netpath host, linked to the first: peer0 192.0.2.1 — ext0 192.0.2.2.
    let sb2 = sandbox();
    let (h, h2) = (sb.host.as_str(), sb2.host.as_str());
    veth((h, "peer0", "192.0.2.1/24"), (h2, "ext0", "192.0.2.2/24")).unwrap();
    ip(&["-n", h2, "route", "add", "default", "via", "192.0.2.1"]).unwrap();
    let remote = sb2.name("remote");
    sb2.ok(&["up", "-d", "--publish", "8090:172.17.0.2:80"]);
    sb2.ok(&["run", &remote]);
    let _remote_srv = server(&sb2, &remote, &["echo", "80"]);

    sb.ok(&[
        "up",
        "-d",
        "--external",
        "ext0",
        "--external",
        "peer0",
        "--publish",
        "8088:172.17.0.2:80",
    ]);
    sb.ok(&["run", &web]);
    let _web_srv = server(&sb, &web, &["echo", "80"]);
    let _out_srv = server(&sb, &cl.netns, &["echo", "80"]);

    // Outbound masquerade and the inbound published port at the same time.
    assert_eq!(ip_port(&tcp_source(&sb, &web, SERVER, 0)).0, EXT_ADDR);
    let line = one(&sb, &cl.netns, &["ask", EXT_ADDR, "8088", "0"]);
    assert_eq!(
        ip_port(line.split(' ').next().unwrap()).0,
        CLIENT_ADDR,
        "published port: {line}"
    );
    // Across: web, masqueraded as 192.0.2.1, to the other host's published port.
    let line = one(&sb, &web, &["ask", "192.0.2.2", "8090", "0"]);
    assert!(
        line.starts_with("192.0.2.1:") && line.ends_with(" hi"),
        "to the other host's published port: {line}"
    );
}

// Bad input
#[test]
fn bad_masquerade_input_is_a_one_line_error_and_changes_nothing() {
    let sb = sandbox();
    let _cl = sb.outside().expect("outside namespace");
    sb.ok(&[
        "up",
        "-d",
        "--masquerade-ports",
        "40000-40099",
        "--masquerade-exclude",
        "192.0.2.0/24",
    ]);
    sb.ok(&["publish", "8088:172.17.0.2:80"]);
    let state = |sb: &Sandbox| {
        (
            sb.map_dump("NP_MASQ_EXCL").unwrap().to_string(),
            sb.map_dump("NP_CONFIG").unwrap().to_string(),
            sb.ok(&["publish"]),
            std::fs::read_to_string(format!("/run/netpath/{}/state.json", sb.host)).unwrap(),
        )
    };
    let cases: &[(&str, &[&str])] = &[
        (
            "CIDR without length",
            &["up", "-d", "--masquerade-exclude", "10.0.0.0"],
        ),
        (
            "CIDR with host bits",
            &["up", "-d", "--masquerade-exclude", "10.0.0.1/8"],
        ),
        (
            "CIDR length 33",
            &["up", "-d", "--masquerade-exclude", "10.0.0.0/33"],
        ),
        (
            "not an address",
            &["up", "-d", "--masquerade-exclude", "example.org/8"],
        ),
        ("single port", &["up", "-d", "--masquerade-ports", "40000"]),
        (
            "reversed range",
            &["up", "-d", "--masquerade-ports", "40099-40000"],
        ),
        ("port 0", &["up", "-d", "--masquerade-ports", "0-100"]),
        (
            "port 65536",
            &["up", "-d", "--masquerade-ports", "60000-65536"],
        ),
        ("garbage", &["up", "-d", "--masquerade-ports", "lots"]),
        (
            "overlaps a published port",
            &["up", "-d", "--masquerade-ports", "8000-8999"],
        ),
        (
            "overlaps a publish of the same command",
            &[
                "up",
                "-d",
                "--masquerade-ports",
                "9000-9099",
                "--publish",
                "9050:172.17.0.2:81",
            ],
        ),
        (
            "publish inside the range",
            &["publish", "40050:172.17.0.2:80"],
        ),
        (
            "publish range into the range",
            &["publish", "39990-40010:172.17.0.2:80-100/udp"],
        ),
        (
            "a good exclusion with a bad range",
            &[
                "up",
                "-d",
                "--masquerade-exclude",
                "10.0.0.0/8",
                "--masquerade-ports",
                "5-1",
            ],
        ),
        ("conntrack bad proto", &["conntrack", "--proto", "sctp"]),
        ("conntrack bad port", &["conntrack", "--port", "70000"]),
    ];
    let mut problems = vec![];
    for (what, args) in cases {
        let pre = state(&sb);
        if let Some(problem) = sb.refusal_problem(args) {
            problems.push(format!("{what}: {problem}"));
        }
        if state(&sb) != pre {
            problems.push(format!("{what}: {args:?} changed the state"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The error names the problem.
    let err = sb.fails(&["up", "-d", "--masquerade-ports", "8000-8999"]);
    assert!(err.contains("overlaps published port *:8088/tcp"), "{err}");
    let err = sb.fails(&["publish", "40050:172.17.0.2:80"]);
    assert!(err.contains("masquerade port range 40000-40099"), "{err}");
    // Replaced by a new range; the default range is never checked against publishes.
    sb.ok(&["up", "-d", "--masquerade-ports", "41000-41099"]);
    sb.ok(&["publish", "40050:172.17.0.2:80"]);
}
