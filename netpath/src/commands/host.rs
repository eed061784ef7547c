//! `netpath up` and `netpath down`: the default network, IP forwarding and the datapath of
//! the whole namespace.
use std::{
    collections::BTreeSet,
    fs,
    io::Write,
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

use anyhow::{Context as _, Result, bail};
use netpath_common::MAX_CONNTRACK;

use super::{
    Ctx, DEFAULT_BRIDGE, DEFAULT_NETWORK, Teardown, check_ifname, container, masquerade, network,
    publish,
};
use crate::{
    cli::{LogLevel, UpArgs},
    model::conntrack,
    model::ipam::{AddrSet, Subnet},
    model::masquerade::{NatPorts, plan_exclude},
    model::publish::Publishes,
    model::state::{Container, Network},
    output::{self, Response},
    system::datapath::{self, Datapath, DatapathError},
};

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

pub async fn up(ctx: &mut Ctx, args: UpArgs) -> Result<Response> {
    let UpArgs {
        bridge,
        publish: specs,
        external: externals,
        masquerade_exclude,
        masquerade_ports,
        log_level,
        conntrack_max,
        ..
    } = args;
    if let Some(bridge) = &bridge {
        check_ifname(bridge)?;
    }
    // Everything is planned and checked before anything is created, so that bad input
    // (a --publish, --external or --masquerade-* included) changes nothing.
    let new_default = match (ctx.state.networks.get(DEFAULT_NETWORK), bridge) {
        (None, bridge) => {
            Some(plan_default(ctx, bridge.as_deref().unwrap_or(DEFAULT_BRIDGE)).await?)
        }
        (Some(net), Some(bridge)) if net.bridge != bridge => bail!(
            "the default network already uses bridge {}; run `netpath down` to change it",
            net.bridge
        ),
        (Some(_), _) => None,
    };
    let externals = publish::plan_externals(ctx, externals).await?;
    let mut networks = ctx.state.networks.clone();
    let mut local = publish::local_addrs(&ctx.nl).await?;
    if let Some(net) = &new_default {
        networks.insert(DEFAULT_NETWORK.to_owned(), net.clone());
        local.push(net.gateway);
    }
    let nat_ports = masquerade_ports.or(ctx.state.masquerade_ports);
    let (publishes, _) = publish::plan_add(
        &ctx.state.publishes,
        &networks,
        &local,
        &specs,
        true,
        nat_ports,
    )?;
    if let Some(range) = nat_ports {
        range.check_publishes(&publishes)?;
    }
    let exclude = plan_exclude(&ctx.state.masquerade_exclude, &masquerade_exclude)?;
    let conntrack_max = conntrack_max.or(ctx.state.conntrack_max);
    check_conntrack_size(ctx, conntrack_max)?;
    ctx.state.conntrack_max = conntrack_max;

    // Programs take the log level when loaded, so before they are (re)attached below.
    ctx.datapath()?.set_log_level(log_level as u8)?;
    let created = match new_default {
        Some(mut net) => {
            net.ifindex = network::realize(ctx, &net).await?;
            ctx.state.add_network(DEFAULT_NETWORK, net)?;
            true
        }
        None => false,
    };
    // Re-attach everything else: repairs bridges deleted behind netpath's back and replaces
    // the programs of an earlier netpath atomically.
    let names: Vec<String> = ctx
        .state
        .networks
        .keys()
        .filter(|name| !(created && *name == DEFAULT_NETWORK))
        .cloned()
        .collect();
    for name in names {
        let ifindex = network::realize(ctx, &ctx.state.networks[&name])
            .await
            .with_context(|| format!("network {name}"))?;
        ctx.state
            .networks
            .get_mut(&name)
            .expect("listed above")
            .ifindex = ifindex;
    }
    activate(ctx, externals, publishes, exclude, nat_ports).await?;
    let s = &ctx.state;
    let net = &s.networks[DEFAULT_NETWORK];
    let externals = match s.externals.len() {
        0 => "none (no default route; see --external)".to_owned(),
        _ => s
            .externals
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", "),
    };
    Ok(Response::Done(vec![format!(
        "netpath is up: network {DEFAULT_NETWORK} on bridge {} ({}, gateway {}), {} network(s), {} container(s), {} published port(s), external interfaces: {externals}, masquerade ports {}, {} masquerade exclusion(s)",
        net.bridge,
        net.subnet,
        net.gateway,
        s.networks.len(),
        s.containers.iter().len(),
        s.publishes.len(),
        s.masquerade_ports.unwrap_or(NatPorts::DEFAULT),
        s.masquerade_exclude.len(),
    )]))
}

/// What a datapath that is not up holds of what [`activate_as_up`] changes ([`inactive`]).
pub(super) struct Inactive {
    externals: BTreeSet<String>,
    ip_forward_before: Option<String>,
    local_addrs: Vec<Ipv4Addr>,
}

/// What [`activate_as_up`] would change, as it is now: taken before it, so that a plugin's
/// call that fails afterwards, even halfway through it, can put that back ([`deactivate`]).
pub(super) fn inactive(ctx: &Ctx) -> Result<Inactive> {
    let local_addrs = match Datapath::existing(&ctx.scope) {
        Some(dp) => dp.local_addrs()?,
        None => vec![],
    };
    Ok(Inactive {
        externals: ctx.state.externals.clone(),
        ip_forward_before: ctx.state.ip_forward_before.clone(),
        local_addrs,
    })
}

/// Brings the datapath up on what the state holds, as `netpath up -d` would with no options:
/// for a plugin's first network, after which it stays pinned with no daemon.
pub(super) async fn activate_as_up(ctx: &mut Ctx) -> Result<()> {
    let externals = super::publish::plan_externals(ctx, vec![]).await?;
    let publishes = ctx.state.publishes.clone();
    let exclude = ctx.state.masquerade_exclude.clone();
    let nat_ports = ctx.state.masquerade_ports;
    activate(ctx, externals, publishes, exclude, nat_ports).await
}

/// Undoes [`activate_as_up`] on a datapath that was not up (pins from `netpath network
/// create`), for a plugin's call that fails afterwards: the external interfaces it attached,
/// the socket programs and their local addresses, and IP forwarding as it was. The rest of
/// what it wrote is what the state already held (containers' entries, masquerade settings,
/// publishes) or is read by the socket programs alone (the namespace's cookie). Goes on past
/// failures; what failed stays in the state for `down`.
pub(super) async fn deactivate(ctx: &mut Ctx, before: Inactive) -> Teardown {
    let mut t = Teardown::default();
    if let Some(dp) = Datapath::existing(&ctx.scope) {
        let attached: Vec<String> = ctx
            .state
            .externals
            .difference(&before.externals)
            .cloned()
            .collect();
        for name in attached {
            let detached = async {
                // The map entry too: the pins, and the map, stay.
                let index = ctx.nl.link_by_name(&name).await?.map(|l| l.index);
                Ok(dp.detach_external(&name, index)?)
            }
            .await;
            let step = format!("datapath on external interface {name}");
            if t.step(step, detached).is_some() {
                ctx.state.externals.remove(&name);
            }
        }
        t.step("socket programs", dp.detach_sockets().map_err(Into::into));
        let local = dp.set_local_addrs(&before.local_addrs);
        t.step(
            "local addresses of the socket programs",
            local.map_err(Into::into),
        );
    }
    // Only if this activation enabled it: otherwise it stays for `down` to restore.
    if before.ip_forward_before.is_none() {
        restore_ip_forward(ctx, &mut t);
    }
    t
}

/// What `up` does once the networks are realized (and the first `ADD` of netpath-cni, which
/// brings the datapath up as `up -d` would): containers on the fast path, IP forwarding,
/// masquerade settings, published ports and external interfaces.
pub(super) async fn activate(
    ctx: &mut Ctx,
    externals: BTreeSet<String>,
    publishes: Publishes,
    exclude: BTreeSet<Subnet>,
    nat_ports: Option<NatPorts>,
) -> Result<()> {
    register_containers(ctx)?;
    let forward =
        fs::read_to_string(IP_FORWARD).with_context(|| format!("reading {IP_FORWARD}"))?;
    if forward.trim() != "1" {
        fs::write(IP_FORWARD, "1").with_context(|| format!("enabling {IP_FORWARD}"))?;
        ctx.state
            .ip_forward_before
            .get_or_insert(forward.trim().to_owned());
    }
    // Before the externals are attached: masquerade acts as soon as they are.
    masquerade::apply(ctx, &*ctx.datapath()?, &exclude, nat_ports)?;
    ctx.state.masquerade_exclude = exclude;
    ctx.state.masquerade_ports = nat_ports;
    publish::activate(ctx, externals, publishes).await
}

/// Refuses a conntrack capacity other than the pinned table's, before anything changes.
fn check_conntrack_size(ctx: &Ctx, wanted: Option<u32>) -> Result<()> {
    let wanted = wanted.unwrap_or(MAX_CONNTRACK);
    // No table yet (a first `up`, or one that failed early): it gets created at this size.
    let pinned = Datapath::existing(&ctx.scope).and_then(|dp| dp.conntrack_capacity().ok());
    match pinned {
        Some(pinned) if pinned != wanted => {
            Err(DatapathError::ConntrackSize { pinned, wanted }.into())
        }
        _ => Ok(()),
    }
}

/// Loads the container-veth program (a new netpath's replaces the old one on every veth) and
/// puts every container's veth on the fast path, those started before the datapath included.
fn register_containers(ctx: &mut Ctx) -> Result<()> {
    let dp = ctx.datapath()?;
    dp.load_veth_program()?;
    if ctx.state.all_containers()?.is_empty() {
        return Ok(());
    }
    let present = ctx.nl.indexes(container::host_veths(&ctx.state))?;
    for (name, c) in ctx.state.containers.iter() {
        for e in &c.endpoints {
            // A veth deleted behind netpath's back is reported by `ps`; `rm` cleans up.
            let bridge = ctx.state.networks.get(&e.network).map(|n| n.ifindex);
            if let (Some(&index), Some(bridge)) = (present.get(&e.host_veth), bridge) {
                container::register(&dp, e, c.mac(e), index, bridge, c.allow_spoofed_source)
                    .with_context(|| format!("container {name}"))?;
            }
        }
    }
    Ok(())
}

/// The default network `up` is about to create, or the existing bridge it adopts.
async fn plan_default(ctx: &Ctx, bridge: &str) -> Result<Network> {
    let mut net = if ctx.nl.link_by_name(bridge).await?.is_some() {
        network::adopt(ctx, bridge).await?
    } else {
        Network {
            id: ctx.state.next_network_id(),
            subnet: network::pick_subnet(ctx, None).await?,
            gateway: std::net::Ipv4Addr::UNSPECIFIED,
            bridge: bridge.to_owned(),
            ifindex: 0,
            bridge_created: true,
            masquerade: true,
            routes: vec![],
            cluster_exclude: None,
            addresses: AddrSet::default(),
        }
    };
    if net.bridge_created {
        net.gateway = net.subnet.first_host();
    }
    Ok(net)
}

/// Removes everything netpath created in the namespace, continuing past failures. Whatever
/// failed stays in the state, so that running `down` again retries it.
pub async fn down(ctx: &mut Ctx) -> Result<Response> {
    // Published ports first, so that nothing is translated towards what goes next.
    let mut t = publish::teardown(ctx);
    // Every translated connection goes with the containers: one flush, not a walk of the
    // table for each of them.
    if let Some(dp) = Datapath::existing(&ctx.scope) {
        match dp.flush_conntrack() {
            Ok(0) => {}
            Ok(n) => {
                super::conntrack::record_removed(ctx, n);
                t.step(format!("{n} conntrack entries"), Ok(()));
            }
            Err(e) => {
                t.step("conntrack entries", Err::<(), _>(e.into()));
            }
        }
    }
    // All containers at once: the kernel removes their veths in one batch. A record that
    // does not read is reported, and the rest go.
    let containers: Vec<(String, Container)> = ctx
        .state
        .readable_containers()?
        .iter()
        .map(|(n, c)| (n.clone(), c.clone()))
        .collect();
    for why in ctx.state.containers.unreadable().values() {
        t.step("a container record", Err::<(), _>(anyhow::anyhow!("{why}")));
    }
    let each: Vec<(&str, &Container)> = containers.iter().map(|(n, c)| (n.as_str(), c)).collect();
    for ((name, _), ct) in containers
        .iter()
        .zip(container::teardown_all(ctx, &each).await)
    {
        let removed = ct.errors.is_empty();
        t.merge(ct);
        // A container that failed to go stays in the state, and is not reported as removed.
        if removed {
            ctx.state.remove_container(name)?;
            t.step(format!("container {name}"), Ok(()));
        }
    }
    let names: Vec<String> = ctx.state.networks.keys().cloned().collect();
    for name in names {
        let net = ctx.state.networks[&name].clone();
        let nt = network::teardown(ctx, &net).await;
        let removed = nt.errors.is_empty();
        t.merge(nt);
        if removed {
            ctx.state.networks.remove(&name);
            t.step(format!("network {name}"), Ok(()));
        }
    }
    // Like the external interfaces, the settings of `up` last until `down`.
    ctx.state.masquerade_exclude.clear();
    ctx.state.masquerade_ports = None;
    ctx.state.conntrack_max = None;
    restore_ip_forward(ctx, &mut t);
    Ok(t.finish()?)
}

/// Writes back the IP forwarding setting netpath changed, if it did; kept in the state if
/// that fails, for the next try.
fn restore_ip_forward(ctx: &mut Ctx, t: &mut Teardown) {
    if let Some(before) = ctx.state.ip_forward_before.take() {
        let restored =
            fs::write(IP_FORWARD, &before).with_context(|| format!("restoring {IP_FORWARD}"));
        if restored.is_err() {
            ctx.state.ip_forward_before = Some(before.clone());
        }
        t.step(format!("ip_forward=1 (restored to {before})"), restored);
    }
}

/// The foreground part of `up` (without -d): collects expired conntrack entries every
/// `gc_interval` seconds and writes the programs' log records (at the level `up` loaded them
/// with) to `out` until Ctrl-C or SIGTERM. It holds no lock, so other netpath commands run
/// meanwhile. On exit the datapath stays attached and pinned, exactly as after `up -d`:
/// stopping the foreground process never interrupts traffic; `netpath down` removes it all.
pub async fn foreground(
    scope: &str,
    gc_interval: u64,
    log_level: LogLevel,
    out: &mut impl Write,
) -> Result<()> {
    output::line(
        out,
        &format!(
            "netpath runs in the foreground (conntrack GC every {gc_interval}s, log level {log_level:?}); Ctrl-C leaves the datapath attached"
        ),
    )?;
    let mut term = signal(SignalKind::terminate()).context("watching SIGTERM")?;
    let mut gc = tokio::time::interval(Duration::from_secs(gc_interval));
    let records = Records::default();
    let mut logs = match (log_level, Datapath::existing(scope)) {
        (LogLevel::Off, _) | (_, None) => None,
        (_, Some(dp)) => {
            let logger = dp.logger(records.clone())?;
            // SAFETY: the logger owns its ring buffer's fd for as long as the AsyncFd owns it.
            let fd = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) };
            Some(
                fd.map_err(|e| e.into_parts().1)
                    .context("watching the programs' log")?,
            )
        }
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            ready = async { logs.as_mut().expect("guarded").readable_mut().await }, if logs.is_some() => {
                let mut ready = ready.context("reading the programs' log")?;
                ready.get_inner_mut().flush();
                ready.clear_ready();
                for record in records.take() {
                    output::line(out, &record)?;
                }
            }
            _ = gc.tick() => {
                let Some(dp) = Datapath::existing(scope) else {
                    output::line(out, "the datapath is gone (netpath down); exiting")?;
                    return Ok(());
                };
                let expired = conntrack::expired_keys(&dp.conntrack()?, datapath::monotonic_coarse_ns()?);
                let removed = dp.remove_conntrack(&expired)?;
                if removed > 0 {
                    // Recorded so that `netpath stats` does not take them for evictions.
                    let mut ctx = Ctx::open(scope)?;
                    super::conntrack::record_removed(&mut ctx, removed);
                    ctx.finish()?;
                    output::line(out, &format!("conntrack: removed {removed} expired entries"))?;
                }
            }
        }
    }
    output::line(
        out,
        "netpath: exiting; the datapath stays attached (netpath down removes it)",
    )?;
    Ok(())
}

/// The programs' log records, one line each, collected as aya-log hands them over and
/// written out by the foreground loop (where a failed write ends it).
#[derive(Clone, Default)]
struct Records(Arc<Mutex<Vec<String>>>);

impl Records {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl log::Log for Records {
    fn enabled(&self, _: &log::Metadata) -> bool {
        // The programs filter by level themselves.
        true
    }

    fn log(&self, record: &log::Record) {
        let line = format!("[{}] {}", record.level(), record.args());
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }

    fn flush(&self) {}
}
