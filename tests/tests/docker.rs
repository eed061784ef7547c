//! A real Docker drives `netpath docker-plugin`: Debian's dockerd (20.10) run through
//! `nsenter --net` in the sandbox's host namespace (the field guide's recipe: private data
//! and exec roots and socket, iptables and the bridge off, ulimits the sandbox allows), an
//! image imported from a busybox root filesystem, and the plugin under a name unique to the
//! test (plugin sockets are shared by every dockerd on the machine). Containers reach and are
//! reached only through the sandbox's namespaces.
use std::{
    fs,
    io::Write as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use netpath_tests::{
    CLIENT_ADDR, EXT_ADDR, Sandbox,
    helpers::{busybox_rootfs, cgi_peer, curl},
    netpath_bin, sandbox, wait_until,
};

const IMAGE: &str = "netpath-busybox";
/// `docker run` of a web server on network web publishing 8088 (and `extra` ports).
fn run_web<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "web",
        "-p",
        "8088:80",
    ];
    args.extend_from_slice(extra);
    args.extend([IMAGE, "httpd", "-f", "-p", "80", "-h", "/www"]);
    args
}

/// A private dockerd in the sandbox's host namespace, with the netpath plugin beside it;
/// everything goes on drop.
struct Docker {
    dir: PathBuf,
    host: String,
    daemon: Child,
    plugin: Option<Child>,
    /// The driver's name: unique to the test.
    driver: String,
}

impl Docker {
    fn new(sb: &Sandbox) -> Docker {
        assert!(
            Command::new("dockerd").arg("--version").output().is_ok(),
            "dockerd is missing: cargo xtask setup installs docker.io"
        );
        // Short: containerd's sockets live under the exec root.
        let dir = PathBuf::from("/tmp").join(sb.name("dk"));
        let rootfs = dir.join("rootfs");
        busybox_rootfs(&rootfs, &["sh", "httpd", "nc", "echo", "wget", "cat"]);
        let d = dir.display();
        let log = fs::File::create(dir.join("dockerd.log")).unwrap();
        let daemon = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", sb.host))
            .arg("dockerd")
            .args(["--data-root", &format!("{d}/root")])
            .args(["--exec-root", &format!("{d}/exec")])
            .args(["--pidfile", &format!("{d}/pid")])
            .args(["-H", &format!("unix://{d}/sock")])
            .args(["--iptables=false", "--ip-forward=false", "--bridge=none"])
            .args(["--default-ulimit", "nofile=1024:1024"])
            .args(["--default-ulimit", "nproc=4096:4096"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting dockerd");
        let mut docker = Docker {
            dir,
            host: sb.host.clone(),
            daemon,
            plugin: None,
            driver: sb.name("plugin"),
        };
        let up = wait_until(120, Duration::from_millis(500), || {
            docker.run(&["version"]).status.success()
        });
        assert!(
            up,
            "dockerd did not start: {}",
            fs::read_to_string(docker.dir.join("dockerd.log")).unwrap_or_default()
        );
        let mut import = docker
            .command(&["import", "-", IMAGE])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let tar = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .args(["-c", "."])
            .output()
            .unwrap();
        import.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
        assert!(import.wait().unwrap().success(), "docker import failed");
        docker.start_plugin();
        docker
    }

    /// `netpath --netns HOST docker-plugin --name DRIVER`, waited for until it serves.
    fn start_plugin(&mut self) {
        let child = Command::new(netpath_bin())
            .args([
                "--netns",
                &self.host,
                "docker-plugin",
                "--name",
                &self.driver,
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("starting the plugin");
        self.plugin = Some(child);
        let sock = self.socket();
        assert!(
            wait_until(100, Duration::from_millis(100), || sock.exists()),
            "the plugin did not create {}",
            sock.display()
        );
    }

    fn kill_plugin(&mut self) {
        if let Some(mut child) = self.plugin.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn socket(&self) -> PathBuf {
        Path::new("/run/docker/plugins").join(format!("{}.sock", self.driver))
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.arg("60")
            .arg("nsenter")
            .arg(format!("--net=/run/netns/{}", self.host))
            .arg("docker")
            .args(["-H", &format!("unix://{}/sock", self.dir.display())])
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running docker")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "docker {args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `docker network create -d DRIVER --subnet SUBNET NAME`.
    fn network(&self, name: &str, subnet: &str) {
        self.ok(&[
            "network",
            "create",
            "-d",
            &self.driver,
            "--subnet",
            subnet,
            name,
        ]);
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let ids = self.run(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.run(&["rm", "-f", id]);
        }
        let _ = self.run(&["network", "prune", "-f"]);
        self.kill_plugin();
        // SAFETY: kill has no memory preconditions; the pid is our child's (nsenter execs
        // dockerd).
        unsafe {
            libc::kill(self.daemon.id() as libc::pid_t, libc::SIGTERM);
        }
        let stopped = wait_until(100, Duration::from_millis(100), || {
            matches!(self.daemon.try_wait(), Ok(Some(_)))
        });
        if !stopped {
            let _ = self.daemon.kill();
            let _ = self.daemon.wait();
        }
        let _ = fs::remove_file(self.socket());
        let _ = Command::new("umount")
            .arg("-R")
            .arg(self.dir.join("exec"))
            .output();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// No docker-proxy runs in the sandbox's host namespace.
fn docker_proxies(host: &str) -> usize {
    let Ok(ns) = fs::metadata(format!("/run/netns/{host}")) else {
        return 0;
    };
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|p| {
            fs::read_to_string(p.path().join("comm")).is_ok_and(|c| c.trim() == "docker-proxy")
        })
        .filter(|p| fs::metadata(p.path().join("ns/net")).is_ok_and(|m| m.ino() == ns.ino()))
        .count()
}

/// netpath's veths in the sandbox's host namespace.
fn veths(sb: &Sandbox) -> Vec<String> {
    sb.ip_json(&["link"])
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["ifname"].as_str())
        .filter(|n| n.starts_with("np") && !n.starts_with("np-"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn docker_run_publishes_through_netpath_and_network_rm_leaves_nothing() {
    let sb = sandbox();
    let cl = sb.client().expect("client namespace");
    let mut dk = Docker::new(&sb);
    dk.network("web", "10.89.40.0/24");
    dk.ok(&run_web(&["-p", "127.0.0.1:9000:9000/udp"]));
    // netpath knows the endpoint like its own containers, and publishes what -p asked.
    let ps = sb.ok_json(&["ps", "--json"]);
    let ps = ps.as_array().unwrap();
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert_eq!(ps[0]["mode"]["mode"], "docker");
    assert_eq!(
        sb.ok(&["publish"]).trim(),
        "8088:10.89.40.2:80/tcp\n127.0.0.1:9000:10.89.40.2:9000/udp"
    );
    let url = |host: &str| format!("http://{host}:8088/cgi-bin/peer");
    let reached = |ns: &str, host: &str| {
        let mut last = Err(String::new());
        // httpd may take a moment to listen after `docker run` returns.
        wait_until(50, Duration::from_millis(100), || {
            last = curl(&sb, ns, &url(host));
            last.is_ok()
        });
        last
    };

    // From a client: the container sees the client's own address.
    let (body, _) = reached(&cl.netns, EXT_ADDR).unwrap();
    assert_eq!(cgi_peer(&body), CLIENT_ADDR);
    // From the host through 127.0.0.1 and its own address.
    for addr in ["127.0.0.1", EXT_ADDR] {
        let (body, _) = reached(&sb.host, addr).unwrap();
        assert!(!cgi_peer(&body).is_empty(), "{addr}: {body}");
    }
    // Hairpin: the container reaches itself through the host's published port.
    let hairpin = dk.ok(&[
        "exec",
        "web",
        "sh",
        "-c",
        "printf 'GET /cgi-bin/peer HTTP/1.0\\r\\n\\r\\n' | nc 203.0.113.1 8088",
    ]);
    assert!(hairpin.contains("10.89.40."), "{hairpin}");
    // Neither a proxy nor a rule: dockerd runs with iptables off.
    assert_eq!(docker_proxies(&sb.host), 0);

    // Stopped and started: reached again at once, published again.
    dk.ok(&["stop", "-t", "1", "web"]);
    assert_eq!(sb.ok(&["publish"]).trim(), "");
    assert!(curl(&sb, &cl.netns, &url(EXT_ADDR)).is_err());
    dk.ok(&["start", "web"]);
    let (body, _) = reached(&cl.netns, EXT_ADDR).unwrap();
    assert_eq!(cgi_peer(&body), CLIENT_ADDR);

    // The plugin stopped: the pinned datapath keeps serving; restarted, it carries on.
    dk.kill_plugin();
    assert!(!dk.socket().exists() || std::os::unix::net::UnixStream::connect(dk.socket()).is_err());
    let (body, _) = reached(&cl.netns, EXT_ADDR).unwrap();
    assert_eq!(cgi_peer(&body), CLIENT_ADDR);
    dk.start_plugin();

    dk.ok(&["rm", "-f", "web"]);
    assert_eq!(sb.ok_json(&["ps", "--json"]), serde_json::json!([]));
    assert_eq!(sb.ok(&["publish"]).trim(), "");
    assert!(veths(&sb).is_empty(), "{:?}", veths(&sb));
    dk.ok(&["network", "rm", "web"]);
    // Nothing of netpath is left: no state, no bridge, no pins.
    assert!(!Path::new("/run/netpath").join(&sb.host).exists());
    assert!(!Path::new("/sys/fs/bpf/netpath").join(&sb.host).exists());
    let links = sb.ip_json(&["link"]);
    assert_eq!(links.as_array().unwrap().len(), 2, "{links}");
}

#[test]
fn docker_run_refused_by_netpath_leaves_nothing_half_built() {
    let sb = sandbox();
    let _cl = sb.client().expect("client namespace");
    let dk = Docker::new(&sb);
    dk.network("web", "10.89.41.0/24");
    // Another owner holds host port 8088 already.
    sb.ok(&["publish", "8088:10.89.41.200:80"]);
    let err = dk.fails(&run_web(&[]));
    assert!(err.contains("8088"), "{err}");
    assert_eq!(sb.ok_json(&["ps", "--json"]), serde_json::json!([]));
    assert_eq!(sb.ok(&["publish"]).trim(), "8088:10.89.41.200:80/tcp");
    assert!(veths(&sb).is_empty(), "{:?}", veths(&sb));
    // Option values netpath does not have are refused at create time, and nothing is
    // created.
    let err = dk.fails(&[
        "network",
        "create",
        "-d",
        &dk.driver,
        "-o",
        "masquerade=maybe",
        "nomasq",
    ]);
    assert!(err.contains("masquerade"), "{err}");
    let networks = || sb.ok_json(&["network", "ls", "--json"]);
    assert_eq!(networks().as_array().unwrap().len(), 1);
    // Docker's own option turns masquerade off for the network.
    dk.ok(&[
        "network",
        "create",
        "-d",
        &dk.driver,
        "--subnet",
        "10.89.42.0/24",
        "-o",
        "com.docker.network.bridge.enable_ip_masquerade=false",
        "nomasq",
    ]);
    let masquerade: Vec<bool> = networks()
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["masquerade"].as_bool().unwrap())
        .collect();
    assert_eq!(masquerade.len(), 2);
    assert_eq!(
        masquerade.iter().filter(|m| !**m).count(),
        1,
        "{masquerade:?}"
    );
}
