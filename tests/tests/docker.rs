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
    CLIENT_ADDR, EXT_ADDR, SERVER_ADDR, Sandbox,
    helpers::{
        self, busybox_rootfs, cgi_peer, curl, ip_forward, too_many_local_addresses, up_marks,
    },
    netpath_bin, sandbox,
    scripts::{SERVER, client, connected, roundtrip, server},
    wait_until,
};

const IMAGE: &str = "netpath-busybox";
/// `docker run -d` of container `name` on `network` publishing `ports` (stopped within 1 s);
/// the image and its command follow.
fn run<'a>(name: &'a str, network: &'a str, ports: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "-d",
        "--stop-timeout",
        "1",
        "--name",
        name,
        "--network",
        network,
    ];
    for port in ports {
        args.extend(["-p", port]);
    }
    args
}

/// [`run`] of busybox httpd on port 80, serving /www.
fn run_httpd<'a>(name: &'a str, network: &'a str, ports: &[&'a str]) -> Vec<&'a str> {
    let mut args = run(name, network, ports);
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
        // With the host's /usr mounted read-only (`PY`), containers run python3 servers.
        for lib in ["lib", "lib64"] {
            std::os::unix::fs::symlink(format!("usr/{lib}"), rootfs.join(lib)).unwrap();
        }
        let daemon = start_dockerd(&dir, &sb.host);
        let mut docker = Docker {
            dir,
            host: sb.host.clone(),
            daemon,
            plugin: None,
            driver: sb.name("plugin"),
        };
        docker.wait_for_daemon();
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

    fn wait_for_daemon(&self) {
        let up = wait_until(240, Duration::from_millis(500), || {
            self.run(&["version"]).status.success()
        });
        assert!(
            up,
            "dockerd did not start: {}",
            fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
        );
    }

    /// Stops dockerd (SIGTERM, as a service stop; SIGKILL with `crash`) and starts it again.
    fn restart_daemon(&mut self, crash: bool) {
        let containerd_pid = self.dir.join("exec/containerd/containerd.pid");
        let containerd = fs::read_to_string(&containerd_pid)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        let signal = if crash { libc::SIGKILL } else { libc::SIGTERM };
        // SAFETY: kill has no memory preconditions; the pid is our child's (nsenter execs
        // dockerd).
        unsafe {
            libc::kill(self.daemon.id() as libc::pid_t, signal);
        }
        let _ = self.daemon.wait();
        // Its containerd exits with it. Nothing here reaps an orphan, and dockerd takes a
        // zombie named in the pid file for a containerd still running: the file goes.
        if let Some(pid) = containerd {
            let gone = wait_until(300, Duration::from_millis(100), || !alive(pid));
            assert!(gone, "containerd {pid} outlived dockerd");
            let _ = fs::remove_file(&containerd_pid);
        }
        // A crash leaves dockerd's pid file behind.
        let _ = fs::remove_file(self.dir.join("pid"));
        self.daemon = start_dockerd(&self.dir, &self.host);
        self.wait_for_daemon();
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
        helpers::stop_dockerd(&mut self.daemon, 100);
        let _ = fs::remove_file(self.socket());
        // Containers a dockerd that did not come back could not remove: their shims (named
        // after our directory) and the containers under them.
        let dir = self.dir.display().to_string();
        for (pid, _, cmdline) in all_processes() {
            if cmdline.starts_with("/usr/bin/containerd-shim") && cmdline.contains(&dir) {
                let children = format!("/proc/{pid}/task/{pid}/children");
                let children = fs::read_to_string(children).unwrap_or_default();
                for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                    // SAFETY: kill has no memory preconditions; a container of this test.
                    unsafe { libc::kill(child, libc::SIGKILL) };
                }
                // SAFETY: as above; the shim of one of this test's containers.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
        let ours: Vec<&str> = mounts
            .lines()
            .filter_map(|m| m.split(' ').nth(1))
            .filter(|m| m.starts_with(&dir))
            .collect();
        for mount in ours.iter().rev() {
            let _ = Command::new("umount").args(["-l", mount]).output();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// dockerd in `host` with private roots under `dir`, logging to `dir`/dockerd.log.
fn start_dockerd(dir: &Path, host: &str) -> Child {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("dockerd.log"))
        .unwrap();
    helpers::dockerd(
        host,
        dir,
        &["--iptables=false", "--ip-forward=false", "--bridge=none"],
    )
    .stdout(log.try_clone().unwrap())
    .stderr(log)
    .spawn()
    .expect("starting dockerd")
}

/// Every process: (pid, comm, command line).
fn all_processes() -> Vec<(i32, String, String)> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| {
            let pid = p.file_name().to_str()?.parse().ok()?;
            let comm = fs::read_to_string(p.path().join("comm")).ok()?;
            let cmdline = fs::read(p.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            Some((pid, comm.trim().to_owned(), cmdline))
        })
        .collect()
}

/// The processes in the sandbox's host namespace: (comm, command line).
fn processes(host: &str) -> Vec<(String, String)> {
    let Ok(ns) = fs::metadata(format!("/run/netns/{host}")) else {
        return vec![];
    };
    all_processes()
        .into_iter()
        .filter(|(pid, _, _)| {
            fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == ns.ino())
        })
        .map(|(_, comm, cmdline)| (comm, cmdline))
        .collect()
}

/// Whether `pid` runs (a zombie does not).
fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// No docker-proxy runs in the sandbox's host namespace.
fn docker_proxies(host: &str) -> usize {
    processes(host)
        .iter()
        .filter(|(comm, _)| comm == "docker-proxy")
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

/// `docker run` arguments of a container `name` on `network` that runs `sh` (a `sh -c` line
/// in which `$0` is [`SERVER`], the tests' Python servers) with the host's /usr mounted
/// read-only for python3, publishing `ports`.
fn run_py<'a>(name: &'a str, network: &'a str, ports: &[&'a str], sh: &'a str) -> Vec<&'a str> {
    let mut args = run(name, network, ports);
    args.extend(["-v", "/usr:/usr:ro", IMAGE, "sh", "-c", sh, SERVER]);
    args
}

/// The answer (headers and body) to an HTTP/1.0 GET of `path` that `nc` sends from inside
/// container `from` to `addr` ("IP PORT"), or "" (2 s at most).
fn nc_get(dk: &Docker, from: &str, addr: &str, path: &str) -> String {
    let out = dk.run(&[
        "exec",
        from,
        "sh",
        "-c",
        &format!("printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {addr}"),
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The answers of [`client`] `udp` from `ns` to `host`, a line per port: "PORT FROM REPLY"
/// or "PORT timeout".
fn udp_answers(sb: &Sandbox, ns: &str, host: &str, ports: &[&str]) -> Vec<String> {
    let mut args = vec!["udp", host];
    args.extend_from_slice(ports);
    client(sb, ns, 20, &args)
}

#[test]
fn docker_run_publishes_through_netpath_and_network_rm_leaves_nothing() {
    let sb = sandbox();
    let cl = sb.outside().expect("client namespace");
    let mut dk = Docker::new(&sb);
    dk.network("web", "10.89.40.0/24");
    dk.ok(&run_httpd("web", "web", &["8088:80"]));
    // UDP (to every address, and to 127.0.0.1 only) and a TCP echo server, in Python.
    dk.ok(&run_py(
        "py",
        "web",
        &["9000:9000/udp", "127.0.0.1:9001:9001/udp", "7000:7000"],
        "python3 -c \"$0\" udp 0.0.0.0 9000 9001 & exec python3 -c \"$0\" echo 7000",
    ));
    // netpath knows the endpoints like its own containers, and publishes what -p asked.
    let ps = sb.ok_json(&["ps", "--json"]);
    let ps = ps.as_array().unwrap();
    assert_eq!(ps.len(), 2, "{ps:?}");
    assert!(ps.iter().all(|c| c["mode"]["mode"] == "docker"), "{ps:?}");
    assert_eq!(
        sb.ok(&["publish"]).trim(),
        "7000:10.89.40.3:7000/tcp\n8088:10.89.40.2:80/tcp\n9000:10.89.40.3:9000/udp\n\
         127.0.0.1:9001:10.89.40.3:9001/udp"
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
    let hairpin = nc_get(&dk, "web", "203.0.113.1 8088", "/cgi-bin/peer");
    assert!(hairpin.contains("10.89.40."), "{hairpin}");
    // Neither a proxy nor a rule: dockerd runs with iptables off.
    assert_eq!(docker_proxies(&sb.host), 0);

    // UDP from a client, answered with its own address; 9001 is bound to 127.0.0.1 only,
    // and answers there from the host.
    let mut udp = vec![];
    wait_until(10, Duration::from_millis(500), || {
        udp = udp_answers(&sb, &cl.netns, EXT_ADDR, &["9000", "9001"]);
        udp[0] != "9000 timeout"
    });
    assert!(
        udp[0].starts_with(&format!("9000 {EXT_ADDR}:9000 {CLIENT_ADDR}:"))
            && udp[0].ends_with(" 9000 hello-9000"),
        "{udp:?}"
    );
    assert_eq!(udp[1], "9001 timeout");
    let local = udp_answers(&sb, &sb.host, "127.0.0.1", &["9001"]);
    assert!(local[0].ends_with(" 9001 hello-9001"), "{local:?}");

    // Outbound: the container reaches a server outside, which sees the host's address.
    let _outside = server(&sb, &cl.netns, &["http", "8080"]);
    let seen = nc_get(&dk, "web", &format!("{SERVER_ADDR} 8080"), "/");
    assert!(
        seen.lines()
            .last()
            .unwrap_or_default()
            .starts_with(&format!("{EXT_ADDR}:")),
        "{seen}"
    );

    // docker inspect shows the bindings that were asked for; `docker port` and `docker ps`
    // read the driver's own report, which dockerd drops for remote drivers (README).
    let asked = dk.ok(&["inspect", "-f", "{{json .HostConfig.PortBindings}}", "web"]);
    assert_eq!(
        asked.trim(),
        r#"{"80/tcp":[{"HostIp":"","HostPort":"8088"}]}"#
    );
    assert_eq!(dk.ok(&["port", "web"]).trim(), "");
    let ports = sb.ok_json(&["ps", "--json"]);
    assert!(ports.to_string().contains("8088"), "{ports}");

    // Stopped and started: reached again at once, published again.
    dk.ok(&["stop", "-t", "1", "web"]);
    assert!(!sb.ok(&["publish"]).contains("8088"));
    assert!(curl(&sb, &cl.netns, &url(EXT_ADDR)).is_err());
    dk.ok(&["start", "web"]);
    let (body, _) = reached(&cl.netns, EXT_ADDR).unwrap();
    assert_eq!(cgi_peer(&body), CLIENT_ADDR);

    // The plugin killed with a connection open through a published port: the pinned
    // datapath keeps serving it and new ones; restarted, the plugin carries on.
    let (mut held, _) = connected(&sb, &cl.netns, EXT_ADDR, 7000);
    let echoed = |answer: String| answer.starts_with(&format!("{CLIENT_ADDR}:"));
    assert!(echoed(roundtrip(&mut held, "before")));
    dk.kill_plugin();
    assert!(!dk.socket().exists() || std::os::unix::net::UnixStream::connect(dk.socket()).is_err());
    assert!(echoed(roundtrip(&mut held, "while-stopped")));
    let (body, _) = reached(&cl.netns, EXT_ADDR).unwrap();
    assert_eq!(cgi_peer(&body), CLIENT_ADDR);
    dk.start_plugin();
    let answer = roundtrip(&mut held, "after");
    assert!(
        echoed(answer.clone()) && answer.ends_with(" after"),
        "{answer}"
    );
    drop(held);

    dk.ok(&["rm", "-f", "web", "py"]);
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

/// Container `name`'s address on Docker network `network` ("" if it has none).
fn address(dk: &Docker, name: &str, network: &str) -> String {
    let f = format!(
        "{{{{with index .NetworkSettings.Networks \"{network}\"}}}}{{{{.IPAddress}}}}{{{{end}}}}"
    );
    dk.ok(&["inspect", "-f", &f, name]).trim().to_owned()
}

/// From fixed source ports, as a client that retries would: a UDP query to published port
/// 9000 (source 40000) and a TCP line to published 8088 (source 40001), until both are
/// answered (5 s at most, while the servers start). Answered only by the container that
/// publishes them now: a stale flow would keep them going to its old address.
fn fixed_source_answers(sb: &Sandbox, ns: &str) {
    let mut got = (String::new(), String::new());
    let answered = wait_until(10, Duration::from_millis(500), || {
        let udp = client(sb, ns, 20, &["query", EXT_ADDR, "9000", "40000"]);
        let tcp = client(sb, ns, 20, &["ask", EXT_ADDR, "8088", "40001"]);
        got = (udp.join(" "), tcp.join(" "));
        got.0.ends_with(" 9000 query") && got.1.starts_with("HTTP/")
    });
    assert!(answered, "{got:?}");
}

#[test]
fn docker_networks_are_isolated_connect_adds_a_nic_and_restarts_leave_no_stale_flow() {
    let sb = sandbox();
    let cl = sb.client().expect("client namespace");
    let dk = Docker::new(&sb);
    dk.network("web", "10.89.42.0/24");
    // "back" sorts before "web": connected to it, the container's external connectivity
    // (its published ports) moves there, as Docker moves it between networks.
    dk.network("back", "10.89.43.0/24");
    dk.ok(&run_py(
        "app",
        "web",
        &["8088:80", "9000:9000/udp"],
        "httpd -p 80 -h /www; exec python3 -c \"$0\" udp 0.0.0.0 9000",
    ));
    dk.ok(&run_httpd("b1", "back", &[]));
    let app = address(&dk, "app", "web");
    let b1 = address(&dk, "b1", "back");
    let get = |from: &str, addr: &str| nc_get(&dk, from, &format!("{addr} 80"), "/cgi-bin/peer");
    assert!(
        wait_until(50, Duration::from_millis(100), || get("app", &app)
            .contains("200 OK")),
        "app does not serve"
    );
    assert!(get("b1", &b1).contains("200 OK"));
    fixed_source_answers(&sb, &cl.netns);

    // Isolated: neither network reaches the other.
    assert_eq!(get("b1", &app), "");
    assert_eq!(get("app", &b1), "");

    // `docker network connect`: a second endpoint, a second NIC on which b1 reaches app;
    // the published ports follow the external connectivity to it.
    dk.ok(&["network", "connect", "back", "app"]);
    let app_back = address(&dk, "app", "back");
    assert!(app_back.starts_with("10.89.43."), "{app_back}");
    assert_eq!(sb.ok_json(&["ps", "--json"]).as_array().unwrap().len(), 3);
    assert_eq!(veths(&sb).len(), 3, "{:?}", veths(&sb));
    let ifaces = dk.ok(&["exec", "app", "cat", "/proc/net/dev"]);
    assert!(ifaces.contains("eth1:"), "{ifaces}");
    let seen = get("b1", &app_back);
    assert!(seen.contains(&b1), "{seen}");
    assert!(
        sb.ok(&["publish"])
            .contains(&format!("8088:{app_back}:80/tcp"))
    );
    let (body, _) = curl(
        &sb,
        &cl.netns,
        &format!("http://{EXT_ADDR}:8088/cgi-bin/peer"),
    )
    .unwrap();
    assert_eq!(cgi_peer(&body), CLIENT_ADDR);
    // `docker network disconnect`: the NIC, its veth and endpoint go; the ports come back.
    dk.ok(&["network", "disconnect", "back", "app"]);
    assert_eq!(sb.ok_json(&["ps", "--json"]).as_array().unwrap().len(), 2);
    assert_eq!(veths(&sb).len(), 2, "{:?}", veths(&sb));
    assert!(
        !dk.ok(&["exec", "app", "cat", "/proc/net/dev"])
            .contains("eth1:")
    );
    assert_eq!(get("b1", &app_back), "");
    assert!(sb.ok(&["publish"]).contains(&format!("8088:{app}:80/tcp")));
    fixed_source_answers(&sb, &cl.netns);

    // Stopped, its address taken by another container, started again on a new address:
    // the same client flows reach it at once.
    dk.ok(&["stop", "-t", "1", "app"]);
    // Serving neither 80 nor 9000: a flow led to it would go unanswered.
    dk.ok(&[
        run("filler", "web", &[]),
        vec![IMAGE, "httpd", "-f", "-p", "81"],
    ]
    .concat());
    assert_eq!(address(&dk, "filler", "web"), app);
    dk.ok(&["start", "app"]);
    let moved = address(&dk, "app", "web");
    assert_ne!(moved, app);
    assert!(
        sb.ok(&["publish"])
            .contains(&format!("8088:{moved}:80/tcp"))
    );
    fixed_source_answers(&sb, &cl.netns);
    // `docker restart` as well.
    dk.ok(&["restart", "-t", "1", "app"]);
    fixed_source_answers(&sb, &cl.netns);
}

#[test]
fn docker_run_refused_by_netpath_leaves_nothing_half_built() {
    let sb = sandbox();
    let _cl = sb.client().expect("client namespace");
    let dk = Docker::new(&sb);
    dk.network("web", "10.89.41.0/24");
    // Another owner holds host port 8088 already.
    sb.ok(&["publish", "8088:10.89.41.200:80"]);
    let err = dk.fails(&run_httpd("web", "web", &["8088:80"]));
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

#[test]
fn docker_port_range_costs_no_process_and_dockerd_restarts_find_their_networks() {
    let sb = sandbox();
    let cl = sb.client().expect("client namespace");
    let mut dk = Docker::new(&sb);
    dk.network("web", "10.89.44.0/24");
    let nothing_left = || {
        assert_eq!(sb.ok_json(&["ps", "--json"]), serde_json::json!([]));
        assert_eq!(sb.ok(&["publish"]).trim(), "");
        assert!(veths(&sb).is_empty(), "{:?}", veths(&sb));
    };
    // Ports Docker's own driver would pick: a remote driver cannot tell Docker which.
    for (ports, named) in [("80", "-p 80:"), ("8000-8010:80", "-p 8000-8010:80:")] {
        let err = dk.fails(&[
            "run",
            "-d",
            "--network",
            "web",
            "-p",
            ports,
            IMAGE,
            "httpd",
            "-f",
        ]);
        assert!(
            err.contains(named) && err.contains("cannot learn it from a remote driver"),
            "{err}"
        );
        nothing_left();
    }
    // IPv6: one line naming the problem, and no network on either side.
    let err = dk.fails(&[
        "network",
        "create",
        "-d",
        &dk.driver,
        "--ipv6",
        "--subnet",
        "10.89.45.0/24",
        "--subnet",
        "fd00:89:45::/64",
        "v6",
    ]);
    assert!(
        err.contains("IPv4 only") && err.trim().lines().count() == 1,
        "{err}"
    );
    assert!(!dk.ok(&["network", "ls"]).contains(" v6 "));
    assert_eq!(
        sb.ok_json(&["network", "ls", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A 1,001-port range costs no process: a container with it adds exactly what one
    // without ports adds (its containerd shim), and no docker-proxy.
    let before = processes(&sb.host).len();
    dk.ok(&run_httpd("idle", "web", &[]));
    let one = processes(&sb.host).len() - before;
    let before = processes(&sb.host).len();
    let range_run = |name| {
        let ports = ["20000-21000:20000-21000"];
        let sh = "httpd -p 20000 -h /www; exec httpd -f -p 21000 -h /www";
        [run(name, "web", &ports), vec![IMAGE, "sh", "-c", sh]].concat()
    };
    dk.ok(&range_run("range"));
    assert_eq!(processes(&sb.host).len() - before, one);
    assert_eq!(docker_proxies(&sb.host), 0);
    let range = address(&dk, "range", "web");
    assert_eq!(
        sb.ok(&["publish"]).trim(),
        format!("20000-21000:{range}:20000-21000/tcp")
    );
    let ends_answer = || {
        ["20000", "21000"].iter().all(|port| {
            let url = format!("http://{EXT_ADDR}:{port}/cgi-bin/peer");
            wait_until(50, Duration::from_millis(100), || {
                curl(&sb, &cl.netns, &url).is_ok_and(|(body, _)| cgi_peer(&body) == CLIENT_ADDR)
            })
        })
    };
    assert!(ends_answer());

    // dockerd stopped as a service is (it stops its containers through the plugin) and
    // started: its networks are there and containers start on them.
    dk.restart_daemon(false);
    nothing_left();
    assert!(dk.ok(&["network", "ls"]).contains(" web "));
    dk.ok(&["start", "idle"]);
    let idle = address(&dk, "idle", "web");
    dk.ok(&["start", "range"]);
    assert!(ends_answer());
    dk.ok(&run_httpd("spare", "web", &[]));

    // dockerd killed: started again, it kills its containers and releases their addresses
    // but never tells the plugin. Their stale endpoints give way to new ones that need
    // their addresses (idle's) or ports (range's), and to `docker network rm` (spare's).
    // Range's namespace held open stands for the kernel still destroying it: its veth
    // stays, but dockerd unmounted its sandbox, and that is enough.
    let pid = dk.ok(&["inspect", "-f", "{{.State.Pid}}", "range"]);
    let range_ns = fs::File::open(format!("/proc/{}/ns/net", pid.trim())).unwrap();
    dk.restart_daemon(true);
    assert_eq!(sb.ok_json(&["ps", "--json"]).as_array().unwrap().len(), 3);
    dk.ok(&["rm", "-f", "range"]);
    dk.ok(&range_run("range2"));
    drop(range_ns);
    let range2 = address(&dk, "range2", "web");
    assert_eq!(range2, idle);
    assert_eq!(
        sb.ok(&["publish"]).trim(),
        format!("20000-21000:{range2}:20000-21000/tcp")
    );
    assert!(ends_answer());
    assert_eq!(sb.ok_json(&["ps", "--json"]).as_array().unwrap().len(), 2);
    dk.ok(&["rm", "-f", "range2", "idle", "spare"]);
    dk.ok(&["network", "rm", "web"]);
    assert!(!Path::new("/run/netpath").join(&sb.host).exists());
}

#[test]
fn docker_given_mac_outlives_netpath_up() {
    let sb = sandbox();
    let cl = sb.client().expect("client namespace");
    let dk = Docker::new(&sb);
    dk.network("web", "10.89.46.0/24");
    // A MAC Docker gives the endpoint, not the one netpath derives from the address. This
    // docker CLI sends --mac-address in a form dockerd 20.10 refuses: the API's own field.
    let create = serde_json::json!({
        "Image": IMAGE,
        "Cmd": ["httpd", "-f", "-p", "80", "-h", "/www"],
        "MacAddress": "02:42:0a:59:2e:63",
        "ExposedPorts": {"80/tcp": {}},
        "HostConfig": {"NetworkMode": "web", "PortBindings": {"80/tcp": [{"HostPort": "8090"}]}},
    });
    let sock = dk.dir.join("sock");
    let out = Command::new("curl")
        .args(["-sS", "-m", "20", "--unix-socket"])
        .arg(&sock)
        .args([
            "-H",
            "Content-Type: application/json",
            "-d",
            &create.to_string(),
        ])
        .arg("http://docker/v1.41/containers/create?name=mac")
        .output()
        .expect("running curl");
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(answer.contains("\"Id\""), "create: {answer}");
    dk.ok(&["start", "mac"]);
    let mac = dk.ok(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.web.MacAddress}}",
        "mac",
    ]);
    assert_eq!(mac.trim(), "02:42:0a:59:2e:63");
    let url = format!("http://{EXT_ADDR}:8090/cgi-bin/peer");
    let reached = || {
        wait_until(50, Duration::from_millis(100), || {
            curl(&sb, &cl.netns, &url).is_ok_and(|(body, _)| cgi_peer(&body) == CLIENT_ADDR)
        })
    };
    assert!(reached(), "before netpath up");
    // `up` puts every endpoint on the datapath again: with the MAC the interface has.
    sb.ok(&["up", "-d"]);
    assert!(reached(), "after netpath up");
}

/// After a bare `netpath network create` (pins, nothing attached), a first `docker network
/// create` that fails while bringing the datapath up (more local addresses than the socket
/// programs' map holds) leaves the scope as `network create` left it, IP forwarding
/// included; once the cause is gone, the next one brings the datapath up.
#[test]
fn docker_network_create_failing_after_network_create_leaves_the_datapath_down() {
    let sb = sandbox();
    let _cl = sb.client().expect("client namespace");
    let dk = Docker::new(&sb);
    sb.ok(&["network", "create", "cli", "--subnet", "10.89.47.0/24"]);
    let bare = sb.ok_json(&["status", "--json"]);
    assert_eq!(up_marks(&sb), (vec![], 0, "0".to_owned()));
    too_many_local_addresses(&sb);
    let create = [
        "network",
        "create",
        "-d",
        dk.driver.as_str(),
        "--subnet",
        "10.89.48.0/24",
        "web",
    ];
    let err = dk.fails(&create);
    assert!(err.contains("NP_LOCAL_ADDRS"), "{err}");
    assert_eq!(sb.ok_json(&["status", "--json"]), bare);
    assert_eq!(ip_forward(&sb), "0");
    sb.exec_ok(&sb.host, &["ip", "link", "del", "many0"]);
    dk.ok(&create);
    let up = (vec!["ext0".to_owned()], 4, "1".to_owned());
    assert_eq!(up_marks(&sb), up);
}
