//! Container networks end to end: the netpath CLI builds real topologies inside a throwaway
//! "host" namespace, and real traffic and `ip -j` check what the kernel ended up with.
use std::{collections::BTreeSet, process::Command};

use netpath_tests::{Sandbox, ip_json, netpath_bin, sandbox};
use serde_json::Value;

/// What a test must find unchanged after teardown: links and addresses of the host
/// namespace, the sandbox's named namespaces, and netpath's state and pins.
#[derive(Debug, PartialEq)]
struct Snapshot {
    links: BTreeSet<String>,
    addrs: BTreeSet<String>,
    netns: BTreeSet<String>,
    run_dir: bool,
    pins: bool,
}

fn snapshot(sb: &Sandbox) -> Snapshot {
    let links = sb.ip_json(&["link"]);
    let addrs = sb.ip_json(&["addr"]);
    let prefix = sb.name("");
    Snapshot {
        links: iter(&links)
            .map(|l| l["ifname"].as_str().unwrap().to_owned())
            .collect(),
        addrs: iter(&addrs)
            .flat_map(|l| {
                let name = l["ifname"].as_str().unwrap().to_owned();
                iter(&l["addr_info"])
                    .map(move |a| {
                        format!("{name} {}/{}", a["local"].as_str().unwrap(), a["prefixlen"])
                    })
                    .collect::<Vec<_>>()
            })
            .collect(),
        netns: std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&prefix))
            .collect(),
        run_dir: std::path::Path::new(&format!("/run/netpath/{}", sb.host)).exists(),
        pins: std::path::Path::new(&format!("/sys/fs/bpf/netpath/{}", sb.host)).exists(),
    }
}

fn iter(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// The IPv4 addresses of `ifname` inside a container.
fn addrs_in(netns: &str, ifname: &str) -> Vec<String> {
    let v = ip_json(Some(netns), &["-4", "addr", "show", "dev", ifname]);
    iter(&v)
        .flat_map(|l| {
            iter(&l["addr_info"])
                .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn containers_on_one_network_reach_each_other_and_the_gateway() {
    let sb = sandbox();
    let (a, b) = (sb.name("a"), sb.name("b"));
    sb.ok(&["up", "-d"]);
    sb.ok(&["run", &a]);
    sb.ok(&["run", &b]);
    assert_eq!(addrs_in(&a, "eth0"), ["172.17.0.2/16"]);
    assert_eq!(addrs_in(&b, "eth0"), ["172.17.0.3/16"]);
    assert!(sb.ping(&a, "172.17.0.3"), "a cannot reach b");
    assert!(sb.ping(&b, "172.17.0.2"), "b cannot reach a");
    assert!(sb.ping(&a, "172.17.0.1"), "a cannot reach its gateway");

    // The kernel view, independently of netpath: eth0 with Docker's stable MAC, lo up, a
    // default route via the gateway, the host end on the bridge.
    let eth0 = &ip_json(Some(&a), &["link", "show", "eth0"])[0];
    assert_eq!(eth0["address"], "02:42:ac:11:00:02");
    let lo = &ip_json(Some(&a), &["link", "show", "lo"])[0];
    assert!(iter(&lo["flags"]).any(|f| f == "UP"));
    let routes = ip_json(Some(&a), &["route"]);
    assert!(iter(&routes).any(|r| r["dst"] == "default" && r["gateway"] == "172.17.0.1"));
    let ports = sb.ip_json(&["link", "show", "master", "netpath0"]);
    assert_eq!(iter(&ports).count(), 2);
    // IPv4 only, as Docker's IPv4 networks: no IPv6 address on eth0 (so it sends nothing
    // that the bridge would flood to every port), and no IPv6 route for any bridge port.
    let v6 = ip_json(Some(&a), &["-6", "addr", "show", "dev", "eth0"]);
    assert_eq!(iter(&v6).flat_map(|l| iter(&l["addr_info"])).count(), 0);
    let v6_routes = sb.ip_json(&["-6", "route", "show", "table", "all"]);
    let port_routes: Vec<&Value> = iter(&v6_routes)
        .filter(|r| {
            r["dev"]
                .as_str()
                .is_some_and(|d| d != "netpath0" && d != "lo")
        })
        .collect();
    assert!(port_routes.is_empty(), "{port_routes:?}");
    let forward = sb.exec(&sb.host, &["cat", "/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(String::from_utf8_lossy(&forward.stdout).trim(), "1");
}

#[test]
fn networks_are_isolated_by_the_ebpf_program() {
    let sb = sandbox();
    let (a, b, c) = (sb.name("a"), sb.name("b"), sb.name("c"));
    sb.ok(&["up", "-d"]);
    sb.ok(&["network", "create", "blue", "--subnet", "10.77.0.0/24"]);
    sb.ok(&["run", &a]);
    sb.ok(&["run", &b, "--network", "blue"]);
    sb.ok(&["run", &c, "--network", "blue"]);
    assert!(sb.ping(&b, "10.77.0.3"), "same network must work");
    assert!(sb.ping(&b, "10.77.0.1"), "own gateway must work");
    let dp = netpath::system::datapath::Datapath::existing(&sb.host).expect("pins exist");
    let drops = || dp.counters().unwrap()[0].1;
    let before = drops();
    assert!(!sb.ping(&b, "172.17.0.2"), "blue reached default");
    assert!(!sb.ping(&a, "10.77.0.2"), "default reached blue");
    // Each ping's request was routed across and dropped by np_isolate, not by a firewall.
    assert!(
        drops() >= before + 2,
        "isolation drops not counted: {before} -> {}",
        drops()
    );
    let nft = Command::new("nft").args(["list", "ruleset"]).output();
    if let Ok(out) = nft {
        assert!(!String::from_utf8_lossy(&out.stdout).contains("netpath"));
    }
}

#[test]
fn connect_adds_a_working_eth1() {
    let sb = sandbox();
    let (a, b) = (sb.name("a"), sb.name("b"));
    sb.ok(&["up", "-d"]);
    sb.ok(&[
        "network",
        "create",
        "green",
        "--subnet",
        "10.78.0.0/24",
        "--gateway",
        "10.78.0.254",
    ]);
    sb.ok(&["run", &a]);
    sb.ok(&["run", &b, "--network", "green"]);
    assert_eq!(
        addrs_in(&b, "eth0"),
        ["10.78.0.1/24"],
        "the first address after a custom gateway"
    );
    assert!(!sb.ping(&a, "10.78.0.1"));
    let out = sb.ok(&["connect", &a, "green"]);
    assert!(out.contains("eth1 10.78.0.2"), "{out}");
    assert_eq!(addrs_in(&a, "eth1"), ["10.78.0.2/24"]);
    assert!(sb.ping(&a, "10.78.0.1"), "eth1 does not work");
    // The default route stays on eth0.
    let routes = ip_json(Some(&a), &["route", "show", "default"]);
    assert_eq!(iter(&routes).count(), 1);
    assert_eq!(routes[0]["dev"], "eth0");
    assert!(
        sb.fails(&["connect", &a, "green"])
            .contains("already connected")
    );
    assert!(sb.fails(&["network", "rm", "green"]).contains("in use"));
    sb.ok(&["rm", &a]);
    sb.ok(&["rm", &b]);
    sb.ok(&["network", "rm", "green"]);
    assert!(!snapshot(&sb).links.contains("np-green"));
}

#[test]
fn other_network_modes() {
    let sb = sandbox();
    let (a, none, host, shared) = (
        sb.name("a"),
        sb.name("none"),
        sb.name("host"),
        sb.name("shared"),
    );
    sb.ok(&["up", "-d"]);
    sb.ok(&["run", &a, "--ip", "172.17.0.9", "--dns", "192.0.2.53"]);
    sb.ok(&["run", &none, "--net", "none"]);
    sb.ok(&["run", &host, "--net", "host"]);
    sb.ok(&["run", &shared, "--net", &format!("container:{a}")]);

    let links = |name: &str| -> BTreeSet<String> {
        let v = sb.ok_json(&["exec", name, "--", "ip", "-j", "link"]);
        iter(&v)
            .map(|l| l["ifname"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(links(&none), BTreeSet::from(["lo".to_owned()]));
    assert!(
        links(&host).contains("netpath0"),
        "host mode must see the host's interfaces"
    );
    assert_eq!(links(&shared), links(&a));
    let shared_addr = sb.ok(&[
        "exec", &shared, "--", "ip", "-4", "-o", "addr", "show", "eth0",
    ]);
    assert!(shared_addr.contains("172.17.0.9/16"), "{shared_addr}");
    // exec gives the container its own resolv.conf, like `ip netns exec`.
    let resolv = sb.ok(&["exec", &a, "--", "cat", "/etc/resolv.conf"]);
    assert_eq!(resolv.trim(), "nameserver 192.0.2.53");
    assert_eq!(
        std::fs::read_to_string(format!("/etc/netns/{a}/resolv.conf"))
            .unwrap()
            .trim(),
        "nameserver 192.0.2.53"
    );
    assert!(
        sb.fails(&["rm", &a])
            .contains("shares its network namespace")
    );
    assert!(
        sb.fails(&["run", &sb.name("x"), "--net", &format!("container:{host}")])
            .contains("no network namespace of its own")
    );
    assert!(
        sb.fails(&["connect", &shared, "default"])
            .contains("cannot be connected")
    );
    let ps = sb.ok_json(&["ps", "--json"]);
    assert_eq!(iter(&ps).count(), 4);
    assert!(iter(&ps).all(|c| c["missing"].as_array().unwrap().is_empty()));
}

#[test]
fn ipam_assigns_releases_and_rejects() {
    let sb = sandbox();
    let (a, b, c) = (sb.name("a"), sb.name("b"), sb.name("c"));
    sb.ok(&["up", "-d"]);
    sb.ok(&["run", &a]);
    sb.ok(&["run", &b]);
    sb.ok(&["rm", &a]);
    sb.ok(&["run", &c]);
    assert_eq!(
        addrs_in(&c, "eth0"),
        ["172.17.0.2/16"],
        "a released address is reused"
    );
    let before = snapshot(&sb);
    let x = sb.name("x");
    for (args, expected) in [
        (vec!["run", &x, "--ip", "172.17.0.3"], "already in use"),
        (vec!["run", &x, "--ip", "172.17.0.1"], "is the gateway"),
        (
            vec!["run", &x, "--ip", "10.9.9.9"],
            "outside subnet 172.17.0.0/16",
        ),
        (vec!["run", &x, "--ip", "172.17.255.255"], "broadcast"),
        (
            vec!["run", &x, "--network", "nope"],
            "no such network: nope",
        ),
        (vec!["run", &x, "--net", "bogus"], "invalid network mode"),
        (vec!["run", &b], "already exists"),
        (vec!["run", "bad/name"], "invalid container name"),
    ] {
        let err = sb.fails(&args);
        assert!(err.contains(expected), "{args:?}: {err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "one-line error expected: {err}"
        );
    }
    assert_eq!(snapshot(&sb), before, "a failed run left something behind");
}

#[test]
fn exhausted_overlapping_and_invalid_networks_fail_cleanly() {
    let sb = sandbox();
    sb.ok(&["up", "-d"]);
    sb.ok(&["network", "create", "tiny", "--subnet", "192.0.2.0/30"]);
    let (a, b) = (sb.name("a"), sb.name("b"));
    sb.ok(&["run", &a, "--network", "tiny"]);
    let before = snapshot(&sb);
    for (args, expected) in [
        (vec!["run", &b, "--network", "tiny"], "network tiny is full"),
        (
            vec!["network", "create", "x", "--subnet", "172.17.128.0/24"],
            "overlaps network default",
        ),
        (
            vec!["network", "create", "x", "--subnet", "172.17.0.0/33"],
            "invalid CIDR",
        ),
        (
            vec!["network", "create", "x", "--subnet", "10.1.2.3/8"],
            "host bits are set",
        ),
        (
            vec!["network", "create", "x", "--subnet", "10.1.0.0/31"],
            "too small",
        ),
        (
            vec![
                "network",
                "create",
                "x",
                "--subnet",
                "10.1.0.0/24",
                "--gateway",
                "10.2.0.1",
            ],
            "outside subnet",
        ),
        (
            vec!["network", "create", "x", "--bridge", "a-very-long-name0"],
            "longer than 15 bytes",
        ),
        (
            vec!["network", "create", "x", "--bridge", "netpath0"],
            "already exists",
        ),
        (
            vec!["network", "create", "tiny"],
            "network tiny already exists",
        ),
        (vec!["network", "rm", "nope"], "no such network"),
        (vec!["rm", "nope"], "no such container"),
    ] {
        let err = sb.fails(&args);
        assert!(err.contains(expected), "{args:?}: {err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "one-line error expected: {err}"
        );
    }
    assert_eq!(
        snapshot(&sb),
        before,
        "a failed command left something behind"
    );
}

#[test]
fn default_subnet_avoids_routes_in_use() {
    let sb = sandbox();
    // Something else in this namespace already uses Docker's default range.
    for cmd in [
        "ip link add other0 type bridge",
        "ip addr add 172.17.5.1/16 dev other0",
        "ip link set other0 up",
    ] {
        sb.exec_ok(&sb.host, &cmd.split(' ').collect::<Vec<_>>());
    }
    let out = sb.ok(&["up", "-d"]);
    assert!(out.contains("172.18.0.0/16"), "{out}");
    assert!(
        sb.fails(&["network", "create", "x", "--subnet", "172.17.0.0/24"])
            .contains("overlaps route 172.17.0.0/16")
    );
}

#[test]
fn down_and_rm_leave_the_host_as_they_found_it() {
    let sb = sandbox();
    let before = snapshot(&sb);
    let (a, b, c) = (sb.name("a"), sb.name("b"), sb.name("c"));
    sb.ok(&["up", "-d"]);
    sb.ok(&["network", "create", "blue"]);
    sb.ok(&["run", &a]);
    sb.ok(&["run", &b, "--network", "blue"]);
    sb.ok(&["run", &c, "--net", &format!("container:{a}")]);
    sb.ok(&["connect", &a, "blue"]);
    assert_ne!(snapshot(&sb), before);
    let out = sb.ok(&["down"]);
    for what in [
        "container",
        "bridge netpath0",
        "bridge np-blue",
        "network namespace",
    ] {
        assert!(out.contains(&format!("removed {what}")), "{out}");
    }
    assert_eq!(snapshot(&sb), before);
    let forward = sb.exec(&sb.host, &["cat", "/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(
        String::from_utf8_lossy(&forward.stdout).trim(),
        "0",
        "ip_forward not restored"
    );

    // And container by container, network by network.
    sb.ok(&["network", "create", "red"]);
    sb.ok(&["run", &a, "--network", "red"]);
    sb.ok(&["rm", &a]);
    sb.ok(&["network", "rm", "red"]);
    assert_eq!(snapshot(&sb), before);
}

/// As the init of its PID namespace (a plugin's container entrypoint), netpath would never
/// reap the process that `rm` detaches to take the kernel's last wait: it waits itself, and
/// the container goes all the same.
#[test]
fn rm_as_the_init_of_a_pid_namespace_removes_the_container() {
    let sb = sandbox();
    let a = sb.name("a");
    sb.ok(&["up", "-d"]);
    let up = snapshot(&sb);
    sb.ok(&["run", &a]);
    assert_ne!(snapshot(&sb), up);
    let netpath = sb.command(&["rm", &a]);
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child"])
        .arg(netpath.get_program())
        .args(netpath.get_args())
        .output()
        .expect("running unshare");
    assert!(
        out.status.success(),
        "rm as PID 1: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // (The bridge keeps the IPv6 link-local address it got when its first port came up.)
    let after = snapshot(&sb);
    assert_eq!(
        (after.links, after.netns),
        (up.links, up.netns),
        "the container's veth and namespace are gone"
    );
}

#[test]
fn an_existing_bridge_is_adopted_and_never_deleted() {
    let sb = sandbox();
    for cmd in [
        "ip link add br-mine type bridge",
        "ip addr add 198.51.100.1/24 dev br-mine",
        "ip link set br-mine up",
    ] {
        sb.exec_ok(&sb.host, &cmd.split(' ').collect::<Vec<_>>());
    }
    let before = snapshot(&sb);
    let out = sb.ok(&["up", "-d", "--bridge", "br-mine"]);
    assert!(
        out.contains("198.51.100.0/24, gateway 198.51.100.1"),
        "{out}"
    );
    let a = sb.name("a");
    sb.ok(&["run", &a]);
    assert_eq!(addrs_in(&a, "eth0"), ["198.51.100.2/24"]);
    assert!(sb.ping(&a, "198.51.100.1"));
    sb.ok(&["down"]);
    assert_eq!(
        snapshot(&sb),
        before,
        "the adopted bridge or its address changed"
    );
    assert!(
        sb.fails(&["up", "-d", "--bridge", "lo"])
            .contains("not a bridge")
    );
}

#[test]
fn things_deleted_behind_netpaths_back_are_reconciled() {
    let sb = sandbox();
    let (a, b) = (sb.name("a"), sb.name("b"));
    sb.ok(&["up", "-d"]);
    sb.ok(&["run", &a]);
    sb.ok(&["run", &b]);
    assert!(
        Command::new("ip")
            .args(["netns", "del", &a])
            .status()
            .unwrap()
            .success()
    );
    let ps = sb.ok_json(&["ps", "--json"]);
    let missing = &iter(&ps).find(|c| c["name"] == a.as_str()).unwrap()["missing"];
    assert!(!missing.as_array().unwrap().is_empty(), "{ps}");
    sb.ok(&["rm", &a]);
    // The bridge itself disappears: ls reports it, up repairs it, containers work again.
    sb.exec(&sb.host, &["ip", "link", "del", "netpath0"]);
    assert!(sb.ok(&["network", "ls"]).contains("bridge missing"));
    sb.ok(&["rm", &b]);
    sb.ok(&["up", "-d"]);
    sb.ok(&["run", &a]);
    sb.ok(&["run", &b]);
    assert!(sb.ping(&a, "172.17.0.3"));
}

#[test]
fn concurrent_invocations_never_share_an_address() {
    let sb = sandbox();
    sb.ok(&["up", "-d"]);
    // Twelve `netpath run` processes at once: the lock serializes them, IPAM keeps them apart.
    let handles: Vec<_> = (0..12)
        .map(|i| {
            let name = sb.name(&format!("q{i}"));
            let mut run = sb.command(&["run", &name]);
            std::thread::spawn(move || {
                let out = run.output().unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                name
            })
        })
        .collect();
    let started: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let addrs: BTreeSet<String> = started
        .iter()
        .map(|n| addrs_in(n, "eth0")[0].clone())
        .collect();
    assert_eq!(addrs.len(), 12, "duplicate addresses: {addrs:?}");
}

#[test]
fn non_root_is_refused() {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(netpath_bin())
        .arg("ps")
        .output()
        .expect("setpriv (util-linux)");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must run as root"));
}

/// A `run` that fails once its namespace exists (here: the name of its host veth is taken by
/// an interface that is not netpath's) removes what it made, and only that: not the other
/// interface, which undoing by name would have deleted.
#[test]
fn a_run_failing_halfway_removes_what_it_made_and_nothing_else() {
    let sb = sandbox();
    sb.ok(&["up", "-d"]);
    let x = sb.name("x");
    sb.ok(&["run", &x]);
    let ps = sb.ok_json(&["ps", "--json"]);
    let veth = iter(&ps)
        .flat_map(|c| iter(&c["endpoints"]))
        .find_map(|e| e["host_veth"].as_str())
        .expect("the container's host veth in ps --json")
        .to_owned();
    sb.ok(&["rm", &x]);
    netpath_tests::ip(&["-n", &sb.host, "link", "add", &veth, "type", "bridge"]).unwrap();
    let before = snapshot(&sb);
    let err = sb.fails(&["run", &x]);
    assert!(err.contains(&veth), "the error names the interface: {err}");
    assert!(!err.contains("undoing"), "the undo failed: {err}");
    assert_eq!(
        snapshot(&sb),
        before,
        "the failed run left something, or took the bridge"
    );
    assert!(before.links.contains(&veth));
    for map in ["NP_ENDPOINTS", "NP_SOURCES"] {
        let dump = sb.map_dump(map).expect("dumping the map");
        assert_eq!(
            dump,
            serde_json::json!([]),
            "{map} kept an entry of the run"
        );
    }
    let etc = std::path::Path::new("/etc/netns").join(&x);
    assert!(!etc.exists(), "{} outlived the run", etc.display());
    assert_eq!(sb.ok_json(&["ps", "--json"]), serde_json::json!([]));
}
