//! Test topologies in throwaway network namespaces. A [`Sandbox`] owns a "host" namespace
//! in which netpath runs (`--netns`) and every container it names; all of it is removed on
//! drop, also when a test fails, so tests run in parallel and leave nothing behind.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Output, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    thread::sleep,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

pub mod cni;
pub mod helpers;
#[cfg(feature = "datapath")]
pub mod packet;
pub mod scripts;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The netpath binary of the running executable's profile (target/<profile>/netpath, seen
/// from a test in target/<profile>/deps or a binary in target/<profile>), or
/// `$NETPATH_BIN`. `cargo xtask test` builds it before the tests run.
pub fn netpath_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NETPATH_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("target/<profile>[/deps]");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("target/<profile>")
    } else {
        dir
    };
    let bin = dir.join("netpath");
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

/// A sandbox for the netpath binary of this profile ([`netpath_bin`]).
pub fn sandbox() -> Sandbox {
    Sandbox::new(&netpath_bin()).expect("sandbox")
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

    /// Runs `netpath --netns <host> ARGS`. A container started without `--dns` gets
    /// 127.0.0.1 as its resolver: with the host's, a lookup inside the sandbox (even
    /// Python's HTTPServer resolves its own name) would be sent towards the machine's real
    /// resolver, and nothing in a sandbox may target an outside address.
    pub fn netpath(&self, args: &[&str]) -> Output {
        let mut cmd = self.command(args);
        if args.first() == Some(&"run") && !args.contains(&"--dns") {
            cmd.args(["--dns", "127.0.0.1"]);
        }
        cmd.output().expect("running netpath")
    }

    /// The command `netpath --netns <host> ARGS`, to run as the caller needs.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--netns").arg(&self.host).args(args);
        cmd
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

    /// [`Sandbox::ok`] of a command that prints JSON (`--json`), parsed.
    pub fn ok_json(&self, args: &[&str]) -> serde_json::Value {
        let text = self.ok(args);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("netpath {args:?}: {e}: {text}"))
    }

    /// `netpath up -d UP...`, then the first container, `<prefix>-web` (172.17.0.2 on the
    /// default network); returns its name.
    pub fn up_with_web(&self, up: &[&str]) -> String {
        self.ok(&[&["up", "-d"], up].concat());
        let web = self.name("web");
        self.ok(&["run", &web]);
        web
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

    /// Runs `netpath --netns <host> ARGS` with `input` on its stdin.
    pub fn netpath_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running netpath");
        let mut stdin = child.stdin.take().expect("piped stdin");
        let input = input.to_owned();
        // A writer thread: netpath may answer (and exit) before reading everything.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().expect("waiting for netpath");
        let _ = writer.join();
        out
    }

    /// Creates the client namespace `<prefix>-client`, wired to the host namespace by a
    /// veth pair: `ext0` [`EXT_ADDR`]/24 in the host, `eth0` [`CLIENT_ADDR`]/24 in the
    /// client, and the host's default route via the client, so that `ext0` is the default
    /// external interface. Create it before `netpath up`. Removed on drop (and by the
    /// sandbox's drop, since it carries the sandbox's prefix).
    pub fn client(&self) -> Result<Client> {
        let client = Client {
            netns: self.name("client"),
        };
        ip(&["netns", "add", &client.netns])?;
        let n = &client.netns;
        let h = &self.host;
        helpers::veth((h, "ext0", "203.0.113.1/24"), (n, "eth0", "203.0.113.2/24"))?;
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        ip(&["-n", h, "route", "add", "default", "via", CLIENT_ADDR])?;
        Ok(client)
    }

    /// [`Sandbox::client`] as the outside world: the client namespace with [`SERVER_ADDR`]
    /// on its `lo`, a server's address beyond the host's external interface.
    pub fn outside(&self) -> Result<Client> {
        let cl = self.client()?;
        ip(&[
            "-n",
            &cl.netns,
            "addr",
            "add",
            &format!("{SERVER_ADDR}/32"),
            "dev",
            "lo",
        ])?;
        Ok(cl)
    }

    /// Creates the namespace `<prefix>-<base>` with `lo` up, for extra topology (routers,
    /// servers); removed on drop like the client.
    pub fn extra_netns(&self, base: &str) -> Result<Client> {
        let ns = Client {
            netns: self.name(base),
        };
        ip(&["netns", "add", &ns.netns])?;
        ip(&["-n", &ns.netns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Starts `cmd` inside `netns` in the background (`ip netns exec`), stdin and stdout
    /// piped; killed with its whole process group when the returned guard drops.
    pub fn spawn(&self, netns: &str, cmd: &[&str]) -> Result<Proc> {
        Proc::spawn(netns, cmd)
    }

    /// Starts the Python `script` with `args` in `netns` and waits (10 s at most) until it
    /// prints `ready_line`: a server that listens, a client that connected.
    pub fn start_python(&self, netns: &str, script: &str, args: &[&str], ready_line: &str) -> Proc {
        let mut cmd = vec!["python3", "-c", script];
        cmd.extend_from_slice(args);
        let proc = self.spawn(netns, &cmd).expect("starting python3");
        proc.wait_for(ready_line, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("python3 {args:?} in {netns}: {e:#}"));
        proc
    }

    /// Runs the Python `script` with `args` in `netns` to completion (at most `secs`
    /// seconds), fails unless it succeeds, and returns its stdout lines.
    pub fn run_python(&self, netns: &str, secs: u32, script: &str, args: &[&str]) -> Vec<String> {
        let secs = secs.to_string();
        let mut cmd = vec!["timeout", &secs, "python3", "-c", script];
        cmd.extend_from_slice(args);
        let out = self.exec(netns, &cmd);
        assert!(
            out.status.success(),
            "python3 {args:?} in {netns}: {}; stdout: {}; stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `bpftool -j map dump pinned` of one of this sandbox's pinned maps, parsed (an empty
    /// array when the map is empty).
    pub fn map_dump(&self, map: &str) -> Result<serde_json::Value> {
        let path = format!("/sys/fs/bpf/netpath/{}/{map}", self.host);
        let out = Command::new("bpftool")
            .args(["-j", "map", "dump", "pinned", &path])
            .output()
            .context("running bpftool")?;
        if !out.status.success() {
            bail!(
                "bpftool map dump {path}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout).context("parsing bpftool -j output")
    }

    /// Runs netpath with bad input; `None` when it failed the way bad input must (non-zero
    /// exit, exactly one `netpath: ...` line on stderr), else what was wrong.
    pub fn refusal_problem(&self, args: &[&str]) -> Option<String> {
        let out = self.netpath(args);
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            Some(format!("{args:?} succeeded"))
        } else if err.trim().lines().count() != 1 || !err.starts_with("netpath: ") {
            Some(format!("{args:?}: not a one-line error: {err:?}"))
        } else {
            None
        }
    }

    /// Runs a command inside a namespace (a container's or the host's) with `ip netns exec`.
    pub fn exec(&self, netns: &str, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", netns])
            .args(cmd)
            .output()
            .expect("running ip netns exec")
    }

    /// [`Sandbox::exec`] that must succeed; its stdout.
    pub fn exec_ok(&self, netns: &str, cmd: &[&str]) -> String {
        let out = self.exec(netns, cmd);
        assert!(
            out.status.success(),
            "{cmd:?} in {netns}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
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

/// The host namespace's address on `ext0`, facing the client (see [`Sandbox::client`]).
pub const EXT_ADDR: &str = "203.0.113.1";
/// The client namespace's address.
pub const CLIENT_ADDR: &str = "203.0.113.2";
/// A server outside, on the client namespace's `lo` ([`Sandbox::outside`]).
pub const SERVER_ADDR: &str = "198.51.100.10";

/// A client namespace outside the host (see [`Sandbox::client`]); deleted on drop.
pub struct Client {
    pub netns: String,
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.netns]);
    }
}

/// A background process in a namespace: stdin writable, stdout read line by line with a
/// timeout; the process and its group are killed on drop.
pub struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(netns: &str, cmd: &[&str]) -> Result<Proc> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns])
            .args(cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {cmd:?} in {netns}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Proc {
            child,
            stdin,
            lines,
        })
    }

    /// The next line of its stdout, waiting at most `timeout`; None on timeout or exit.
    pub fn line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Waits for the line `expected` (e.g. a server's "ready"), skipping others.
    pub fn wait_for(&self, expected: &str, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.line(left) {
                Some(line) if line.trim() == expected => return Ok(()),
                Some(_) => {}
                None => bail!("no {expected:?} line within {timeout:?}"),
            }
        }
    }

    /// Writes one line to its stdin.
    pub fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        stdin.write_all(format!("{line}\n").as_bytes())?;
        stdin.flush()?;
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stdin = None;
        // SAFETY: kill has no memory preconditions; the group is the child's own.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` up to `tries` times, `every` apart; true as soon as it holds.
pub fn wait_until(tries: u32, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    for i in 0..tries {
        if cond() {
            return true;
        }
        if i + 1 < tries {
            sleep(every);
        }
    }
    false
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `ip ARGS`; fails with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
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
