//! `netpath stats`: the datapath's counters, once or every few seconds with rates. Unlike
//! the other commands it runs without the scope's lock (it only reads, and `--watch` would
//! otherwise hold up every other command until Ctrl-C).
use std::{
    io::{ErrorKind, IsTerminal as _, Write as _},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::json;

use crate::{
    model::state::Store,
    model::stats::{self, Reading, Stats},
    system::datapath::Datapath,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Prometheus,
}

/// Prints the statistics once, or every `watch` until interrupted (then with per-second
/// rates: a table redrawn in place on a terminal, one JSON object per line with `--json`).
pub fn stats(scope: &str, format: Format, watch: Option<Duration>) -> Result<()> {
    let mut current = read(scope)?;
    let Some(every) = watch else {
        match format {
            Format::Table => out!("{}", stats::table(&current.samples(), None)),
            Format::Json => outln!("{}", serde_json::to_string_pretty(&current)?),
            Format::Prometheus => out!("{}", stats::prometheus(&current.samples())),
        }
        return Ok(());
    };
    let terminal = std::io::stdout().is_terminal();
    let mut at = Instant::now();
    loop {
        sleep(every);
        let next = read(scope)?;
        let now = Instant::now();
        let secs = now.duration_since(at).as_secs_f64();
        let mut out = String::new();
        if format == Format::Json {
            let rates = stats::json_rates(
                &serde_json::to_value(&current)?,
                &serde_json::to_value(&next)?,
                secs,
            );
            let mut line = serde_json::to_value(&next)?;
            line["rates"] = rates;
            line["interval_secs"] = json!(secs);
            out = format!("{line}\n");
        } else {
            let (before, after) = (current.samples(), next.samples());
            let rates = stats::rates(&before, &after, secs);
            if terminal {
                // Home and clear: redraw in place like watch(1).
                out.push_str("\x1b[H\x1b[2J");
            }
            out.push_str(&format!("every {}s; Ctrl-C to stop\n", every.as_secs()));
            out.push_str(&stats::table(&after, Some(&rates)));
            if !terminal {
                out.push('\n');
            }
        }
        let mut stdout = std::io::stdout().lock();
        match stdout
            .write_all(out.as_bytes())
            .and_then(|()| stdout.flush())
        {
            // The reader went away (`| head`): as good as Ctrl-C.
            Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(()),
            written => written.context("writing to stdout")?,
        }
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
