//! The one output path: every read command's `--json` parses back, a reader that goes away
//! (`netpath status | head -1`) ends a command quietly after it did its work, and a write
//! that fails (`netpath ps > /dev/full`) fails the command with one line.
use std::{
    fs::File,
    io::{BufRead as _, BufReader},
    process::{Command, Output, Stdio},
    time::Duration,
};

use netpath_tests::{Sandbox, sandbox, wait_until};

/// `up -d` with a published port and a container, so that every read command has rows.
/// `netpath down` that must fail: what it printed on stdout and stderr.
fn failed_down(sb: &Sandbox) -> (String, String) {
    let out = sb.netpath(&["down"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "down succeeded: {stdout}");
    (stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn setup() -> (Sandbox, String) {
    let sb = sandbox();
    let web = sb.up_with_web(&["--publish", "8080:172.17.0.2:80"]);
    (sb, web)
}

/// Runs netpath with its stdout a pipe whose reading end is closed before anything is
/// written, as `| head -0` would.
fn closed_pipe(sb: &Sandbox, args: &[&str]) -> Output {
    let mut child = sb
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning netpath");
    drop(child.stdout.take());
    child.wait_with_output().expect("waiting for netpath")
}

/// `ps`, `network ls` and `status` look up by name the interfaces the state names (not from
/// a dump of every link): each reports exactly what was deleted behind netpath's back.
#[test]
fn read_commands_report_interfaces_deleted_behind_netpaths_back() {
    let sb = sandbox();
    // Its `ext0` becomes the external interface.
    let _client = sb.client().unwrap();
    let web = sb.up_with_web(&[]);
    let status = sb.ok_json(&["status", "--json"]);
    let ext0 = &sb.ip_json(&["link", "show", "ext0"])[0];
    assert_eq!(
        status["externals"],
        serde_json::json!([{"name": "ext0", "ifindex": ext0["ifindex"]}]),
        "{status}"
    );
    assert_eq!(status["containers"][0]["missing"], serde_json::json!([]));
    let veth = status["containers"][0]["endpoints"][0]["host_veth"]
        .as_str()
        .expect("a host veth")
        .to_owned();

    let del = |name: &str| netpath_tests::ip(&["-n", &sb.host, "link", "del", name]).unwrap();
    del(&veth);
    let missing = serde_json::json!([format!("veth {veth}")]);
    let ps = sb.ok_json(&["ps", "--json"]);
    assert_eq!(ps[0]["name"], web.as_str());
    assert_eq!(ps[0]["missing"], missing, "{ps}");

    del("ext0");
    del("netpath0");
    let status = sb.ok_json(&["status", "--json"]);
    assert_eq!(status["containers"][0]["missing"], missing, "{status}");
    assert_eq!(
        status["externals"],
        serde_json::json!([{"name": "ext0", "ifindex": null}]),
        "{status}"
    );
    assert_eq!(status["networks"][0]["bridge_present"], false, "{status}");
    let networks = sb.ok_json(&["network", "ls", "--json"]);
    assert_eq!(networks[0]["bridge_present"], false, "{networks}");
}

#[test]
fn every_read_command_has_json_that_parses() {
    let (sb, web) = setup();
    let ps = sb.ok_json(&["ps", "--json"]);
    assert_eq!(ps[0]["name"], web.as_str(), "{ps}");
    assert_eq!(ps[0]["mode"]["mode"], "bridge");
    assert_eq!(ps[0]["ports"][0], "8080:172.17.0.2:80/tcp");
    let networks = sb.ok_json(&["network", "ls", "--json"]);
    assert_eq!(networks[0]["name"], "default", "{networks}");
    assert_eq!(networks[0]["bridge"], "netpath0");
    assert_eq!(networks[0]["bridge_present"], true);
    let status = sb.ok_json(&["status", "--json"]);
    assert_eq!(status["scope"], sb.host.as_str(), "{status}");
    assert_eq!(status["publishes"]["ports"], 1);
    assert!(
        status["attachments"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    );
    let conntrack = sb.ok_json(&["conntrack", "--json"]);
    assert!(conntrack.is_array(), "{conntrack}");
    let stats = sb.ok_json(&["stats", "--json"]);
    assert!(stats["conntrack"]["entries"].is_u64(), "{stats}");
    // `publish` alone lists SPECs one per line, as --from-file reads them back.
    assert_eq!(sb.ok(&["publish"]), "8080:172.17.0.2:80/tcp\n");
}

#[test]
fn a_reader_that_goes_away_ends_a_command_quietly_after_its_work() {
    let (sb, _) = setup();
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["ps"],
        &["network", "ls"],
        &["publish"],
        &["conntrack"],
        &["stats"],
        &["stats", "--prometheus"],
    ] {
        let out = closed_pipe(&sb, args);
        assert!(out.status.success(), "{args:?}: {:?}", out.status);
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{args:?}");
    }
    // An action whose report nobody reads still happens and is saved.
    let db = sb.name("db");
    let out = closed_pipe(&sb, &["run", &db, "--dns", "127.0.0.1"]);
    assert!(out.status.success(), "run: {:?}", out.status);
    assert!(
        sb.ok(&["ps"]).contains(&db),
        "run's container is in the state"
    );
    // --watch streams until its reader goes: then it ends too.
    let mut watch = sb
        .command(&["stats", "--watch", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning stats --watch");
    let mut lines = BufReader::new(watch.stdout.take().expect("piped"));
    let mut first = String::new();
    lines.read_line(&mut first).expect("a first line");
    assert!(first.starts_with("every 1s"), "{first:?}");
    drop(lines);
    let ended = wait_until(50, Duration::from_millis(100), || {
        watch.try_wait().is_ok_and(|s| s.is_some())
    });
    if !ended {
        let _ = watch.kill();
    }
    let out = watch.wait_with_output().expect("waiting for stats --watch");
    assert!(ended, "stats --watch ended within 5 s of its reader");
    assert!(out.status.success(), "stats --watch: {:?}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn a_failed_write_fails_the_command_with_one_line() {
    let (sb, _) = setup();
    for args in [&["ps"][..], &["status", "--json"], &["stats"]] {
        let full = File::options()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let out = sb
            .command(args)
            .stdout(full)
            .output()
            .expect("running netpath");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded on a full disk");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("netpath: writing the output: ")
                && stderr.contains("No space left on device"),
            "{args:?}: {stderr}"
        );
    }
}

/// Unmounts on drop, so that a failing test leaves no mount behind.
struct BindMount(std::path::PathBuf);

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_failed_teardown_reports_every_failure_and_only_what_it_removed() {
    let (sb, web) = setup();
    // A mount on the container's resolv.conf makes removing its /etc/netns directory fail
    // (EBUSY), the last step of its teardown.
    let resolv = std::path::Path::new("/etc/netns")
        .join(&web)
        .join("resolv.conf");
    let mounted = Command::new("mount")
        .args(["--bind", "/dev/null"])
        .arg(&resolv)
        .status()
        .expect("mount");
    assert!(mounted.success(), "bind-mounting over {}", resolv.display());
    let guard = BindMount(resolv);
    let (stdout, stderr) = failed_down(&sb);
    assert!(
        stderr.starts_with("netpath: 1 teardown step(s) failed\n  removing /etc/netns/"),
        "{stderr}"
    );
    assert!(
        !stdout.contains(&format!("removed container {web}")),
        "{stdout}"
    );
    assert!(stdout.contains("removed network default"), "{stdout}");
    assert!(
        sb.ok(&["ps"]).contains(&web),
        "the container stays in the state"
    );
    // Once the obstacle is gone, `down` again finishes the job.
    drop(guard);
    let again = sb.ok(&["down"]);
    assert!(
        again.contains(&format!("removed container {web}")),
        "{again}"
    );
}

#[test]
fn down_goes_on_past_a_container_record_that_does_not_read() {
    let (sb, web) = setup();
    let record = format!("/run/netpath/{}/containers/broken.json", sb.host);
    std::fs::write(&record, "{\"mode\":").unwrap();
    // A command that shows every container refuses, naming the file.
    let stderr = sb.fails(&["ps"]);
    assert!(
        stderr.starts_with(&format!(
            "netpath: parsing {record} (a container's record: mend it, or remove it and netpath forgets the container): "
        )),
        "{stderr}"
    );
    // `down` removes everything else, and reports the record.
    let (stdout, stderr) = failed_down(&sb);
    assert!(
        stderr.starts_with(&format!(
            "netpath: 1 teardown step(s) failed\n  removing a container record: parsing {record} (a container's record"
        )),
        "{stderr}"
    );
    assert!(
        stdout.contains(&format!("removed container {web}")),
        "{stdout}"
    );
    assert!(stdout.contains("removed network default"), "{stdout}");
    std::fs::remove_file(&record).unwrap();
    sb.ok(&["down"]);
    let dir = format!("/run/netpath/{}", sb.host);
    assert!(!std::path::Path::new(&dir).exists(), "{dir} is left");
}
