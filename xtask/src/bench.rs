//! Container setup and teardown through the CLI, as a user runs it (process start included).
use std::{path::Path, time::Instant};

use anyhow::Result;
use netpath_tests::Sandbox;

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
