//! A real runtime drives netpath-cni: Podman 4.3 with its CNI backend, run through
//! `nsenter --net` in the sandbox's host namespace (the field guide's recipe: runc, a
//! busybox root filesystem, ulimits the sandbox allows), with private storage, run
//! directory, network configuration and plugin directory per test. Its containers reach and
//! are reached only through the sandbox's namespaces.
use std::{
    fs,
    path::PathBuf,
    process::{Command, Output},
};

use netpath_tests::{
    CLIENT_ADDR, EXT_ADDR, Sandbox,
    helpers::{busybox_rootfs, cgi_peer, curl},
    netpath_bin, sandbox,
    scripts::server,
};

/// A private Podman for one sandbox; its containers and directories go on drop.
struct Podman {
    dir: PathBuf,
    host: String,
}

impl Podman {
    /// `net` becomes a CNI network whose one plugin is netpath-cni, with `subnet`.
    fn new(sb: &Sandbox, net: &str, subnet: &str) -> Podman {
        assert!(
            Command::new("podman").arg("--version").output().is_ok(),
            "podman is missing: cargo xtask setup installs it"
        );
        let dir = std::env::temp_dir().join(sb.name("podman"));
        let podman = Podman {
            dir: dir.clone(),
            host: sb.host.clone(),
        };
        for sub in ["net.d", "plugins", "tmp"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        fs::copy(
            netpath_bin().with_file_name("netpath-cni"),
            dir.join("plugins/netpath-cni"),
        )
        .unwrap();
        busybox_rootfs(&dir.join("rootfs"), &["sh", "httpd", "nc", "echo", "wget"]);
        fs::write(
            dir.join("net.d").join(format!("{net}.conflist")),
            serde_json::json!({
                "cniVersion": "1.0.0",
                "name": net,
                "plugins": [{
                    "type": "netpath-cni",
                    "bridge": format!("np-{net}"),
                    "subnet": subnet,
                    "capabilities": {"portMappings": true},
                }],
            })
            .to_string(),
        )
        .unwrap();
        fs::write(
            dir.join("containers.conf"),
            format!(
                "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{0}/plugins\"]\nnetwork_config_dir = \"{0}/net.d\"\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
                dir.display()
            ),
        )
        .unwrap();
        podman
    }

    fn run(&self, args: &[&str]) -> Output {
        let d = self.dir.display();
        Command::new("timeout")
            .arg("60")
            .arg("nsenter")
            .arg(format!("--net=/run/netns/{}", self.host))
            .arg("podman")
            .args([
                "--root",
                &format!("{d}/root"),
                "--runroot",
                &format!("{d}/runroot"),
            ])
            .args([
                "--tmpdir",
                &format!("{d}/tmp"),
                "--network-config-dir",
                &format!("{d}/net.d"),
            ])
            .args(["--runtime", "runc"])
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .output()
            .expect("running podman")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn rootfs(&self) -> String {
        self.dir.join("rootfs").display().to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-af", "-t", "0"]);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn podman_run_publishes_through_netpath_and_rm_leaves_nothing() {
    let sb = sandbox();
    let cl = sb.client().expect("client namespace");
    let pm = Podman::new(&sb, "pm", "10.89.30.0/24");
    let rootfs = pm.rootfs();
    pm.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=4096:4096",
        "--network",
        "pm",
        "-p",
        "8088:80",
        "--rootfs",
        &rootfs,
        "/bin/httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    // netpath knows the pod like its own containers.
    let ps = sb.ok_json(&["ps", "--json"]);
    let ps = ps.as_array().unwrap();
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert_eq!(ps[0]["mode"]["mode"], "cni");
    assert_eq!(sb.ok(&["publish"]).trim(), "8088:10.89.30.2:80/tcp");
    let url = |host: &str| format!("http://{host}:8088/cgi-bin/peer");

    // From a client: the container sees the client's own address.
    let (body, _) = curl(&sb, &cl.netns, &url(EXT_ADDR)).unwrap();
    assert_eq!(cgi_peer(&body), CLIENT_ADDR);
    // From the host, through 127.0.0.1 and through its own address.
    for addr in ["127.0.0.1", EXT_ADDR] {
        let (body, _) = curl(&sb, &sb.host, &url(addr)).unwrap();
        assert!(!cgi_peer(&body).is_empty(), "{addr}: {body}");
    }
    // Hairpin: the container reaches itself through the host's published port.
    let hairpin = pm.ok(&[
        "exec",
        "web",
        "sh",
        "-c",
        "printf 'GET /cgi-bin/peer HTTP/1.0\\r\\n\\r\\n' | nc 203.0.113.1 8088",
    ]);
    assert!(hairpin.contains("10.89.30."), "{hairpin}");
    // Outbound: masqueraded to the host's address.
    let _srv = server(&sb, &cl.netns, &["http", "9000"]);
    let out = pm.ok(&["exec", "web", "wget", "-qO-", "http://203.0.113.2:9000/"]);
    assert!(out.starts_with(&format!("{EXT_ADDR}:")), "{out}");

    pm.ok(&["stop", "-t", "1", "web"]);
    pm.ok(&["rm", "web"]);
    assert_eq!(sb.ok_json(&["ps", "--json"]), serde_json::json!([]));
    assert_eq!(sb.ok(&["publish"]).trim(), "");
    let links = sb.ip_json(&["link"]);
    let veths: Vec<&str> = links
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["ifname"].as_str())
        .filter(|n| n.starts_with("np") && *n != "np-pm")
        .collect();
    assert!(veths.is_empty(), "{veths:?}");
    assert!(curl(&sb, &cl.netns, &url(EXT_ADDR)).is_err());
}
