//! Several nodes: three sandboxes are three nodes, each running netpath-cni in its own host
//! namespace with its own pod subnet of the cluster CIDR 10.244.0.0/16, joined by a
//! "fabric" bridge in a namespace of its own (192.0.2.0/24, documentation addresses used
//! only inside these namespaces). The conflist names the nodes; netpath routes every other
//! node's pods through that node (flannel's host-gw) and masquerades only what leaves the
//! cluster. An "outside" namespace on the fabric is the client of the hostPorts, the
//! nodes' default gateway and, on its `lo`, a server beyond the cluster.
use netpath_tests::{
    CLIENT_ADDR, Client, EXT_ADDR, SERVER_ADDR, Sandbox,
    cni::{Pod, assert_says},
    helpers::curl,
    ip, sandbox, scripts,
    scripts::server,
};
use serde_json::{Value, json};

const NODES: usize = 3;
const PODS: usize = 3;
const OUTSIDE: &str = "192.0.2.254";

fn node_addr(i: usize) -> String {
    format!("192.0.2.{}", 10 + i)
}

fn conf(i: usize) -> Value {
    let nodes: Vec<Value> = (0..NODES)
        .map(|n| {
            json!({"name": format!("node{n}"), "address": node_addr(n), "podCidr": format!("10.244.{n}.0/24")})
        })
        .collect();
    json!({
        "cniVersion": "1.0.0",
        "name": "cluster",
        "type": "netpath-cni",
        "subnet": format!("10.244.{i}.0/24"),
        "cluster": {"cidr": "10.244.0.0/16", "nodes": nodes},
    })
}

/// The fabric namespace with its bridge, the outside namespace on it, and every node's
/// `fab0` on it, the nodes' default route via the outside (so that `fab0` is each node's
/// external interface). Everything lives in namespaces of the sandboxes: removed on drop.
fn fabric(nodes: &[Sandbox]) -> (Client, Client) {
    let fabric = nodes[0].extra_netns("fabric").expect("fabric namespace");
    let outside = nodes[0].extra_netns("outside").expect("outside namespace");
    let f = fabric.netns.as_str();
    let run = |args: &[&str]| ip(args).unwrap_or_else(|e| panic!("{e:#}"));
    run(&["-n", f, "link", "add", "br0", "type", "bridge"]);
    run(&["-n", f, "link", "set", "br0", "up"]);
    let mut ends: Vec<(String, String, String)> = nodes
        .iter()
        .enumerate()
        .map(|(i, sb)| {
            (
                sb.host.clone(),
                format!("n{i}"),
                format!("{}/24", node_addr(i)),
            )
        })
        .collect();
    ends.push((outside.netns.clone(), "out".into(), format!("{OUTSIDE}/24")));
    for (ns, port, addr) in &ends {
        run(&[
            "-n", f, "link", "add", port, "type", "veth", "peer", "name", "fab0", "netns", ns,
        ]);
        run(&["-n", f, "link", "set", port, "master", "br0", "up"]);
        run(&["-n", ns, "addr", "add", addr, "dev", "fab0"]);
        run(&["-n", ns, "link", "set", "fab0", "up"]);
    }
    for sb in nodes {
        run(&["-n", &sb.host, "route", "add", "default", "via", OUTSIDE]);
    }
    let server = format!("{SERVER_ADDR}/32");
    run(&["-n", &outside.netns, "addr", "add", &server, "dev", "lo"]);
    (fabric, outside)
}

fn pod_ip(result: &Value) -> String {
    let addr = result["ips"][0]["address"].as_str().expect("address");
    addr.split('/').next().expect("ip").to_owned()
}

#[test]
fn pods_on_three_nodes_reach_each_other_without_nat() {
    let nodes: Vec<Sandbox> = (0..NODES).map(|_| sandbox()).collect();
    let (_fabric, outside) = fabric(&nodes);
    // Pod 0 of every node publishes hostPort 8080 to its port 7000.
    let mut pods: Vec<(usize, Pod, String)> = vec![];
    for (i, sb) in nodes.iter().enumerate() {
        for j in 0..PODS {
            let pod = Pod::new(sb, &format!("p{j}"));
            let mut conf = conf(i);
            if j == 0 {
                conf["runtimeConfig"] = json!({"portMappings": [{"hostPort": 8080, "containerPort": 7000, "protocol": "tcp"}]});
            }
            let ip = pod_ip(&pod.add(sb, &conf));
            assert!(ip.starts_with(&format!("10.244.{i}.")), "{ip}");
            pods.push((i, pod, ip));
        }
    }
    // The routes to the other nodes' pods, once per node however many ADDs ran.
    for (i, sb) in nodes.iter().enumerate() {
        let routes = sb.ip_json(&["route"]);
        for n in (0..NODES).filter(|n| *n != i) {
            let dst = format!("10.244.{n}.0/24");
            let found: Vec<&Value> = routes
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["dst"] == dst.as_str())
                .collect();
            assert_eq!(found.len(), 1, "node {i}: {routes}");
            assert_eq!(found[0]["gateway"], node_addr(n).as_str());
        }
    }
    // Every pod serves TCP (echo) and UDP, answering with the peer's address.
    let _servers: Vec<_> = pods
        .iter()
        .flat_map(|(i, p, _)| {
            let sb = &nodes[*i];
            [
                server(sb, &p.ns.netns, &["echo", "7000"]),
                server(sb, &p.ns.netns, &["udp", "0.0.0.0", "7001"]),
            ]
        })
        .collect();
    // Every pod asks every other one, in parallel per pod; each client is bounded (3 s
    // timeouts, 20 s in all).
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .map(|(i, from, from_ip)| {
                let sb = &nodes[*i];
                let pods = &pods;
                s.spawn(move || {
                    let mut bad = vec![];
                    for (_, _, to_ip) in pods.iter().filter(|(_, _, ip)| ip != from_ip) {
                        let tcp = scripts::one(sb, &from.ns.netns, &["ask", to_ip, "7000", "0"]);
                        if !tcp.starts_with(&format!("{from_ip}:")) {
                            bad.push(format!("tcp {from_ip} -> {to_ip}: {tcp}"));
                        }
                        let udp = scripts::one(sb, &from.ns.netns, &["udp", to_ip, "7001"]);
                        if !udp.contains(&format!(" {from_ip}:")) {
                            bad.push(format!("udp {from_ip} -> {to_ip}: {udp}"));
                        }
                    }
                    bad
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("client thread"))
            .collect()
    });
    assert!(failures.is_empty(), "{failures:#?}");

    // The hostPort of every node answers a client on the fabric, which the pod sees.
    for i in 0..NODES {
        let answer = scripts::one(
            &nodes[0],
            &outside.netns,
            &["ask", &node_addr(i), "8080", "0"],
        );
        assert!(
            answer.starts_with(&format!("{OUTSIDE}:")),
            "node {i}: {answer}"
        );
    }
    // Leaving the cluster: the server outside sees the node's address.
    let _http = server(&nodes[0], &outside.netns, &["http", "80"]);
    for (i, pod, _) in &pods {
        let (body, _) = curl(
            &nodes[*i],
            &pod.ns.netns,
            &format!("http://{SERVER_ADDR}:80/"),
        )
        .unwrap_or_else(|e| panic!("node {i} to the outside: {e}"));
        assert!(
            body.starts_with(&format!("{}:", node_addr(*i))),
            "node {i}: {body}"
        );
    }
    // CHECK holds and DEL leaves the routes (they are the node's, not a pod's).
    for (i, pod, _) in &pods {
        pod.ok(&nodes[*i], "CHECK", &conf(*i));
    }
}

#[test]
fn a_bad_cluster_is_refused_and_leaves_nothing() {
    let sb = sandbox();
    let pod = Pod::new(&sb, "bad");
    let mut bad = conf(0);
    bad["subnet"] = json!("10.245.0.0/24");
    let err = pod.fails(&sb, "ADD", &bad);
    assert_eq!(err["code"], 7, "{err}");
    assert_says(&err, "cluster");
    assert!(!std::path::Path::new(&format!("/run/netpath/{}", sb.host)).exists());
}

/// The routes to `dst` in the node's main table, as "via GATEWAY".
fn routes_to(sb: &Sandbox, dst: &str) -> Vec<String> {
    sb.ip_json(&["route"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["dst"] == dst)
        .map(|r| format!("via {}", r["gateway"].as_str().unwrap_or("-")))
        .collect()
}

#[test]
fn cluster_routes_go_with_the_last_pod_and_down_and_others_stay() {
    // One node on the client link (203.0.113.0/24): the other nodes need not exist for
    // their routes to be installed.
    let sb = sandbox();
    let _cl = sb.client().expect("client namespace");
    let node = |name: &str, last: u8, n: u8| json!({"name": name, "address": format!("203.0.113.{last}"), "podCidr": format!("10.244.{n}.0/24")});
    let mut conf = json!({
        "cniVersion": "1.0.0",
        "name": "cluster",
        "type": "netpath-cni",
        "subnet": "10.244.0.0/24",
        "cluster": {"cidr": "10.244.0.0/16", "nodes": [
            node("self", 1, 0), node("n1", 11, 1), node("n2", 12, 2),
        ]},
    });
    // The operator's own route to n2's pods, the same as netpath's would be.
    let route = |args: &[&str]| ip(&[&["-n", sb.host.as_str(), "route"], args].concat()).unwrap();
    route(&["add", "10.244.2.0/24", "via", "203.0.113.12"]);
    let (a, b) = (Pod::new(&sb, "a"), Pod::new(&sb, "b"));
    a.add(&sb, &conf);
    b.add(&sb, &conf);
    assert_eq!(routes_to(&sb, "10.244.1.0/24"), ["via 203.0.113.11"]);
    assert_eq!(routes_to(&sb, "10.244.2.0/24"), ["via 203.0.113.12"]);
    a.ok(&sb, "DEL", &conf);
    assert_eq!(routes_to(&sb, "10.244.1.0/24"), ["via 203.0.113.11"]);
    // The last pod takes netpath's route with it, and leaves the operator's.
    b.ok(&sb, "DEL", &conf);
    assert!(routes_to(&sb, "10.244.1.0/24").is_empty());
    assert_eq!(routes_to(&sb, "10.244.2.0/24"), ["via 203.0.113.12"]);

    // A route elsewhere that netpath did not install is refused, not taken over.
    conf["cluster"]["nodes"]
        .as_array_mut()
        .unwrap()
        .push(node("n3", 13, 3));
    route(&["add", "10.244.3.0/24", "via", "203.0.113.99"]);
    let err = a.fails(&sb, "ADD", &conf);
    assert_says(&err, "that netpath did not install");
    assert_eq!(routes_to(&sb, "10.244.3.0/24"), ["via 203.0.113.99"]);
    route(&["del", "10.244.3.0/24"]);

    // `down` removes what the pods' network installed, and only that.
    a.add(&sb, &conf);
    assert_eq!(routes_to(&sb, "10.244.3.0/24"), ["via 203.0.113.13"]);
    // A node with a new address: netpath's route to its pods follows.
    conf["cluster"]["nodes"][3]["address"] = json!("203.0.113.14");
    b.add(&sb, &conf);
    assert_eq!(routes_to(&sb, "10.244.3.0/24"), ["via 203.0.113.14"]);
    sb.ok(&["down"]);
    assert!(routes_to(&sb, "10.244.1.0/24").is_empty());
    assert!(routes_to(&sb, "10.244.3.0/24").is_empty());
    assert_eq!(routes_to(&sb, "10.244.2.0/24"), ["via 203.0.113.12"]);
}

/// The source a server on the client namespace sees when `netns` connects to `dst`:80.
fn source_seen(sb: &Sandbox, netns: &str, dst: &str) -> String {
    let line = scripts::one(sb, netns, &["ask", dst, "80", "0"]);
    let peer = line
        .strip_suffix(" hi")
        .unwrap_or_else(|| panic!("TCP from {netns} to {dst}:80: {line}"));
    peer.rsplit_once(':').expect("IP:PORT").0.to_owned()
}

/// What `status` shows of the masquerade exclusions: the user's, and the cluster CIDR of
/// network `cluster` (null: none); then how many prefixes the datapath's trie holds.
fn exclusions(sb: &Sandbox) -> (Value, Value, usize) {
    let status = sb.ok_json(&["status", "--json"]);
    let cluster = status["networks"]
        .as_array()
        .expect("networks")
        .iter()
        .find(|n| n["name"] == "cluster")
        .map_or(Value::Null, |n| n["cluster_exclude"].clone());
    let trie = sb.map_dump("NP_MASQ_EXCL").expect("dumping NP_MASQ_EXCL");
    let len = trie.as_array().map_or(0, Vec::len);
    (status["masquerade"]["exclude"].clone(), cluster, len)
}

#[test]
fn the_cluster_exclusion_goes_with_the_last_pod_unless_the_user_made_it() {
    // A node whose neighbour n1 is the client namespace: n1's pod 10.244.1.10 (on its `lo`)
    // serves, and routes answers to this node's pods and containers back through the node.
    let sb = sandbox();
    let cl = sb.client().expect("client namespace");
    let remote_pod = "10.244.1.10";
    let run = |args: &[&str]| ip(&[&["-n", cl.netns.as_str()], args].concat()).unwrap();
    run(&["addr", "add", &format!("{remote_pod}/32"), "dev", "lo"]);
    run(&["route", "add", "10.244.0.0/24", "via", EXT_ADDR]);
    run(&["route", "add", "172.17.0.0/16", "via", EXT_ADDR]);
    let _srv = server(&sb, &cl.netns, &["echo", "80"]);
    let node = |name: &str, addr: &str, n: u8| json!({"name": name, "address": addr, "podCidr": format!("10.244.{n}.0/24")});
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": "cluster",
        "type": "netpath-cni",
        "subnet": "10.244.0.0/24",
        "cluster": {"cidr": "10.244.0.0/16", "nodes": [node("self", EXT_ADDR, 0), node("n1", CLIENT_ADDR, 1)]},
    });
    // A netpath container outside the cluster network tells whether the cluster CIDR is
    // excluded: its source is kept only while it is.
    let web = sb.up_with_web(&[]);
    let web_ip = "172.17.0.2";
    assert_eq!(source_seen(&sb, &web, remote_pod), EXT_ADDR);
    assert_eq!(exclusions(&sb), (json!([]), Value::Null, 1));

    let (a, b) = (Pod::new(&sb, "a"), Pod::new(&sb, "b"));
    let a_ip = pod_ip(&a.add(&sb, &conf));
    b.add(&sb, &conf);
    assert_eq!(
        source_seen(&sb, &a.ns.netns, remote_pod),
        a_ip,
        "pod to pod"
    );
    assert_eq!(source_seen(&sb, &web, remote_pod), web_ip);
    // Two networks and the cluster CIDR, which is the network's, not the user's.
    let cidr = json!("10.244.0.0/16");
    assert_eq!(exclusions(&sb), (json!([]), cidr.clone(), 3));
    a.ok(&sb, "DEL", &conf);
    // `none` drops the user's exclusions, not the one the pods need.
    sb.ok(&["up", "-d", "--masquerade-exclude", "none"]);
    assert_eq!(exclusions(&sb), (json!([]), cidr.clone(), 3));
    assert_eq!(source_seen(&sb, &web, remote_pod), web_ip);
    // The last pod takes it with it, out of the state and the datapath.
    b.ok(&sb, "DEL", &conf);
    assert_eq!(exclusions(&sb), (json!([]), Value::Null, 2));
    assert_eq!(source_seen(&sb, &web, remote_pod), EXT_ADDR);

    // A failed ADD leaves no exclusion either (its hostPort is taken).
    sb.ok(&["publish", "8080:172.17.0.2:80"]);
    let mut taken = conf.clone();
    taken["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]});
    a.fails(&sb, "ADD", &taken);
    assert_eq!(exclusions(&sb), (json!([]), Value::Null, 2));

    // The user's own exclusion of the same CIDR stays after the pods, whether made before
    // the first pod or while one runs, and the pods' goes on without it.
    sb.ok(&["up", "-d", "--masquerade-exclude", "10.244.0.0/16"]);
    a.add(&sb, &conf);
    a.ok(&sb, "DEL", &conf);
    assert_eq!(exclusions(&sb), (json!([cidr.clone()]), Value::Null, 3));
    a.add(&sb, &conf);
    sb.ok(&["up", "-d", "--masquerade-exclude", "none"]);
    assert_eq!(source_seen(&sb, &web, remote_pod), web_ip);
    sb.ok(&["up", "-d", "--masquerade-exclude", "10.244.0.0/16"]);
    a.ok(&sb, "DEL", &conf);
    assert_eq!(exclusions(&sb), (json!([cidr]), Value::Null, 3));
    assert_eq!(source_seen(&sb, &web, remote_pod), web_ip);
}
