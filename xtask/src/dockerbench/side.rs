//! The two sides under test, each a Debian dockerd in a throwaway host namespace of its own
//! with a client namespace on a veth (netpath's `Sandbox` and its client: ext0 203.0.113.1
//! in the host, 203.0.113.2 in the client, the host's default route via ext0): Docker's
//! own bridge driver with its defaults (iptables, the userland proxy), and a dockerd with
//! iptables and its bridge off driving `netpath docker-plugin`. Everything goes on drop.
use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::unix::{fs::MetadataExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use netpath_tests::{
    Client, EXT_ADDR, Sandbox,
    helpers::{busybox_rootfs, dockerd, stop_dockerd},
    wait_until,
};
use serde_json::Value;

use crate::netbench::topo::{
    self, Server, check_http, in_netns, in_ns, ok, run_stdin, tune_client,
};

const IMAGE: &str = "netpath-bench-busybox";
/// The measured container's published ports: busybox httpd (80) and nginx (8081, started
/// in the container's namespace; busybox httpd forks per connection and has no keep-alive,
/// so it would measure itself rather than the path).
const WEB_HTTPD: u16 = 8080;
pub const WEB_NGINX: u16 = 8081;
/// The probe container's port, published anew for each time-to-first-answer sample.
const PROBE_PORT: u16 = 9000;
/// The other published ports: one container publishing this range.
pub const EXTRA_RANGE: &str = "20000-20999:20000-20999";
pub const EXTRA_PORTS: usize = 1000;
/// How long a `docker` command may take: removing 1,000 docker-proxies takes over a minute.
const DOCKER_SECS: u32 = 300;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// Docker's own bridge driver: iptables DNAT and docker-proxy.
    Docker,
    /// netpath's plugin, dockerd's iptables off.
    Netpath,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Docker => "docker",
            Kind::Netpath => "netpath",
        }
    }
}

/// A private dockerd in a host namespace: its data and exec roots, pidfile and API socket
/// in `dir`; stopped, unmounted and removed on drop.
struct Dockerd {
    dir: PathBuf,
    daemon: Child,
}

impl Dockerd {
    fn start(host: &str, dir: PathBuf, networking: &[&str]) -> Result<Dockerd> {
        let log = fs::File::create(dir.join("dockerd.log"))?;
        // Its own process group: Ctrl-C stops the bench, which stops dockerd.
        let daemon = dockerd(host, &dir, networking)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("starting dockerd")?;
        let dockerd = Dockerd { dir, daemon };
        let up = wait_until(120, Duration::from_millis(500), || {
            dockerd.run(&["version"]).is_ok()
        });
        if !up {
            let log = fs::read_to_string(dockerd.dir.join("dockerd.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            bail!("dockerd did not start within 60 s: {}", tail.join(" / "));
        }
        Ok(dockerd)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", &DOCKER_SECS.to_string(), "docker", "-H"])
            .arg(format!("unix://{}/sock", self.dir.display()))
            .args(args);
        cmd
    }

    /// `docker ARGS`, bounded; its stdout, or an error with its stderr.
    fn run(&self, args: &[&str]) -> Result<String> {
        let out = self.command(args).output().context("running docker")?;
        ok(&out).with_context(|| format!("docker {}", args.join(" ")))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The image: a busybox root filesystem with an index page that says "ok".
    fn import_image(&self) -> Result<()> {
        let rootfs = self.dir.join("rootfs");
        busybox_rootfs(&rootfs, &["sh", "httpd", "sleep"]);
        fs::write(rootfs.join("www/index.html"), "ok\n")?;
        let tar = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .args(["-c", "."])
            .output()
            .context("running tar")?;
        ok(&tar).context("tar of the root filesystem")?;
        let mut child = self
            .command(&["import", "-", IMAGE])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("running docker import")?;
        let mut stdin = child.stdin.take().context("piped stdin")?;
        let writer = std::thread::spawn(move || stdin.write_all(&tar.stdout));
        let out = child.wait_with_output()?;
        let _ = writer.join();
        ok(&out).context("docker import")
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // Containers first, while a plugin is there to take their endpoints down.
        if let Ok(ids) = self.run(&["ps", "-aq"]) {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = self.run(&args);
            }
        }
        let _ = self.run(&["network", "prune", "-f"]);
        stop_dockerd(&mut self.daemon, 300);
        let _ = Command::new("umount")
            .arg("-R")
            .arg(self.dir.join("exec"))
            .output();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `netpath --netns HOST docker-plugin --name DRIVER`; killed and its socket removed on drop.
struct Plugin {
    child: Child,
    socket: PathBuf,
}

impl Plugin {
    fn start(bin: &Path, host: &str, driver: &str) -> Result<Plugin> {
        let child = Command::new(bin)
            .args(["--netns", host, "docker-plugin", "--name", driver])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting netpath docker-plugin")?;
        let socket = Path::new("/run/docker/plugins").join(format!("{driver}.sock"));
        let plugin = Plugin { child, socket };
        if !wait_until(100, Duration::from_millis(100), || plugin.socket.exists()) {
            bail!(
                "netpath docker-plugin did not create {}",
                plugin.socket.display()
            );
        }
        Ok(plugin)
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.socket);
    }
}

/// A container's network namespace given a name (`ip netns attach`), so that tools can run
/// in it; the name goes on drop, the namespace stays the container's.
struct Attached(String);

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = netpath_tests::ip(&["netns", "del", &self.0]);
    }
}

pub struct Side {
    pub kind: Kind,
    // Fields drop in declaration order: the server, the containers with their daemon, the
    // plugin, the namespaces.
    _nginx: Server,
    web: Attached,
    docker: Dockerd,
    _plugin: Option<Plugin>,
    pub client: Client,
    sb: Sandbox,
    /// `--network NAME` for netpath's side (Docker's side uses its default bridge).
    network: Vec<String>,
}

impl Side {
    pub fn build(kind: Kind, bin: &Path) -> Result<Side> {
        let sb = Sandbox::new(bin)?;
        // Before the network exists, so that ext0 is netpath's external interface (the
        // default route's).
        let client = sb.client()?;
        tune_client(&client.netns)?;
        // Short: containerd's sockets live under the exec root.
        let dir = PathBuf::from("/tmp").join(sb.name("dk"));
        fs::create_dir_all(&dir)?;
        let networking: &[&str] = match kind {
            // Docker's defaults, but a private bridge range: nothing to collide with.
            Kind::Docker => &["--bip", "10.200.0.1/24"],
            Kind::Netpath => &["--iptables=false", "--ip-forward=false", "--bridge=none"],
        };
        // A dockerd that started removes its directory on drop; one that did not, here.
        let docker = Dockerd::start(&sb.host, dir.clone(), networking).inspect_err(|_| {
            let _ = fs::remove_dir_all(&dir);
        })?;
        docker.import_image()?;
        let (plugin, network) = match kind {
            Kind::Docker => (None, vec![]),
            Kind::Netpath => {
                let driver = sb.name("plugin");
                let plugin = Plugin::start(bin, &sb.host, &driver)?;
                docker.run(&[
                    "network",
                    "create",
                    "-d",
                    &driver,
                    "--subnet",
                    "10.201.0.0/24",
                    "web",
                ])?;
                (Some(plugin), vec!["--network".to_owned(), "web".to_owned()])
            }
        };
        let web_ports = [
            format!("{WEB_HTTPD}:80"),
            format!("{WEB_NGINX}:{WEB_NGINX}"),
        ];
        let mut args = vec!["run", "-d", "--name", "web"];
        args.extend(network.iter().map(String::as_str));
        for p in &web_ports {
            args.extend(["-p", p]);
        }
        args.extend([IMAGE, "httpd", "-f", "-p", "80", "-h", "/www"]);
        docker.run(&args)?;
        let pid = docker.run(&["inspect", "-f", "{{.State.Pid}}", "web"])?;
        let web = Attached(sb.name("web"));
        netpath_tests::ip(&["netns", "attach", &web.0, &pid])?;
        let nginx = Server::nginx(&web.0, WEB_NGINX)?;
        let side = Side {
            kind,
            _nginx: nginx,
            web,
            docker,
            _plugin: plugin,
            client,
            sb,
            network,
        };
        check_http(&side.client.netns, &side.url(WEB_HTTPD))?;
        check_http(&side.client.netns, &side.url(WEB_NGINX))?;
        if kind == Kind::Docker {
            side.expect_dnat()?;
        }
        Ok(side)
    }

    /// The URL of a published port, from the client.
    pub fn url(&self, port: u16) -> String {
        format!("http://{EXT_ADDR}:{port}/")
    }

    /// Docker's published ports are DNAT rules in the host namespace (and nowhere else:
    /// the root namespace is checked apart).
    fn expect_dnat(&self) -> Result<()> {
        let out = in_ns(&self.sb.host, &["iptables-save", "-t", "nat"])?;
        ok(&out)?;
        let rules = String::from_utf8_lossy(&out.stdout);
        let want = format!("--dport {WEB_NGINX} -j DNAT");
        if !rules.lines().any(|l| l.contains(&want)) {
            bail!("dockerd installed no DNAT rule for port {WEB_NGINX} in its namespace");
        }
        Ok(())
    }

    /// Clears TIME_WAIT sockets in the server's and the client's namespaces: the previous
    /// run's would slow the next new-connection measurement (field guide, pitfalls).
    pub fn clear_time_wait(&self) -> Result<()> {
        topo::clear_time_wait([&self.web.0, &self.client.netns]).map(drop)
    }

    /// Milliseconds from the start of `docker run -d -p` of a fresh httpd container to the
    /// first request answered through its published port, polled from the client every
    /// 2 ms for 30 s at most; the container is removed afterwards.
    pub fn first_answer_ms(&self) -> Result<f64> {
        let publish = format!("{PROBE_PORT}:80");
        let mut args = vec!["run", "-d", "--name", "probe"];
        args.extend(self.network.iter().map(String::as_str));
        args.extend([
            "-p", &publish, IMAGE, "httpd", "-f", "-p", "80", "-h", "/www",
        ]);
        let addr: SocketAddr = format!("{EXT_ADDR}:{PROBE_PORT}").parse()?;
        let stop = AtomicBool::new(false);
        let start = Instant::now();
        let (answered, run) = std::thread::scope(|s| {
            let poll = s.spawn(|| in_netns(&self.client.netns, || poll_http(addr, start, &stop)));
            let run = self.docker.run(&args);
            if run.is_err() {
                stop.store(true, Ordering::SeqCst);
            }
            (poll.join().expect("the polling thread panicked"), run)
        });
        let removed = self.docker.run(&["rm", "-f", "probe"]);
        run?;
        removed?;
        Ok(answered?.as_secs_f64() * 1e3)
    }

    /// Publishes the other ports: a second container with the 1,000-port range. Returns
    /// how long `docker run` took.
    pub fn publish_extra(&self) -> Result<f64> {
        let mut args = vec!["run", "-d", "--name", "extra"];
        args.extend(self.network.iter().map(String::as_str));
        args.extend(["-p", EXTRA_RANGE, IMAGE, "sleep", "1000000"]);
        let start = Instant::now();
        self.docker.run(&args)?;
        Ok(start.elapsed().as_secs_f64())
    }

    /// What the published ports cost in the host namespace right now.
    pub fn footprint(&self, bin: &Path) -> Result<Footprint> {
        let host_ns = fs::metadata(format!("/run/netns/{}", self.sb.host))?.ino();
        let mut fp = Footprint::default();
        for entry in fs::read_dir("/proc")?.flatten() {
            let p = entry.path();
            let Ok(comm) = fs::read_to_string(p.join("comm")) else {
                continue;
            };
            let comm = comm.trim();
            if !matches!(comm, "docker-proxy" | "netpath") {
                continue;
            }
            if !fs::metadata(p.join("ns/net")).is_ok_and(|m| m.ino() == host_ns) {
                continue;
            }
            // Proportional set size: shared pages split between the processes sharing them
            // (the plain RSS sum would count docker-proxy's text once per process).
            let Ok(rollup) = fs::read_to_string(p.join("smaps_rollup")) else {
                continue;
            };
            let kib = |key: &str| -> f64 {
                rollup
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0.0)
            };
            fp.processes += 1;
            fp.pss_mib += kib("Pss:") / 1024.0;
            fp.rss_mib += kib("Rss:") / 1024.0;
        }
        let rules = in_ns(&self.sb.host, &["iptables-save"])?;
        ok(&rules)?;
        fp.rules = String::from_utf8_lossy(&rules.stdout)
            .lines()
            .filter(|l| l.starts_with("-A "))
            .count();
        if self.kind == Kind::Netpath {
            let out = run_stdin(
                Command::new(bin).args(["--netns", &self.sb.host, "status", "--json"]),
                "",
            )?;
            ok(&out).context("netpath status --json")?;
            let status: Value = serde_json::from_slice(&out.stdout)?;
            let maps = status["maps"]
                .as_array()
                .context("netpath status --json has no maps")?;
            let bytes: u64 = maps.iter().filter_map(|m| m["memory_bytes"].as_u64()).sum();
            fp.maps_mib = Some(bytes as f64 / f64::from(1 << 20));
        }
        Ok(fp)
    }
}

/// Processes and memory in a host namespace: docker-proxy and netpath processes, their
/// memory, iptables rules, netpath's pinned maps.
#[derive(Default, Clone, Copy)]
pub struct Footprint {
    pub processes: usize,
    pub pss_mib: f64,
    pub rss_mib: f64,
    pub rules: usize,
    pub maps_mib: Option<f64>,
}

/// GETs `/` at `addr` until an answer "200 ... ok" arrives; the time since `start`.
fn poll_http(addr: SocketAddr, start: Instant, stop: &AtomicBool) -> Result<Duration> {
    const LIMIT: Duration = Duration::from_secs(30);
    let mut last = String::from("no attempt");
    while start.elapsed() < LIMIT && !stop.load(Ordering::SeqCst) {
        match get(addr) {
            Ok(reply) if reply.starts_with("HTTP/1.") && reply.ends_with("\r\n\r\nok\n") => {
                return Ok(start.elapsed());
            }
            Ok(reply) => last = reply.lines().next().unwrap_or_default().to_owned(),
            Err(e) => last = e.to_string(),
        }
        sleep(Duration::from_millis(2));
    }
    bail!("{addr} gave no answer within {LIMIT:?}: {last}")
}

fn get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    Ok(reply)
}

/// What of the root namespace a dockerd could touch: its firewall, links and forwarding
/// sysctls. Taken before the bench and compared after each step that starts something.
#[derive(PartialEq, Eq)]
pub struct RootState(Vec<String>);

impl RootState {
    pub fn take() -> Result<RootState> {
        let mut lines = Vec::new();
        for cmd in [
            &["iptables-save"][..],
            &["ip6tables-save"],
            &["ip", "-o", "link"],
        ] {
            let out = Command::new(cmd[0])
                .args(&cmd[1..])
                .output()
                .with_context(|| format!("running {}", cmd[0]))?;
            ok(&out).with_context(|| cmd.join(" "))?;
            let text = String::from_utf8_lossy(&out.stdout);
            // Without timestamps and counters, which change by themselves.
            lines.extend(
                text.lines()
                    .filter(|l| !l.starts_with('#'))
                    .map(|l| strip_counters(cmd[0], l)),
            );
        }
        for path in [
            "/proc/sys/net/ipv4/ip_forward",
            "/proc/sys/net/ipv6/conf/all/forwarding",
            "/proc/sys/net/bridge/bridge-nf-call-iptables",
            "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
        ] {
            let value = fs::read_to_string(path).unwrap_or_else(|_| "absent".into());
            lines.push(format!("{path} = {}", value.trim()));
        }
        Ok(RootState(lines))
    }

    /// Fails, naming the differences, if the root namespace changed since `self`.
    pub fn check(&self, step: &str) -> Result<()> {
        let now = RootState::take()?;
        if now == *self {
            return Ok(());
        }
        let gone = self.0.iter().filter(|l| !now.0.contains(l));
        let new = now.0.iter().filter(|l| !self.0.contains(l));
        let diff: Vec<String> = gone
            .map(|l| format!("-{l}"))
            .chain(new.map(|l| format!("+{l}")))
            .collect();
        bail!(
            "the root network namespace changed after {step}; stopping: {}",
            diff.join(" | ")
        )
    }
}

/// A line of iptables-save or `ip -o link` without what changes by itself: packet counters
/// and link statistics fields.
fn strip_counters(tool: &str, line: &str) -> String {
    if tool == "ip" {
        // "N: name: <FLAGS> mtu ... state X ..." : the index, name, flags and state.
        return line
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
    }
    match line.rsplit_once(" [") {
        Some((head, _)) if line.starts_with(':') => head.to_owned(),
        _ => line.to_owned(),
    }
}
