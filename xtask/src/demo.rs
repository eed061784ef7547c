//! The self-contained demo. A sandbox namespace plays the host, another one a client on the
//! outside (203.0.113.2, the host being 203.0.113.1). netpath publishes a container's port,
//! masquerades the containers' own connections, and isolates networks; real HTTP requests
//! show each, then everything is removed.
use std::{path::Path, process::Command, thread::sleep, time::Duration};

use anyhow::{Result, bail};
use netpath_tests::{CLIENT_ADDR, EXT_ADDR, Proc, Sandbox};

/// A small HTTP server that answers every GET with the address the request came from. It
/// skips HTTPServer's reverse DNS lookup of its own address (`server_bind`), which would
/// query a resolver through the sandbox.
const SERVER: &str = r#"
import http.server, socketserver, sys
class S(http.server.HTTPServer):
    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{sys.argv[1]} saw the request come from {self.client_address[0]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
S((sys.argv[2], int(sys.argv[3])), H).serve_forever()
"#;

fn step(what: &str) {
    println!("\n==> {what}");
}

fn show(out: &str) {
    print!("{out}");
}

/// Starts the server in `netns` and waits until it answers `url` from there.
fn server(sb: &Sandbox, netns: &str, name: &str, addr: &str, port: &str) -> Result<Proc> {
    let proc = sb.spawn(netns, &["python3", "-c", SERVER, name, addr, port])?;
    let url = format!("http://{addr}:{port}/");
    let mut last = String::new();
    for _ in 0..50 {
        let out = sb.exec(netns, &["curl", "-sS", "-m", "1", "--noproxy", "*", &url]);
        if out.status.success() {
            return Ok(proc);
        }
        last = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        sleep(Duration::from_millis(100));
    }
    bail!("the server in {netns} never answered on {url}: {last}")
}

/// `curl URL` from `netns`, printed as the command and its answer.
fn fetch(sb: &Sandbox, netns: &str, who: &str, url: &str) -> Result<()> {
    let out = sb.exec(netns, &["curl", "-sS", "-m", "3", "--noproxy", "*", url]);
    let body = String::from_utf8_lossy(&out.stdout);
    println!("{who}$ curl {url}\n    {}", body.trim());
    if !out.status.success() {
        bail!(
            "curl {url} from {who} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub fn run(bin: &Path) -> Result<()> {
    let sb = Sandbox::new(bin)?;
    let client = sb.client()?;
    let (web, app, other) = (sb.name("web"), sb.name("app"), sb.name("other"));
    println!(
        "sandbox: host namespace {} (ext0 {EXT_ADDR}), client namespace {} ({CLIENT_ADDR})",
        sb.host, client.netns
    );

    step("netpath up -d --publish 8088:172.17.0.2:80, and two containers");
    show(&sb.ok(&["up", "-d", "--publish", "8088:172.17.0.2:80"]));
    show(&sb.ok(&["run", &web]));
    show(&sb.ok(&["run", &app]));
    let _web = server(&sb, &web, "web", "172.17.0.2", "80")?;

    step("the published port, from the client outside: DNAT keeps the client's address");
    fetch(
        &sb,
        &client.netns,
        "client",
        &format!("http://{EXT_ADDR}:8088/"),
    )?;
    step("from the host itself, through 127.0.0.1 and its own address (socket-level translation)");
    fetch(&sb, &sb.host, "host", "http://127.0.0.1:8088/")?;
    fetch(&sb, &sb.host, "host", &format!("http://{EXT_ADDR}:8088/"))?;
    step("from another container through the host's address (hairpin, seen from the gateway)");
    fetch(&sb, &app, "app", &format!("http://{EXT_ADDR}:8088/"))?;

    step("masquerade: a container reaches a server outside, which sees the host's address");
    let _outside = server(
        &sb,
        &client.netns,
        "the outside server",
        CLIENT_ADDR,
        "8000",
    )?;
    fetch(&sb, &app, "app", &format!("http://{CLIENT_ADDR}:8000/"))?;

    step("a second network: its container cannot reach the default network");
    show(&sb.ok(&["network", "create", "other"]));
    show(&sb.ok(&["run", &other, "--network", "other"]));
    let crossed = sb.ping(&other, "172.17.0.2");
    println!(
        "other$ ping 172.17.0.2: {}",
        if crossed {
            "answered (isolation broken!)"
        } else {
            "no answer (isolated by np_isolate)"
        }
    );
    if crossed {
        bail!("network isolation failed");
    }

    step("status");
    show(&sb.ok(&["network", "ls"]));
    show(&sb.ok(&["ps"]));
    let map = format!("/sys/fs/bpf/netpath/{}/NP_PUBLISH", sb.host);
    println!("$ bpftool map dump pinned {map}");
    let out = Command::new("bpftool")
        .args(["map", "dump", "pinned", &map])
        .output()?;
    show(&String::from_utf8_lossy(&out.stdout));

    step("netpath down");
    show(&sb.ok(&["down"]));
    Ok(())
}
