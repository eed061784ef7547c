//! Operating netpath: `status`, `stats` and what bpftool shows of the datapath agree with
//! what was set up and with the traffic sent, and `down` leaves no BPF object behind. Each
//! test has its own sandbox; traffic stays between the sandbox's namespaces.
use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use netpath_common::{CT_FLAG_PEER, CT_FLAG_REPLY};
use netpath_tests::{
    Client, EXT_ADDR, Proc, Sandbox,
    helpers::{bpftool, json},
    sandbox,
    scripts::server,
    wait_until,
};
use serde_json::Value;

const WEB: &str = "172.17.0.2";
/// Payload of every datagram [`send_udp`] sends.
const PAYLOAD: u64 = 100;
/// What TC counts for it: the whole Ethernet frame, IPv4 and UDP headers included.
const FRAME: u64 = 14 + 20 + 8 + PAYLOAD;

/// The client namespace, `up -d` with a published TCP and UDP port, and a container `web`
/// (172.17.0.2) with a UDP sink on port 53.
fn setup() -> (Sandbox, Client, String, Proc) {
    let sb = sandbox();
    let client = sb.client().expect("client namespace");
    let web = sb.up_with_web(&[
        "--publish",
        "8080:172.17.0.2:80",
        "--publish",
        "5353:172.17.0.2:53/udp",
    ]);
    let sink = server(&sb, &web, &["sink", "53"]);
    (sb, client, web, sink)
}

/// `netpath stats --json`, parsed.
fn stats(sb: &Sandbox) -> Value {
    sb.ok_json(&["stats", "--json"])
}

/// Sends `n` datagrams of [`PAYLOAD`] bytes to the published UDP port from one socket, and
/// waits until the datapath has translated them all (the first of the sandbox's, as every
/// caller sends); returns the stats that show it.
fn send_udp(sb: &Sandbox, client: &Client, n: u64) -> Value {
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         for _ in range({n}): s.sendto(b'x' * {PAYLOAD}, ('{EXT_ADDR}', 5353))"
    );
    sb.run_python(&client.netns, 10, &script, &[]);
    let mut after = Value::Null;
    let arrived = wait_until(50, Duration::from_millis(100), || {
        after = stats(sb);
        after["traffic"]["from_external"]["udp"]["packets"] == n
    });
    assert!(arrived, "{n} datagrams not all translated: {after:#}");
    after
}

/// What `bpftool -j {prog,link,map} show` lists, by id.
fn by_id(kind: &str) -> BTreeMap<u64, Value> {
    bpftool(None, &[kind, "show"])
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| (v["id"].as_u64().expect("an id"), v.clone()))
        .collect()
}

/// The ids of what `bpftool -j {prog,link,map} show` lists.
fn ids(kind: &str) -> BTreeSet<u64> {
    by_id(kind).into_keys().collect()
}

#[test]
fn status_lists_what_was_created_with_real_program_ids() {
    let (sb, _client, web, _sink) = setup();
    let status = sb.ok_json(&["status", "--json"]);

    let bridge = &sb.ip_json(&["link", "show", "netpath0"])[0];
    let networks = status["networks"].as_array().unwrap();
    assert_eq!(networks.len(), 1);
    assert_eq!(networks[0]["name"], "default");
    assert_eq!(networks[0]["bridge"], "netpath0");
    assert_eq!(networks[0]["subnet"], "172.17.0.0/16");
    assert_eq!(networks[0]["gateway"], "172.17.0.1");
    assert_eq!(networks[0]["ifindex"], bridge["ifindex"]);

    let containers = status["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0]["name"], web.as_str());
    assert_eq!(containers[0]["endpoints"][0]["ip"], WEB);
    assert_eq!(containers[0]["missing"], serde_json::json!([]));

    assert_eq!(status["publishes"]["ports"], 2);
    assert_eq!(
        status["publishes"]["specs"],
        serde_json::json!(["8080:172.17.0.2:80/tcp", "5353:172.17.0.2:53/udp"])
    );
    assert_eq!(status["masquerade"]["ports"], "32768-60999");
    assert_eq!(status["masquerade"]["default_ports"], true);
    let ext0 = &sb.ip_json(&["link", "show", "ext0"])[0];
    assert_eq!(
        status["externals"],
        serde_json::json!([{"name": "ext0", "ifindex": ext0["ifindex"]}])
    );

    // Every attachment, with the ids the kernel reports for its link and program.
    let (programs, links) = (by_id("prog"), by_id("link"));
    let mut attached = BTreeSet::new();
    // tc filters (the containers' veths have no link), as the kernel lists them.
    let filters = bpftool(Some(&sb.host), &["net", "show"])[0]["tc"].clone();
    for a in status["attachments"].as_array().unwrap() {
        let prog_id = a["program_id"].as_u64().unwrap();
        assert_eq!(programs[&prog_id]["name"], a["program"], "{a}");
        match a["link_id"].as_u64() {
            Some(link_id) => assert_eq!(links[&link_id]["prog_id"], prog_id, "{a}"),
            None => assert!(
                filters
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|f| f["devname"] == a["target"]
                        && f["kind"] == "clsact/ingress"
                        && f["id"] == prog_id),
                "{a} not among the filters {filters:#}"
            ),
        }
        attached.insert((
            a["program"].as_str().unwrap().to_owned(),
            a["hook"].as_str().unwrap().to_owned(),
            a["target"].as_str().unwrap().to_owned(),
        ));
    }
    let tc: BTreeSet<_> = attached
        .iter()
        .filter(|(_, hook, _)| hook.starts_with("tc "))
        .cloned()
        .collect();
    let veth = containers[0]["endpoints"][0]["host_veth"].as_str().unwrap();
    let expected: BTreeSet<_> = [
        ("np_br_in", "tc ingress", "netpath0"),
        ("np_ext_in", "tc ingress", "ext0"),
        ("np_isolate", "tc egress", "netpath0"),
        ("np_veth_in", "tc ingress", veth),
    ]
    .map(|(p, h, t)| (p.to_owned(), h.to_owned(), t.to_owned()))
    .into();
    assert_eq!(tc, expected);
    let cgroup: BTreeSet<&str> = attached
        .iter()
        .filter(|(_, hook, _)| hook.starts_with("cgroup "))
        .map(|(p, _, _)| p.as_str())
        .collect();
    assert_eq!(
        cgroup,
        [
            "np_connect4",
            "np_getpeername4",
            "np_recvmsg4",
            "np_sendmsg4"
        ]
        .into()
    );

    let fill: BTreeMap<&str, (u64, u64)> = status["maps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap(),
                (
                    m["entries"].as_u64().unwrap(),
                    m["max_entries"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(fill["NP_PUBLISH"], (2, 65536));
    assert_eq!(fill["NP_BRIDGES"], (1, 1024));
    assert_eq!(fill["NP_EXTERNALS"], (1, 64));
    assert_eq!(fill["NP_MASQ_EXCL"], (1, 4096));
    assert_eq!(fill["NP_CT"], (0, 262144));
    // lo's and ext0's addresses and the bridge's gateway.
    assert_eq!(fill["NP_LOCAL_ADDRS"].0, 3);
    assert!(fill.contains_key("NP_SOCK_ORIG"));

    let text = sb.ok(&["status"]);
    for line in [
        "NETWORKS",
        "CONTAINERS",
        "PUBLISHED PORTS: 2",
        "ATTACHMENTS",
        "MAPS",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
}

#[test]
fn stats_count_exactly_the_packets_sent() {
    let (sb, client, _web, _sink) = setup();
    let before = stats(&sb);
    assert_eq!(before["traffic"]["from_external"]["udp"]["packets"], 0);

    const N: u64 = 25;
    let after = send_udp(&sb, &client, N);
    let udp = &after["traffic"]["from_external"]["udp"];
    assert_eq!(udp["bytes"], N * FRAME);
    let c = &after["counters"];
    assert_eq!(c["nat_new"], 1);
    assert_eq!(c["nat_hit"], N - 1);
    assert_eq!(c["ct_insert"], 2);
    for drop in ["drop_csum", "drop_store", "drop_ct_insert"] {
        assert_eq!(c[drop], 0, "{drop}");
    }
    // Nothing went back: the sink never answers.
    assert_eq!(after["traffic"]["from_containers"]["udp"]["packets"], 0);
    let ct = &after["conntrack"];
    assert_eq!(ct["entries"], 2);
    assert_eq!(ct["evicted"], 0);

    // A flush is counted as netpath's own removal, not as eviction.
    assert_eq!(
        sb.ok(&["conntrack", "flush"]),
        "flushed 2 conntrack entries\n"
    );
    let flushed = stats(&sb);
    assert_eq!(flushed["conntrack"]["entries"], 0);
    assert_eq!(flushed["conntrack"]["removed_by_netpath"], 2);
    assert_eq!(flushed["conntrack"]["evicted"], 0);

    let table = sb.ok(&["stats"]);
    let row = ["from_external", "udp", &N.to_string()].map(String::from);
    assert!(
        table.lines().any(|l| l.split_whitespace().eq(row.iter())),
        "{table}"
    );
}

#[test]
fn stats_watch_prints_rates() {
    let sb = sandbox();
    sb.ok(&["up", "-d"]);
    let mut watch = sb
        .command(&["stats", "--watch", "1", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting stats --watch");
    let stdout = watch.stdout.take().unwrap();
    // Read on a thread, so that a watch that prints nothing fails the test instead of
    // hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::io::BufRead::lines(std::io::BufReader::new(stdout)).next());
    });
    let first = rx.recv_timeout(Duration::from_secs(20));
    let _ = watch.kill();
    let _ = watch.wait();
    let first = first.expect("a line within 20 s").expect("a line");
    let line = json(&first.expect("readable"));
    assert_eq!(line["rates"]["counters"]["nat_new"], 0.0);
    assert!(line["interval_secs"].as_f64().unwrap() >= 1.0);
    assert_eq!(line["conntrack"]["max_entries"], 262144);
}

#[test]
fn prometheus_output_parses() {
    let (sb, client, _web, _sink) = setup();
    send_udp(&sb, &client, 3);
    let text = sb.ok(&["stats", "--prometheus"]);
    let mut help = BTreeSet::new();
    let mut types = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').expect("HELP name text");
            assert!(!doc.is_empty());
            assert!(help.insert(name.to_owned()), "second HELP for {name}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(help.contains(name), "TYPE before HELP: {line}");
            assert!(kind == "counter" || kind == "gauge", "{line}");
            assert!(types.insert(name.to_owned(), kind.to_owned()).is_none());
        } else {
            let (series, value) = line.rsplit_once(' ').expect("name value");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}').expect("closing brace")),
                None => (series, ""),
            };
            assert!(name.starts_with("netpath_"), "{line}");
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line}"
            );
            let kind = types.get(name).unwrap_or_else(|| panic!("no TYPE: {line}"));
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
            let mut keys = BTreeSet::new();
            for pair in labels.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').expect("label=value");
                assert!(
                    ["reason", "direction", "proto", "kind"].contains(&k),
                    "{line}"
                );
                assert!(
                    v.len() > 2 && v.starts_with('"') && v.ends_with('"'),
                    "{line}"
                );
                assert!(keys.insert(k), "label {k} twice: {line}");
            }
            assert!(
                samples.insert(series.to_owned(), value).is_none(),
                "duplicate series {series}"
            );
        }
    }
    assert_eq!(help.len(), types.len());
    assert_eq!(
        samples[r#"netpath_translated_packets_total{direction="from_external",proto="udp"}"#],
        3.0
    );
    assert_eq!(
        samples[r#"netpath_translated_bytes_total{direction="from_external",proto="udp"}"#],
        (3 * FRAME) as f64
    );
    assert_eq!(
        samples[r#"netpath_new_connections_total{kind="published"}"#],
        1.0
    );
    assert_eq!(samples["netpath_conntrack_entries"], 2.0);
    for reason in ["isolation", "no_port", "csum", "store", "ct_insert"] {
        let series = format!("netpath_dropped_packets_total{{reason=\"{reason}\"}}");
        assert_eq!(samples[&series], 0.0);
    }
}

#[test]
fn bpftool_dump_of_conntrack_has_named_fields() {
    let (sb, client, _web, _sink) = setup();
    send_udp(&sb, &client, 1);
    let dump = sb.map_dump("NP_CT").expect("dumping NP_CT");
    let entries = dump.as_array().expect("an array");
    assert_eq!(entries.len(), 2, "{dump:#}");
    let names = |v: &Value| -> BTreeSet<String> {
        v.as_object()
            .expect("BTF-formatted fields")
            .keys()
            .cloned()
            .collect()
    };
    // With -j, bpftool gives the raw bytes under key/value and the BTF view under formatted.
    let entries: Vec<&Value> = entries.iter().map(|e| &e["formatted"]).collect();
    for e in &entries {
        assert_eq!(
            names(&e["key"]),
            [
                "src_addr", "dst_addr", "src_port", "dst_port", "proto", "_pad0", "_pad1"
            ]
            .map(String::from)
            .into()
        );
        assert_eq!(
            names(&e["value"]),
            [
                "src_addr",
                "dst_addr",
                "src_port",
                "dst_port",
                "redirect_ifindex",
                "from_ifindex",
                "state",
                "flags",
                "dst_mac",
                "src_mac",
                "_pad",
                "last_seen_ns"
            ]
            .map(String::from)
            .into()
        );
    }
    // The forward entry (not flagged as a reply): from the client to the published port,
    // rewritten to the container and delivered straight into it (CT_FLAG_PEER).
    let forward = entries
        .iter()
        .find(|e| e["value"]["flags"].as_u64().unwrap() & u64::from(CT_FLAG_REPLY) == 0)
        .expect("a forward entry");
    assert_eq!(forward["value"]["flags"], CT_FLAG_PEER);
    assert_eq!(
        forward["key"]["dst_addr"],
        serde_json::json!([203, 0, 113, 1])
    );
    assert_eq!(forward["key"]["dst_port"], 5353);
    assert_eq!(forward["key"]["proto"], 17);
    assert_eq!(
        forward["value"]["dst_addr"],
        serde_json::json!([172, 17, 0, 2])
    );
    assert_eq!(forward["value"]["dst_port"], 53);
    let publish = sb.map_dump("NP_PUBLISH").expect("dumping NP_PUBLISH");
    assert_eq!(publish.as_array().unwrap().len(), 2);
    assert_eq!(
        names(&publish[0]["formatted"]["value"]),
        [
            "container_addr",
            "gateway_addr",
            "bridge_ifindex",
            "container_port",
            "_pad"
        ]
        .map(String::from)
        .into()
    );
}

#[test]
fn down_leaves_no_bpf_object_behind() {
    let sb = sandbox();
    let _client = sb.client().expect("client namespace");
    let pins = std::path::Path::new("/sys/fs/bpf/netpath").join(&sb.host);
    let net_before = bpftool(Some(&sb.host), &["net", "show"]);
    assert!(!pins.exists());

    let _web = sb.up_with_web(&["--publish", "8080:172.17.0.2:80"]);
    let status = sb.ok_json(&["status", "--json"]);
    let attachments = status["attachments"].as_array().unwrap();
    // 3 on the bridge and the external interface, 1 on the container's veth, 4 cgroup hooks.
    assert_eq!(attachments.len(), 8, "{status:#}");
    let ours = |key: &str| -> BTreeSet<u64> {
        attachments.iter().filter_map(|a| a[key].as_u64()).collect()
    };
    let (links, programs) = (ours("link_id"), ours("program_id"));
    assert!(links.is_subset(&ids("link")));
    assert!(programs.is_subset(&ids("prog")));
    let maps: BTreeSet<u64> = std::fs::read_dir(&pins)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("NP_"))
        .map(|e| {
            let path = e.path();
            bpftool(None, &["map", "show", "pinned", path.to_str().unwrap()])["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(!maps.is_empty());

    sb.ok(&["down"]);
    assert!(!pins.exists(), "{} left behind", pins.display());
    // Links and programs go at once; maps once the programs' references are released.
    let gone = wait_until(50, Duration::from_millis(100), || {
        ids("link").is_disjoint(&links)
            && ids("prog").is_disjoint(&programs)
            && ids("map").is_disjoint(&maps)
    });
    assert!(gone, "BPF objects of the sandbox survived down");
    assert_eq!(bpftool(Some(&sb.host), &["net", "show"]), net_before);
}
