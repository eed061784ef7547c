//! Builds netpath-ebpf for bpfel-unknown-none with the nightly toolchain and `-Z build-std=core`
//! into OUT_DIR, where `datapath.rs` embeds it. This is the only eBPF build recipe: `cargo xtask
//! build-ebpf` runs it too. A failed build fails this crate; nothing stale is ever embedded.
#![allow(
    clippy::print_stdout,
    reason = "cargo reads a build script's directives from its stdout"
)]
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

/// What installs every missing piece of the eBPF toolchain.
const SETUP: &str = "cargo xtask setup";

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?)
        .parent()
        .context("netpath has no parent directory")?
        .to_path_buf();
    let missing = missing_toolchain();
    if !missing.is_empty() {
        // One line instead of a nested cargo's failure and a backtrace. A failed build script
        // always runs again, so the next build after setup picks up the toolchain.
        println!(
            "cargo::error=the eBPF programs need {}, which {} missing: `{SETUP}` installs {}",
            missing.join(" and "),
            if missing.len() == 1 { "is" } else { "are" },
            if missing.len() == 1 { "it" } else { "them" },
        );
        return Ok(());
    }
    // The shared types change the object too; cargo tracks netpath-common only as a library.
    println!(
        "cargo:rerun-if-changed={}",
        root.join("netpath-common").display()
    );
    let ebpf_dir = root.join("netpath-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "netpath-ebpf",
            root_dir: ebpf_dir.to_str().context("non-UTF-8 workspace path")?,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}

/// The pieces of the eBPF toolchain that are not installed.
fn missing_toolchain() -> Vec<&'static str> {
    let mut missing = Vec::new();
    match nightly_sysroot() {
        None => missing.push("the nightly Rust toolchain"),
        // build-std compiles core from these sources.
        Some(sysroot) if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() => {
            missing.push("rust-src for nightly")
        }
        Some(_) => {}
    }
    match which::which("bpf-linker") {
        // Cargo cannot see the linker as an input: a new one must rebuild the programs.
        Ok(linker) => println!("cargo:rerun-if-changed={}", linker.display()),
        Err(_) => missing.push("bpf-linker"),
    }
    missing
}

fn nightly_sysroot() -> Option<PathBuf> {
    let out = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .ok()?;
    let sysroot = String::from_utf8(out.stdout).ok()?;
    out.status
        .success()
        .then(|| Path::new(sysroot.trim()).to_path_buf())
}
