//! The topologies under test, each in its own throwaway namespaces (client, host,
//! container) that are deleted on drop, servers killed first. Only documentation and private
//! ranges are used, and only inside those namespaces: the client is 203.0.113.2, the host's
//! external address 203.0.113.1, the bridge 172.17.0.1/16 and the container 172.17.0.2.
use std::{
    fmt::Write as _,
    fs,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf,
    maps::Array,
    programs::{SchedClassifier, TcAttachType},
};
use netpath_common::{BENCH_FORWARD_MAP, ForwardHop};
use netpath_tests::{CLIENT_ADDR, Client, EXT_ADDR, Sandbox, unique};
use nix::sched::{CloneFlags, setns};

/// The configurations, in the order they are set up and reported.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Config {
    /// Client and container on one veth pair: the physical limit.
    Limit,
    /// Client to the container's own address through the host and its bridge, no NAT.
    Routed,
    /// Client to the container's own address through the host, passed on by the bare eBPF
    /// forwarder (redirects to interfaces and MACs known in advance: no lookup, no NAT, no
    /// conntrack): what the host's share of the path costs at least.
    Forward,
    /// Docker's iptables rules in the host.
    Iptables,
    /// netpath in the host.
    Netpath,
}

impl Config {
    pub fn name(self) -> &'static str {
        match self {
            Config::Limit => "limit",
            Config::Routed => "routed",
            Config::Forward => "forward",
            Config::Iptables => "iptables",
            Config::Netpath => "netpath",
        }
    }

    /// Whether N (extra published ports) applies.
    pub fn has_n(self) -> bool {
        matches!(self, Config::Iptables | Config::Netpath)
    }
}

const CONTAINER_IP: &str = "172.17.0.2";
/// (protocol, host port, container port) of the measured publishes: nginx, iperf3 and
/// sockperf (TCP and UDP).
const PUBLISHED: [(&str, u16, u16); 4] = [
    ("tcp", 8080, 80),
    ("tcp", 5201, 5201),
    ("tcp", 11111, SOCKPERF_PORT),
    ("udp", 11111, SOCKPERF_PORT),
];
/// The sockperf server's port in the container.
const SOCKPERF_PORT: u16 = 11111;
/// The most extra publishes: every other TCP port, so that all 65,535 are published.
pub const MAX_EXTRA: usize = 65535 - 3;

/// The host ports of the n extra TCP publishes (each to the same container port): from 1 up,
/// past the measured ones.
fn extra_ports(n: usize) -> impl Iterator<Item = u16> {
    (1..=u16::MAX)
        .filter(|p| {
            !PUBLISHED
                .iter()
                .any(|&(proto, host, _)| proto == "tcp" && host == *p)
        })
        .take(n)
}

/// Where the client sends its traffic: an address and the port of each server there.
pub struct Target {
    pub addr: &'static str,
    pub http: u16,
    pub iperf: u16,
    pub sockperf: u16,
}

pub struct Topology {
    // Fields drop in declaration order: the servers die before their namespaces go.
    servers: Vec<Server>,
    pub client: String,
    /// The container's namespace, where the servers run.
    pub server: String,
    pub target: Target,
    /// The eBPF programs on the path: (name, kernel id), for their run time per packet.
    pub programs: Vec<(String, u32)>,
    _kept: Kept,
}

/// What a topology keeps alive until it is dropped, after its servers.
#[derive(Default)]
struct Kept {
    /// The bare forwarder's programs, attached while this lives.
    _forwarder: Option<Ebpf>,
    _netpath: Option<(Client, Sandbox)>,
    _namespaces: Vec<Netns>,
}

impl Topology {
    pub fn build(config: Config, n: usize, bin: &Path, forwarder: &Path) -> Result<Topology> {
        let topo = match config {
            Config::Limit => limit()?,
            Config::Routed => hosted(Host::Routed)?,
            Config::Forward => hosted(Host::Forward(forwarder))?,
            Config::Iptables => hosted(Host::Iptables(n))?,
            Config::Netpath => netpath(bin, n)?,
        };
        topo.check_http()?;
        Ok(topo)
    }

    /// Closes every TIME_WAIT socket in the client's and the server's namespaces (`ss -K`)
    /// and returns how many there were. Under `Connection: close` the server closes first
    /// and keeps one per connection for 60 s; left in place, they slow down the next
    /// connection-rate test of every configuration.
    pub fn clear_time_wait(&self) -> Result<usize> {
        clear_time_wait([&self.client, &self.server])
    }

    /// One plain GET through the measured path, retried while the servers settle: proves
    /// that the path works before anything is measured.
    fn check_http(&self) -> Result<()> {
        let url = format!("http://{}:{}/", self.target.addr, self.target.http);
        check_http(&self.client, &url)
    }
}

/// One plain GET of `url` from the namespace `client`, retried while the servers settle,
/// until the server answers "ok".
pub fn check_http(client: &str, url: &str) -> Result<()> {
    let mut last = String::new();
    for _ in 0..20 {
        // No proxy: the target lives in the sandbox, never behind one.
        let out = in_ns(client, &["curl", "-sS", "--noproxy", "*", "-m", "1", url])?;
        if out.status.success() && out.stdout == b"ok\n" {
            return Ok(());
        }
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        sleep(Duration::from_millis(250));
    }
    bail!("GET {url} from the client never answered \"ok\": {last}")
}

fn limit() -> Result<Topology> {
    let (c, k) = (Netns::add("c")?, Netns::add("k")?);
    ip(&[
        "-n", &c.0, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &k.0,
    ])?;
    ip(&["-n", &c.0, "addr", "add", "172.17.0.1/16", "dev", "eth0"])?;
    ip(&["-n", &k.0, "addr", "add", "172.17.0.2/16", "dev", "eth0"])?;
    ip(&["-n", &c.0, "link", "set", "eth0", "up"])?;
    ip(&["-n", &k.0, "link", "set", "eth0", "up"])?;
    let (client, container) = (c.0.clone(), k.0.clone());
    let kept = Kept {
        _namespaces: vec![c, k],
        ..Kept::default()
    };
    finish(client, &container, direct_target(), Vec::new(), kept)
}

/// What the host between client and container does with the traffic.
enum Host<'a> {
    /// Routes it through its bridge: no NAT, no netfilter at all.
    Routed,
    /// Docker's iptables rules plus n extra published ports.
    Iptables(usize),
    /// Passes it on with the bare forwarder loaded from this object. The container's veth
    /// carries the gateway address itself (no bridge), so that the FIB names the veth.
    Forward(&'a Path),
}

/// The host built with `ip`, as Docker builds it: the client on ext0, the container behind
/// the bridge docker0 (or, for the forwarder, straight on its veth).
fn hosted(host: Host) -> Result<Topology> {
    let (c, h, k) = (Netns::add("c")?, Netns::add("h")?, Netns::add("k")?);
    let (c_, h_, k_) = (c.0.as_str(), h.0.as_str(), k.0.as_str());
    let bridged = !matches!(host, Host::Forward(_));
    let gateway_on = if bridged { "docker0" } else { "veth0" };
    let mut steps = vec![
        vec![
            "-n", h_, "link", "add", "ext0", "type", "veth", "peer", "name", "eth0", "netns", c_,
        ],
        vec!["-n", h_, "addr", "add", "203.0.113.1/24", "dev", "ext0"],
        vec!["-n", c_, "addr", "add", "203.0.113.2/24", "dev", "eth0"],
        vec!["-n", h_, "link", "set", "ext0", "up"],
        vec!["-n", c_, "link", "set", "eth0", "up"],
        vec![
            "-n", h_, "link", "add", "veth0", "type", "veth", "peer", "name", "eth0", "netns", k_,
        ],
    ];
    if bridged {
        steps.extend([
            vec!["-n", h_, "link", "add", "docker0", "type", "bridge"],
            vec!["-n", h_, "link", "set", "docker0", "up"],
            vec!["-n", h_, "link", "set", "veth0", "master", "docker0"],
        ]);
    }
    steps.extend([
        vec!["-n", h_, "addr", "add", "172.17.0.1/16", "dev", gateway_on],
        vec!["-n", h_, "link", "set", "veth0", "up"],
        vec!["-n", k_, "addr", "add", "172.17.0.2/16", "dev", "eth0"],
        vec!["-n", k_, "link", "set", "eth0", "up"],
        vec!["-n", k_, "route", "add", "default", "via", "172.17.0.1"],
        vec!["-n", h_, "route", "add", "default", "via", CLIENT_ADDR],
    ]);
    for args in steps {
        ip(&args)?;
    }
    ok(&in_ns(h_, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?)?;
    let (forwarder, programs) = match host {
        Host::Forward(object) => {
            let (mut ebpf, programs) = attach_forwarder(h_, object)?;
            fill_forwarder(&mut ebpf, [c_, h_, k_])?;
            (Some(ebpf), programs)
        }
        Host::Routed | Host::Iptables(_) => (None, Vec::new()),
    };
    let target = match host {
        Host::Routed | Host::Forward(_) => {
            ip(&["-n", c_, "route", "add", "172.17.0.0/16", "via", EXT_ADDR])?;
            direct_target()
        }
        Host::Iptables(n) => {
            iptables_restore(h_, &docker_rules(n))?;
            let out = in_ns(h_, &["iptables-save", "-t", "nat"])?;
            let dnat = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains("-j DNAT"))
                .count();
            expect_publishes(dnat, n)?;
            published_target()
        }
    };
    let (client, container) = (c.0.clone(), k.0.clone());
    let kept = Kept {
        _namespaces: vec![c, h, k],
        _forwarder: forwarder,
        ..Kept::default()
    };
    finish(client, &container, target, programs, kept)
}

/// Loads the bare forwarder in the namespace `host` and attaches it at TC ingress (tcx) of
/// ext0 (into the container) and veth0 (out of the host); returns it with its programs'
/// names and ids. The links live as long as the returned object.
fn attach_forwarder(host: &str, object: &Path) -> Result<(Ebpf, Vec<(String, u32)>)> {
    in_netns(host, || {
        let mut ebpf =
            Ebpf::load_file(object).with_context(|| format!("loading {}", object.display()))?;
        let mut programs = Vec::new();
        for (name, iface) in [("bench_forward_in", "ext0"), ("bench_forward_out", "veth0")] {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .with_context(|| format!("{name} missing from {}", object.display()))?
                .try_into()?;
            prog.load().with_context(|| format!("loading {name}"))?;
            prog.attach(iface, TcAttachType::Ingress)
                .with_context(|| format!("attaching {name} to {iface}"))?;
            programs.push((name.to_owned(), prog.info()?.id()));
        }
        Ok((ebpf, programs))
    })
}

/// Fills the forwarder's two hops (see `netpath_common::ForwardHop`) from the namespaces
/// (client, host, container): into the container through veth0, addressed to its eth0; out
/// of ext0 to the client's eth0. Before any traffic: until then the programs pass
/// everything to the stack.
fn fill_forwarder(ebpf: &mut Ebpf, [client, host, container]: [&str; 3]) -> Result<()> {
    let (veth, veth_mac) = link(host, "veth0")?;
    let (ext, ext_mac) = link(host, "ext0")?;
    let (_, container_mac) = link(container, "eth0")?;
    let (_, client_mac) = link(client, "eth0")?;
    let hop = |ifindex, dst: [u8; 6], src: [u8; 6]| {
        let mut macs = [0; 12];
        macs[..6].copy_from_slice(&dst);
        macs[6..].copy_from_slice(&src);
        ForwardHop { ifindex, macs }
    };
    let map = ebpf
        .map_mut(BENCH_FORWARD_MAP)
        .context("the forwarder has no hop map")?;
    let mut hops: Array<_, ForwardHop> = Array::try_from(map)?;
    hops.set(0, hop(veth, container_mac, veth_mac), 0)?;
    hops.set(1, hop(ext, client_mac, ext_mac), 0)?;
    Ok(())
}

/// The ifindex and MAC of `dev` in the namespace `netns`.
fn link(netns: &str, dev: &str) -> Result<(u32, [u8; 6])> {
    let out = Command::new("ip")
        .args(["-n", netns, "-j", "link", "show", dev])
        .output()
        .context("running ip")?;
    ok(&out).with_context(|| format!("ip link show {dev} in {netns}"))?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let ifindex = json[0]["ifindex"]
        .as_u64()
        .and_then(|i| u32::try_from(i).ok());
    let mac: Option<Vec<u8>> = json[0]["address"].as_str().and_then(|a| {
        a.split(':')
            .map(|b| u8::from_str_radix(b, 16).ok())
            .collect()
    });
    match (ifindex, mac.and_then(|m| <[u8; 6]>::try_from(m).ok())) {
        (Some(i), Some(m)) => Ok((i, m)),
        _ => bail!("ip link show {dev} in {netns}: no ifindex or MAC"),
    }
}

/// Runs `f` on a thread of its own that enters the named namespace first, so that no other
/// thread of xtask changes namespace. What `f` creates (program links) stays in `name`.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let path = Path::new("/run/netns").join(name);
    let ns = fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(&ns, CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering network namespace {name}"))?;
            f()
        })
        .join()
        .expect("a panic in the namespace thread")
    })
}

/// What Docker installs for one bridge and its published ports: in nat, DNAT in a DOCKER
/// chain jumped to for local destinations and MASQUERADE for the subnet; in filter, FORWARD
/// policy DROP, established traffic accepted first and one ACCEPT per published port in
/// filter's DOCKER chain (new connections walk both chains). The n extra ports come first:
/// Docker appends, so a port published late sits after the others. (The per-port hairpin
/// MASQUERADE rules of the userland proxy are left out: they never match this traffic.)
fn docker_rules(n: usize) -> String {
    let mut nat = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n\
         -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n\
         -A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER\n\
         -A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE\n\
         -A DOCKER -i docker0 -j RETURN\n",
    );
    let mut filter = String::from(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :DOCKER - [0:0]\n\
         -A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A FORWARD -o docker0 -j DOCKER\n\
         -A FORWARD -i docker0 ! -o docker0 -j ACCEPT\n\
         -A FORWARD -i docker0 -o docker0 -j ACCEPT\n",
    );
    let extra = extra_ports(n).map(|p| ("tcp", p, p));
    let measured = PUBLISHED.iter().copied();
    for (proto, host, port) in extra.chain(measured) {
        let _ = writeln!(
            nat,
            "-A DOCKER ! -i docker0 -p {proto} -m {proto} --dport {host} \
             -j DNAT --to-destination {CONTAINER_IP}:{port}"
        );
        let _ = writeln!(
            filter,
            "-A DOCKER -d {CONTAINER_IP}/32 ! -i docker0 -o docker0 -p {proto} -m {proto} \
             --dport {port} -j ACCEPT"
        );
    }
    format!("{nat}COMMIT\n{filter}COMMIT\n")
}

/// One iptables-restore for the whole rule set: thousands of `iptables -A` calls would take
/// minutes, and only the resulting rules matter here.
fn iptables_restore(netns: &str, rules: &str) -> Result<()> {
    ok(&run_stdin(
        Command::new("ip").args(["netns", "exec", netns, "iptables-restore"]),
        rules,
    )?)
}

fn netpath(bin: &Path, n: usize) -> Result<Topology> {
    let sb = Sandbox::new(bin)?;
    // Before `up`, so that its ext0 is the external interface (the default route's).
    let client = sb.client()?;
    let specs: Vec<String> = PUBLISHED
        .iter()
        .map(|(proto, host, port)| format!("{host}:{CONTAINER_IP}:{port}/{proto}"))
        .collect();
    let mut up = vec!["up", "-d"];
    for spec in &specs {
        up.extend(["--publish", spec]);
    }
    let np = |args: &[&str], input: &str| netpath_cmd(bin, &sb.host, args, input);
    np(&up, "")?;
    let web = sb.name("web");
    // A resolver inside the sandbox only (see Sandbox::netpath).
    np(&["run", &web, "--dns", "127.0.0.1"], "")?;
    if n > 0 {
        let extra: String = extra_ports(n)
            .map(|p| format!("{p}:{CONTAINER_IP}:{p}\n"))
            .collect();
        np(&["publish", "--from-file", "-"], &extra)?;
    }
    // The listing merges consecutive ports into ranges: count the ports in them.
    let listing = np(&["publish"], "")?;
    let ports: usize = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter_map(|l| {
            let first = l.split(':').next()?;
            let (a, b) = first.split_once('-').unwrap_or((first, first));
            Some(b.parse::<usize>().ok()? + 1 - a.parse::<usize>().ok()?)
        })
        .sum();
    expect_publishes(ports, n)?;
    let programs = tc_programs(&np(&["status", "--json"], "")?.stdout)?;
    let client_ns = client.netns.clone();
    let kept = Kept {
        _netpath: Some((client, sb)),
        ..Kept::default()
    };
    finish(client_ns, &web, published_target(), programs, kept)
}

/// The TC programs `netpath status --json` shows attached, each once: (name, id).
fn tc_programs(status: &[u8]) -> Result<Vec<(String, u32)>> {
    let json: serde_json::Value = serde_json::from_slice(status).context("netpath status")?;
    let mut programs: Vec<(String, u32)> = json["attachments"]
        .as_array()
        .context("netpath status shows no attachments")?
        .iter()
        .filter(|a| a["hook"].as_str().is_some_and(|h| h.starts_with("tc")))
        .filter_map(|a| {
            let id = a["program_id"]
                .as_u64()
                .and_then(|i| u32::try_from(i).ok())?;
            Some((a["program"].as_str()?.to_owned(), id))
        })
        .collect();
    programs.sort();
    programs.dedup();
    Ok(programs)
}

/// `netpath --netns HOST ARGS` with `input` on stdin, bounded in time: a netpath that hangs
/// must not hang the bench.
fn netpath_cmd(bin: &Path, host: &str, args: &[&str], input: &str) -> Result<Output> {
    const LIMIT_SECS: u32 = 60;
    let mut cmd = Command::new("timeout");
    cmd.args(["--foreground", "-k", "2", &LIMIT_SECS.to_string()])
        .arg(bin)
        .args(["--netns", host])
        .args(args);
    let out = run_stdin(&mut cmd, input)?;
    if out.status.code() == Some(124) {
        bail!(
            "netpath {} hung: killed after {LIMIT_SECS} s",
            args.join(" ")
        );
    }
    ok(&out).with_context(|| format!("netpath {}", args.join(" ")))?;
    Ok(out)
}

/// The rules or publishes in place are the measured ones plus exactly n extra.
fn expect_publishes(found: usize, n: usize) -> Result<()> {
    if found != PUBLISHED.len() + n {
        bail!(
            "{found} published ports in place, expected {} + {n}",
            PUBLISHED.len()
        );
    }
    Ok(())
}

/// The container's own address and its servers' ports.
fn direct_target() -> Target {
    Target {
        addr: CONTAINER_IP,
        http: 80,
        iperf: 5201,
        sockperf: SOCKPERF_PORT,
    }
}

/// The host's external address and the published ports.
fn published_target() -> Target {
    Target {
        addr: EXT_ADDR,
        http: PUBLISHED[0].1,
        iperf: PUBLISHED[1].1,
        sockperf: PUBLISHED[2].1,
    }
}

/// Tunes the client for connection churn, starts the servers in the container and waits
/// until they listen.
fn finish(
    client: String,
    container: &str,
    target: Target,
    programs: Vec<(String, u32)>,
    kept: Kept,
) -> Result<Topology> {
    let mut topo = Topology {
        servers: Vec::new(),
        client,
        server: container.to_owned(),
        target,
        programs,
        _kept: kept,
    };
    tune_client(&topo.client)?;
    topo.servers.push(Server::spawn(
        container,
        &["iperf3", "-s", "-p", "5201"],
        None,
    )?);
    topo.servers.push(Server::nginx(container, 80)?);
    wait_listening(container, &[("tcp", 80), ("tcp", 5201)])?;
    Ok(topo)
}

impl Topology {
    /// A sockperf server in the container for one latency test, on its port there
    /// ([`SOCKPERF_PORT`]). It busy-polls its socket (`--nonblocked`), as the client does, so that a
    /// round trip is what the path costs and not a sleeping process's wake-up (on this
    /// kind of virtual machine 50-60 µs of a 60 µs round trip, against 8-9 µs spinning,
    /// on one veth pair). It spins while it lives, hence one per test, not one per topology.
    pub fn sockperf_server(&self, tcp: bool) -> Result<Server> {
        let port = SOCKPERF_PORT.to_string();
        let mut cmd = vec![
            "sockperf",
            "server",
            "-i",
            "0.0.0.0",
            "-p",
            &port,
            "--nonblocked",
        ];
        if tcp {
            cmd.push("--tcp");
        }
        let server = Server::spawn(&self.server, &cmd, None)?;
        let proto = if tcp { "tcp" } else { "udp" };
        wait_listening(&self.server, &[(proto, SOCKPERF_PORT)])?;
        Ok(server)
    }
}

/// The connection-rate test opens far more connections than the default port range has
/// ports; the server closes first, so the client's ports are free again at once.
pub fn tune_client(client: &str) -> Result<()> {
    ok(&in_ns(
        client,
        &["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000"],
    )?)
}

/// nginx answering every request with a 3-byte body from memory: the network path is what
/// is measured. Keep-alive connections are never cut short (default: 1,000 requests).
fn nginx_conf(dir: &Path, port: u16) -> String {
    let dir = dir.display();
    format!(
        "daemon off;\nmaster_process on;\nworker_processes auto;\npid {dir}/nginx.pid;\n\
         error_log {dir}/error.log warn;\nevents {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 100000000;\n\
         server {{\n    listen {port} backlog=4096 reuseport;\n\
         location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n"
    )
}

/// Waits until something in `netns` listens on each of `want` (protocol, port).
fn wait_listening(netns: &str, want: &[(&str, u16)]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = in_ns(netns, &["ss", "-Hlntu"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let listening = |(proto, port): &(&str, u16)| {
            text.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 4 && f[0] == *proto && f[4].ends_with(&format!(":{port}"))
            })
        };
        let missing: Vec<_> = want.iter().filter(|w| !listening(w)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("servers in {netns} not listening on {missing:?}");
        }
        sleep(Duration::from_millis(100));
    }
}

/// A server in a namespace, in its own process group (Ctrl-C reaches the measuring tools,
/// not the servers, which the topology kills in order); killed with its group on drop.
pub struct Server {
    child: Child,
    dir: Option<PathBuf>,
}

impl Server {
    pub fn spawn(netns: &str, cmd: &[&str], dir: Option<PathBuf>) -> Result<Server> {
        let child = Command::new("ip")
            .args(["netns", "exec", netns])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {cmd:?} in {netns}"))?;
        Ok(Server { child, dir })
    }
}

impl Server {
    /// nginx ([`nginx_conf`]) in `netns` on `port`, its files in a directory of its own
    /// that goes with it.
    pub fn nginx(netns: &str, port: u16) -> Result<Server> {
        let dir = std::env::temp_dir().join(format!("{netns}-nginx"));
        let conf = dir.join("nginx.conf");
        let (dir_s, conf_s) = (dir.to_string_lossy(), conf.to_string_lossy());
        let log = format!("{dir_s}/error.log");
        let nginx = fs::create_dir_all(&dir)
            .and_then(|()| fs::write(&conf, nginx_conf(&dir, port)))
            .map_err(anyhow::Error::from)
            .and_then(|()| {
                Server::spawn(
                    netns,
                    &["nginx", "-p", &dir_s, "-c", &conf_s, "-e", &log],
                    Some(dir.clone()),
                )
            });
        if nginx.is_err() {
            let _ = fs::remove_dir_all(&dir);
        }
        nginx
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill has no memory preconditions; the group is the child's own.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.child.wait();
        if let Some(dir) = &self.dir {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// A namespace with a unique name and its loopback up; deleted on drop.
struct Netns(String);

impl Netns {
    fn add(tag: &str) -> Result<Netns> {
        let ns = Netns(unique(tag));
        ip(&["netns", "add", &ns.0])?;
        ip(&["-n", &ns.0, "link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}

fn ip(args: &[&str]) -> Result<()> {
    ok(&Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?)
    .with_context(|| format!("ip {}", args.join(" ")))
}

/// `ip netns exec NETNS CMD...`, its output whatever the status.
pub fn in_ns(netns: &str, cmd: &[&str]) -> Result<Output> {
    Command::new("ip")
        .args(["netns", "exec", netns])
        .args(cmd)
        .output()
        .with_context(|| format!("running {cmd:?} in {netns}"))
}

/// Fails with the command's stderr unless it succeeded.
pub fn ok(out: &Output) -> Result<()> {
    if !out.status.success() {
        bail!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub fn run_stdin(cmd: &mut Command, input: &str) -> Result<Output> {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let mut stdin = child.stdin.take().context("piped stdin")?;
    let input = input.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output()?;
    let _ = writer.join();
    Ok(out)
}

/// Closes every TIME_WAIT socket in `namespaces` (`ss -K`); how many there were.
pub fn clear_time_wait(namespaces: [&str; 2]) -> Result<usize> {
    let mut closed = 0;
    for netns in namespaces {
        let out = in_ns(netns, &["ss", "-H", "-K", "-t", "state", "time-wait"])?;
        ok(&out).with_context(|| format!("ss -K state time-wait in {netns}"))?;
        closed += String::from_utf8_lossy(&out.stdout).lines().count();
    }
    Ok(closed)
}
