//! The datapath's lifecycle: restarts that keep connections, the foreground mode, and pins
//! netpath must not trust.
use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use netpath::system::datapath::{Datapath, DatapathError};
use netpath_common::{MAX_CONNTRACK, MAX_NETWORKS};
use netpath_tests::{
    CLIENT_ADDR, EXT_ADDR, Proc,
    helpers::datapath,
    netpath_bin, sandbox,
    scripts::{connected, server},
};

/// Sends `n` numbered lines over `conn` and expects each echoed.
fn exchange(conn: &mut Proc, tag: &str, n: u32) {
    for i in 0..n {
        let line = format!("{tag}-{i}");
        conn.send(&line).unwrap();
        assert_eq!(
            conn.line(Duration::from_secs(5)).as_deref(),
            Some(line.as_str()),
            "{tag}"
        );
    }
}

#[test]
fn connections_survive_a_restart() {
    let sb = sandbox();
    let client = sb.client().unwrap();
    let web = sb.up_with_web(&["--publish", "8081:172.17.0.2:81"]);
    let _in_server = server(&sb, &web, &["mirror", "81"]);
    let _out_server = server(&sb, &client.netns, &["mirror", "9000"]);
    // One connection through the published port, one through masquerade.
    let (mut inbound, _) = connected(&sb, &client.netns, EXT_ADDR, 8081);
    let (mut outbound, _) = connected(&sb, &web, CLIENT_ADDR, 9000);
    exchange(&mut inbound, "in", 5);
    exchange(&mut outbound, "out", 5);

    // Restart twice while both connections stay open: the programs are replaced in place
    // and conntrack lives on in the pinned maps.
    let before = sb.map_dump("NP_CT").unwrap();
    for round in 0..2 {
        sb.ok(&["up", "-d"]);
        exchange(&mut inbound, &format!("in-after-restart-{round}"), 5);
        exchange(&mut outbound, &format!("out-after-restart-{round}"), 5);
    }
    let after = sb.map_dump("NP_CT").unwrap();
    assert_eq!(
        before.as_array().unwrap().len(),
        after.as_array().unwrap().len(),
        "the restart changed the conntrack table"
    );
    let counters = datapath(&sb).counters().unwrap();
    let drops: u64 = counters
        .iter()
        .filter(|(c, _)| c.name().starts_with("drop_"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(drops, 0, "{counters:?}");
}

#[test]
fn foreground_up_keeps_the_datapath_after_sigterm() {
    let sb = sandbox();
    let client = sb.client().unwrap();
    let web = sb.name("web");
    let up = KillOnDrop(Some(
        sb.command(&[
            "up",
            "--publish",
            "8081:172.17.0.2:81",
            "--gc-interval",
            "1",
            "--log-level",
            "info",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    ));
    // It is up once `run` finds the default network (loading the programs with logging on
    // takes the verifier a few seconds on a busy machine).
    let ran = netpath_tests::wait_until(300, Duration::from_millis(100), || {
        sb.netpath(&["run", &web]).status.success()
    });
    if !ran {
        let mut up = up.take();
        let _ = up.kill();
        let out = up.wait_with_output().unwrap();
        panic!(
            "netpath up in the foreground never brought the network up: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _server = server(&sb, &web, &["mirror", "81"]);
    let (mut conn, _) = connected(&sb, &client.netns, EXT_ADDR, 8081);
    exchange(&mut conn, "fg", 3);
    // Other commands are not locked out while it runs.
    sb.ok(&["ps"]);

    let up = up.take();
    // SAFETY: plain kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(up.id() as i32, libc::SIGTERM) }, 0);
    let out = up.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("the datapath stays attached"), "{stdout}");
    // The programs' log, streamed at the level asked for.
    assert!(
        stdout.contains(&format!("[INFO] new connection from {CLIENT_ADDR}:")),
        "{stdout}"
    );
    exchange(&mut conn, "after-exit", 3);
}

/// A child killed when dropped unless taken back first: a failing test leaves no `up` running.
struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    fn take(mut self) -> Child {
        self.0.take().expect("taken once")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A file removed when dropped, whether the test passed or not.
struct RemoveOnDrop(String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Pins a new map of `kind` at `path` with key and value of `size` bytes (bpftool).
fn pin_map(path: &str, kind: &str, size: u32, entries: u32, name: &str) {
    let size = size.to_string();
    let entries = entries.to_string();
    let created = Command::new("bpftool")
        .args([
            "map", "create", path, "type", kind, "key", &size, "value", &size, "entries", &entries,
            "name", name,
        ])
        .status()
        .unwrap();
    assert!(created.success(), "bpftool map create {path}");
}

#[test]
fn pins_netpath_cannot_trust_are_refused() {
    let sb = sandbox();
    sb.ok(&["up", "-d"]);
    let dir = format!("/sys/fs/bpf/netpath/{}", sb.host);

    // A map pinned under one of netpath's names with another layout, as an older version
    // would have left it: refused, not misread. The real one waits beside the pin directory,
    // removed even if the test fails.
    // NP_BRIDGES as netpath left it before networks had a masquerade flag (4-byte values).
    for (map, size, entries) in [("NP_CT", 8, 16), ("NP_BRIDGES", 4, MAX_NETWORKS)] {
        let pin = format!("{dir}/{map}");
        let saved = RemoveOnDrop(format!("{dir}-{map}-saved"));
        std::fs::rename(&pin, &saved.0).unwrap();
        pin_map(&pin, "hash", size, entries, map);
        let err = sb.fails(&["up", "-d"]);
        assert!(err.contains("pinned by another netpath version"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        match Datapath::open(&sb.host, MAX_CONNTRACK) {
            Err(DatapathError::OtherLayout { path, .. }) if path.ends_with(map) => {}
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => panic!("a map of another layout was accepted"),
        }
        std::fs::remove_file(&pin).unwrap();
        std::fs::rename(&saved.0, &pin).unwrap();
    }

    // Something foreign in the pin directory.
    let foreign = format!("{dir}/not-ours");
    pin_map(&foreign, "array", 4, 1, "foreign");
    let err = sb.fails(&["up", "-d"]);
    assert!(err.contains("not-ours is not a netpath pin"), "{err}");
    match Datapath::open(&sb.host, MAX_CONNTRACK) {
        Err(DatapathError::ForeignPin { path }) if path.ends_with("not-ours") => {}
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a foreign pin was accepted"),
    }
    std::fs::remove_file(&foreign).unwrap();
    sb.ok(&["up", "-d"]);
}

#[test]
fn down_after_a_crash_removes_pins_the_state_forgot() {
    let sb = sandbox();
    sb.ok(&["up", "-d"]);
    // A netpath that crashed after attaching and before saving its state.
    std::fs::remove_file(format!("/run/netpath/{}/state.json", sb.host)).unwrap();
    sb.ok(&["down"]);
    assert!(!std::path::Path::new(&format!("/sys/fs/bpf/netpath/{}", sb.host)).exists());
}

#[test]
fn a_missing_bpffs_is_mounted() {
    let sb = sandbox();
    let bin = netpath_bin();
    // A private mount namespace without bpffs, as on a host that never mounted one; the
    // pins live and die with it.
    let script = format!(
        "umount /sys/fs/bpf && {bin} --netns {host} up -d > /dev/null \
         && grep -q ' /sys/fs/bpf bpf ' /proc/self/mounts \
         && test -e /sys/fs/bpf/netpath/{host}/NP_CT \
         && {bin} --netns {host} down > /dev/null && echo done",
        bin = bin.display(),
        host = sb.host
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "done",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn commands_racing_the_first_up_never_break_it() {
    let sb = sandbox();
    // A command that finds nothing removes the scope's state directory, lock included; the
    // `up` waiting on that lock must not end up sharing the scope with the next command.
    let pollers: Vec<_> = (0..4)
        .map(|_| {
            let mut ps = sb.command(&["ps"]);
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let _ = ps.output();
                }
            })
        })
        .collect();
    sb.ok(&["up", "-d"]);
    for poller in pollers {
        poller.join().unwrap();
    }
    let web = sb.name("web");
    sb.ok(&["run", &web]);
    assert!(sb.ping(&web, "172.17.0.1"));
    assert!(sb.ok(&["status"]).contains("np_isolate"));
}
