//! `netpath conntrack [flush]`: the connections the datapath translates.
use anyhow::{Context as _, Result};

use super::Ctx;
use crate::{
    cli::ConntrackArgs,
    model::conntrack::{self, Connection, Filter},
    output::Response,
    system::datapath::{self, Datapath},
};

/// `netpath conntrack`: one line (or JSON object) per connection.
pub fn list(ctx: &Ctx, args: &ConntrackArgs) -> Result<Response> {
    let filter = Filter {
        proto: args.proto,
        addr: args.addr,
        port: args.port,
    };
    let entries = match Datapath::existing(&ctx.scope) {
        Some(dp) => dp.conntrack().context("reading the conntrack table")?,
        None => Vec::new(),
    };
    let now = datapath::monotonic_coarse_ns()?;
    Ok(Response::Connections(conntrack::connections(
        &entries, now, &filter,
    )))
}

/// `netpath conntrack flush`.
pub fn flush(ctx: &mut Ctx) -> Result<Response> {
    let removed = match Datapath::existing(&ctx.scope) {
        Some(dp) => dp.flush_conntrack()?,
        None => 0,
    };
    record_removed(ctx, removed);
    Ok(Response::Done(vec![format!(
        "flushed {removed} conntrack entries"
    )]))
}

/// Removes both entries of every connection `selected` picks; returns how many entries went.
pub fn forget(
    ctx: &mut Ctx,
    dp: &Datapath,
    selected: impl Fn(&Connection) -> bool,
) -> Result<usize> {
    let entries = dp.conntrack().context("reading the conntrack table")?;
    let removed = dp
        .remove_conntrack(&conntrack::keys_where(&entries, selected))
        .context("removing conntrack entries")?;
    record_removed(ctx, removed);
    Ok(removed)
}

/// Counts conntrack entries that netpath removed itself (flush, garbage collection), so
/// that `stats` does not take them for evictions.
pub fn record_removed(ctx: &mut Ctx, removed: usize) {
    ctx.state.conntrack_removed += removed as u64;
}
