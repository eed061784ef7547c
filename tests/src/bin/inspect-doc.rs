//! Writes docs/inspecting.md from a live datapath, so that every output on the page is real:
//! a sandbox with a client namespace, `up -d` with a published port, a container serving
//! HTTP, a little traffic, then each inspection command. The sandbox's generated names are
//! replaced with stable ones (`sandbox`, `web`, `client`) so that the page does not change
//! with them; ids, times and counts are as they came.
//!
//! As root: `cargo build -p netpath && cargo run -p netpath-tests --bin inspect-doc`.
#![allow(
    clippy::print_stdout,
    reason = "a developer tool that says what it wrote"
)]
use std::{fmt::Write as _, process::Command, time::Duration};

use anyhow::{Context as _, Result, bail};
use netpath_tests::{CLIENT_ADDR, EXT_ADDR, Sandbox, netpath_bin};
use serde_json::Value;

const PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/inspecting.md");

const HTTP_SERVER: &str = r#"
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'hello from web\n'
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
srv = http.server.HTTPServer(('0.0.0.0', 80), H)
print('ready', flush=True)
srv.serve_forever()
"#;

/// Connects to the published port and keeps the connection open (an established entry).
const HOLD: &str = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], 8080), timeout=3)
print('ready', flush=True)
time.sleep(120)
"#;

fn main() -> Result<()> {
    let bin = netpath_bin();
    let sb = Sandbox::new(&bin)?;
    let client = sb.client()?;
    let web = sb.name("web");
    sb.ok(&["up", "-d", "--publish", "8080:172.17.0.2:80"]);
    sb.ok(&["run", &web]);
    let server = sb.spawn(&web, &["python3", "-c", HTTP_SERVER])?;
    server.wait_for("ready", Duration::from_secs(10))?;
    let get = format!(
        "import urllib.request; print(urllib.request.urlopen('http://{EXT_ADDR}:8080/', timeout=3).read().decode(), end='')"
    );
    for _ in 0..2 {
        check(&sb.exec(&client.netns, &["python3", "-c", &get]))?;
    }
    let held = sb.spawn(&client.netns, &["python3", "-c", HOLD, EXT_ADDR])?;
    held.wait_for("ready", Duration::from_secs(10))?;
    // A masqueraded connection: the container pings the client, outside.
    if !sb.ping(&web, CLIENT_ADDR) {
        bail!("the container's ping to {CLIENT_ADDR} went unanswered");
    }

    let status: Value = serde_json::from_str(&sb.ok(&["status", "--json"]))?;
    let ids = |key: &str| -> Vec<String> {
        let mut ids = status["attachments"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a[key].as_u64())
            .collect::<Vec<u64>>();
        ids.sort();
        ids.iter().map(u64::to_string).collect()
    };
    let pins = format!("/sys/fs/bpf/netpath/{}", sb.host);
    let mut page = Page {
        sb: &sb,
        client: client.netns.clone(),
        text: String::new(),
    };
    page.intro();
    page.netpath(
        "## netpath status",
        "Everything netpath set up in the namespace, and what the kernel has of it: each \
         program's attachment with the ids of its link and program (as `bpftool link show` and \
         `bpftool prog show` give them; a container's veth carries `np_veth_in` as a clsact \
         filter, which has no link, so LINK shows `-` and PROG is the program pinned as \
         `prog_veth_in`), and how many entries each map holds against its \
         capacity (counted by walking the keys; for a full conntrack table of 262144 entries \
         that takes about half a second). `--json` gives the same as one object.",
        &["status"],
    )?;
    page.netpath(
        "## netpath stats",
        "The datapath's per-CPU counters, summed. *translated bytes* count whole frames as \
         the TC hook sees them: the IPv4 packet plus its 14-byte Ethernet header. *evicted* is \
         derived, not counted: conntrack inserts − removals by the datapath − entries present \
         − entries netpath removed itself (`netpath conntrack flush`, garbage collection). \
         What is left are entries the LRU evicted when the table was full, or that a new \
         connection overwrote after they expired; it may be off for an instant under traffic, \
         as the counters and the table are read one after the other. `--watch [SECS]` prints \
         again every SECS seconds (1 by default) with per-second rates, `--json` gives an \
         object (one per line with `--watch`, with `rates` beside the values).",
        &["stats"],
    )?;
    page.netpath(
        "### netpath stats --prometheus",
        "The same in the Prometheus text exposition format, for a textfile collector or a \
         scrape wrapper: every name starts with `netpath_`, counters end in `_total`, labels \
         say `reason`, `kind`, `direction` and `proto`.",
        &["stats", "--prometheus"],
    )?;
    page.netpath(
        "## netpath conntrack",
        "The translated connections, both entries of each paired into one line: the HTTP \
         requests (closed by their FIN), the connection still open, and the container's \
         masqueraded ping.",
        &["conntrack"],
    )?;
    page.command(
        "## bpftool map dump pinned …/NP_CT",
        "The raw table: one entry per direction, keyed by the tuple as it arrives, holding \
         the tuple to rewrite it to. Addresses are stored as their four bytes and ports in \
         host byte order, so the dump reads as it is; `flags` 1 marks the reply direction, \
         2 delivery straight into a container (to `dst_mac`), 4 a next hop cached for the \
         current tick (`dst_mac`, `src_mac`); `last_seen_ns` is `bpf_ktime_get_coarse_ns` \
         (CLOCK_MONOTONIC_COARSE). \
         `bpftool -j` gives the raw bytes beside this view (under `formatted`).",
        &["bpftool", "map", "dump", "pinned", &format!("{pins}/NP_CT")],
        None,
    )?;
    page.command(
        "## bpftool map dump pinned …/NP_PUBLISH",
        "The published ports: host address (0.0.0.0: every local address), port and \
         protocol, to the container's address and port on a bridge.",
        &[
            "bpftool",
            "map",
            "dump",
            "pinned",
            &format!("{pins}/NP_PUBLISH"),
        ],
        None,
    )?;
    let (prog_ids, link_ids) = (ids("program_id"), ids("link_id"));
    page.per_id(
        "## bpftool prog show",
        "The programs of this namespace's links, by the ids `netpath status` lists (every \
         netpath namespace on the machine loads its own). Their `map_ids` are the maps \
         pinned in the namespace's directory (`bpftool map show pinned PATH` gives a pin's \
         id), plus any map private to that one load.",
        &["bpftool", "prog", "show", "id"],
        &prog_ids,
    )?;
    page.per_id(
        "## bpftool link show",
        "The links netpath pinned: the cgroup hooks of the socket programs and, as `type \
         11` (`tcx`) where bpftool does not know the name, the TC hooks.",
        &["bpftool", "link", "show", "id"],
        &link_ids,
    )?;
    page.command(
        "## bpftool net show",
        "Inside the namespace. The programs on bridges and external interfaces are attached \
         through tcx links, which bpftool versions that predate tcx (as the one below) do not \
         list here (`bpftool link show` is where to look); the containers' veths carry \
         `np_veth_in` as a netlink (clsact) filter, listed under `tc`.",
        &["bpftool", "net", "show"],
        Some(&sb.host),
    )?;
    let version = run(&["bpftool", "version"], None)?;
    let _ = writeln!(
        page.text,
        "\n---\nGenerated with {}.",
        version.lines().next().unwrap_or("bpftool")
    );
    drop(held);
    drop(server);
    let text = page.text;
    std::fs::write(PAGE, text).with_context(|| format!("writing {PAGE}"))?;
    println!("wrote {PAGE}");
    Ok(())
}

struct Page<'a> {
    sb: &'a Sandbox,
    client: String,
    text: String,
}

impl Page<'_> {
    fn intro(&mut self) {
        self.text.push_str(
            "# Inspecting netpath\n\n\
             <!-- Generated by tests/src/bin/inspect-doc.rs; do not edit by hand. To regenerate, \
             as root: `cargo build -p netpath && cargo run -p netpath-tests --bin inspect-doc` -->\n\n\
             What netpath and bpftool show of a running datapath. Every output below is real: \
             the page is generated (`cargo build -p netpath && cargo run -p netpath-tests --bin \
             inspect-doc`, as root) in a throwaway namespace `sandbox` that plays the host, \
             with a client namespace `client` behind its external interface `ext0` \
             (203.0.113.1, the client 203.0.113.2) and a container `web` (172.17.0.2) serving \
             HTTP on port 80. Ids, times and counts change from one run to the next.\n\n\
             ```sh\n\
             netpath --netns sandbox up -d --publish 8080:172.17.0.2:80\n\
             netpath --netns sandbox run web\n\
             # in web: a small HTTP server on port 80\n\
             # in client: two GETs of http://203.0.113.1:8080/, and one connection held open\n\
             # in web: ping -c 1 203.0.113.2 (masqueraded out of ext0)\n\
             ```\n",
        );
    }

    /// A section with the output of `netpath --netns <sandbox> ARGS`.
    fn netpath(&mut self, title: &str, prose: &str, args: &[&str]) -> Result<()> {
        let out = self.sb.ok(args);
        let shown = format!("netpath --netns {} {}", self.sb.host, args.join(" "));
        self.section(title, prose, &shown, &out);
        Ok(())
    }

    /// A section with the output of a command, run in `netns` if given.
    fn command(
        &mut self,
        title: &str,
        prose: &str,
        cmd: &[&str],
        netns: Option<&str>,
    ) -> Result<()> {
        let out = run(cmd, netns)?;
        let shown = match netns {
            Some(ns) => format!("ip netns exec {ns} {}", cmd.join(" ")),
            None => cmd.join(" "),
        };
        self.section(title, prose, &shown, &out);
        Ok(())
    }

    /// A section with `CMD ID` for each id, outputs one after the other.
    fn per_id(&mut self, title: &str, prose: &str, cmd: &[&str], ids: &[String]) -> Result<()> {
        let mut out = String::new();
        for id in ids {
            let mut full = cmd.to_vec();
            full.push(id);
            out.push_str(&run(&full, None)?);
        }
        let shown = format!(
            "for id in {}; do {} $id; done",
            ids.join(" "),
            cmd.join(" ")
        );
        self.section(title, prose, &shown, &out);
        Ok(())
    }

    fn section(&mut self, title: &str, prose: &str, shown: &str, out: &str) {
        let _ = write!(
            self.text,
            "\n{title}\n\n{prose}\n\n```console\n# {}\n{}```\n",
            self.stable(shown),
            self.stable(out)
        );
    }

    /// Replaces the sandbox's generated names with stable ones; where a table column
    /// follows (two spaces or more), padded to the old width so that the table stays aligned.
    fn stable(&self, text: &str) -> String {
        let names = [
            (self.sb.host.clone(), "sandbox"),
            (self.client.clone(), "client"),
            (self.sb.name("web"), "web"),
        ];
        let mut text = text.to_owned();
        for (name, stable) in names {
            let pad = " ".repeat(name.len().saturating_sub(stable.len()));
            text = text
                .replace(&format!("{name}  "), &format!("{stable}{pad}  "))
                .replace(&name, stable);
        }
        text
    }
}

fn run(cmd: &[&str], netns: Option<&str>) -> Result<String> {
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).args(cmd);
            c
        }
        None => {
            let mut c = Command::new(cmd[0]);
            c.args(&cmd[1..]);
            c
        }
    };
    let out = command
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    check(&out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check(out: &std::process::Output) -> Result<()> {
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
