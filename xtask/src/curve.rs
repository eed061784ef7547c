//! The report of `cargo xtask bench-containers`: setup and teardown time against the number
//! of containers present, in buckets, as a table, JSON and a hand-written SVG line chart.
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::bench::{median_ms, p90_ms};

/// How many operations at each end of the curve the first-to-last ratio compares.
pub const ENDS: usize = 20;

pub struct Curve {
    /// Milliseconds of the k-th `run` (k-1 containers present before it).
    setup: Vec<f64>,
    /// Milliseconds of the `rm` that left k-1 containers.
    teardown: Vec<f64>,
    /// Seconds of `down` with every container present.
    down_s: f64,
    /// Seconds of `publish --from-file` of 65,535 ports, and of listing them.
    publish_s: (f64, f64),
    /// Medians of `run` with all containers present and with none, then of `rm`, taken
    /// alternately at the same moment.
    probe: [f64; 4],
    bucket: usize,
}

/// Median and p90 of one stretch of the curve.
#[derive(Clone, Copy)]
struct Stat {
    median: f64,
    p90: f64,
}

/// One bucket of consecutive containers, 1-based and inclusive.
struct Bucket {
    from: usize,
    to: usize,
    run: Stat,
    rm: Stat,
}

fn stat(samples: &[f64]) -> Stat {
    let mut sorted = samples.to_vec();
    let median = median_ms(&mut sorted);
    Stat {
        median,
        p90: p90_ms(&sorted),
    }
}

impl Curve {
    pub fn new(
        setup: Vec<f64>,
        teardown: Vec<f64>,
        down_s: f64,
        publish_s: (f64, f64),
        probe: [f64; 4],
    ) -> Curve {
        // Buckets of 50 (20 points at 1,000 containers); fewer containers, smaller buckets.
        let bucket = (setup.len() / 20).clamp(1, 50);
        Curve {
            setup,
            teardown,
            down_s,
            publish_s,
            probe,
            bucket,
        }
    }

    fn count(&self) -> usize {
        self.setup.len()
    }

    fn buckets(&self) -> Vec<Bucket> {
        self.setup
            .chunks(self.bucket)
            .zip(self.teardown.chunks(self.bucket))
            .enumerate()
            .map(|(i, (s, t))| {
                let from = i * self.bucket + 1;
                Bucket {
                    from,
                    to: from + s.len() - 1,
                    run: stat(s),
                    rm: stat(t),
                }
            })
            .collect()
    }

    /// Medians of the first and the last `ENDS` operations of `samples`.
    fn ends(samples: &[f64]) -> (Stat, Stat) {
        let n = ENDS.min(samples.len());
        (stat(&samples[..n]), stat(&samples[samples.len() - n..]))
    }

    pub fn summary(&self) -> String {
        let n = ENDS.min(self.count());
        let (s0, s1) = Self::ends(&self.setup);
        let (t0, t1) = Self::ends(&self.teardown);
        format!(
            "run: median of the first {n} {:.2} ms, of the last {n} {:.2} ms: {:.2}x\n\
             rm:  median of the first {n} {:.2} ms, of the last {n} {:.2} ms: {:.2}x; median of all {:.2} ms\n\
             interleaved, {ENDS} each, with {} containers present and with none: run {:.2} / {:.2} ms = {:.2}x, rm {:.2} / {:.2} ms = {:.2}x\n\
             down with {} containers: {:.2} s\n\
             publish --from-file of 65,535 ports in one batch: {:.2} s (listing them: {:.2} s)",
            s0.median,
            s1.median,
            s1.median / s0.median,
            t0.median,
            t1.median,
            t1.median / t0.median,
            stat(&self.teardown).median,
            self.count(),
            self.probe[0],
            self.probe[1],
            self.probe[0] / self.probe[1],
            self.probe[2],
            self.probe[3],
            self.probe[2] / self.probe[3],
            self.count(),
            self.down_s,
            self.publish_s.0,
            self.publish_s.1
        )
    }

    pub fn table(&self, markdown: bool) -> String {
        let mut s = String::new();
        if markdown {
            s += "| containers | run median ms | run p90 ms | rm median ms | rm p90 ms |\n|---|---|---|---|---|\n";
        } else {
            s += "containers    run median   run p90   rm median   rm p90   (ms)\n";
        }
        for Bucket { from, to, run, rm } in self.buckets() {
            let range = format!("{from}-{to}");
            let _ = if markdown {
                writeln!(
                    s,
                    "| {range} | {:.2} | {:.2} | {:.2} | {:.2} |",
                    run.median, run.p90, rm.median, rm.p90
                )
            } else {
                writeln!(
                    s,
                    "{range:>11} {:>12.2} {:>9.2} {:>11.2} {:>8.2}",
                    run.median, run.p90, rm.median, rm.p90
                )
            };
        }
        s
    }

    pub fn json(&self) -> Value {
        let (s0, s1) = Self::ends(&self.setup);
        let (t0, t1) = Self::ends(&self.teardown);
        let buckets: Vec<Value> = self
            .buckets()
            .into_iter()
            .map(|b| {
                json!({"from": b.from, "to": b.to,
                       "run_median_ms": b.run.median, "run_p90_ms": b.run.p90,
                       "rm_median_ms": b.rm.median, "rm_p90_ms": b.rm.p90})
            })
            .collect();
        json!({
            "count": self.count(),
            "bucket": self.bucket,
            "buckets": buckets,
            "run_first_median_ms": s0.median, "run_last_median_ms": s1.median,
            "run_last_over_first": s1.median / s0.median,
            "rm_first_median_ms": t0.median, "rm_last_median_ms": t1.median,
            "rm_median_ms": stat(&self.teardown).median,
            "probe_run_full_ms": self.probe[0], "probe_run_empty_ms": self.probe[1],
            "probe_run_ratio": self.probe[0] / self.probe[1],
            "probe_rm_full_ms": self.probe[2], "probe_rm_empty_ms": self.probe[3],
            "down_s": self.down_s,
            "publish_65535_s": self.publish_s.0, "publish_list_s": self.publish_s.1,
            "run_ms": self.setup, "rm_ms": self.teardown,
        })
    }

    /// Bucket medians of `run` and `rm` against the number of containers.
    pub fn svg(&self) -> String {
        const LEFT: f64 = 60.0;
        const TOP: f64 = 70.0;
        const W: f64 = 760.0;
        const H: f64 = 300.0;
        let buckets = self.buckets();
        let highest = buckets
            .iter()
            .map(|b| b.run.median.max(b.rm.median))
            .fold(1.0, f64::max);
        let step = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
            .into_iter()
            .find(|s| highest * 1.1 / s <= 8.0)
            .unwrap_or(200.0);
        let top = (highest * 1.1 / step).ceil() * step;
        let count = self.count() as f64;
        let x = |k: f64| LEFT + W * k / count;
        let y = |v: f64| TOP + H * (1.0 - v / top);
        let mut s = String::new();
        let _ = writeln!(
            s,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{:.0}" height="{:.0}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="22" font-size="15" font-weight="bold">netpath run / rm against the number of containers (medians per {} containers)</text>
<text x="{LEFT}" y="40" fill="#444" font-size="11">netpath down with all {} containers: {:.2} s; 65,535 ports published in one batch: {:.2} s; run with all present / with none, interleaved: {:.2}x</text>"##,
            LEFT + W + 20.0,
            TOP + H + 50.0,
            self.bucket,
            self.count(),
            self.down_s,
            self.publish_s.0,
            self.probe[0] / self.probe[1]
        );
        let mut v = 0.0;
        while v <= top + 1e-9 {
            let gy = y(v);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" x2="{:.0}" y1="{gy:.1}" y2="{gy:.1}" stroke="#ddd"/><text x="{:.0}" y="{:.1}" text-anchor="end" fill="#444">{v} ms</text>"##,
                LEFT + W,
                LEFT - 6.0,
                gy + 4.0
            );
            v += step;
        }
        let ticks = 10;
        for i in 0..=ticks {
            let k = (count * f64::from(i) / f64::from(ticks)).round();
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.0}" text-anchor="middle" fill="#444">{k}</text>"##,
                x(k),
                TOP + H + 18.0
            );
        }
        let _ = writeln!(
            s,
            r##"<text x="{:.0}" y="{:.0}" text-anchor="middle">containers present</text>"##,
            LEFT + W / 2.0,
            TOP + H + 38.0
        );
        let series = [("netpath run", "#1f77b4"), ("netpath rm", "#ff7f0e")];
        for (i, (label, color)) in series.into_iter().enumerate() {
            let points: Vec<String> = buckets
                .iter()
                .map(|b| {
                    let mid = (b.from + b.to) as f64 / 2.0;
                    let value = if i == 0 { b.run.median } else { b.rm.median };
                    format!("{:.1},{:.1}", x(mid), y(value))
                })
                .collect();
            let lx = LEFT + 10.0 + 140.0 * i as f64;
            let _ = writeln!(
                s,
                r##"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/><rect x="{lx}" y="{:.0}" width="11" height="11" fill="{color}"/><text x="{:.0}" y="{:.0}">{label}</text>"##,
                points.join(" "),
                TOP - 14.0,
                lx + 15.0,
                TOP - 4.0
            );
        }
        s += "</svg>\n";
        s
    }
}
