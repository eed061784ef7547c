//! `netpath stats`: the datapath's counters, once or every few seconds with rates. Unlike
//! the other commands it runs without the scope's lock (it only reads, and `--watch` would
//! otherwise hold up every other command until Ctrl-C).
use std::{
    io::{IsTerminal as _, Write},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::json;

use crate::{
    cli::StatsArgs,
    model::state::Store,
    model::stats::{self, Reading, Stats},
    output::{self, Format, Response},
    system::datapath::Datapath,
};

/// Writes the statistics once, or every `--watch` seconds until interrupted (then with
/// per-second rates: a table redrawn in place on a terminal, one JSON object per line with
/// `--json`).
pub fn stats(scope: &str, args: &StatsArgs, format: Format, out: &mut impl Write) -> Result<()> {
    let mut current = read(scope)?;
    let Some(every) = args.watch.map(Duration::from_secs) else {
        output::write(out, &Response::Stats(Box::new(current)), format)?;
        return Ok(());
    };
    let terminal = std::io::stdout().is_terminal();
    let mut at = Instant::now();
    loop {
        sleep(every);
        let next = read(scope)?;
        let now = Instant::now();
        let secs = now.duration_since(at).as_secs_f64();
        let text = if format == Format::Json {
            let rates = stats::json_rates(
                &serde_json::to_value(&current)?,
                &serde_json::to_value(&next)?,
                secs,
            );
            let mut line = serde_json::to_value(&next)?;
            line["rates"] = rates;
            line["interval_secs"] = json!(secs);
            line.to_string()
        } else {
            let (before, after) = (current.samples(), next.samples());
            let rates = stats::rates(&before, &after, secs);
            // Home and clear: redraw in place like watch(1).
            let clear = if terminal { "\x1b[H\x1b[2J" } else { "" };
            format!(
                "{clear}every {}s; Ctrl-C to stop\n{}",
                every.as_secs(),
                stats::table(&after, Some(&rates))
            )
        };
        output::line(out, &text)?;
        current = next;
        at = now;
    }
}

fn read(scope: &str) -> Result<Stats> {
    let dp = Datapath::existing(scope)
        .with_context(|| format!("netpath is not up in scope {scope} (no datapath)"))?;
    let removed = Store::peek(scope)?.map_or(0, |s| s.conntrack_removed);
    Ok(Stats::new(&Reading {
        counters: &dp.counters().context("reading the counters")?,
        traffic: &dp.traffic().context("reading the traffic counters")?,
        ct_entries: dp.conntrack_len().context("counting conntrack entries")? as u64,
        ct_max_entries: dp
            .conntrack_capacity()
            .context("reading the conntrack capacity")?,
        ct_removed_by_netpath: removed,
    }))
}
