//! netpath-cni run as a runtime runs it: CNI_* variables, the configuration on stdin,
//! with `nsenter --net` in a sandbox's host namespace (which keeps the real /sys/fs/bpf,
//! unlike `ip netns exec`), and pods that are namespaces of the sandbox.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use serde_json::Value;

use crate::{Client, Sandbox, netpath_bin};

pub fn cni_bin() -> PathBuf {
    netpath_bin().with_file_name("netpath-cni")
}

/// Runs netpath-cni in the sandbox's host namespace; `env` are CNI_* variables.
pub fn cni(sb: &Sandbox, env: &[(&str, &str)], stdin: &str) -> Output {
    plugin(sb, &cni_bin(), env, stdin)
}

/// Runs the CNI plugin `bin` in the sandbox's host namespace, as [`cni`] runs netpath-cni.
pub fn plugin(sb: &Sandbox, bin: &Path, env: &[(&str, &str)], stdin: &str) -> Output {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", sb.host))
        .arg(bin)
        .env_remove("CNI_NETNS")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("running netpath-cni");
    let _ = child
        .stdin
        .take()
        .expect("piped")
        .write_all(stdin.as_bytes());
    child.wait_with_output().expect("waiting for netpath-cni")
}

pub fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {:?} stderr {:?}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A pod: its namespace (the test's, like a runtime's) and its container id.
pub struct Pod {
    pub ns: Client,
    pub id: String,
}

impl Pod {
    pub fn new(sb: &Sandbox, base: &str) -> Pod {
        let ns = sb.extra_netns(base).expect("pod namespace");
        // The base first: netpath names a pod after the id's first 12 characters.
        let id = format!("{base}{}", ns.netns.replace('-', ""));
        Pod { ns, id }
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.ns.netns)
    }

    pub fn run(&self, sb: &Sandbox, command: &str, conf: &Value) -> Output {
        let path = self.path();
        cni(
            sb,
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", &self.id),
                ("CNI_NETNS", &path),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/usr/lib/cni"),
            ],
            &conf.to_string(),
        )
    }

    /// ADD that must succeed; its result.
    pub fn add(&self, sb: &Sandbox, conf: &Value) -> Value {
        let out = self.run(sb, "ADD", conf);
        assert!(
            out.status.success(),
            "ADD: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        stdout_json(&out)
    }

    pub fn ok(&self, sb: &Sandbox, command: &str, conf: &Value) {
        let out = self.run(sb, command, conf);
        assert!(
            out.status.success() && out.stdout.is_empty(),
            "{command}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A command that must fail; the spec's error object.
    pub fn fails(&self, sb: &Sandbox, command: &str, conf: &Value) -> Value {
        let out = self.run(sb, command, conf);
        assert!(!out.status.success(), "{command} should have failed");
        let err = stdout_json(&out);
        let msg = err["msg"].as_str().expect("msg");
        assert!(!msg.is_empty() && !msg.contains('\n'), "one line: {msg:?}");
        err
    }
}

/// Asserts that the plugin's error message (`fails`) says `fragment`.
pub fn assert_says(err: &Value, fragment: &str) {
    let msg = err["msg"].as_str().unwrap_or_default();
    assert!(msg.contains(fragment), "{fragment:?} not in {err}");
}

/// One pod as a runtime names it to the plugins of a list.
pub struct Attachment {
    pub id: String,
    /// CNI_NETNS; None to leave it out (bad input).
    pub netns: Option<String>,
    /// `runtimeConfig.portMappings` for the plugins with the capability.
    pub ports: Value,
}

/// A runtime's side of a conflist: runs each plugin of `list` in order (DEL in reverse) in
/// the sandbox's host namespace, with the list's name and version, `prevResult` and the
/// capability arguments, finding the plugins in `dirs` (also CNI_PATH).
pub struct Runtime<'a> {
    pub sb: &'a Sandbox,
    pub list: Value,
    pub dirs: Vec<PathBuf>,
}

impl Runtime<'_> {
    fn plugins(&self) -> usize {
        self.list["plugins"].as_array().map_or(0, Vec::len)
    }

    /// Plugin `i` of the list for `command`: its JSON answer (Null when it printed
    /// nothing) or its error object.
    pub fn invoke(
        &self,
        pod: &Attachment,
        i: usize,
        command: &str,
        prev: Option<&Value>,
    ) -> Result<Value, Value> {
        let p = &self.list["plugins"][i];
        let mut conf = p.clone();
        conf["name"] = self.list["name"].clone();
        conf["cniVersion"] = self.list["cniVersion"].clone();
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        if p["capabilities"]["portMappings"] == true {
            conf["runtimeConfig"] = serde_json::json!({"portMappings": pod.ports});
        }
        let kind = p["type"].as_str().unwrap_or_default();
        self.raw(pod, kind, command, &conf.to_string())
    }

    /// The plugin `kind` with `stdin` as its configuration, as [`Runtime::invoke`] runs it.
    pub fn raw(
        &self,
        pod: &Attachment,
        kind: &str,
        command: &str,
        stdin: &str,
    ) -> Result<Value, Value> {
        let bin = self
            .dirs
            .iter()
            .map(|d| d.join(kind))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("plugin {kind} not found in {:?}", self.dirs));
        let cni_path = std::env::join_paths(&self.dirs).expect("CNI_PATH");
        let cni_path = cni_path.to_string_lossy();
        let mut env = vec![
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", pod.id.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", &cni_path),
        ];
        if let Some(netns) = &pod.netns {
            env.push(("CNI_NETNS", netns));
        }
        let out = plugin(self.sb, &bin, &env, stdin);
        let answer = match out.stdout.is_empty() {
            true => Value::Null,
            false => stdout_json(&out),
        };
        match out.status.success() {
            true => Ok(answer),
            false => Err(answer),
        }
    }

    /// ADD over the list: the last plugin's result, or the first error.
    pub fn add(&self, pod: &Attachment) -> Result<Value, Value> {
        let mut prev: Option<Value> = None;
        for i in 0..self.plugins() {
            prev = Some(self.invoke(pod, i, "ADD", prev.as_ref())?);
        }
        prev.ok_or(Value::Null)
    }

    /// CHECK (in order) or DEL (in reverse) with the cached ADD result; each plugin's
    /// answer must be empty.
    pub fn each(&self, pod: &Attachment, command: &str, result: &Value) -> Result<(), Value> {
        let n = self.plugins();
        let order: Vec<usize> = match command {
            "DEL" => (0..n).rev().collect(),
            _ => (0..n).collect(),
        };
        for i in order {
            match self.invoke(pod, i, command, Some(result))? {
                Value::Null => {}
                printed => return Err(printed),
            }
        }
        Ok(())
    }
}

/// A directory (host-local's `dataDir`) removed on drop, also when a test fails.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
