//! Small helpers the end-to-end tests share: parsing what tools print, curl, bpftool, a
//! veth link between two namespaces, and (with `datapath`) netpath's counters.
use std::process::{Command, Output};

use anyhow::Result;
use serde_json::Value;

use crate::{Sandbox, ip};

/// A busybox root filesystem for a real runtime's containers under `root`: `/bin/busybox`
/// with links for `tools`, and `/www/cgi-bin/peer`, a CGI that echoes REMOTE_ADDR (busybox
/// httpd cannot echo its peer itself; read it back with [`cgi_peer`]).
pub fn busybox_rootfs(root: &std::path::Path, tools: &[&str]) {
    use std::{fs, os::unix::fs::PermissionsExt as _};
    for sub in ["bin", "www/cgi-bin", "proc", "sys", "dev", "etc", "tmp"] {
        fs::create_dir_all(root.join(sub)).unwrap();
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for tool in tools {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).unwrap();
    }
    let cgi = root.join("www/cgi-bin/peer");
    fs::write(
        &cgi,
        "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"$REMOTE_ADDR\"\n",
    )
    .unwrap();
    fs::set_permissions(&cgi, fs::Permissions::from_mode(0o755)).unwrap();
}

/// What busybox httpd gives a CGI as REMOTE_ADDR ("[::ffff:203.0.113.2]"), as IPv4.
pub fn cgi_peer(body: &str) -> String {
    body.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_start_matches("::ffff:")
        .to_owned()
}

/// Parses JSON a tool printed; fails with the text.
pub fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Splits "IP:PORT".
pub fn ip_port(s: &str) -> (String, u16) {
    let (ip, port) = s
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("not IP:PORT: {s}"));
    (ip.to_owned(), port.parse().unwrap())
}

/// The arguments of a bounded (`secs`) `curl URL` that prints the body, then a line with the
/// peer address the socket reported.
pub fn curl_cmd<'a>(url: &'a str, secs: &'a str) -> Vec<&'a str> {
    vec![
        "curl",
        "-sS",
        "--noproxy",
        "*",
        "-m",
        secs,
        "-w",
        "\n%{remote_ip}:%{remote_port}",
        url,
    ]
}

/// `curl URL` from `netns` (5 s at most): (body, the peer address the socket reported) or
/// the error.
pub fn curl(sb: &Sandbox, netns: &str, url: &str) -> Result<(String, String), String> {
    parse_curl(url, &sb.exec(netns, &curl_cmd(url, "5")))
}

/// What a [`curl_cmd`] printed: (body, peer address) or the error.
pub fn parse_curl(url: &str, out: &Output) -> Result<(String, String), String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "curl {url}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let (body, remote) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    Ok((body.trim().to_owned(), remote.trim().to_owned()))
}

/// `bpftool -j ARGS` (inside `netns` if given), parsed.
pub fn bpftool(netns: Option<&str>, args: &[&str]) -> Value {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "bpftool"]);
            c
        }
        None => Command::new("bpftool"),
    };
    let out = cmd.arg("-j").args(args).output().expect("running bpftool");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&String::from_utf8_lossy(&out.stdout))
}

/// A veth pair between two namespaces, each end `(netns, name, address/len)`, both up.
pub fn veth(a: (&str, &str, &str), b: (&str, &str, &str)) -> Result<()> {
    let ((an, aif, aaddr), (bn, bif, baddr)) = (a, b);
    for args in [
        &[
            "-n", an, "link", "add", aif, "type", "veth", "peer", "name", bif, "netns", bn,
        ][..],
        &["-n", an, "addr", "add", aaddr, "dev", aif],
        &["-n", an, "link", "set", aif, "up"],
        &["-n", bn, "addr", "add", baddr, "dev", bif],
        &["-n", bn, "link", "set", bif, "up"],
    ] {
        ip(args)?;
    }
    Ok(())
}

/// Bridge `many0` in the sandbox's host with more addresses than the socket programs' map
/// of local addresses holds (256), so that bringing the datapath up fails halfway; deleting
/// `many0` ends it.
pub fn too_many_local_addresses(sb: &Sandbox) {
    ip(&["-n", &sb.host, "link", "add", "many0", "type", "bridge"]).expect("many0");
    let batch: String = (0..300)
        .map(|i| format!("addr add 10.99.{}.{}/32 dev many0\n", i / 250, 1 + i % 250))
        .collect();
    let mut child = Command::new("ip")
        .args(["-n", &sb.host, "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("ip -batch");
    let written =
        std::io::Write::write_all(&mut child.stdin.take().expect("piped"), batch.as_bytes());
    assert!(child.wait().expect("ip -batch").success() && written.is_ok());
}

/// net.ipv4.ip_forward in the sandbox's host namespace.
pub fn ip_forward(sb: &Sandbox) -> String {
    sb.exec_ok(&sb.host, &["cat", "/proc/sys/net/ipv4/ip_forward"])
        .trim()
        .to_owned()
}

/// What bringing the datapath up changes, as `netpath status` and the sysctl show it: the
/// external interfaces, how many socket programs are attached (4 when up) and
/// net.ipv4.ip_forward.
pub fn up_marks(sb: &Sandbox) -> (Vec<String>, usize, String) {
    let status = sb.ok_json(&["status", "--json"]);
    let names = |key: &str, field: &str| -> Vec<String> {
        status[key]
            .as_array()
            .expect("status lists")
            .iter()
            .map(|v| v[field].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let sockets = names("attachments", "hook")
        .iter()
        .filter(|h| h.starts_with("cgroup"))
        .count();
    (names("externals", "name"), sockets, ip_forward(sb))
}

/// The sandbox's datapath, opened from its pins.
#[cfg(feature = "datapath")]
pub fn datapath(sb: &Sandbox) -> netpath::system::datapath::Datapath {
    netpath::system::datapath::Datapath::existing(&sb.host).expect("netpath pins exist")
}

/// One of the sandbox's datapath counters.
#[cfg(feature = "datapath")]
pub fn counter(sb: &Sandbox, which: netpath_common::Counter) -> u64 {
    datapath(sb)
        .counters()
        .expect("reading counters")
        .into_iter()
        .find(|(c, _)| *c == which)
        .map(|(_, n)| n)
        .expect("counter exists")
}

/// The conntrack hits of the datapath in `sb`, counted with the traffic.
#[cfg(feature = "datapath")]
pub fn hits(sb: &Sandbox) -> u64 {
    datapath(sb)
        .traffic()
        .expect("reading traffic")
        .iter()
        .map(|(_, _, t)| t.hits)
        .sum()
}

/// dockerd in the namespace `host` (through nsenter, not `ip netns exec`, which remounts
/// /sys: dockerd then finds no cgroups), with its data and exec roots, pidfile and API socket
/// under `dir`, the given networking flags and ulimits the sandbox allows.
pub fn dockerd(host: &str, dir: &std::path::Path, networking: &[&str]) -> Command {
    let d = dir.display();
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{host}"))
        .arg("dockerd")
        .args(["--data-root", &format!("{d}/root")])
        .args(["--exec-root", &format!("{d}/exec")])
        .args(["--pidfile", &format!("{d}/pid")])
        .args(["-H", &format!("unix://{d}/sock")])
        .args(networking)
        .args(["--default-ulimit", "nofile=1024:1024"])
        .args(["--default-ulimit", "nproc=4096:4096"]);
    cmd
}

/// Stops a dockerd started by [`dockerd`]: SIGTERM, as a service stop, then SIGKILL if it
/// has not exited after `tries` polls 100 ms apart.
pub fn stop_dockerd(daemon: &mut std::process::Child, tries: u32) {
    // SAFETY: kill has no memory preconditions; the pid is our child's (nsenter execs
    // dockerd).
    unsafe {
        libc::kill(daemon.id() as libc::pid_t, libc::SIGTERM);
    }
    let stopped = crate::wait_until(tries, std::time::Duration::from_millis(100), || {
        matches!(daemon.try_wait(), Ok(Some(_)))
    });
    if !stopped {
        let _ = daemon.kill();
        let _ = daemon.wait();
    }
}
