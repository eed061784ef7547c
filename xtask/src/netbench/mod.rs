//! `cargo xtask bench`: the same client -> published port -> container path measured five
//! ways (the veth limit, plain routing, a bare eBPF forwarder, Docker's iptables rules,
//! netpath) with real servers
//! (iperf3, nginx, sockperf) and N extra published ports. Every topology is built first, in
//! its own throwaway namespaces; then each test runs through every configuration in turn,
//! so that a slow phase of the machine spreads over all configurations instead of hitting
//! one. Medians over the passes are reported, with each eBPF program's nanoseconds per
//! packet from the kernel's own accounting (`stats`).
pub(crate) mod measure;
pub(crate) mod report;
mod stats;
pub(crate) mod topo;

use std::{
    io::Write as _,
    path::Path,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Result, bail};
use clap::ValueEnum as _;
use serde_json::json;

use measure::FIGURES;
pub use topo::Config;
use topo::Topology;

use crate::workspace_root;

/// What `cargo xtask bench` was asked for.
#[derive(clap::Args)]
pub struct Options {
    /// One short pass, N in {0, 1000}: a sanity run of about two minutes.
    #[arg(long)]
    pub quick: bool,
    /// Only these configurations (comma-separated), for comparing a change quickly; the
    /// report covers what ran.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<Config>,
    /// Passes over every configuration (default: 5, or 1 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub passes: Option<u32>,
    /// Seconds per test (default: 4, or 2 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub secs: Option<u32>,
    /// The numbers of extra published ports to measure iptables and netpath with
    /// (comma-separated; default 0,1000,10000, or 0,1000 with --quick; at most 65532:
    /// every TCP port published).
    #[arg(long, value_delimiter = ',')]
    pub ns: Vec<usize>,
    /// Keep the TIME_WAIT sockets that the connection-rate test leaves, instead of closing
    /// them before each run: shows the confound that clearing removes.
    #[arg(long)]
    pub keep_time_wait: bool,
}

pub struct Plan {
    secs: u32,
    passes: usize,
    ns: Vec<usize>,
    clear_time_wait: bool,
}

impl Plan {
    /// `--quick`'s plan or the full one, with `--passes`, `--secs` and `--ns` where given.
    fn new(o: &Options) -> Result<Plan> {
        let (default_secs, default_passes, ns) = match o.quick {
            true => (2, 1, vec![0, 1000]),
            false => (4, 5, vec![0, 1000, 10_000]),
        };
        if let Some(&n) = o.ns.iter().find(|&&n| n > topo::MAX_EXTRA) {
            bail!(
                "--ns {n}: at most {} extra ports (with the measured ones, every TCP port)",
                topo::MAX_EXTRA
            );
        }
        Ok(Plan {
            secs: o.secs.unwrap_or(default_secs),
            passes: o.passes.map_or(default_passes, |p| p as usize),
            ns: if o.ns.is_empty() { ns } else { o.ns.clone() },
            clear_time_wait: !o.keep_time_wait,
        })
    }

    /// Seconds: every test per cell and pass, each its duration plus about 1 s of tool
    /// start-up and warm-up; setup is about 1 s per cell plus 0.5 s per 1,000 extra ports.
    fn estimate(&self, cells: &[Cell]) -> f64 {
        let tests = measure::TESTS.len() as f64;
        let measuring = cells.len() as f64 * self.passes as f64 * tests * (self.secs as f64 + 1.0);
        let setup: f64 = cells.iter().map(|c| 1.0 + c.n as f64 / 2000.0).sum();
        measuring + setup
    }
}

/// One configuration at one N: its topology while it lives, and what was measured.
pub struct Cell {
    config: Config,
    n: usize,
    topo: Option<Topology>,
    /// Per figure: (pass, value), so that ratios pair figures of the same pass.
    samples: [Vec<(usize, f64)>; FIGURES.len()],
    /// Per test and program, every pass: nanoseconds and runs from the kernel's accounting.
    run_time: Vec<ProgramSample>,
    /// Per test, every pass: the programs' share of the machine's busy CPU time.
    cpu_share: Vec<(usize, f64)>,
    errors: Vec<String>,
    setup_secs: f64,
}

impl Cell {
    fn new((config, n): (Config, usize)) -> Cell {
        Cell {
            config,
            n,
            topo: None,
            samples: Default::default(),
            run_time: Vec::new(),
            cpu_share: Vec::new(),
            errors: Vec::new(),
            setup_secs: 0.0,
        }
    }

    fn n_label(&self) -> String {
        if self.config.has_n() {
            self.n.to_string()
        } else {
            "-".into()
        }
    }

    fn legend(&self) -> String {
        if self.config.has_n() {
            format!("{} N={}", self.config.name(), self.n)
        } else {
            self.config.name().to_owned()
        }
    }
}

/// What one program cost over one test of one pass.
pub struct ProgramSample {
    test: usize,
    program: String,
    ns: u64,
    runs: u64,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C reaches the measuring tool too (same process group), which stops at once; the
/// bench then sees the flag and returns, and the topologies' drops remove everything.
pub(crate) fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub(crate) fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted; the namespaces and servers are being removed");
    }
    Ok(())
}

/// Runs the bench with the netpath binary `bin` and the bare forwarder's eBPF object
/// `forwarder`.
pub fn run(bin: &Path, forwarder: &Path, o: &Options) -> Result<()> {
    if !netpath_tests::is_root() {
        bail!("the bench creates network namespaces and must run as root");
    }
    let plan = Plan::new(o)?;
    let quick = o.quick;
    catch_signals();
    // Run-time accounting, for as long as this descriptor lives (the whole bench).
    let _stats = stats::enable()?;
    let mut configs = Vec::new();
    for config in Config::value_variants()
        .iter()
        .copied()
        .filter(|c| o.only.is_empty() || o.only.contains(c))
    {
        if config.has_n() {
            configs.extend(plan.ns.iter().map(|&n| (config, n)));
        } else {
            configs.push((config, 0));
        }
    }
    let mut cells: Vec<Cell> = configs.into_iter().map(Cell::new).collect();
    let started = Instant::now();
    println!(
        "bench ({}): {} configurations x {} pass(es) x {} tests of {} s; expected about {:.0} s",
        if quick { "quick" } else { "full" },
        cells.len(),
        plan.passes,
        measure::TESTS.len(),
        plan.secs,
        plan.estimate(&cells)
    );

    for cell in &mut cells {
        check_interrupted()?;
        print!("setup {:<16} ", cell.legend());
        let _ = std::io::stdout().flush();
        let t = Instant::now();
        match Topology::build(cell.config, cell.n, bin, forwarder) {
            Ok(topo) => cell.topo = Some(topo),
            Err(e) => cell.errors.push(format!("setup: {e:#}")),
        }
        cell.setup_secs = t.elapsed().as_secs_f64();
        match cell.errors.last() {
            None => println!("{:.1} s", cell.setup_secs),
            Some(e) => println!("FAILED: {e}"),
        }
    }

    // Every test runs through every configuration before the next test starts, so that the
    // figures compared with each other were measured minutes apart at most, whatever the
    // machine's other load does over the run; each pass starts at another configuration.
    let count = cells.len();
    for pass in 0..plan.passes {
        let mut results: Vec<measure::Pass> = cells.iter().map(|_| Default::default()).collect();
        for (test, (name, _)) in measure::TESTS.iter().enumerate() {
            println!("pass {}/{} {name}", pass + 1, plan.passes);
            let churn = test == measure::NEW_CONN_TEST && plan.clear_time_wait;
            if churn {
                // Every configuration's, not only the next one's: all of them share the
                // kernel's socket tables. Once: each run's own go right after it.
                clear_time_wait(&cells, &mut results);
            }
            for i in 0..count {
                check_interrupted()?;
                let at = (i + pass) % count;
                if let Some(topo) = &cells[at].topo {
                    run_measured(test, topo, plan.secs, &mut results[at]);
                    // At once, so that each run's count is its own.
                    if churn {
                        match topo.clear_time_wait() {
                            Ok(n) => results[at].time_wait = n,
                            Err(e) => results[at].errors.push(format!("TIME_WAIT: {e:#}")),
                        }
                    }
                }
            }
        }
        for (cell, mut result) in cells.iter_mut().zip(results) {
            if cell.topo.is_none() {
                continue;
            }
            result.finish();
            for &(f, v) in &result.values {
                cell.samples[f].push((pass, v));
            }
            let mut shown: Vec<String> = result
                .values
                .iter()
                .map(|&(f, v)| format!("{} {v:.3}", FIGURES[f].short))
                .collect();
            if plan.clear_time_wait {
                shown.push(format!("TIME_WAIT left {}", result.time_wait));
            }
            cell.run_time.extend(
                result
                    .run_time
                    .into_iter()
                    .map(|(test, program, ns, runs)| ProgramSample {
                        test,
                        program,
                        ns,
                        runs,
                    }),
            );
            cell.cpu_share.extend(result.cpu_share);
            println!("  {:<16} {}", cell.legend(), shown.join(", "));
            for e in result.errors {
                println!("  error: {e}");
                cell.errors.push(format!("pass {}: {e}", pass + 1));
            }
        }
    }
    check_interrupted()?;
    print!("removing the topologies... ");
    let _ = std::io::stdout().flush();
    for cell in &mut cells {
        cell.topo = None;
    }
    println!("done");

    let elapsed = started.elapsed().as_secs_f64();
    write_report(&plan, quick, &cells, elapsed)
}

/// What a report says about its run and machine: mode, time, CPUs, kernel.
pub(crate) struct Machine {
    pub cpus: usize,
    pub kernel: String,
    pub meta: serde_json::Value,
}

impl Machine {
    pub(crate) fn now(quick: bool, elapsed: f64) -> Machine {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned();
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let meta = json!({
            "mode": if quick { "quick" } else { "full" },
            "unix_time": unix,
            "elapsed_seconds": elapsed,
            "cpus": cpus,
            "kernel": kernel,
        });
        Machine { cpus, kernel, meta }
    }
}

/// Runs test `test` through `topo` with the programs' run-time accounting and the machine's
/// busy CPU time read around it.
fn run_measured(test: usize, topo: &Topology, secs: u32, pass: &mut measure::Pass) {
    let before = stats::read(&topo.programs);
    let busy_before = measure::cpu_busy();
    let errors = pass.errors.len();
    measure::run(test, topo, secs, pass);
    // A failed test's share would be of whatever ran instead.
    let busy = match (busy_before, measure::cpu_busy()) {
        _ if pass.errors.len() > errors => 0.0,
        (Ok(b), Ok(a)) => a - b,
        (Err(e), _) | (_, Err(e)) => {
            pass.errors.push(format!("/proc/stat: {e:#}"));
            0.0
        }
    };
    match (before, stats::read(&topo.programs)) {
        (Ok(before), Ok(after)) => {
            let spent = stats::delta(&topo.programs, &before, &after);
            let ns: u64 = spent.iter().map(|(_, ns, _)| ns).sum();
            if busy > 0.0 && !spent.is_empty() {
                pass.cpu_share.push((test, ns as f64 / (busy * 1e9)));
            }
            pass.run_time.extend(
                spent
                    .into_iter()
                    .map(|(name, ns, runs)| (test, name, ns, runs)),
            );
        }
        (Err(e), _) | (_, Err(e)) => pass.errors.push(format!("bpf_stats: {e:#}")),
    }
}

/// Closes the TIME_WAIT sockets of every topology (what other tests left).
fn clear_time_wait(cells: &[Cell], results: &mut [measure::Pass]) {
    for (cell, result) in cells.iter().zip(results) {
        let Some(topo) = &cell.topo else { continue };
        if let Err(e) = topo.clear_time_wait() {
            result.errors.push(format!("TIME_WAIT: {e:#}"));
        }
    }
}

fn write_report(plan: &Plan, quick: bool, cells: &[Cell], elapsed: f64) -> Result<()> {
    let summary = report::Summary::new(cells);
    let Machine { cpus, kernel, meta } = Machine::now(quick, elapsed);
    let subtitle = format!(
        "median over {} pass(es) of each pass's ratio, {} s per test, {cpus} CPUs, Linux {}; \
         latency and CPU per Gbit inverted (limit / value)",
        plan.passes, plan.secs, kernel
    );
    println!("\n{}", summary.tables(false));
    let errors: Vec<String> = cells
        .iter()
        .flat_map(|c| c.errors.iter().map(move |e| format!("{}: {e}", c.legend())))
        .collect();
    if !errors.is_empty() {
        println!("errors:");
        for e in &errors {
            println!("  {e}");
        }
    }

    let dir = workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let json = summary.json(plan, meta);
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    let mut md = format!("{subtitle}\n\n{}", summary.tables(true));
    for e in &errors {
        md += &format!("- {e}\n");
    }
    std::fs::write(dir.join("report.md"), md)?;
    let svg = dir.join("report.svg");
    std::fs::write(&svg, summary.svg(&subtitle))?;
    // A PNG too where librsvg is installed (optional: the SVG is the chart).
    let png = dir.join("report.png");
    let _ = std::fs::remove_file(&png);
    let rendered = Command::new("rsvg-convert")
        .arg("-o")
        .arg(&png)
        .arg(&svg)
        .status()
        .is_ok_and(|s| s.success());
    println!(
        "report: {0}/report.json, report.md, report.svg{1}; took {elapsed:.0} s",
        dir.display(),
        if rendered { ", report.png" } else { "" }
    );
    Ok(())
}
