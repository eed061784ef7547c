//! The report: medians and ratios as terminal and Markdown tables, JSON, and an SVG chart
//! drawn by hand (grouped bars per figure, each bar a fraction of the limit).
use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{
    Cell, Plan,
    measure::{FIGURES, Figure, TESTS},
    topo::Config,
};

/// Medians of each cell's samples, and the cells the ratios are taken against.
pub struct Summary<'a> {
    cells: &'a [Cell],
    medians: Vec<[Option<f64>; FIGURES.len()]>,
}

impl<'a> Summary<'a> {
    pub fn new(cells: &'a [Cell]) -> Summary<'a> {
        let medians = cells
            .iter()
            .map(|c| {
                std::array::from_fn(|i| {
                    let values: Vec<f64> = c.samples[i].iter().map(|s| s.1).collect();
                    median(&values)
                })
            })
            .collect();
        Summary { cells, medians }
    }

    fn find(&self, config: Config, n: usize) -> Option<usize> {
        self.cells
            .iter()
            .position(|c| c.config == config && c.n == n)
    }

    /// value / the same figure of iptables (at the same N; at N=0 for the baselines).
    fn vs_iptables(&self, cell: usize, fig: usize) -> Option<f64> {
        let c = &self.cells[cell];
        let n = if c.config.has_n() { c.n } else { 0 };
        self.ratio(cell, self.find(Config::Iptables, n)?, fig)
    }

    fn vs_limit(&self, cell: usize, fig: usize) -> Option<f64> {
        self.ratio(cell, self.find(Config::Limit, 0)?, fig)
    }

    /// value / the same configuration's at N=0 (only where N applies).
    fn vs_n0(&self, cell: usize, fig: usize) -> Option<f64> {
        let c = &self.cells[cell];
        if !c.config.has_n() {
            return None;
        }
        self.ratio(cell, self.find(c.config, 0)?, fig)
    }

    fn vs_forward(&self, cell: usize, fig: usize) -> Option<f64> {
        self.ratio(cell, self.find(Config::Forward, 0)?, fig)
    }

    /// Each program's (name, per test: median over passes of nanoseconds per run) in `cell`,
    /// in the order the programs first appear.
    fn run_time(&self, cell: usize) -> Vec<(String, Vec<Option<f64>>)> {
        let samples = &self.cells[cell].run_time;
        let mut programs: Vec<&str> = Vec::new();
        for s in samples {
            if !programs.contains(&s.program.as_str()) {
                programs.push(&s.program);
            }
        }
        programs
            .into_iter()
            .map(|name| {
                let per_test = (0..TESTS.len())
                    .map(|test| {
                        let ns: Vec<f64> = samples
                            .iter()
                            .filter(|s| s.test == test && s.program == name && s.runs > 0)
                            .map(|s| s.ns as f64 / s.runs as f64)
                            .collect();
                        median(&ns)
                    })
                    .collect();
                (name.to_owned(), per_test)
            })
            .collect()
    }

    /// Nanoseconds per packet of every program on each configuration's path, per test.
    fn run_time_table(&self, markdown: bool) -> String {
        let mut header = vec!["config".to_owned(), "N".to_owned(), "program".to_owned()];
        header.extend(TESTS.iter().map(|(name, _)| (*name).to_owned()));
        let mut rows = Vec::new();
        for (c, cell) in self.cells.iter().enumerate() {
            for (program, per_test) in self.run_time(c) {
                let mut row = vec![cell.config.name().to_owned(), cell.n_label(), program];
                row.extend(
                    per_test
                        .iter()
                        .map(|v| v.map_or("-".into(), |ns| format!("{ns:.0}"))),
                );
                rows.push(row);
            }
        }
        let title = "eBPF run time, ns per packet (bpf_stats run_time_ns / run_cnt over each \
                     test, median of the passes)";
        titled(title, &header, &rows, markdown)
    }

    /// Per test: the median over passes of the share of the machine's busy CPU time that
    /// `cell`'s programs took.
    fn cpu_share(&self, cell: usize) -> Vec<Option<f64>> {
        (0..TESTS.len())
            .map(|test| {
                let shares: Vec<f64> = self.cells[cell]
                    .cpu_share
                    .iter()
                    .filter(|&&(t, _)| t == test)
                    .map(|&(_, share)| share)
                    .collect();
                median(&shares)
            })
            .collect()
    }

    /// What share of the CPU each configuration's programs take per test: how much a
    /// cheaper program could gain at most.
    fn cpu_share_table(&self, markdown: bool) -> String {
        let mut header = vec!["config".to_owned(), "N".to_owned()];
        header.extend(TESTS.iter().map(|(name, _)| (*name).to_owned()));
        let rows: Vec<Vec<String>> = (0..self.cells.len())
            .filter(|&c| !self.cells[c].cpu_share.is_empty())
            .map(|c| {
                let mut row = vec![
                    self.cells[c].config.name().to_owned(),
                    self.cells[c].n_label(),
                ];
                row.extend(
                    self.cpu_share(c)
                        .into_iter()
                        .map(|v| v.map_or("-".into(), |share| format!("{:.1}", share * 100.0))),
                );
                row
            })
            .collect();
        let title = "eBPF share of the machine's busy CPU time, % (the TC programs' bpf_stats \
                     run_time_ns over /proc/stat's busy time during each test, steal excluded, \
                     median of the passes)";
        titled(title, &header, &rows, markdown)
    }

    /// The median over passes of value / base, each pair measured in the same pass, minutes
    /// apart at most: a slow phase of the machine then shifts both sides of a ratio instead
    /// of one median.
    fn ratio(&self, cell: usize, base: usize, fig: usize) -> Option<f64> {
        let base = &self.cells[base].samples[fig];
        let ratios: Vec<f64> = self.cells[cell].samples[fig]
            .iter()
            .filter_map(|&(pass, v)| {
                let &(_, b) = base.iter().find(|s| s.0 == pass)?;
                (b > 0.0).then(|| v / b)
            })
            .collect();
        median(&ratios)
    }

    /// The figure as a fraction of the limit, inverted where lower is better, so that 1 is
    /// the limit and a shorter bar is always worse.
    fn fraction_of_limit(&self, cell: usize, fig: usize) -> Option<f64> {
        let r = self.vs_limit(cell, fig)?;
        if FIGURES[fig].higher_is_better {
            Some(r)
        } else {
            (r > 0.0).then(|| 1.0 / r)
        }
    }

    /// Every table (medians, the ratios, the programs' cost per packet and share of the CPU),
    /// aligned for the terminal or in Markdown.
    pub fn tables(&self, markdown: bool) -> String {
        let mut out = String::new();
        type Value<'b> = &'b dyn Fn(usize, usize) -> Option<String>;
        let medians: Value = &|c, f| self.medians[c][f].map(num);
        let vs_ipt: Value = &|c, f| self.vs_iptables(c, f).map(|r| format!("{r:.2}x"));
        let vs_lim: Value = &|c, f| self.vs_limit(c, f).map(|r| format!("{r:.2}x"));
        let vs_fwd: Value = &|c, f| self.vs_forward(c, f).map(|r| format!("{r:.2}x"));
        let vs_n0: Value = &|c, f| self.vs_n0(c, f).map(|r| format!("{r:.2}x"));
        for (title, value) in [
            ("medians", medians),
            (
                "ratio to iptables (same N, N=0 for the baselines; median of per-pass ratios)",
                vs_ipt,
            ),
            ("ratio to the limit (median of per-pass ratios)", vs_lim),
            (
                "ratio to the bare forwarder (median of per-pass ratios)",
                vs_fwd,
            ),
            (
                "ratio to the same configuration at N=0 (median of per-pass ratios)",
                vs_n0,
            ),
        ] {
            let mut header = vec!["config".to_owned(), "N".to_owned()];
            header.extend(FIGURES.iter().map(|f| f.short.to_owned()));
            let rows: Vec<Vec<String>> = (0..self.cells.len())
                .map(|c| {
                    let mut row = vec![
                        self.cells[c].config.name().to_owned(),
                        self.cells[c].n_label(),
                    ];
                    row.extend((0..FIGURES.len()).map(|f| value(c, f).unwrap_or("-".into())));
                    row
                })
                .collect();
            if markdown {
                let _ = writeln!(out, "{title}:\n");
                out += &markdown_table(&header, &rows);
            } else {
                let _ = writeln!(out, "{title}:");
                out += &text_table(&header, &rows);
            }
            out += "\n";
        }
        out + &self.run_time_table(markdown) + "\n" + &self.cpu_share_table(markdown)
    }

    pub fn json(&self, plan: &Plan, meta: Value) -> Value {
        let figures: Vec<Value> = FIGURES
            .iter()
            .map(|f| {
                json!({"key": f.key, "label": f.label, "unit": f.unit,
                       "higher_is_better": f.higher_is_better})
            })
            .collect();
        let results: Vec<Value> = self
            .cells
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                let figs: serde_json::Map<String, Value> = FIGURES
                    .iter()
                    .enumerate()
                    .map(|(f, fig)| {
                        let v = json!({
                            "median": self.medians[c][f],
                            "samples": cell.samples[f].iter().map(|s| s.1).collect::<Vec<_>>(),
                            "vs_iptables": self.vs_iptables(c, f),
                            "vs_limit": self.vs_limit(c, f),
                            "vs_forward": self.vs_forward(c, f),
                            "vs_n0": self.vs_n0(c, f),
                        });
                        (fig.key.to_owned(), v)
                    })
                    .collect();
                let run_time: Vec<Value> = self
                    .run_time(c)
                    .into_iter()
                    .map(|(program, per_test)| {
                        let tests: serde_json::Map<String, Value> = TESTS
                            .iter()
                            .zip(per_test)
                            .map(|((name, _), ns)| ((*name).to_owned(), json!(ns)))
                            .collect();
                        json!({"program": program, "ns_per_packet": tests})
                    })
                    .collect();
                let cpu_fraction: Option<serde_json::Map<String, Value>> =
                    (!cell.cpu_share.is_empty()).then(|| {
                        TESTS
                            .iter()
                            .zip(self.cpu_share(c))
                            .map(|((name, _), share)| ((*name).to_owned(), json!(share)))
                            .collect()
                    });
                json!({
                    "config": cell.config.name(),
                    "n": cell.config.has_n().then_some(cell.n),
                    "setup_seconds": cell.setup_secs,
                    "errors": cell.errors,
                    "figures": figs,
                    "run_time": run_time,
                    "ebpf_cpu_fraction": cpu_fraction,
                })
            })
            .collect();
        json!({
            "meta": meta,
            "seconds_per_test": plan.secs,
            "passes": plan.passes,
            "figures": figures,
            "results": results,
        })
    }

    pub fn svg(&self, subtitle: &str) -> String {
        const BAR: f64 = 13.0;
        const GAP: f64 = 26.0;
        const LEFT: f64 = 50.0;
        const TOP: f64 = 96.0;
        const PLOT_H: f64 = 300.0;
        let bars = self.cells.len() as f64;
        let group_w = bars * BAR + GAP;
        let width = LEFT + group_w * FIGURES.len() as f64 + 10.0;
        let height = TOP + PLOT_H + 56.0;
        let all = (0..self.cells.len())
            .flat_map(|c| (0..FIGURES.len()).filter_map(move |f| self.fraction_of_limit(c, f)));
        // Room above the limit line, in steps of 0.2, for the rare bar above the limit.
        let top = (all.fold(1.2_f64, f64::max).min(3.0) * 5.0).ceil() / 5.0;
        let y = |v: f64| TOP + PLOT_H * (1.0 - v.min(top) / top);
        let mut s = String::new();
        let _ = writeln!(
            s,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="20" font-size="15" font-weight="bold">netpath datapath: each configuration as a fraction of the limit (1 = limit, higher is better)</text>
<text x="{LEFT}" y="38" fill="#444">{}</text>"##,
            escape(subtitle)
        );
        // Legend: one swatch per cell.
        for (c, cell) in self.cells.iter().enumerate() {
            let (lx, ly) = (LEFT + 150.0 * (c % 6) as f64, 56.0 + 16.0 * (c / 6) as f64);
            let _ = writeln!(
                s,
                r#"<rect x="{lx}" y="{}" width="11" height="11" fill="{}"/><text x="{}" y="{}">{}</text>"#,
                ly - 10.0,
                color(cell),
                lx + 15.0,
                ly,
                escape(&cell.legend())
            );
        }
        // Horizontal grid every 0.2, the limit line solid.
        let mut v = 0.0;
        while v <= top + 1e-9 {
            let (gy, limit) = (y(v), (v - 1.0).abs() < 1e-9);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" x2="{:.0}" y1="{gy:.1}" y2="{gy:.1}" stroke="{}" stroke-width="{}"/><text x="{}" y="{:.1}" text-anchor="end" fill="#444">{v:.1}</text>"##,
                width - 10.0,
                if limit { "#222" } else { "#ddd" },
                if limit { 1.5 } else { 1.0 },
                LEFT - 6.0,
                gy + 4.0
            );
            v += 0.2;
        }
        for (f, fig) in FIGURES.iter().enumerate() {
            let gx = LEFT + GAP / 2.0 + group_w * f as f64;
            for c in 0..self.cells.len() {
                let bx = gx + BAR * c as f64;
                let tx = bx + BAR / 2.0 + 3.5;
                match self.fraction_of_limit(c, f) {
                    Some(r) => {
                        let by = y(r);
                        let _ = writeln!(
                            s,
                            r#"<rect x="{bx:.1}" y="{by:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {}</title></rect><text transform="translate({tx:.1},{:.1}) rotate(-90)" font-size="9">{r:.2}</text>"#,
                            BAR - 1.0,
                            TOP + PLOT_H - by,
                            color(&self.cells[c]),
                            escape(&self.cells[c].legend()),
                            self.medians[c][f].map(num).unwrap_or_default(),
                            by - 3.0
                        );
                    }
                    None => {
                        let _ = writeln!(
                            s,
                            r##"<text transform="translate({tx:.1},{:.1}) rotate(-90)" font-size="9" fill="#c00">n/a</text>"##,
                            TOP + PLOT_H - 3.0
                        );
                    }
                }
            }
            let cx = gx + bars * BAR / 2.0;
            let note = fig_note(fig);
            let _ = writeln!(
                s,
                r##"<text x="{cx:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="{cx:.1}" y="{:.1}" text-anchor="middle" fill="#666" font-size="10">{note}</text>"##,
                TOP + PLOT_H + 18.0,
                escape(fig.label),
                TOP + PLOT_H + 32.0
            );
        }
        s += "</svg>\n";
        s
    }
}

fn fig_note(fig: &Figure) -> String {
    if fig.higher_is_better {
        fig.unit.to_owned()
    } else {
        format!("{}, inverted", fig.unit)
    }
}

/// Greys for the baselines, blue for the bare forwarder, oranges for iptables and greens for
/// netpath, lighter as N grows.
fn color(cell: &Cell) -> &'static str {
    let shade = match cell.n {
        0 => 0,
        1..=1000 => 1,
        _ => 2,
    };
    match cell.config {
        Config::Limit => "#555555",
        Config::Routed => "#9a9a9a",
        Config::Forward => "#1c7ed6",
        Config::Iptables => ["#d9480f", "#f76707", "#ffa94d"][shade],
        Config::Netpath => ["#2b8a3e", "#40c057", "#8ce99a"][shade],
    }
}

pub fn median(samples: &[f64]) -> Option<f64> {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => None,
        n if n % 2 == 1 => Some(s[n / 2]),
        n => Some((s[n / 2 - 1] + s[n / 2]) / 2.0),
    }
}

/// Three significant digits or so, without exponents.
pub fn num(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        a if a >= 1.0 => format!("{v:.2}"),
        _ => format!("{v:.3}"),
    }
}

pub fn text_table(header: &[String], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            // Names left-aligned, figures right-aligned.
            if i == 0 {
                let _ = write!(l, "{cell:<w$}");
            } else {
                let _ = write!(l, "  {cell:>w$}");
            }
        }
        l + "\n"
    };
    let mut out = line(header);
    for row in rows {
        out += &line(row);
    }
    out
}

/// A table under its title, aligned for the terminal or in Markdown.
fn titled(title: &str, header: &[String], rows: &[Vec<String>], markdown: bool) -> String {
    if markdown {
        format!("{title}:\n\n{}", markdown_table(header, rows))
    } else {
        format!("{title}:\n{}", text_table(header, rows))
    }
}

pub fn markdown_table(header: &[String], rows: &[Vec<String>]) -> String {
    let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
    let mut out = line(header);
    out += &format!("|{}\n", "---|".repeat(header.len()));
    for row in rows {
        out += &line(row);
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
