//! `netpath conntrack [flush]`: the connections the datapath translates.
use anyhow::{Context as _, Result};

use super::Ctx;
use crate::{
    model::conntrack::{self, Filter},
    system::datapath::{self, Datapath},
};

/// `netpath conntrack`: one line (or JSON object) per connection.
pub fn list(ctx: &Ctx, json: bool, filter: &Filter) -> Result<()> {
    let entries = match Datapath::existing(&ctx.scope) {
        Some(dp) => dp.conntrack().context("reading the conntrack table")?,
        None => Vec::new(),
    };
    let connections = conntrack::connections(&entries, datapath::monotonic_coarse_ns()?, filter);
    if json {
        outln!("{}", serde_json::to_string_pretty(&connections)?);
    } else {
        out!("{}", conntrack::table(&connections));
    }
    Ok(())
}

/// `netpath conntrack flush`.
pub fn flush(ctx: &mut Ctx) -> Result<()> {
    let removed = match Datapath::existing(&ctx.scope) {
        Some(dp) => dp.flush_conntrack()?,
        None => 0,
    };
    record_removed(ctx, removed);
    outln!("flushed {removed} conntrack entries");
    Ok(())
}

/// Counts conntrack entries that netpath removed itself (flush, garbage collection), so
/// that `stats` does not take them for evictions.
pub fn record_removed(ctx: &mut Ctx, removed: usize) {
    ctx.state.conntrack_removed += removed as u64;
}
