//! `cargo xtask bench-docker`: a container published by Docker's own bridge driver (dockerd
//! with its defaults: iptables DNAT and docker-proxy) against one published by netpath's
//! plugin (dockerd with iptables off), on the same topology: client namespace -> host
//! namespace with dockerd -> container. Both sides are built first; every pass then measures
//! both, alternating which goes first, so that a slow phase of the machine hits both. First
//! with the measured container's ports only, then with a second container publishing 1,000
//! more. Medians, min-max and the median of per-pass ratios are reported.
mod side;

use std::{io::Write as _, path::Path, time::Instant};

use anyhow::{Result, bail};
use serde_json::{Value, json};
use side::{EXTRA_PORTS, Footprint, Kind, RootState, Side, WEB_NGINX};

use crate::{
    netbench::{
        Machine, catch_signals, check_interrupted,
        measure::wrk,
        report::{markdown_table, median, num, text_table},
    },
    workspace_root,
};

/// The figures measured each pass, in table order: (JSON key, label, higher is better).
const FIGURES: [(&str, &str, bool); 3] = [
    ("new_conn_per_sec", "new conn/s", true),
    ("keepalive_req_per_sec", "keep-alive req/s", true),
    ("first_answer_ms", "run to answer ms", false),
];
const NEW_CONN: usize = 0;
const KEEPALIVE: usize = 1;
const FIRST_ANSWER: usize = 2;
/// The two phases: no other published port, then 1,000.
const NS: [usize; 2] = [0, EXTRA_PORTS];
const SIDES: [Kind; 2] = [Kind::Docker, Kind::Netpath];

/// Samples per (side, phase, figure): (pass, value), so that ratios pair the same pass.
type Samples = [[[Vec<(usize, f64)>; FIGURES.len()]; NS.len()]; SIDES.len()];

pub fn run(bin: &Path, quick: bool, passes: Option<u32>, secs: Option<u32>) -> Result<()> {
    if !netpath_tests::is_root() {
        bail!("the bench creates network namespaces and runs dockerd: it must run as root");
    }
    catch_signals();
    let passes = passes.map_or(if quick { 1 } else { 5 }, |p| p as usize);
    let secs = secs.unwrap_or(if quick { 2 } else { 4 });
    let started = Instant::now();
    println!(
        "bench-docker ({}): 2 sides x 2 phases x {passes} pass(es), wrk {secs} s per run; \
         publishing 1,000 ports under Docker's driver takes minutes",
        if quick { "quick" } else { "full" }
    );
    let root = RootState::take()?;
    let mut sides = Vec::new();
    for kind in SIDES {
        check_interrupted()?;
        print!("setup {:<8} ", kind.name());
        let _ = std::io::stdout().flush();
        let t = Instant::now();
        sides.push(Side::build(kind, bin)?);
        root.check(&format!("starting the {} side", kind.name()))?;
        println!("{:.1} s", t.elapsed().as_secs_f64());
    }

    let mut samples: Samples = Default::default();
    let mut errors: Vec<String> = Vec::new();
    let mut footprints = [[Footprint::default(); NS.len()]; SIDES.len()];
    let mut extra_secs = [0.0; SIDES.len()];
    for (phase, &n) in NS.iter().enumerate() {
        if n > 0 {
            for (s, side) in sides.iter().enumerate() {
                check_interrupted()?;
                print!("publishing {n} more ports ({}) ", side.kind.name());
                let _ = std::io::stdout().flush();
                extra_secs[s] = side.publish_extra()?;
                println!("{:.1} s", extra_secs[s]);
            }
            root.check("publishing 1,000 ports")?;
        }
        for (s, side) in sides.iter().enumerate() {
            footprints[s][phase] = side.footprint(bin)?;
        }
        for pass in 0..passes {
            for i in 0..SIDES.len() {
                check_interrupted()?;
                let s = (i + pass) % SIDES.len();
                let side = &sides[s];
                let got = measure(side, secs, &mut errors);
                let shown: Vec<String> = got
                    .iter()
                    .map(|&(f, v)| format!("{} {}", FIGURES[f].1, num(v)))
                    .collect();
                println!(
                    "N={n} pass {}/{passes} {:<8} {}",
                    pass + 1,
                    side.kind.name(),
                    shown.join(", ")
                );
                for (f, v) in got {
                    samples[s][phase][f].push((pass, v));
                }
            }
        }
    }
    check_interrupted()?;
    print!("removing both sides (1,000 docker-proxies take a minute to stop)... ");
    let _ = std::io::stdout().flush();
    drop(sides);
    println!("done");
    root.check("removing both sides")?;

    let report = Report {
        samples,
        footprints,
        extra_secs,
        errors,
        passes,
        secs,
    };
    report.write(quick, started.elapsed().as_secs_f64())
}

/// One pass on one side: the time to a first answer, keep-alive, then new connections
/// (their TIME_WAIT leftovers must not weigh on the other runs), each after clearing
/// TIME_WAIT sockets. A failed measurement is recorded as an error, not a value.
fn measure(side: &Side, secs: u32, errors: &mut Vec<String>) -> Vec<(usize, f64)> {
    let mut got = Vec::new();
    let name = side.kind.name();
    match side.first_answer_ms() {
        Ok(ms) => got.push((FIRST_ANSWER, ms)),
        Err(e) => errors.push(format!("{name}: first answer: {e:#}")),
    }
    let url = side.url(WEB_NGINX);
    for (fig, close) in [(KEEPALIVE, false), (NEW_CONN, true)] {
        let rate = side
            .clear_time_wait()
            .and_then(|()| wrk(&side.client.netns, &url, close, secs));
        match rate {
            Ok(rate) => {
                got.push((fig, rate.per_sec));
                errors.extend(rate.errors.map(|e| format!("{name}: {e}")));
            }
            Err(e) => errors.push(format!("{name}: {}: {e:#}", FIGURES[fig].1)),
        }
    }
    got
}

struct Report {
    samples: Samples,
    footprints: [[Footprint; NS.len()]; SIDES.len()],
    extra_secs: [f64; SIDES.len()],
    errors: Vec<String>,
    passes: usize,
    secs: u32,
}

/// (median, min, max) of `values`.
fn spread(values: &[f64]) -> Option<(f64, f64, f64)> {
    let m = median(values)?;
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((m, min, max))
}

/// A [`spread`] as "median (min-max)", each with `unit`.
fn shown((m, min, max): (f64, f64, f64), unit: &str) -> String {
    format!("{}{unit} ({}-{})", num(m), num(min), num(max))
}

impl Report {
    fn values(&self, s: usize, phase: usize, f: usize) -> Vec<f64> {
        self.samples[s][phase][f].iter().map(|v| v.1).collect()
    }

    /// netpath / docker for each pass that measured both.
    fn ratios(&self, phase: usize, f: usize) -> Vec<f64> {
        let [docker, netpath] = [0, 1].map(|s| &self.samples[s][phase][f]);
        netpath
            .iter()
            .filter_map(|&(pass, v)| {
                let &(_, d) = docker.iter().find(|x| x.0 == pass)?;
                (d > 0.0).then(|| v / d)
            })
            .collect()
    }

    /// The measured figures, then the ratios, then the footprint: (title, header, rows).
    fn tables(&self) -> Vec<(String, Vec<String>, Vec<Vec<String>>)> {
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let mut header = strings(&["side", "N"]);
        header.extend(FIGURES.iter().map(|f| f.1.to_owned()));
        let mut measured = Vec::new();
        for (s, kind) in SIDES.iter().enumerate() {
            for (phase, n) in NS.iter().enumerate() {
                let mut row = vec![kind.name().to_owned(), n.to_string()];
                row.extend((0..FIGURES.len()).map(|f| {
                    spread(&self.values(s, phase, f)).map_or("-".into(), |v| shown(v, ""))
                }));
                measured.push(row);
            }
        }
        let mut ratio_header = strings(&["netpath / docker", "N"]);
        ratio_header.extend(FIGURES.iter().map(|f| {
            let better = if f.2 { "higher" } else { "lower" };
            format!("{} ({better} is better)", f.1)
        }));
        let ratios =
            NS.iter()
                .enumerate()
                .map(|(phase, n)| {
                    let mut row = vec![String::new(), n.to_string()];
                    row.extend((0..FIGURES.len()).map(|f| {
                        spread(&self.ratios(phase, f)).map_or("-".into(), |v| shown(v, "x"))
                    }));
                    row
                })
                .collect();
        let footprint_header = strings(&[
            "side",
            "N",
            "processes",
            "memory PSS MiB",
            "memory RSS MiB",
            "iptables rules",
            "pinned maps MiB",
            "publishing N s",
        ]);
        let mut footprint = Vec::new();
        for (s, kind) in SIDES.iter().enumerate() {
            for (phase, n) in NS.iter().enumerate() {
                let fp = self.footprints[s][phase];
                footprint.push(vec![
                    kind.name().to_owned(),
                    n.to_string(),
                    fp.processes.to_string(),
                    format!("{:.1}", fp.pss_mib),
                    format!("{:.1}", fp.rss_mib),
                    fp.rules.to_string(),
                    fp.maps_mib.map_or("-".into(), |m| format!("{m:.1}")),
                    if *n > 0 {
                        format!("{:.1}", self.extra_secs[s])
                    } else {
                        "-".into()
                    },
                ]);
            }
        }
        vec![
            (
                format!(
                    "medians (min-max) over {} pass(es), wrk {} s per run",
                    self.passes, self.secs
                ),
                header,
                measured,
            ),
            (
                "netpath / docker: median (min-max) of per-pass ratios".into(),
                ratio_header,
                ratios,
            ),
            (
                "what the published ports cost in the host namespace: docker-proxy and netpath \
                 processes, their memory, iptables rules, netpath's pinned maps"
                    .into(),
                footprint_header,
                footprint,
            ),
        ]
    }

    fn json(&self, meta: Value) -> Value {
        let mut results = Vec::new();
        for (s, kind) in SIDES.iter().enumerate() {
            for (phase, n) in NS.iter().enumerate() {
                let figures: serde_json::Map<String, Value> = FIGURES
                    .iter()
                    .enumerate()
                    .map(|(f, fig)| {
                        let values = self.values(s, phase, f);
                        let spread = spread(&values);
                        let v = json!({
                            "median": spread.map(|v| v.0),
                            "min": spread.map(|v| v.1),
                            "max": spread.map(|v| v.2),
                            "samples": values,
                            "higher_is_better": fig.2,
                        });
                        (fig.0.to_owned(), v)
                    })
                    .collect();
                let fp = self.footprints[s][phase];
                results.push(json!({
                    "side": kind.name(),
                    "n": n,
                    "figures": figures,
                    "footprint": {
                        "processes": fp.processes,
                        "pss_mib": fp.pss_mib,
                        "rss_mib": fp.rss_mib,
                        "iptables_rules": fp.rules,
                        "pinned_maps_mib": fp.maps_mib,
                        "publish_seconds": (*n > 0).then_some(self.extra_secs[s]),
                    },
                }));
            }
        }
        let ratios: Vec<Value> = NS
            .iter()
            .enumerate()
            .map(|(phase, n)| {
                let figs: serde_json::Map<String, Value> = FIGURES
                    .iter()
                    .enumerate()
                    .map(|(f, fig)| (fig.0.to_owned(), json!(self.ratios(phase, f))))
                    .collect();
                json!({"n": n, "netpath_over_docker_per_pass": figs})
            })
            .collect();
        json!({
            "meta": meta,
            "passes": self.passes,
            "seconds_per_wrk_run": self.secs,
            "results": results,
            "ratios": ratios,
            "errors": self.errors,
        })
    }

    fn write(&self, quick: bool, elapsed: f64) -> Result<()> {
        let Machine { cpus, kernel, meta } = Machine::now(quick, elapsed);
        let machine = format!("{cpus} CPUs, Linux {kernel}");
        let tables = self.tables();
        let (mut text, mut md) = (String::new(), format!("{machine}\n\n"));
        for (title, header, rows) in &tables {
            text += &format!("{title}:\n{}\n", text_table(header, rows));
            md += &format!("{title}:\n\n{}\n", markdown_table(header, rows));
        }
        if !self.errors.is_empty() {
            text += "errors:\n";
            for e in &self.errors {
                text += &format!("  {e}\n");
                md += &format!("- {e}\n");
            }
        }
        println!("\n{machine}\n{text}");
        let dir = workspace_root().join("target/bench");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("docker.json"),
            serde_json::to_string_pretty(&self.json(meta))?,
        )?;
        std::fs::write(dir.join("docker.md"), md)?;
        println!(
            "report: {}/docker.json, docker.md; took {elapsed:.0} s",
            dir.display()
        );
        Ok(())
    }
}
