//! The kernel's run-time accounting of the programs on the path (`bpf_stats`): total
//! nanoseconds and runs of each program, read before and after a test; their differences give
//! the nanoseconds per packet. Accounting is switched on with BPF_ENABLE_STATS, which lasts as
//! long as its file descriptor (held for the bench's duration) and then reverts by itself,
//! unlike the global `kernel.bpf_stats_enabled` sysctl.
use std::{os::fd::OwnedFd, process::Command};

use anyhow::{Context as _, Result};
use aya::sys::{Stats, enable_stats};

use super::topo::ok;

/// Switches the accounting on until the returned descriptor is dropped.
pub fn enable() -> Result<OwnedFd> {
    enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS")
}

/// (run_time_ns, run_cnt) of each program id, as `bpftool prog show` reports them (absent
/// while zero).
pub fn read(ids: &[(String, u32)]) -> Result<Vec<(u64, u64)>> {
    ids.iter()
        .map(|(name, id)| {
            let out = Command::new("bpftool")
                .args(["prog", "show", "id", &id.to_string(), "--json"])
                .output()
                .context("running bpftool")?;
            ok(&out).with_context(|| format!("bpftool prog show id {id} ({name})"))?;
            let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            let field = |k: &str| json[k].as_u64().unwrap_or(0);
            Ok((field("run_time_ns"), field("run_cnt")))
        })
        .collect()
}

/// What each program cost during one test: (name, nanoseconds, runs).
pub fn delta(
    ids: &[(String, u32)],
    before: &[(u64, u64)],
    after: &[(u64, u64)],
) -> Vec<(String, u64, u64)> {
    ids.iter()
        .zip(before.iter().zip(after))
        .map(|((name, _), (b, a))| {
            (
                name.clone(),
                a.0.saturating_sub(b.0),
                a.1.saturating_sub(b.1),
            )
        })
        .collect()
}
