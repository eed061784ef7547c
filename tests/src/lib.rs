//! Test topologies in throwaway network namespaces. A [`Sandbox`] owns a "host" namespace
//! in which netpath runs (`--netns`) and every container it names; all of it is removed on
//! drop, also when a test fails, so tests run in parallel and leave nothing behind.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, Result, bail};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The netpath binary next to the running test executable (target/<profile>/netpath), or
/// `$NETPATH_BIN`. `cargo xtask test` builds it before the tests run.
pub fn netpath_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NETPATH_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .join("netpath");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p netpath` (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// Unique, short (they become interface-free namespace names) and readable in `ip netns`.
pub fn unique(tag: &str) -> String {
    format!(
        "np{}x{}{tag}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct Sandbox {
    /// The namespace netpath runs in (the "host" of the containers).
    pub host: String,
    /// Prefix of every container name, so that all of them can be found and removed.
    prefix: String,
    bin: PathBuf,
}

impl Sandbox {
    pub fn new(bin: &Path) -> Result<Sandbox> {
        if !is_root() {
            bail!("netpath tests create network namespaces and must run as root");
        }
        let prefix = unique("");
        let host = format!("{prefix}-host");
        ip(&["netns", "add", &host])?;
        let sandbox = Sandbox {
            host,
            prefix,
            bin: bin.to_owned(),
        };
        ip(&["-n", &sandbox.host, "link", "set", "lo", "up"])?;
        Ok(sandbox)
    }

    /// A container name unique to this sandbox.
    pub fn name(&self, base: &str) -> String {
        format!("{}-{base}", self.prefix)
    }

    /// Runs `netpath --netns <host> ARGS`.
    pub fn netpath(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("--netns")
            .arg(&self.host)
            .args(args)
            .output()
            .expect("running netpath")
    }

    /// Runs netpath and fails with its stderr unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.netpath(args);
        assert!(
            out.status.success(),
            "netpath {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs netpath, expects failure, and returns the error message.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.netpath(args);
        assert!(
            !out.status.success(),
            "netpath {args:?} should have failed; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs a command inside a namespace (a container's or the host's) with `ip netns exec`.
    pub fn exec(&self, netns: &str, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", netns])
            .args(cmd)
            .output()
            .expect("running ip netns exec")
    }

    /// One ping, one second at most: true when answered.
    pub fn ping(&self, netns: &str, addr: &str) -> bool {
        self.exec(netns, &["ping", "-c", "1", "-W", "1", addr])
            .status
            .success()
    }

    /// `ip -j ARGS` in the host namespace, parsed.
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        ip_json(Some(&self.host), args)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.netpath(&["down"]);
        // Whatever netpath failed to remove: containers first, then the host.
        if let Ok(list) = std::fs::read_dir("/run/netns") {
            for entry in list.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(&format!("{}-", self.prefix)) && name != self.host {
                    let _ = ip(&["netns", "del", &name]);
                    let _ = std::fs::remove_dir_all(format!("/etc/netns/{name}"));
                }
            }
        }
        let _ = ip(&["netns", "del", &self.host]);
        let _ = std::fs::remove_dir_all(format!("/run/netpath/{}", self.host));
        let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/netpath/{}", self.host));
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `ip [-n NS] -j ARGS`, parsed.
pub fn ip_json(netns: Option<&str>, args: &[&str]) -> serde_json::Value {
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    let out = cmd.arg("-j").args(args).output().expect("running ip -j");
    assert!(
        out.status.success(),
        "ip -j {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Array(vec![]))
}
