//! The self-contained demo: a sandbox namespace plays the host; netpath builds two networks
//! with containers inside it; real HTTP and ping traffic flows between the containers, and
//! netpath's isolation program drops what crosses networks. Everything is removed at the end.
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    thread::sleep,
    time::Duration,
};

use anyhow::{Result, bail};
use netpath_tests::Sandbox;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn step(what: &str) {
    println!("\n==> {what}");
}

fn show(out: &str) {
    print!("{out}");
}

pub fn run(bin: &Path) -> Result<()> {
    let sb = Sandbox::new(bin)?;
    let (web, client, other) = (sb.name("web"), sb.name("client"), sb.name("other"));
    println!(
        "sandbox host namespace: {} (netpath --netns {})",
        sb.host, sb.host
    );

    step("netpath up");
    show(&sb.ok(&["up"]));
    step("netpath run: two containers on the default network");
    show(&sb.ok(&["run", &web]));
    show(&sb.ok(&["run", &client]));

    step(&format!(
        "HTTP server in {web} (netpath exec), request from {client}"
    ));
    let _server = Server(
        Command::new(bin)
            .args(["--netns", &sb.host, "exec", &web, "--"])
            .args(["python3", "-m", "http.server", "80", "--bind", "172.17.0.2"])
            .current_dir("/usr/share/doc")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let mut fetched = None;
    for _ in 0..50 {
        let out = sb.exec(
            &client,
            &[
                "curl",
                "-sS",
                "-m",
                "2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{size_download} bytes in %{time_total}s",
                "http://172.17.0.2/",
            ],
        );
        if out.status.success() {
            fetched = Some(String::from_utf8_lossy(&out.stdout).into_owned());
            break;
        }
        sleep(Duration::from_millis(100));
    }
    match fetched {
        Some(line) => println!("curl http://172.17.0.2/ from {client}: HTTP {line}"),
        None => bail!("the HTTP server in {web} never answered"),
    }

    step("a second network: its container cannot reach the default network");
    show(&sb.ok(&["network", "create", "other"]));
    show(&sb.ok(&["run", &other, "--network", "other"]));
    let crossed = sb.ping(&other, "172.17.0.2");
    println!(
        "ping 172.17.0.2 from {other}: {}",
        if crossed {
            "answered (isolation broken!)"
        } else {
            "no answer (isolated)"
        }
    );
    println!(
        "ping 172.17.0.3 from {web}: {}",
        if sb.ping(&web, "172.17.0.3") {
            "answered"
        } else {
            "no answer"
        }
    );
    if crossed {
        bail!("network isolation failed");
    }

    step("status");
    show(&sb.ok(&["network", "ls"]));
    show(&sb.ok(&["ps"]));
    let pins = format!("/sys/fs/bpf/netpath/{}", sb.host);
    for map in ["NP_BRIDGES", "NP_COUNTERS"] {
        println!("$ bpftool map dump pinned {pins}/{map}");
        let out = Command::new("bpftool")
            .args(["map", "dump", "pinned", &format!("{pins}/{map}")])
            .output()?;
        show(&String::from_utf8_lossy(&out.stdout));
    }

    step("netpath down");
    show(&sb.ok(&["down"]));
    Ok(())
}
