//! Container setup and teardown through the CLI, as a user runs it (process start included),
//! and pod setup and teardown through CNI plugins, as a runtime runs them.
use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Result;
use netpath_tests::{
    Sandbox,
    cni::{Attachment, Runtime, TempDir},
};
use serde_json::{Value, json};

use crate::curve::Curve;

pub(crate) fn median_ms(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

pub(crate) fn p90_ms(samples: &[f64]) -> f64 {
    samples[(samples.len() * 9 / 10).min(samples.len() - 1)]
}

/// `cargo xtask bench-containers`: `netpath run` of `count` containers one after another,
/// then `netpath rm` of each, newest first, so that the k-th setup and the k-th teardown both
/// happen with k containers present; then all of them again and one `netpath down`. Writes the
/// curve to target/bench/containers.{json,md,svg}.
pub fn containers(bin: &Path, count: usize) -> Result<()> {
    let sb = Sandbox::new(bin)?;
    sb.ok(&["up", "-d"]);
    let names: Vec<String> = (0..count).map(|i| sb.name(&format!("b{i}"))).collect();
    let time = |args: &[&str]| {
        let start = Instant::now();
        sb.ok(args);
        start.elapsed().as_secs_f64() * 1e3
    };
    let setup: Vec<f64> = names.iter().map(|n| time(&["run", n])).collect();
    let probe = probe(&sb, bin)?;
    let mut teardown: Vec<f64> = names.iter().rev().map(|n| time(&["rm", n])).collect();
    teardown.reverse();
    for n in &names {
        sb.ok(&["run", n]);
    }
    let down = time(&["down"]) / 1e3;
    let left = leftovers(&sb);
    anyhow::ensure!(
        left.is_empty(),
        "`netpath down` left behind: {}",
        left.join(", ")
    );
    drop(sb);
    let publish = publish_all(bin)?;
    let curve = Curve::new(setup, teardown, down, publish, probe);
    println!(
        "containers: {count} created with `netpath run`, removed newest first with `netpath rm`, then {count} again and `netpath down`"
    );
    print!("{}", curve.table(false));
    println!("{}", curve.summary());
    let dir = crate::workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("containers.json"),
        serde_json::to_string_pretty(&curve.json())?,
    )?;
    std::fs::write(
        dir.join("containers.md"),
        format!("{}\n{}\n", curve.table(true), curve.summary()),
    )?;
    std::fs::write(dir.join("containers.svg"), curve.svg())?;
    println!("written: {}/containers.{{json,md,svg}}", dir.display());
    Ok(())
}

/// `run` and `rm` of one more container with all of them present (in `full`) and with none
/// (in a fresh sandbox), alternating, `ENDS` times each: the growth measured with both sides
/// on the same machine at the same moment, which the curve, taken over minutes, is not.
/// Returns the medians (full run, empty run, full rm, empty rm) in milliseconds.
fn probe(full: &Sandbox, bin: &Path) -> Result<[f64; 4]> {
    let empty = Sandbox::new(bin)?;
    empty.ok(&["up", "-d"]);
    let mut samples: [Vec<f64>; 4] = Default::default();
    for i in 0..crate::curve::ENDS {
        for (k, sb) in [full, &empty].into_iter().enumerate() {
            let name = sb.name(&format!("probe{i}"));
            for (op, j) in [("run", k), ("rm", k + 2)] {
                let start = Instant::now();
                sb.ok(&[op, &name]);
                samples[j].push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    Ok(samples.map(|mut s| median_ms(&mut s)))
}

/// The most ports one batch can publish: every TCP port to one container, one SPEC a line
/// (the worst case for parsing and validation), applied with `publish --from-file`. Returns
/// the seconds it took, and those of listing them back.
fn publish_all(bin: &Path) -> Result<(f64, f64)> {
    let sb = Sandbox::new(bin)?;
    sb.ok(&["up", "-d"]);
    sb.ok(&["run", &sb.name("target"), "--ip", "172.17.0.2"]);
    let dir = TempDir(std::env::temp_dir().join(sb.name("publish")));
    std::fs::create_dir_all(&dir.0)?;
    let specs: String = (1..=u16::MAX)
        .map(|p| format!("{p}:172.17.0.2:{p}\n"))
        .collect();
    let file = dir.0.join("specs");
    std::fs::write(&file, specs)?;
    let path = file.to_string_lossy().into_owned();
    let start = Instant::now();
    let out = sb.ok(&["publish", "--from-file", &path]);
    let apply = start.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.contains("published 65535 port(s)"),
        "publish said: {out}"
    );
    let start = Instant::now();
    let listed = sb.ok(&["publish"]);
    let list = start.elapsed().as_secs_f64();
    anyhow::ensure!(listed.lines().count() == 1, "publish listed: {listed}");
    Ok((apply, list))
}

/// What is left in the sandbox after `down`: links other than lo, and container namespaces.
fn leftovers(sb: &Sandbox) -> Vec<String> {
    let links = sb.ip_json(&["link", "show"]);
    let mut left: Vec<String> = links
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str())
        .filter(|n| *n != "lo")
        .map(|n| format!("link {n}"))
        .collect();
    let prefix = sb.name("");
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        left.extend(
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix) && *n != sb.host)
                .map(|n| format!("namespace {n}")),
        );
    }
    left
}

/// `cargo xtask bench-cni`: per pod, the time of a runtime's ADD (namespace creation, then
/// the list's plugins) and DEL (the plugins in reverse, then the namespace's removal), for
/// netpath-cni and for the reference chain (bridge + host-local + portmap), each in a
/// sandbox of its own, interleaved pod by pod so that both see the same machine.
pub fn cni(bin: &Path, count: usize) -> Result<()> {
    let plugin_dir = bin.parent().expect("target/release").to_owned();
    let reference_dir = PathBuf::from("/usr/lib/cni");
    let dirs = vec![reference_dir, plugin_dir];
    let np_sb = Sandbox::new(bin)?;
    let ref_sb = Sandbox::new(bin)?;
    let data = TempDir(std::env::temp_dir().join(format!("{}-ipam", ref_sb.name("bench"))));
    let np = Runtime {
        sb: &np_sb,
        list: json!({"cniVersion": "1.0.0", "name": "bench", "plugins": [
            {"type": "netpath-cni", "subnet": "10.90.0.0/16", "capabilities": {"portMappings": true}}
        ]}),
        dirs: dirs.clone(),
    };
    let reference = Runtime {
        sb: &ref_sb,
        list: json!({"cniVersion": "1.0.0", "name": "bench", "plugins": [
            {"type": "bridge", "bridge": "cnibench0", "isGateway": true, "ipMasq": true,
             "ipam": {"type": "host-local", "dataDir": data.0, "ranges": [[{"subnet": "10.91.0.0/16"}]]}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]}),
        dirs,
    };
    let sides = [("netpath-cni", &np), ("reference", &reference)];
    let mut pods: Vec<Vec<(Attachment, Value)>> = vec![vec![], vec![]];
    let mut add: Vec<Vec<f64>> = vec![vec![], vec![]];
    let mut del: Vec<Vec<f64>> = vec![vec![], vec![]];
    // The first ADD of either side brings its network up: a warm-up pod each, not counted.
    for i in 0..=count {
        for s in order(i) {
            let (name, rt) = sides[s];
            let start = Instant::now();
            let ns = rt.sb.name(&format!("b{i}"));
            netpath_tests::ip(&["netns", "add", &ns])?;
            netpath_tests::ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let pod = Attachment {
                id: format!("bench{i}{ns}"),
                netns: Some(format!("/run/netns/{ns}")),
                ports: json!([{"hostPort": 20000 + i, "containerPort": 80, "protocol": "tcp"}]),
            };
            let result = rt
                .add(&pod)
                .map_err(|e| anyhow::anyhow!("{name} ADD of pod {i}: {e}"))?;
            if i > 0 {
                add[s].push(start.elapsed().as_secs_f64() * 1e3);
            }
            pods[s].push((pod, result));
        }
    }
    let pairs: Vec<_> = pods[0].iter().zip(&pods[1]).collect();
    for (i, (ours, theirs)) in pairs.into_iter().enumerate() {
        for s in order(i) {
            let (name, rt) = sides[s];
            let (pod, result) = if s == 0 { ours } else { theirs };
            let start = Instant::now();
            rt.each(pod, "DEL", result)
                .map_err(|e| anyhow::anyhow!("{name} DEL of pod {i}: {e}"))?;
            let ns = pod
                .netns
                .as_deref()
                .expect("set")
                .trim_start_matches("/run/netns/");
            netpath_tests::ip(&["netns", "del", ns])?;
            if i > 0 {
                del[s].push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    println!(
        "CNI: {count} pods per side, ADD then DEL, namespace creation and removal included, interleaved"
    );
    let mut medians = [[0.0; 2]; 2];
    for (k, (op, samples)) in [("ADD", &mut add), ("DEL", &mut del)]
        .into_iter()
        .enumerate()
    {
        for (s, (name, _)) in sides.iter().enumerate() {
            let m = median_ms(&mut samples[s]);
            medians[k][s] = m;
            println!(
                "{op} {name:12} median {m:7.2} ms   p90 {:7.2} ms",
                p90_ms(&samples[s])
            );
        }
    }
    for (k, op) in ["ADD", "DEL"].iter().enumerate() {
        println!(
            "{op}: netpath-cni / reference = {:.2} (target at most 0.33)",
            medians[k][0] / medians[k][1]
        );
    }
    Ok(())
}

/// Which side goes first for pod `i`: alternating, so that neither always follows the other.
fn order(i: usize) -> [usize; 2] {
    if i.is_multiple_of(2) { [0, 1] } else { [1, 0] }
}
