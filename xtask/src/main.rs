//! Developer tasks: `cargo xtask setup | build-ebpf | test | fuzz | demo | bench-containers |
//! bench-cni | bench`.
//! Every task first makes sure the toolchain and packages it needs are installed (once,
//! idempotently), so that each works on a fresh machine.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "xtask reports to the developer's terminal"
)]
mod bench;
mod curve;
mod demo;
mod dockerbench;
mod netbench;
mod setup;

use std::{
    path::PathBuf,
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing: Debian packages, rust-src for nightly, bpf-linker.
    Setup,
    /// Build the eBPF programs (through netpath's build script) and copy the object to
    /// target/netpath-ebpf.o for inspection with bpftool or llvm-objdump.
    BuildEbpf,
    /// Run every check: formatting, clippy (userspace and eBPF), unit, packet and
    /// integration tests.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Fuzz the datapath for longer than CI does: the packet fuzzer (tests/tests/fuzz.rs)
    /// pushes crafted and mutated packets through every TC program for `--secs` seconds, from
    /// a random seed that it prints (rerun a failure with `--seed`).
    Fuzz {
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
        secs: u64,
        /// Reuse a seed (as printed) instead of a random one.
        #[arg(long)]
        seed: Option<String>,
    },
    /// Build a sandbox of namespaces, run netpath in it, send real traffic, show the state,
    /// and tear it all down.
    Demo,
    /// Build netpath and copy its CNI plugin, netpath-cni, into DIR (where runtimes look
    /// for plugins).
    InstallCni {
        #[arg(long, default_value = "/opt/cni/bin")]
        dir: PathBuf,
    },
    /// Create and remove COUNT containers through the CLI, then all of them at once with
    /// `down`; prints and charts setup and teardown time against the number of containers
    /// (target/bench/containers.{json,md,svg}).
    BenchContainers {
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=5000))]
        count: u16,
        /// Measure this netpath binary instead of building one (to compare builds).
        #[arg(long)]
        bin: Option<PathBuf>,
    },
    /// Time a runtime's ADD and DEL per pod (namespace included) for netpath-cni and for the
    /// reference chain (bridge + host-local + portmap), interleaved; medians, p90, ratio.
    BenchCni {
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..10000))]
        count: u16,
    },
    /// Measure the datapath through a published port: the veth limit, plain routing, a bare
    /// eBPF forwarder, Docker's iptables rules and netpath, with N extra published ports;
    /// writes target/bench/report.{json,md,svg}.
    Bench {
        #[command(flatten)]
        options: netbench::Options,
        /// Measure this netpath binary instead of building one (to compare builds).
        #[arg(long)]
        bin: Option<PathBuf>,
    },
    /// Docker's own bridge driver (a dockerd with its defaults: iptables and docker-proxy)
    /// against netpath's plugin (a dockerd with iptables off), each dockerd in throwaway
    /// namespaces: new connections/s and keep-alive requests/s through a published port,
    /// the time from `docker run -p` to the first answer, with 0 and 1,000 other published
    /// ports, and what those ports cost in processes and memory; writes
    /// target/bench/docker.{json,md}.
    BenchDocker {
        /// One pass with 2 s runs (publishing 1,000 ports under Docker still takes minutes).
        #[arg(long)]
        quick: bool,
        /// Passes over both sides per phase (default: 5, or 1 with --quick).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        passes: Option<u32>,
        /// Seconds per wrk run (default: 4, or 2 with --quick).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        secs: Option<u32>,
    },
}

fn main() -> ExitCode {
    // One line per failure, never a backtrace: the failing step names itself.
    match run_task(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_task(cli: Cli) -> Result<()> {
    // Only the bench needs its load generators and servers.
    let extra = match cli.task {
        Task::Bench { .. } | Task::BenchDocker { .. } => setup::BENCH_PACKAGES,
        _ => &[],
    };
    setup::ensure(extra)?;
    match cli.task {
        Task::Setup => Ok(()),
        Task::BuildEbpf => build_ebpf(),
        Task::Test { args } => test(&args),
        Task::Fuzz { secs, seed } => fuzz(secs, seed),
        Task::Demo => demo::run(&build_netpath(true)?),
        Task::InstallCni { dir } => install_cni(&dir),
        Task::BenchContainers { count, bin } => {
            bench::containers(&given_or_built(bin)?, count.into())
        }
        Task::BenchCni { count } => bench::cni(&build_netpath(true)?, count.into()),
        Task::Bench { options, bin } => {
            let bin = given_or_built(bin)?;
            let forwarder = built_object("bench-forward")?;
            netbench::run(&bin, &forwarder, &options)
        }
        Task::BenchDocker {
            quick,
            passes,
            secs,
        } => dockerbench::run(&build_netpath(true)?, quick, passes, secs),
    }
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs a command from the workspace root, failing with its name if it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Builds the netpath binary and returns its path.
fn build_netpath(release: bool) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "--package", "netpath"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    let profile = if release { "release" } else { "debug" };
    Ok(workspace_root()
        .join("target")
        .join(profile)
        .join("netpath"))
}

/// The netpath binary a bench was given, or a release build of this tree.
fn given_or_built(bin: Option<PathBuf>) -> Result<PathBuf> {
    match bin {
        Some(bin) => Ok(bin),
        None => build_netpath(true),
    }
}

/// `cargo xtask install-cni`: a release build, then netpath-cni copied into `dir` (through
/// a temporary name and a rename, so that a runtime never runs a half-written plugin).
fn install_cni(dir: &std::path::Path) -> Result<()> {
    let bin = build_netpath(true)?.with_file_name("netpath-cni");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dest = dir.join("netpath-cni");
    let tmp = dir.join(".netpath-cni.tmp");
    std::fs::copy(&bin, &tmp).with_context(|| format!("copying {}", bin.display()))?;
    std::fs::rename(&tmp, &dest).with_context(|| format!("installing {}", dest.display()))?;
    println!("installed {}", dest.display());
    Ok(())
}

fn build_ebpf() -> Result<()> {
    build_netpath(true)?;
    let object = built_object("netpath")?;
    let dest = workspace_root().join("target/netpath-ebpf.o");
    std::fs::copy(&object, &dest)?;
    println!("eBPF object: {}", dest.display());
    Ok(())
}

/// The eBPF object `name` (a bin of netpath-ebpf) from the last release build of netpath,
/// whose build script leaves it in its OUT_DIR; the newest one is the one embedded.
fn built_object(name: &str) -> Result<PathBuf> {
    let build_dir = workspace_root().join("target/release/build");
    std::fs::read_dir(&build_dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("netpath-"))
        .map(|e| e.path().join("out").join(name))
        .filter(|p| p.is_file())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .with_context(|| format!("the build script produced no eBPF object {name}"))
}

fn test(args: &[String]) -> Result<()> {
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "netpath-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The programs only build for the BPF target (on the host, shared-type features unify and
    // pull in std): lint them there with the same flags, and leave them out of host builds.
    run(Command::new("rustup").args([
        "run",
        "nightly",
        "cargo",
        "clippy",
        "--package",
        "netpath-ebpf",
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--target-dir",
        "target/ebpf-clippy",
        "--",
        "-D",
        "warnings",
    ]))?;
    // Integration tests drive the CLI binary, so build it first.
    build_netpath(false)?;
    run(cargo()
        .args(["test", "--workspace", "--exclude", "netpath-ebpf"])
        .args(args))
}

/// Runs the packet fuzzer for `secs` seconds from `seed` (random when not given, printed
/// either way). The packet tests need only the object embedded in netpath, not its binary.
fn fuzz(secs: u64, seed: Option<String>) -> Result<()> {
    use std::hash::{BuildHasher as _, Hasher as _};
    let seed = seed.unwrap_or_else(|| {
        // std's per-process random keys: a random seed without a dependency.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        format!("{random:#x}")
    });
    println!("fuzzing for {secs} s with NETPATH_FUZZ_SEED={seed}");
    run(cargo()
        .args([
            "test",
            "--package",
            "netpath-tests",
            "--test",
            "fuzz",
            "--",
            "--nocapture",
        ])
        .env("NETPATH_FUZZ_SEED", &seed)
        .env("NETPATH_FUZZ_SECS", secs.to_string())
        .env("NETPATH_FUZZ_CASES", u64::MAX.to_string()))
    .with_context(|| format!("the fuzzer failed with NETPATH_FUZZ_SEED={seed}"))
}
