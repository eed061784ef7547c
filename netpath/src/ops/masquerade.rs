//! Masquerade and conntrack: keeps the datapath's exclusion trie and NAT port range in step
//! with the networks and the settings of `up`, and `netpath conntrack [flush]`.
use std::{collections::BTreeSet, net::Ipv4Addr};

use anyhow::{Context as _, Result};

use super::Ctx;
use crate::{
    conntrack::{self, Filter},
    datapath::{self, Datapath},
    ipam::Subnet,
    masquerade::{NatPorts, trie_entries},
};

/// Writes the exclusions (every network's subnet and `exclude`) and the port range to the
/// datapath. Called by `up` with what it is about to store, and after a network comes or goes.
pub fn apply(
    ctx: &Ctx,
    dp: &Datapath,
    exclude: &BTreeSet<Subnet>,
    ports: Option<NatPorts>,
) -> Result<()> {
    let subnets = ctx.state.networks.values().map(|n| &n.subnet);
    let prefixes: Vec<(Ipv4Addr, u8)> = trie_entries(subnets, exclude)
        .into_iter()
        .map(|s| (s.network(), s.prefix_len()))
        .collect();
    // 0/0 lets the programs use their default range.
    let ports = ports.map_or((0, 0), |p| (p.start, p.end));
    dp.set_masquerade(&prefixes, ports)
        .context("updating the masquerade exclusions")
}

/// [`apply`] with the stored settings, if the datapath exists.
pub fn resync(ctx: &Ctx) -> Result<()> {
    match Datapath::existing(&ctx.scope) {
        Some(dp) => apply(
            ctx,
            &dp,
            &ctx.state.masquerade_exclude,
            ctx.state.masquerade_ports,
        ),
        None => Ok(()),
    }
}

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
