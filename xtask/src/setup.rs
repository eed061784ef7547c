//! Installs what the build and the tests need, only when it is missing: the second run is a
//! handful of quick checks.
use std::process::{Command, Stdio};

use anyhow::{Result, bail};

use crate::run;

/// Debian packages, each with a command that proves it is installed.
const PACKAGES: &[(&str, &str)] = &[
    ("bpftool", "bpftool"),
    ("iproute2", "ip"),
    ("iputils-ping", "ping"),
    ("curl", "curl"),
    ("python3", "python3"),
    // netpath-cni's tests: a real runtime (Podman with runc), a busybox root filesystem
    // and the reference host-local IPAM plugin.
    ("podman", "podman"),
    ("runc", "runc"),
    ("busybox-static", "busybox"),
    ("containernetworking-plugins", "/usr/lib/cni/host-local"),
    // `netpath docker-plugin`'s tests: a real dockerd (20.10).
    ("docker.io", "dockerd"),
];
/// What `cargo xtask bench` and `bench-docker` add: servers and load generators, and
/// iptables for Docker's rules (the nf_tables backend is fine).
pub const BENCH_PACKAGES: &[(&str, &str)] = &[
    ("iperf3", "iperf3"),
    ("nginx-light", "nginx"),
    ("sockperf", "sockperf"),
    ("wrk", "wrk"),
    ("iptables", "iptables-restore"),
];
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

fn has_command(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Installs what is missing of [`PACKAGES`] and `extra`, and the Rust side.
pub fn ensure(extra: &[(&str, &str)]) -> Result<()> {
    let linker_ok =
        output(Command::new("bpf-linker").arg("--version")).contains(BPF_LINKER_VERSION);
    let mut missing: Vec<&str> = PACKAGES
        .iter()
        .chain(extra)
        .filter(|(_, cmd)| !has_command(cmd))
        .map(|(pkg, _)| *pkg)
        .collect();
    if !linker_ok
        && !std::path::Path::new(LLVM_PREFIX)
            .join("bin/llvm-config")
            .exists()
    {
        missing.push("llvm-22-dev");
    }
    if !missing.is_empty() {
        eprintln!("xtask: installing {}", missing.join(" "));
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]));
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        bail!("the nightly Rust toolchain is missing; the eBPF programs need it (see README)");
    }
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]));
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("xtask: installing rust-src for nightly");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    if !linker_ok {
        eprintln!("xtask: installing bpf-linker {BPF_LINKER_VERSION} against LLVM 22");
        run(Command::new("cargo")
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", "llvm-22", "--force"])
            .env("LLVM_PREFIX", LLVM_PREFIX))?;
    }
    Ok(())
}
