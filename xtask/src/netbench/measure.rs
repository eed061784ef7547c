//! One measurement of each figure through a topology, with the real tools run in the client
//! namespace: iperf3 (throughput), wrk (requests and new connections per second), sockperf
//! (round-trip latency). Every tool runs under `timeout`, so a broken path costs seconds.
use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::topo::{Topology, in_ns, ok};

/// Figures in a fixed order (the index of each in every sample array).
pub struct Figure {
    pub key: &'static str,
    pub label: &'static str,
    /// Column header of the terminal table.
    pub short: &'static str,
    pub unit: &'static str,
    pub higher_is_better: bool,
}

/// Where each figure is in `FIGURES` (and in every sample array).
const TCP1: usize = 0;
const TCP4: usize = 1;
const KEEPALIVE: usize = 2;
const NEW_CONN: usize = 3;
const TCP_RTT: usize = 4;
const UDP_RTT: usize = 6;
const CPU_PER_GBIT: usize = 8;

pub const FIGURES: [Figure; 9] = [
    fig("tcp_1_stream", "TCP 1 stream", "tcp1 Gb/s", "Gbit/s", true),
    fig(
        "tcp_4_streams",
        "TCP 4 streams",
        "tcp4 Gb/s",
        "Gbit/s",
        true,
    ),
    fig("http_keepalive", "HTTP keep-alive", "req/s", "req/s", true),
    fig("http_new_conn", "new connections", "conn/s", "conn/s", true),
    fig("tcp_rtt_p50", "TCP RTT p50", "tcp p50 us", "us", false),
    fig("tcp_rtt_p99", "TCP RTT p99", "tcp p99 us", "us", false),
    fig("udp_rtt_p50", "UDP RTT p50", "udp p50 us", "us", false),
    fig("udp_rtt_p99", "UDP RTT p99", "udp p99 us", "us", false),
    fig(
        "cpu_per_gbit",
        "CPU per Gbit",
        "cpu s/Gb",
        "CPU s/Gbit",
        false,
    ),
];

const fn fig(
    key: &'static str,
    label: &'static str,
    short: &'static str,
    unit: &'static str,
    higher_is_better: bool,
) -> Figure {
    Figure {
        key,
        label,
        short,
        unit,
        higher_is_better,
    }
}

/// What one pass of every test measured in one configuration: (figure index, value) pairs
/// and the errors.
#[derive(Default)]
pub struct Pass {
    pub values: Vec<(usize, f64)>,
    pub errors: Vec<String>,
    /// Per test and program: (test, program, nanoseconds, runs).
    pub run_time: Vec<(usize, String, u64, u64)>,
    /// Per test: the programs' run time over the machine's busy CPU time (`cpu_busy`).
    pub cpu_share: Vec<(usize, f64)>,
    /// TIME_WAIT sockets the connection-rate test left in this configuration's namespaces
    /// (closed right after it).
    pub time_wait: usize,
    /// Busy CPU seconds and gigabits over the throughput tests, for CPU per gigabit.
    cpu: f64,
    gbits: f64,
}

impl Pass {
    /// Adds CPU per gigabit once every test has run.
    pub fn finish(&mut self) {
        if self.gbits > 0.0 {
            self.values.push((CPU_PER_GBIT, self.cpu / self.gbits));
        }
    }
}

type Run = fn(&Topology, u32, &mut Pass) -> Result<()>;

/// Where the connection-rate test is in `TESTS`.
pub const NEW_CONN_TEST: usize = TESTS.len() - 1;

/// Every test, the connection churn last (its TIME_WAIT and conntrack leftovers must not
/// weigh on the other tests).
pub const TESTS: [(&str, Run); 6] = [
    ("iperf3 1 stream", |t, s, p| throughput(t, 1, s, TCP1, p)),
    ("iperf3 4 streams", |t, s, p| throughput(t, 4, s, TCP4, p)),
    ("sockperf TCP", |t, s, p| latency(t, true, s, TCP_RTT, p)),
    ("sockperf UDP", |t, s, p| latency(t, false, s, UDP_RTT, p)),
    ("wrk keep-alive", |t, s, p| http(t, false, s, KEEPALIVE, p)),
    ("wrk Connection: close", |t, s, p| {
        http(t, true, s, NEW_CONN, p)
    }),
];

/// Runs test `i` of `TESTS` once through `topo`, recording into `pass`.
pub fn run(i: usize, topo: &Topology, secs: u32, pass: &mut Pass) {
    let (name, test) = TESTS[i];
    if let Err(e) = test(topo, secs, pass) {
        pass.errors.push(format!("{name}: {e:#}"));
    }
}

/// What a tool printed.
struct Printed {
    stdout: String,
    /// stdout and stderr (where sockperf prints part of its report).
    all: String,
}

/// Runs a tool in the client namespace, bounded by `secs` plus a margin.
fn tool(client: &str, secs: u32, cmd: &[&str]) -> Result<Printed> {
    let limit = (secs + 15).to_string();
    // --foreground keeps the tool in this process group, so Ctrl-C stops it at once.
    let mut full = vec!["timeout", "--foreground", "-k", "2", &limit];
    full.extend_from_slice(cmd);
    let out = in_ns(client, &full)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    ok(&out).with_context(|| format!("{}: {}", cmd[0], gist(&all)))?;
    Ok(Printed { stdout, all })
}

/// What a failed tool said, short: iperf3's JSON "error", else the end of its output.
fn gist(text: &str) -> String {
    if let Ok(json) = serde_json::from_str::<Value>(text)
        && let Some(e) = json["error"].as_str()
    {
        return e.to_owned();
    }
    let lines: Vec<&str> = text.trim().lines().collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

/// Busy CPU time of the whole machine so far, in seconds (all CPUs; idle and iowait
/// excluded, and steal, the time the hypervisor ran something else): client, host and server
/// all run here, so this is the cost of the path.
pub fn cpu_busy() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().with_context(|| format!("/proc/stat: {line}")))
        .collect::<Result<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: f64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| f.get(i)).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(busy / hz)
}

fn throughput(topo: &Topology, streams: u32, secs: u32, fig: usize, pass: &mut Pass) -> Result<()> {
    let t = &topo.target;
    let (port, time, p) = (t.iperf.to_string(), secs.to_string(), streams.to_string());
    let before = cpu_busy()?;
    let out = tool(
        &topo.client,
        secs,
        &[
            "iperf3", "-c", t.addr, "-p", &port, "-t", &time, "-P", &p, "-J",
        ],
    )?;
    let cpu = cpu_busy()? - before;
    let json: Value = serde_json::from_str(&out.stdout).context("iperf3 -J output")?;
    if let Some(e) = json.get("error") {
        bail!("iperf3: {e}");
    }
    let sum = &json["end"]["sum_received"];
    let (bytes, seconds) = (sum["bytes"].as_f64(), sum["seconds"].as_f64());
    let (Some(bytes), Some(seconds)) = (bytes, seconds) else {
        bail!("iperf3 reported no end.sum_received");
    };
    if bytes <= 0.0 || seconds <= 0.0 {
        bail!("iperf3 transferred nothing");
    }
    let gbits = bytes * 8.0 / 1e9;
    pass.values.push((fig, gbits / seconds));
    pass.cpu += cpu;
    pass.gbits += gbits;
    Ok(())
}

/// wrk through the topology's published HTTP port, recorded as figure `fig`.
fn http(topo: &Topology, close: bool, secs: u32, fig: usize, pass: &mut Pass) -> Result<()> {
    let t = &topo.target;
    let url = format!("http://{}:{}/", t.addr, t.http);
    let rate = wrk(&topo.client, &url, close, secs)?;
    pass.values.push((fig, rate.per_sec));
    pass.errors.extend(rate.errors);
    Ok(())
}

/// What wrk measured: requests per second and, apart, its socket errors (timeouts, resets),
/// which do not void the rate but belong in the report.
pub struct Rate {
    pub per_sec: f64,
    pub errors: Option<String>,
}

/// wrk from the namespace `client` against `url` with 2 threads and 64 connections; with
/// `close`, every response ends its connection and wrk opens a new one, so requests per
/// second are connections per second.
pub fn wrk(client: &str, url: &str, close: bool, secs: u32) -> Result<Rate> {
    let dur = format!("{secs}s");
    let mut cmd = vec!["wrk", "-t", "2", "-c", "64", "-d", &dur];
    if close {
        cmd.extend(["-H", "Connection: close"]);
    }
    cmd.push(url);
    let out = tool(client, secs, &cmd)?.stdout;
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(str::trim)
    };
    if let Some(bad) = field("Non-2xx or 3xx responses:") {
        bail!("wrk: {bad} non-2xx responses");
    }
    let per_sec: f64 = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .context("wrk printed no Requests/sec")?;
    if per_sec <= 0.0 {
        bail!("wrk: no requests completed");
    }
    let what = if close {
        "Connection: close"
    } else {
        "keep-alive"
    };
    let errors = field("Socket errors:").map(|e| format!("wrk {what}: socket errors: {e}"));
    Ok(Rate { per_sec, errors })
}

/// sockperf ping-pong: one message in flight, round-trip times (`--full-rtt`) in µs; `fig`
/// is the p50 figure, the p99 one follows it. Both ends busy-poll (see
/// `Topology::sockperf_server`).
fn latency(topo: &Topology, tcp: bool, secs: u32, fig: usize, pass: &mut Pass) -> Result<()> {
    let _server = topo.sockperf_server(tcp)?;
    let t = &topo.target;
    let (port, time) = (t.sockperf.to_string(), secs.to_string());
    let mut cmd = vec![
        "sockperf",
        "ping-pong",
        "-i",
        t.addr,
        "-p",
        &port,
        "-t",
        &time,
        "--full-rtt",
        "--nonblocked",
    ];
    if tcp {
        cmd.push("--tcp");
    }
    let out = tool(&topo.client, secs, &cmd)?.all;
    let percentile = |p: &str| -> Option<f64> {
        out.lines()
            .find_map(|l| l.split_once(&format!("percentile {p} =")))
            .and_then(|(_, v)| v.trim().parse().ok())
    };
    match (percentile("50.000"), percentile("99.000")) {
        (Some(p50), Some(p99)) => {
            pass.values.extend([(fig, p50), (fig + 1, p99)]);
            Ok(())
        }
        _ => bail!("sockperf printed no percentiles: {}", out.trim()),
    }
}
