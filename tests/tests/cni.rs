//! netpath-cni invoked directly, as a runtime would: CNI_* variables, the configuration on
//! stdin, run with `nsenter --net` in the sandbox's host namespace (which keeps the real
//! /sys/fs/bpf, unlike `ip netns exec`). Pods are namespaces the test creates, like a
//! runtime's; every one is removed with the sandbox.
use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use netpath_common::Counter;
use netpath_tests::{
    CLIENT_ADDR, EXT_ADDR, SERVER_ADDR, Sandbox,
    cni::{Pod, assert_says, cni, cni_bin, stdout_json},
    helpers::{counter, curl, ip_forward, too_many_local_addresses, up_marks},
    ip, netpath_bin, sandbox,
    scripts::{one, server},
};
use serde_json::{Value, json};

fn conf(name: &str, subnet: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "type": "netpath-cni",
        "subnet": subnet,
    })
}

fn containers(sb: &Sandbox) -> Vec<Value> {
    sb.ok_json(&["ps", "--json"]).as_array().unwrap().clone()
}

fn host_links(sb: &Sandbox) -> Vec<String> {
    sb.ip_json(&["link"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn version_lists_the_spec_versions() {
    let out = Command::new(cni_bin())
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    let v = stdout_json(&out);
    assert!(
        v["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("1.0.0"))
    );
}

#[test]
fn add_check_del_twice_and_the_namespace_stays() {
    let sb = sandbox();
    let pod = Pod::new(&sb, "pod");
    let conf = conf("pods", "10.89.0.0/24");
    let result = pod.add(&sb, &conf);
    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(result["ips"][0]["address"], "10.89.0.2/24");
    assert_eq!(result["ips"][0]["gateway"], "10.89.0.1");
    let iface = result["ips"][0]["interface"].as_u64().unwrap() as usize;
    assert_eq!(result["interfaces"][iface]["name"], "eth0");
    assert_eq!(result["interfaces"][iface]["sandbox"], pod.path().as_str());
    assert_eq!(result["interfaces"][iface]["mac"], "02:42:0a:59:00:02");
    assert_eq!(result["routes"][0]["dst"], "0.0.0.0/0");
    // The pod is a container of the scope, with the gateway reachable.
    let ps = containers(&sb);
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert_eq!(ps[0]["mode"]["mode"], "cni");
    assert_eq!(ps[0]["mode"]["target"]["netns"], pod.path().as_str());
    assert!(ps[0]["missing"].as_array().unwrap().is_empty());
    assert!(sb.ping(&pod.ns.netns, "10.89.0.1"));
    // netpath run in the namespace (as netpath-cni is) takes the scope of its name.
    let entered = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", sb.host))
        .args([netpath_bin().as_os_str(), "ps".as_ref(), "--json".as_ref()])
        .output()
        .unwrap();
    let entered: Value = serde_json::from_slice(&entered.stdout).unwrap();
    assert_eq!(entered.as_array().unwrap().len(), 1, "{entered}");
    pod.ok(&sb, "CHECK", &conf);

    // CHECK notices a missing address.
    sb.exec_ok(&pod.ns.netns, &["ip", "addr", "flush", "dev", "eth0"]);
    let err = pod.fails(&sb, "CHECK", &conf);
    assert_says(&err, "address");

    pod.ok(&sb, "DEL", &conf);
    pod.ok(&sb, "DEL", &conf);
    assert!(containers(&sb).is_empty());
    assert!(
        !host_links(&sb)
            .iter()
            .any(|l| l.starts_with("np") && l != "np-pods")
    );
    assert!(
        PathBuf::from(pod.path()).exists(),
        "DEL must never delete the runtime's namespace"
    );
    // The address is free again.
    assert_eq!(pod.add(&sb, &conf)["ips"][0]["address"], "10.89.0.2/24");
}

#[test]
fn del_after_the_namespace_is_gone() {
    let sb = sandbox();
    let pod = Pod::new(&sb, "gone");
    let conf = conf("pods", "10.89.1.0/24");
    pod.add(&sb, &conf);
    netpath_tests::ip(&["netns", "del", &pod.ns.netns]).unwrap();
    pod.ok(&sb, "DEL", &conf);
    pod.ok(&sb, "DEL", &conf);
    assert!(containers(&sb).is_empty());
}

#[test]
fn bad_input_gets_the_specs_error_and_leaves_nothing() {
    let sb = sandbox();
    let pod = Pod::new(&sb, "bad");
    let good = conf("pods", "10.89.2.0/24");

    let out = cni(&sb, &[("CNI_COMMAND", "ADD")], "{not json");
    let err = stdout_json(&out);
    assert!(!out.status.success());
    assert_eq!(err["code"], 6, "{err}");
    assert_says(&err, "not valid JSON");

    let mut old = good.clone();
    old["cniVersion"] = json!("0.1.0");
    assert_eq!(pod.fails(&sb, "ADD", &old)["code"], 1);

    let out = cni(
        &sb,
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "x1"),
            ("CNI_IFNAME", "eth0"),
        ],
        &good.to_string(),
    );
    let err = stdout_json(&out);
    assert_eq!(err["code"], 4, "{err}");
    assert_says(&err, "CNI_NETNS");
    // Nothing of a failed first ADD is left: no state, no pins, no bridge.
    assert!(!PathBuf::from(format!("/run/netpath/{}", sb.host)).exists());
    assert!(!host_links(&sb).iter().any(|l| l == "np-pods"));

    // A subnet overlapping another network.
    pod.add(&sb, &good);
    let other = Pod::new(&sb, "other");
    let err = other.fails(&sb, "ADD", &conf("more", "10.89.0.0/16"));
    assert_says(&err, "overlaps network pods");

    // A hostPort already published: the second pod fails and leaves no trace.
    let mut ports = good.clone();
    ports["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 8088, "containerPort": 80, "protocol": "tcp"}]});
    let third = Pod::new(&sb, "third");
    third.add(&sb, &ports);
    let err = other.fails(&sb, "ADD", &ports);
    assert_says(&err, "already published");
    assert_eq!(containers(&sb).len(), 2);
    assert_eq!(sb.ok(&["publish"]).trim(), "8088:10.89.2.3:80/tcp");
    let veths = host_links(&sb)
        .iter()
        .filter(|l| l.starts_with("np") && *l != "np-pods")
        .count();
    assert_eq!(veths, 2);
    // DEL drops the pod's publishes.
    third.ok(&sb, "DEL", &ports);
    assert_eq!(sb.ok(&["publish"]).trim(), "");
}

#[test]
fn port_mappings_reach_the_pod_with_the_clients_address() {
    let sb = sandbox();
    let cl = sb.client().expect("client namespace");
    let pod = Pod::new(&sb, "web");
    let mut conf = conf("pods", "10.89.3.0/24");
    conf["runtimeConfig"] = json!({"portMappings": [{"hostPort": 8088, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]});
    pod.add(&sb, &conf);
    let _http = server(&sb, &pod.ns.netns, &["http", "80"]);
    let (body, _) = curl(&sb, &cl.netns, "http://203.0.113.1:8088/").unwrap();
    assert!(body.starts_with(&format!("{CLIENT_ADDR}:")), "{body}");
    // The host itself, through 127.0.0.1.
    let (body, _) = curl(&sb, &sb.host, "http://127.0.0.1:8088/").unwrap();
    assert!(!body.is_empty());
    pod.ok(&sb, "DEL", &conf);
    assert!(curl(&sb, &cl.netns, "http://203.0.113.1:8088/").is_err());
}

#[test]
fn host_local_ipam_allocates_and_releases() {
    let sb = sandbox();
    if !PathBuf::from("/usr/lib/cni/host-local").exists() {
        panic!("/usr/lib/cni/host-local is missing: cargo xtask setup installs it");
    }
    let data = std::env::temp_dir().join(format!("{}-ipam", sb.name("hl")));
    let pod = Pod::new(&sb, "hl");
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": "hl",
        "type": "netpath-cni",
        "ipam": {"type": "host-local", "dataDir": data, "ranges": [[{"subnet": "10.89.4.0/24"}]]},
    });
    let result = pod.add(&sb, &conf);
    let addr = result["ips"][0]["address"].as_str().unwrap().to_owned();
    assert!(
        addr.starts_with("10.89.4.") && addr.ends_with("/24"),
        "{addr}"
    );
    let ip = addr.split('/').next().unwrap();
    assert!(
        data.join("hl").join(ip).exists(),
        "host-local's record of {ip}"
    );
    pod.ok(&sb, "CHECK", &conf);
    pod.ok(&sb, "DEL", &conf);
    assert!(!data.join("hl").join(ip).exists(), "DEL releases {ip}");
    pod.ok(&sb, "DEL", &conf);
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn parallel_adds_and_dels_are_safe() {
    let sb = sandbox();
    let conf = conf("pods", "10.89.5.0/24");
    let pods: Vec<Pod> = (0..8).map(|i| Pod::new(&sb, &format!("p{i}"))).collect();
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = pods.iter().map(|p| s.spawn(|| p.add(&sb, &conf))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut addrs: Vec<&str> = results
        .iter()
        .map(|r| r["ips"][0]["address"].as_str().unwrap())
        .collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 8, "{addrs:?}");
    assert_eq!(containers(&sb).len(), 8);
    std::thread::scope(|s| {
        for p in &pods {
            s.spawn(|| p.ok(&sb, "DEL", &conf));
        }
    });
    assert!(containers(&sb).is_empty());
    assert!(
        !host_links(&sb)
            .iter()
            .any(|l| l.starts_with("np") && l != "np-pods")
    );
}

#[test]
fn ip_masq_false_leaves_with_the_pods_own_address() {
    let sb = sandbox();
    let cl = sb.outside().expect("outside namespace");
    let pod = Pod::new(&sb, "plain");
    let mut conf = conf("plain", "10.89.7.0/24");
    conf["ipMasq"] = json!(false);
    assert_eq!(pod.add(&sb, &conf)["ips"][0]["address"], "10.89.7.2/24");
    ip(&[
        "-n",
        &cl.netns,
        "route",
        "add",
        "10.89.7.0/24",
        "via",
        EXT_ADDR,
    ])
    .unwrap();
    let _echo = server(&sb, &cl.netns, &["echo", "80"]);
    let seen = one(&sb, &pod.ns.netns, &["ask", SERVER_ADDR, "80", "0"]);
    assert!(seen.starts_with("10.89.7.2:"), "the server saw {seen}");
    let nets = sb.ok_json(&["network", "ls", "--json"]);
    assert_eq!(nets[0]["masquerade"], false, "{nets}");

    // Another pod whose configuration says otherwise: refused, the network is as it was.
    let other = Pod::new(&sb, "other");
    let mut on = conf.clone();
    on["ipMasq"] = json!(true);
    let err = other.fails(&sb, "ADD", &on);
    assert_eq!(err["code"], 7, "{err}");
    assert_says(&err, "masquerade off");
    // So is one that names another bridge.
    let mut elsewhere = conf.clone();
    elsewhere["bridge"] = json!("np-elsewhere");
    let err = other.fails(&sb, "ADD", &elsewhere);
    assert_eq!(err["code"], 7, "{err}");
    assert_says(&err, "the configuration gives bridge np-elsewhere");
    let links = host_links(&sb);
    assert!(!links.iter().any(|l| l == "np-elsewhere"), "{links:?}");
    assert_eq!(containers(&sb).len(), 1);
    pod.ok(&sb, "DEL", &conf);
}

#[test]
fn the_first_add_after_network_create_brings_the_datapath_up() {
    let sb = sandbox();
    let cl = sb.client().expect("client namespace");
    // Pins and a bridge, but nothing attached to the external interface yet.
    sb.ok(&["network", "create", "pods", "--subnet", "10.89.8.0/24"]);
    let pod = Pod::new(&sb, "web");
    let mut conf = conf("pods", "10.89.8.0/24");
    conf["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 8088, "containerPort": 80, "protocol": "tcp"}]});
    pod.add(&sb, &conf);
    let status = sb.ok_json(&["status", "--json"]);
    assert_eq!(status["externals"][0]["name"], "ext0", "{status}");
    let _http = server(&sb, &pod.ns.netns, &["http", "80"]);
    let (body, _) = curl(&sb, &cl.netns, "http://203.0.113.1:8088/").unwrap();
    assert!(body.starts_with(&format!("{CLIENT_ADDR}:")), "{body}");
    pod.ok(&sb, "DEL", &conf);
}

#[test]
fn a_pod_is_a_container_like_any_other() {
    let sb = sandbox();
    let cl = sb.outside().expect("outside namespace");
    let web = sb.up_with_web(&[]);
    let pod = Pod::new(&sb, "pod");
    let mut conf = conf("pods", "10.89.9.0/24");
    conf["dns"] = json!({"nameservers": ["192.0.2.53"], "search": ["pods.local"]});
    assert_eq!(
        pod.add(&sb, &conf)["dns"],
        conf["dns"],
        "dns passed through"
    );
    let ns = pod.ns.netns.as_str();
    assert_eq!(
        sb.exec_ok(ns, &["cat", "/sys/class/net/lo/operstate"])
            .trim(),
        "unknown",
        "lo is up"
    );
    let status = sb.ok_json(&["status", "--json"]);
    assert!(status.to_string().contains("10.89.9.2"), "{status}");

    // Masqueraded out: conntrack and stats show its flow.
    let _echo = server(&sb, &cl.netns, &["echo", "80"]);
    let masq_new = counter(&sb, Counter::MasqNew);
    let seen = one(&sb, ns, &["ask", SERVER_ADDR, "80", "0"]);
    assert!(seen.starts_with(&format!("{EXT_ADDR}:")), "{seen}");
    assert_eq!(counter(&sb, Counter::MasqNew), masq_new + 1);
    let flows = sb.ok(&["conntrack"]);
    assert!(flows.contains("10.89.9.2"), "{flows}");

    // Isolation from the default network's container, and source validation.
    let isolated = counter(&sb, Counter::DropIsolation);
    assert!(
        !sb.ping(ns, "172.17.0.2"),
        "reached {web} on another network"
    );
    assert!(counter(&sb, Counter::DropIsolation) > isolated);
    let spoofed = counter(&sb, Counter::DropSpoofed);
    sb.exec_ok(ns, &["ip", "addr", "add", "10.89.9.77/24", "dev", "eth0"]);
    let forged = sb.exec(
        ns,
        &[
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            "-I",
            "10.89.9.77",
            SERVER_ADDR,
        ],
    );
    assert!(!forged.status.success(), "a forged source got through");
    assert!(counter(&sb, Counter::DropSpoofed) > spoofed);

    // DEL takes its flows with it.
    pod.ok(&sb, "DEL", &conf);
    let flows = sb.ok(&["conntrack"]);
    assert!(!flows.contains("10.89.9.2"), "{flows}");
}

#[test]
fn check_del_after_a_partial_add_gc_and_status() {
    let sb = sandbox();
    let conf = conf("pods", "10.89.10.0/24");
    let (a, b) = (Pod::new(&sb, "a"), Pod::new(&sb, "b"));
    let result = a.add(&sb, &conf);
    b.add(&sb, &conf);
    pod_checks_notice_what_is_missing(&sb, &a, &conf);

    // GC keeps the attachments the runtime lists and removes the others.
    let mut gc = conf.clone();
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": b.id, "ifname": "eth0"}]);
    a.ok(&sb, "GC", &gc);
    let ps = containers(&sb);
    assert_eq!(ps.len(), 1, "{ps:?}");
    a.ok(&sb, "STATUS", &gc);

    // A veth left by an ADD killed before it saved anything: DEL removes it, twice.
    let veth = result["interfaces"][1]["name"].as_str().unwrap().to_owned();
    sb.exec_ok(
        &sb.host,
        &[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", "left",
        ],
    );
    a.ok(&sb, "DEL", &conf);
    assert!(!host_links(&sb).contains(&veth));
    a.ok(&sb, "DEL", &conf);
    b.ok(&sb, "DEL", &conf);
}

/// CHECK fails, with one line naming it, on a missing default route and on a missing
/// datapath entry.
fn pod_checks_notice_what_is_missing(sb: &Sandbox, pod: &Pod, conf: &Value) {
    pod.ok(sb, "CHECK", conf);
    let ns = pod.ns.netns.as_str();
    sb.exec_ok(ns, &["ip", "route", "del", "default"]);
    let err = pod.fails(sb, "CHECK", conf);
    assert_says(&err, "default route");
    sb.exec_ok(ns, &["ip", "route", "add", "default", "via", "10.89.10.1"]);
    pod.ok(sb, "CHECK", conf);
    let endpoints = format!("/sys/fs/bpf/netpath/{}/NP_ENDPOINTS", sb.host);
    let removed = std::process::Command::new("bpftool")
        .args([
            "map", "delete", "pinned", &endpoints, "key", "10", "89", "10", "2",
        ])
        .status()
        .unwrap();
    assert!(removed.success());
    let err = pod.fails(sb, "CHECK", conf);
    assert_says(&err, "datapath");
}

/// A first ADD after a bare `network create` brings the datapath up; when it then fails
/// (refused after the datapath came up, or while bringing it up) the scope is as `network
/// create` left it: no external interface attached, no socket program, the same map fill,
/// IP forwarding as it was. The next good ADD brings the datapath up.
#[test]
fn a_failed_first_add_after_network_create_leaves_the_datapath_down() {
    let sb = sandbox();
    let _cl = sb.client().expect("client namespace");
    sb.ok(&["network", "create", "pods", "--subnet", "10.89.12.0/24"]);
    let bare = sb.ok_json(&["status", "--json"]);
    assert_eq!(up_marks(&sb), (vec![], 0, "0".to_owned()));
    let as_created = |after: &str| {
        let status = sb.ok_json(&["status", "--json"]);
        assert_eq!(status, bare, "after {after}");
        assert_eq!(ip_forward(&sb), "0", "ip_forward after {after}");
    };
    let pod = Pod::new(&sb, "web");
    let good = conf("pods", "10.89.12.0/24");

    // Refused once the datapath is up: a port mapping without a host port.
    let mut bad = good.clone();
    bad["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 0, "containerPort": 80, "protocol": "tcp"}]});
    let err = pod.fails(&sb, "ADD", &bad);
    assert_says(&err, "ports must be 1-65535");
    as_created("a refused port mapping");
    // The same when the ADD made the network itself.
    let mut more = bad.clone();
    more["name"] = json!("more");
    more["subnet"] = json!("10.89.13.0/24");
    pod.fails(&sb, "ADD", &more);
    as_created("a refused port mapping on a new network");

    // Failing halfway through bringing the datapath up: more local addresses than the
    // socket programs' map holds.
    too_many_local_addresses(&sb);
    let err = pod.fails(&sb, "ADD", &good);
    assert_says(&err, "NP_LOCAL_ADDRS");
    as_created("too many local addresses");
    sb.exec_ok(&sb.host, &["ip", "link", "del", "many0"]);

    // A good ADD still brings the datapath up.
    pod.add(&sb, &good);
    let up = (vec!["ext0".to_owned()], 4, "1".to_owned());
    assert_eq!(up_marks(&sb), up);
    pod.ok(&sb, "DEL", &good);
}
