//! Builds netpath-ebpf for bpfel-unknown-none with the nightly toolchain and `-Z build-std=core`
//! into OUT_DIR, where `datapath.rs` embeds it. This is the only eBPF build recipe: `cargo xtask
//! build-ebpf` runs it too. A failed build fails this crate; nothing stale is ever embedded.
use std::path::PathBuf;

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?)
        .parent()
        .context("netpath has no parent directory")?
        .to_path_buf();
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
