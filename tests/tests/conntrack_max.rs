//! `up --conntrack-max`: the conntrack table's size is set, kept across restarts, refused
//! when changed while the datapath is up, and a flood beyond it evicts the least recently
//! used entries while a busy connection carries on.
use std::{path::Path, time::Duration};

use netpath_common::Counter;
use netpath_tests::{
    EXT_ADDR,
    helpers::counter,
    sandbox,
    scripts::{hold, server},
};
use serde_json::Value;

/// The conntrack map's row of `status --json`.
fn conntrack_map(status: &Value) -> &Value {
    status["maps"]
        .as_array()
        .and_then(|maps| maps.iter().find(|m| m["name"] == "NP_CT"))
        .unwrap_or_else(|| panic!("no NP_CT in {status}"))
}

/// Opens one UDP flow per new socket (each gets its own source port) to ADDR:9000.
const FLOOD: &str = r#"
import socket, sys
for i in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"x", (sys.argv[1], 9000))
    s.close()
print("done", flush=True)
"#;

#[test]
fn the_size_is_set_kept_and_a_change_is_refused_until_down() {
    let sb = sandbox();
    let state = Path::new("/run/netpath").join(&sb.host);
    let pins = Path::new("/sys/fs/bpf/netpath").join(&sb.host);
    for (bad, problem) in [
        ("100", "100 is not in 16384..=4194304"),
        ("8388608", "8388608 is not in 16384..=4194304"),
        ("lots", "invalid digit found in string"),
    ] {
        let err = sb.fails(&["up", "-d", "--conntrack-max", bad]);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains("--conntrack-max") && err.contains(problem),
            "{err}"
        );
        assert!(!state.exists() && !pins.exists(), "{bad} changed nothing");
    }

    sb.ok(&["up", "-d", "--conntrack-max", "16384"]);
    let ct = conntrack_map(&sb.ok_json(&["status", "--json"])).clone();
    assert_eq!(ct["max_entries"], 16384, "{ct}");
    // An LRU hash is allocated whole: about 100 bytes an entry.
    let memory = ct["memory_bytes"].as_u64().expect("memory_bytes");
    assert!((16384 * 64..16384 * 256).contains(&memory), "{ct}");
    let stats = sb.ok_json(&["stats", "--json"]);
    assert_eq!(stats["conntrack"]["max_entries"], 16384, "{stats}");

    // A restart keeps it; another size is refused with the datapath left as it was.
    sb.ok(&["up", "-d"]);
    let err = sb.fails(&["up", "-d", "--conntrack-max", "32768"]);
    assert_eq!(
        err.trim(),
        "netpath: the conntrack table holds 16384 entries; giving it 32768 needs `netpath \
         down` first (its tracked connections are lost)"
    );
    let status = sb.ok_json(&["status", "--json"]);
    assert_eq!(conntrack_map(&status)["max_entries"], 16384, "{status}");
    sb.ok(&["up", "-d"]);

    // After `down` the next `up` starts from the default, or from what it is given.
    sb.ok(&["down"]);
    sb.ok(&["up", "-d", "--conntrack-max", "32768"]);
    let status = sb.ok_json(&["status", "--json"]);
    assert_eq!(conntrack_map(&status)["max_entries"], 32768, "{status}");
    sb.ok(&["down"]);
    sb.ok(&["up", "-d"]);
    let status = sb.ok_json(&["status", "--json"]);
    assert_eq!(
        conntrack_map(&status)["max_entries"],
        netpath_common::MAX_CONNTRACK,
        "{status}"
    );
}

#[test]
fn a_flood_beyond_capacity_evicts_the_oldest_while_a_busy_connection_carries_on() {
    let sb = sandbox();
    let client = sb.client().expect("client namespace");
    let web = sb.up_with_web(&[
        "--conntrack-max",
        "16384",
        "--publish",
        "8080:172.17.0.2:80",
        "--publish",
        "9000:172.17.0.2:9000/udp",
    ]);
    let _mirror = server(&sb, &web, &["mirror", "80"]);
    let _sink = server(&sb, &web, &["sink", "9000"]);
    let (mut busy, connected) = hold(&sb, &client.netns, EXT_ADDR, 8080, 0);
    assert!(connected.starts_with("connected"), "{connected}");
    let new_before = counter(&sb, Counter::NatNew);

    // 3 rounds of 6,000 new flows: up to 36,000 entries for a table of 16,384. The busy
    // connection exchanges a line between rounds.
    for round in 0..3 {
        let done = sb.run_python(&client.netns, 60, FLOOD, &[EXT_ADDR, "6000"]);
        assert_eq!(done, ["done"], "round {round}");
        let line = format!("round-{round}");
        busy.send(&line).expect("sending on the busy connection");
        assert_eq!(
            busy.line(Duration::from_secs(5)).as_deref(),
            Some(line.as_str()),
            "the busy connection answers after round {round}"
        );
    }
    let new_flows = counter(&sb, Counter::NatNew) - new_before;
    assert!(
        new_flows > 16384 / 2,
        "only {new_flows} new flows were tracked"
    );
    let stats = sb.ok_json(&["stats", "--json"]);
    let ct = &stats["conntrack"];
    assert!(ct["entries"].as_u64().expect("entries") <= 16384, "{stats}");
    assert!(ct["evicted"].as_u64().expect("evicted") > 0, "{stats}");
}
