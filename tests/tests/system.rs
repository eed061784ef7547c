//! The kernel-facing layer on its own, without the netpath binary: named namespaces, rtnetlink
//! and the state store, each test in throwaway namespaces and scopes it removes on drop.
use std::{fs, net::Ipv4Addr, path::Path, sync::mpsc, thread, time::Duration};

use netpath::{
    model::state::{Container, Endpoint, NetMode, Network, STATE_VERSION, State, Store},
    system::{
        netlink::{Netlink, NetlinkError, Route},
        netns::{self, NETNS_RUN_DIR, Netns, NetnsError},
    },
};
use netpath_tests::{is_root, unique};

/// A named namespace of this test only, deleted on drop.
struct TempNs {
    name: String,
    ns: Netns,
}

impl TempNs {
    fn new() -> TempNs {
        assert!(
            is_root(),
            "system tests create namespaces: run them as root"
        );
        let name = unique("sys");
        let ns = netns::create_named(&name).expect("creating a namespace");
        TempNs { name, ns }
    }
}

impl Drop for TempNs {
    fn drop(&mut self) {
        let _ = netns::delete_named(&self.name);
    }
}

/// A state scope of this test only; its directory goes on drop.
struct TempScope(String);

impl TempScope {
    fn new() -> TempScope {
        assert!(is_root(), "the state store lives under /run: run as root");
        TempScope(unique("sys"))
    }
}

impl Drop for TempScope {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(Store::dir(&self.0));
    }
}

#[test]
fn netns_create_open_run_delete() {
    let t = TempNs::new();
    let path = Path::new(NETNS_RUN_DIR).join(&t.name);
    assert!(path.exists(), "{} missing", path.display());

    let inode = t.ns.inode().unwrap();
    assert_eq!(Netns::open_named(&t.name).unwrap().inode().unwrap(), inode);
    let here = Netns::current().unwrap().inode().unwrap();
    assert_ne!(here, inode);
    let inside = netns::run_in(&t.ns, || Netns::current().unwrap().inode().unwrap()).unwrap();
    assert_eq!(inside, inode);
    assert_eq!(Netns::current().unwrap().inode().unwrap(), here);

    netns::delete_named(&t.name).unwrap();
    assert!(!path.exists());
    match Netns::open_named(&t.name) {
        Err(NetnsError::NotFound { name }) => assert_eq!(name, t.name),
        r => panic!("opened a deleted namespace: {r:?}"),
    }
    // Cleanup paths run again: deleting twice is fine.
    netns::delete_named(&t.name).unwrap();
    // The handle still holds the namespace itself.
    let still = netns::run_in(&t.ns, || Netns::current().unwrap().inode().unwrap()).unwrap();
    assert_eq!(still, inode);
}

#[test]
fn netns_already_exists() {
    let t = TempNs::new();
    let e = netns::create_named(&t.name).unwrap_err();
    assert!(
        matches!(&e, NetnsError::AlreadyExists { name } if *name == t.name),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!("network namespace {} already exists", t.name)
    );
    // The failed creation left the existing namespace alone.
    assert_eq!(
        Netns::open_named(&t.name).unwrap().inode().unwrap(),
        t.ns.inode().unwrap()
    );
}

#[test]
fn netns_rejects_invalid_names() {
    for bad in ["", ".", "..", "a/b", "../etc", "a\0b"] {
        let invalid = |r: Result<(), NetnsError>| match r {
            Err(NetnsError::InvalidName { name }) => assert_eq!(name, bad),
            r => panic!("{bad:?}: {r:?}"),
        };
        invalid(netns::create_named(bad).map(drop));
        invalid(Netns::open_named(bad).map(drop));
        invalid(netns::delete_named(bad));
        invalid(netns::enter_named(bad));
    }
    assert_eq!(
        netns::delete_named("a/b").unwrap_err().to_string(),
        "invalid network namespace name \"a/b\""
    );
}

#[test]
fn netns_refuses_a_file_that_is_no_namespace() {
    assert!(is_root(), "writes under {NETNS_RUN_DIR}: run as root");
    let name = unique("sys");
    let path = Path::new(NETNS_RUN_DIR).join(&name);
    fs::create_dir_all(NETNS_RUN_DIR).unwrap();
    // What an interrupted `ip netns add` leaves behind: the file, no mount.
    fs::write(&path, "").unwrap();
    let opened = Netns::open_named(&name);
    // delete_named removes such leftovers too (and must, or the test would leave one).
    netns::delete_named(&name).unwrap();
    assert!(!path.exists());
    match opened {
        Err(NetnsError::NotANamespace { path: p }) => assert_eq!(p, path),
        r => panic!("{r:?}"),
    }
}

#[test]
fn netns_missing() {
    assert!(is_root(), "looks under {NETNS_RUN_DIR}: run as root");
    let name = unique("sys");
    match Netns::open_named(&name) {
        Err(e @ NetnsError::NotFound { .. }) => assert_eq!(
            e.to_string(),
            format!("network namespace {name} does not exist")
        ),
        r => panic!("{r:?}"),
    }
    netns::delete_named(&name).unwrap();
}

const GW: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

#[tokio::test]
async fn netlink_bridge_veth_addresses_routes() {
    let host = TempNs::new();
    let peer = TempNs::new();
    let nl = Netlink::open_in(&host.ns).unwrap();
    let pnl = Netlink::open_in(&peer.ns).unwrap();
    nl.set_up("lo").await.unwrap();

    let br = nl.create_bridge("br0").await.unwrap();
    let link = nl
        .link_by_name("br0")
        .await
        .unwrap()
        .expect("bridge listed");
    assert_eq!(link.index, br);
    assert_eq!(link.kind.as_deref(), Some("bridge"));
    nl.add_address(br, GW, 24).await.unwrap();
    let addrs = nl.addresses_v4().await.unwrap();
    assert!(
        addrs
            .iter()
            .any(|a| (a.index, a.addr, a.prefix_len) == (br, GW, 24)),
        "{addrs:?}"
    );

    let mac = [0x02, 0x42, 198, 51, 100, 2];
    let veth = nl
        .create_veth("vh0", br, &peer.ns, "eth0", mac)
        .await
        .unwrap();
    let links = nl.links().await.unwrap();
    let host_end = links.iter().find(|l| l.index == veth).expect("veth listed");
    assert_eq!(host_end.name, "vh0");
    assert_eq!(host_end.kind.as_deref(), Some("veth"));
    assert_eq!(host_end.controller, Some(br));
    // The peer was created in its namespace, not here.
    assert!(nl.link_by_name("eth0").await.unwrap().is_none());

    pnl.set_up("lo").await.unwrap();
    pnl.configure_container_iface("eth0", PEER, 24, Some(GW))
        .await
        .unwrap();
    let eth0 = pnl.link_by_name("eth0").await.unwrap().expect("peer end");
    assert!(
        pnl.addresses_v4()
            .await
            .unwrap()
            .iter()
            .any(|a| (a.index, a.addr, a.prefix_len) == (eth0.index, PEER, 24))
    );
    let routes = pnl.routes_v4().await.unwrap();
    let default = Route {
        dst: Ipv4Addr::UNSPECIFIED,
        prefix_len: 0,
        oif: Some(eth0.index),
        gateway: Some(GW),
    };
    assert!(routes.contains(&default), "{routes:?}");

    // Deleting one end takes the peer along.
    nl.delete_link(veth).await.unwrap();
    assert!(pnl.link_by_name("eth0").await.unwrap().is_none());
    // Also by name, where the call returns at the kernel's echo, before its ack: both ends
    // are gone by then, and the bridge has no port left.
    nl.create_veth("vh1", br, &peer.ns, "eth0", mac)
        .await
        .unwrap();
    assert!(nl.delete_link_by_name("vh1").await.unwrap());
    assert!(pnl.link_by_name("eth0").await.unwrap().is_none());
    let links = nl.links().await.unwrap();
    assert!(!links.iter().any(|l| l.controller == Some(br)), "{links:?}");
    assert!(nl.delete_link_by_name("br0").await.unwrap());
    assert!(!nl.delete_link_by_name("br0").await.unwrap());
    assert!(nl.link_by_name("br0").await.unwrap().is_none());
}

#[tokio::test]
async fn netlink_errors_name_the_device_and_the_operation() {
    let host = TempNs::new();
    let nl = Netlink::open_in(&host.ns).unwrap();
    for e in [
        nl.set_up("nope0").await.unwrap_err(),
        nl.configure_container_iface("nope0", PEER, 24, None)
            .await
            .unwrap_err(),
    ] {
        assert!(
            matches!(&e, NetlinkError::NoSuchDevice { name } if name == "nope0"),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "no such interface nope0");
    }
    assert!(nl.link_by_name("nope0").await.unwrap().is_none());
    assert!(!nl.delete_link_by_name("nope0").await.unwrap());

    nl.create_bridge("br0").await.unwrap();
    let e = nl.create_bridge("br0").await.unwrap_err();
    match &e {
        NetlinkError::Kernel { op, source } => {
            assert_eq!(op, "creating bridge br0");
            assert_eq!(source.raw_os_error(), Some(libc::EEXIST));
        }
        e => panic!("{e:?}"),
    }
    // Through anyhow, as commands report it: the operation, then the kernel's reason.
    assert_eq!(
        format!("{:#}", anyhow::Error::from(e)),
        "creating bridge br0: File exists (os error 17)"
    );
    // A deletion the kernel refuses reaches the caller, though another process sends it.
    let e = nl.delete_link_by_name("lo").await.unwrap_err();
    assert_eq!(
        format!("{:#}", anyhow::Error::from(e)),
        "deleting interface lo: Operation not supported (os error 95)"
    );
    assert!(nl.link_by_name("lo").await.unwrap().is_some());
}

#[test]
fn store_load_save_peek_remove() {
    let scope = TempScope::new();
    let dir = Store::dir(&scope.0);
    assert!(Store::peek(&scope.0).unwrap().is_none());

    let store = Store::open(&scope.0).unwrap();
    assert!(dir.join("lock").exists());
    let mut state = store.load().unwrap();
    assert_eq!(state.version, STATE_VERSION);
    assert!(state.networks.is_empty() && state.externals.is_empty());
    // Nothing is written until a save.
    assert!(Store::peek(&scope.0).unwrap().is_none());

    state.externals.insert("eth9".to_owned());
    state.conntrack_removed = 7;
    store.save(&state).unwrap();
    // Written to a temporary file and renamed into place: none is left behind.
    let files: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!files.iter().any(|f| f.ends_with(".tmp")), "{files:?}");
    // peek reads without the lock, which the store still holds.
    let peeked = Store::peek(&scope.0).unwrap().expect("saved state");
    assert_eq!(peeked.conntrack_removed, 7);
    drop(store);

    let store = Store::open(&scope.0).unwrap();
    let loaded = store.load().unwrap();
    assert!(loaded.externals.contains("eth9"));
    assert_eq!(loaded.conntrack_removed, 7);
    store.remove().unwrap();
    assert!(!dir.exists());
    assert!(Store::peek(&scope.0).unwrap().is_none());
}

fn bridged(network: &str, ip: Ipv4Addr) -> Container {
    Container {
        mode: NetMode::Bridge,
        endpoints: vec![Endpoint {
            network: network.to_owned(),
            ifname: "eth0".to_owned(),
            host_veth: format!("np{ip}"),
            ip,
        }],
        allow_spoofed_source: false,
    }
}

#[test]
fn store_keeps_each_container_in_a_record_of_its_own() {
    let scope = TempScope::new();
    let dir = Store::dir(&scope.0);
    let ip = |d| Ipv4Addr::new(10, 9, 0, d);
    let store = Store::open(&scope.0).unwrap();
    let mut state = store.load().unwrap();
    state.networks.insert(
        "n".to_owned(),
        Network {
            id: 1,
            subnet: "10.9.0.0/24".parse().unwrap(),
            gateway: ip(1),
            bridge: "br-n".to_owned(),
            ifindex: 0,
            bridge_created: true,
            masquerade: true,
            routes: vec![],
            cluster_exclude: None,
            addresses: Default::default(),
        },
    );
    state.add_container("a", bridged("n", ip(2)));
    let sharer = Container {
        mode: NetMode::Container("a".to_owned()),
        endpoints: vec![],
        allow_spoofed_source: false,
    };
    state.add_container("b", sharer);
    store.save(&state).unwrap();
    let records = dir.join("containers");
    assert!(records.join("a.json").exists() && records.join("b.json").exists());
    let text = fs::read_to_string(dir.join("state.json")).unwrap();
    assert!(!text.contains("\"containers\""), "{text}");
    assert!(text.contains(r#""addresses":["10.9.0.2"]"#), "{text}");
    assert!(text.contains(r#""sharers":{"a":["b"]}"#), "{text}");

    // A load picks the next address and finds who shares a namespace without reading a
    // record, and reads one by name.
    let mut state = store.load().unwrap();
    assert_eq!(state.networks["n"].next_free().unwrap(), ip(3));
    assert_eq!(state.sharing("a"), ["b"]);
    assert!(!state.containers.is_empty().unwrap());
    assert_eq!(state.container("a").unwrap().endpoints[0].ip, ip(2));
    assert!(!state.containers.contains("c").unwrap());
    let e = state.container("../a").unwrap_err();
    assert_eq!(format!("{e:#}"), "invalid container name \"../a\"");
    state.remove_container("b").unwrap();
    state.remove_container("a").unwrap();
    assert!(state.containers.is_empty().unwrap());
    assert!(state.sharing("a").is_empty() && state.networks["n"].addresses.is_empty());
    store.save(&state).unwrap();
    assert_eq!(fs::read_dir(&records).unwrap().count(), 0);

    // A save writes the records, then the host's part, with a marker spanning both: a load
    // that finds the marker (a crash between the writes) rebuilds the index from the
    // records; without it the index is trusted and no record is read.
    fs::write(
        records.join("c.json"),
        serde_json::to_vec(&bridged("n", ip(3))).unwrap(),
    )
    .unwrap();
    assert!(store.load().unwrap().networks["n"].addresses.is_empty());
    fs::write(dir.join("saving"), "").unwrap();
    let mut repaired = store.load().unwrap();
    assert_eq!(repaired.networks["n"].next_free().unwrap(), ip(2));
    assert!(repaired.networks["n"].in_use(ip(3)));
    store.save(&repaired).unwrap();
    assert!(!dir.join("saving").exists());
    assert!(store.load().unwrap().networks["n"].in_use(ip(3)));
    repaired.remove_container("c").unwrap();
    store.save(&repaired).unwrap();

    // A record that does not read fails a command that needs them all, and a teardown gets
    // the others and the reason. Its container keeps its address and its name.
    state = store.load().unwrap();
    state.add_container("e", bridged("n", ip(5)));
    state.add_container("f", bridged("n", ip(6)));
    store.save(&state).unwrap();
    let f = records.join("f.json");
    fs::write(&f, "{\"mode\":").unwrap();
    let mut state = store.load().unwrap();
    let e = format!("{:#}", state.all_containers().unwrap_err());
    let expected = format!("parsing {} (a container's record", f.display());
    assert!(e.starts_with(&expected), "{e}");
    let readable = state.readable_containers().unwrap();
    assert_eq!(readable.keys().collect::<Vec<_>>(), ["e"]);
    let unreadable = state.containers.unreadable();
    assert_eq!(unreadable.keys().collect::<Vec<_>>(), ["f"]);
    assert!(state.containers.contains("f").is_err());
    assert!(state.networks["n"].in_use(ip(6)));
    store.save(&state).unwrap();
    assert!(store.load().unwrap().networks["n"].in_use(ip(6)));
    state.remove_container("e").unwrap();
    store.save(&state).unwrap();
    fs::remove_file(&f).unwrap();
    let mut state = store.load().unwrap();
    state.all_containers().unwrap();
    assert!(!state.networks["n"].in_use(ip(6)));
    store.save(&state).unwrap();

    // An older netpath's file, with the containers inside, is read whole and split.
    let mut old: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("state.json")).unwrap()).unwrap();
    old["version"] = 1.into();
    old["containers"] = serde_json::json!({"d": bridged("n", ip(4))});
    fs::write(dir.join("state.json"), old.to_string()).unwrap();
    let mut upgraded = store.load().unwrap();
    assert!(upgraded.networks["n"].in_use(ip(4)));
    assert_eq!(upgraded.container("d").unwrap().endpoints[0].ip, ip(4));
    store.save(&upgraded).unwrap();
    assert!(records.join("d.json").exists());
    let text = fs::read_to_string(dir.join("state.json")).unwrap();
    assert!(!text.contains("\"containers\""), "{text}");
    assert!(
        text.starts_with(&format!("{{\"version\":{STATE_VERSION},")),
        "{text}"
    );
}

#[test]
fn store_refuses_other_versions_and_garbage() {
    let scope = TempScope::new();
    let store = Store::open(&scope.0).unwrap();
    let path = Store::dir(&scope.0).join("state.json");
    let mut future = State::default();
    future.version = STATE_VERSION + 1;
    store.save(&future).unwrap();
    let msg = format!("{:#}", store.load().unwrap_err());
    assert!(
        msg.contains(&format!(
            "has state version {}, this netpath understands {STATE_VERSION}",
            STATE_VERSION + 1
        )),
        "{msg}"
    );
    fs::write(&path, "{").unwrap();
    let msg = format!("{:#}", Store::peek(&scope.0).unwrap_err());
    assert!(msg.contains("(remove it to start over)"), "{msg}");
}

/// Opens the scope's store on another thread; reports when it holds the lock.
fn open_elsewhere(scope: &str) -> mpsc::Receiver<Store> {
    let (tx, rx) = mpsc::channel();
    let scope = scope.to_owned();
    thread::spawn(move || {
        let _ = tx.send(Store::open(&scope).expect("second opener"));
    });
    rx
}

const WAIT: Duration = Duration::from_millis(300);
const DEADLINE: Duration = Duration::from_secs(10);

#[test]
fn store_lock_serializes_openers() {
    let scope = TempScope::new();
    let first = Store::open(&scope.0).unwrap();
    let second = open_elsewhere(&scope.0);
    assert!(
        second.recv_timeout(WAIT).is_err(),
        "two stores held the lock at once"
    );
    let mut state = first.load().unwrap();
    state.conntrack_removed = 1;
    first.save(&state).unwrap();
    drop(first);
    let second = second.recv_timeout(DEADLINE).expect("lock handed over");
    // The second opener sees everything the first saved under the lock.
    assert_eq!(second.load().unwrap().conntrack_removed, 1);
}

#[test]
fn store_waiter_survives_removal() {
    let scope = TempScope::new();
    let first = Store::open(&scope.0).unwrap();
    first.save(&first.load().unwrap()).unwrap();
    let second = open_elsewhere(&scope.0);
    assert!(second.recv_timeout(WAIT).is_err());
    // The waiter holds a lock on a removed file, and must start over on a fresh one.
    first.remove().unwrap();
    let second = second.recv_timeout(DEADLINE).expect("lock after removal");
    let dir = Store::dir(&scope.0);
    assert!(dir.join("lock").exists());
    assert!(second.load().unwrap().externals.is_empty());
    assert!(Store::peek(&scope.0).unwrap().is_none());
}
