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

fn median_ms(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn p90_ms(samples: &[f64]) -> f64 {
    samples[(samples.len() * 9 / 10).min(samples.len() - 1)]
}

pub fn containers(bin: &Path, count: usize) -> Result<()> {
    let sb = Sandbox::new(bin)?;
    sb.ok(&["up", "-d"]);
    let names: Vec<String> = (0..count).map(|i| sb.name(&format!("b{i}"))).collect();
    let time = |args: &[&str]| {
        let start = Instant::now();
        sb.ok(args);
        start.elapsed().as_secs_f64() * 1e3
    };
    let mut setup: Vec<f64> = names.iter().map(|n| time(&["run", n])).collect();
    let mut teardown: Vec<f64> = names.iter().map(|n| time(&["rm", n])).collect();
    let (s, t) = (median_ms(&mut setup), median_ms(&mut teardown));
    println!("containers: {count} created and removed with `netpath run` / `netpath rm`");
    println!(
        "setup    median {s:6.2} ms   p90 {:6.2} ms   (namespace, veth, address, route, state)",
        p90_ms(&setup)
    );
    println!(
        "teardown median {t:6.2} ms   p90 {:6.2} ms",
        p90_ms(&teardown)
    );
    Ok(())
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
