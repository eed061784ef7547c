//! `netpath network ...`: bridges with a gateway address, an IPAM subnet and the datapath
//! attached.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use super::{Ctx, Teardown, check_ifname, check_name, masquerade, publish};
use crate::{
    cli::NetworkCreateArgs,
    model::ipam::{self, AddrSet, Subnet},
    model::state::{Network, State},
    output::Response,
    system::datapath::Datapath,
};

pub async fn create(ctx: &mut Ctx, args: NetworkCreateArgs) -> Result<Response> {
    let NetworkCreateArgs {
        name,
        subnet,
        gateway,
        bridge,
        masquerade,
    } = args;
    let name = name.as_str();
    check_name("network", name)?;
    if ctx.state.networks.contains_key(name) {
        bail!("network {name} already exists");
    }
    let bridge = bridge.unwrap_or_else(|| default_bridge_name(name));
    check_ifname(&bridge)?;
    if ctx.state.networks.values().any(|n| n.bridge == bridge)
        || ctx.nl.link_by_name(&bridge).await?.is_some()
    {
        bail!("interface {bridge} already exists");
    }
    let subnet = pick_subnet(ctx, subnet).await?;
    let gateway = match gateway {
        Some(gw) => {
            subnet
                .check_host(gw)
                .with_context(|| format!("invalid gateway {gw}"))?;
            gw
        }
        None => subnet.first_host(),
    };
    let mut network = Network {
        id: ctx.state.next_network_id(),
        subnet,
        gateway,
        bridge,
        ifindex: 0,
        bridge_created: true,
        masquerade,
        routes: vec![],
        cluster_exclude: None,
        addresses: AddrSet::default(),
    };
    network.ifindex = realize(ctx, &network).await?;
    let done = format!(
        "network {name}: bridge {}, subnet {subnet}, gateway {gateway}, masquerade {}",
        network.bridge,
        if masquerade { "on" } else { "off" }
    );
    ctx.state.add_network(name, network)?;
    masquerade::resync(ctx)
        .context("excluding the new network from masquerade (`netpath up` repairs)")?;
    Ok(Response::Done(vec![done]))
}

/// Docker names bridges after the network id; a readable name is more useful when it fits.
fn default_bridge_name(name: &str) -> String {
    let readable = format!("np-{name}");
    if readable.len() <= 15 {
        return readable;
    }
    // FNV-1a: stable across runs, so the same network name always gets the same bridge.
    let hash = name.bytes().fold(0x811c9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x01000193)
    });
    format!("np-{hash:08x}")
}

/// The subnet for a new network: the requested one if it is free, else the first free
/// default pool. Free means: overlapping no netpath network and no route in this namespace.
pub async fn pick_subnet(ctx: &Ctx, wanted: Option<Subnet>) -> Result<Subnet> {
    let mut used: Vec<(String, Subnet)> = ctx
        .state
        .networks
        .iter()
        .map(|(name, n)| (format!("network {name}"), n.subnet))
        .collect();
    for route in ctx.nl.routes_v4().await? {
        if route.prefix_len > 0 {
            let dst = Subnet::new(route.dst, route.prefix_len)?;
            used.push((format!("route {dst}"), dst));
        }
    }
    let conflict = |s: &Subnet| {
        used.iter()
            .find(|(_, u)| u.overlaps(s))
            .map(|(what, _)| what)
    };
    match wanted {
        Some(s) => {
            if s.prefix_len() > 30 {
                bail!("subnet {s} is too small: a network needs at least a /30");
            }
            if let Some(what) = conflict(&s) {
                bail!("subnet {s} overlaps {what}");
            }
            Ok(s)
        }
        None => ipam::default_pools()
            .find(|s| conflict(s).is_none())
            .context("no free private subnet: every default pool overlaps a route or network; pass --subnet"),
    }
}

/// An existing bridge with an IPv4 address becomes a netpath network: its first address gives
/// the subnet and the gateway. netpath never deletes an adopted bridge.
pub async fn adopt(ctx: &Ctx, bridge: &str) -> Result<Network> {
    let link = ctx
        .nl
        .link_by_name(bridge)
        .await?
        .with_context(|| format!("no interface {bridge}"))?;
    if link.kind.as_deref() != Some("bridge") {
        bail!("interface {bridge} is not a bridge");
    }
    let addr = ctx
        .nl
        .addresses_v4()
        .await?
        .into_iter()
        .find(|a| a.index == link.index)
        .with_context(|| format!("bridge {bridge} has no IPv4 address to infer a subnet from"))?;
    let subnet = Subnet::new(addr.addr, addr.prefix_len)?;
    if let Some((name, _)) = ctx
        .state
        .networks
        .iter()
        .find(|(_, n)| n.subnet.overlaps(&subnet))
    {
        bail!("subnet {subnet} of bridge {bridge} overlaps network {name}");
    }
    Ok(Network {
        id: ctx.state.next_network_id(),
        subnet,
        gateway: addr.addr,
        bridge: bridge.to_owned(),
        ifindex: link.index,
        bridge_created: false,
        masquerade: true,
        routes: vec![],
        cluster_exclude: None,
        addresses: AddrSet::default(),
    })
}

/// Makes the network's bridge exist (re-creating one netpath made that was deleted behind its
/// back) and attaches the datapath to it; returns the bridge's ifindex. A bridge created here
/// is deleted again if a later step fails.
pub async fn realize(ctx: &Ctx, net: &Network) -> Result<u32> {
    let (index, created) = match ctx.nl.link_by_name(&net.bridge).await? {
        Some(link) if link.kind.as_deref() == Some("bridge") => (link.index, false),
        Some(_) => bail!("interface {} exists and is not a bridge", net.bridge),
        None if net.bridge_created => (ctx.nl.create_bridge(&net.bridge).await?, true),
        None => bail!(
            "bridge {} is gone and was not created by netpath",
            net.bridge
        ),
    };
    let result = async {
        if created {
            ctx.nl
                .add_address(index, net.gateway, net.subnet.prefix_len())
                .await?;
        }
        Ok(ctx
            .datapath()?
            .attach_bridge(&net.bridge, index, net.id, net.masquerade)?)
    }
    .await;
    match result {
        Ok(()) => Ok(index),
        Err(failed) if created => {
            let mut t = Teardown::default();
            let deleted = ctx.nl.delete_link(index).await;
            t.step(
                format!("bridge {}", net.bridge),
                deleted.map_err(Into::into),
            );
            Err(t.undoing(failed))
        }
        Err(failed) => Err(failed),
    }
}

pub async fn rm(ctx: &mut Ctx, name: &str) -> Result<Response> {
    let net = ctx.state.network(name)?.clone();
    let users: Vec<&str> = ctx.state.users(name)?.map(|(n, _)| n).collect();
    if !users.is_empty() {
        bail!(
            "network {name} is in use by container(s) {}; remove or disconnect them first",
            users.join(", ")
        );
    }
    // Ports published to addresses of the network go with it.
    let mut t = publish::unpublish_where(ctx, &format!(" to network {name}"), |ip| {
        net.subnet.contains(ip)
    });
    t.merge(teardown(ctx, &net).await);
    if t.errors.is_empty() {
        ctx.state.networks.remove(name);
        t.step(
            format!("masquerade exclusion of {}", net.subnet),
            masquerade::resync(ctx),
        );
    }
    Ok(t.finish()?)
}

/// Removes the routes netpath installed for the network that are still there as it made
/// them; a route someone has changed since is not netpath's any more and stays.
pub async fn remove_routes(ctx: &Ctx, net: &Network) -> Teardown {
    let mut t = Teardown::default();
    if net.routes.is_empty() {
        return t;
    }
    let present = match ctx.nl.routes_v4().await {
        Ok(present) => present,
        Err(e) => {
            t.errors
                .push(anyhow::Error::from(e).context("listing the routes to remove"));
            return t;
        }
    };
    for r in &net.routes {
        let (dst, len) = (r.dst.network(), r.dst.prefix_len());
        let ours = present
            .iter()
            .any(|p| p.dst == dst && p.prefix_len == len && p.gateway == Some(r.via));
        if ours {
            let deleted = ctx.nl.delete_route(dst, len, r.via).await;
            t.step(
                format!("route {} via {}", r.dst, r.via),
                deleted.map_err(Into::into),
            );
        }
    }
    t
}

/// Detaches the datapath from the bridge and deletes the bridge if netpath created it, and
/// the routes netpath installed for the network.
pub async fn teardown(ctx: &Ctx, net: &Network) -> Teardown {
    let mut t = remove_routes(ctx, net).await;
    if let Some(dp) = Datapath::existing(&ctx.scope) {
        t.step(
            format!("datapath on {}", net.bridge),
            dp.detach_bridge(&net.bridge, net.ifindex)
                .map_err(Into::into),
        );
    }
    if net.bridge_created {
        let deleted = ctx
            .nl
            .delete_link_by_name(&net.bridge)
            .await
            .map_err(Into::into);
        // A bridge already gone is what teardown wants; only report real failures.
        if !matches!(deleted, Ok(false)) {
            t.step(format!("bridge {}", net.bridge), deleted);
        }
    }
    t
}

/// A network as `network ls` shows it.
#[derive(Serialize)]
pub struct NetworkView {
    pub name: String,
    #[serde(flatten)]
    pub network: Network,
    pub bridge_present: bool,
}

/// Every network as `network ls` shows it; `present` are the interfaces of the namespace
/// among those the state names (`Netlink::indexes`).
pub(super) fn views(state: &State, present: &BTreeMap<String, u32>) -> Vec<NetworkView> {
    state
        .networks
        .iter()
        .map(|(name, network)| NetworkView {
            name: name.clone(),
            network: network.clone(),
            bridge_present: present.contains_key(&network.bridge),
        })
        .collect()
}

pub fn ls(ctx: &Ctx) -> Result<Response> {
    let bridges = ctx.state.networks.values().map(|n| n.bridge.as_str());
    Ok(Response::Networks(views(
        &ctx.state,
        &ctx.nl.indexes(bridges)?,
    )))
}
