//! Masquerade: keeps the datapath's exclusion trie and NAT port range in step with the
//! networks and the settings of `up`.
use std::{collections::BTreeSet, net::Ipv4Addr};

use anyhow::{Context as _, Result};

use super::Ctx;
use crate::{
    model::ipam::Subnet,
    model::masquerade::{NatPorts, trie_entries},
    system::datapath::Datapath,
};

/// Writes the exclusions (every network's subnet and cluster CIDR, and `exclude`) and the
/// port range to the datapath. Called by `up` with what it is about to store, and after a
/// network or its cluster CIDR comes or goes.
pub fn apply(
    ctx: &Ctx,
    dp: &Datapath,
    exclude: &BTreeSet<Subnet>,
    ports: Option<NatPorts>,
) -> Result<()> {
    let subnets = ctx
        .state
        .networks
        .values()
        .flat_map(|n| std::iter::once(&n.subnet).chain(&n.cluster_exclude));
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
