//! Port publishing: `netpath publish` and `unpublish`, and the publishing parts of `up`,
//! `run -p`, `rm`, `network rm` and `down`. A change is validated in full first (against the
//! state and the namespace's addresses), then written to the maps in one batch; the state
//! takes it only once the maps have it, so bad input changes nothing.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Read as _,
    net::Ipv4Addr,
    path::Path,
};

use anyhow::{Context as _, Result, bail};
use netpath_common::{PublishKey, PublishTarget};

use super::{Ctx, Teardown, check_ifname, conntrack};
use crate::{
    cli::PublishArgs,
    model::masquerade::NatPorts,
    model::publish::{Mapping, Publishes, Spec},
    model::state::Network,
    output::Response,
    system::datapath::Datapath,
    system::netlink::Netlink,
};

/// `netpath publish`: adds the SPECs of the arguments and of `from_file`; with neither, lists
/// what is published, one SPEC per line (what `--from-file` reads back).
pub async fn publish(ctx: &mut Ctx, args: PublishArgs) -> Result<Response> {
    let PublishArgs { specs, from_file } = args;
    if specs.is_empty() && from_file.is_none() {
        return Ok(Response::Publishes(ctx.state.publishes.specs()));
    }
    let specs = read_specs(specs, from_file.as_deref())?;
    if ctx.state.networks.is_empty() {
        bail!("netpath is not up here: run `netpath up` first");
    }
    let added = plan(ctx, &specs).await?.commit(ctx)?;
    Ok(Response::Done(vec![format!("published {added} port(s)")]))
}

/// `netpath unpublish`: every port of every SPEC must be published, to that target.
pub async fn unpublish(ctx: &mut Ctx, args: PublishArgs) -> Result<Response> {
    let PublishArgs { specs, from_file } = args;
    if specs.is_empty() && from_file.is_none() {
        bail!("nothing to unpublish: give SPECs or --from-file");
    }
    let specs = read_specs(specs, from_file.as_deref())?;
    let mut publishes = ctx.state.publishes.clone();
    let mut removed = Vec::new();
    for spec in &specs {
        for m in spec.mappings() {
            publishes
                .remove(&m)
                .with_context(|| format!("cannot unpublish {spec}"))?;
            removed.push(m);
        }
    }
    if !removed.is_empty() {
        let dp = ctx.datapath()?;
        withdraw(ctx, &dp, &removed)?;
    }
    ctx.state.publishes = publishes;
    Ok(Response::Done(vec![format!(
        "unpublished {} port(s)",
        removed.len()
    )]))
}

/// SPECs given as arguments, then those of `file` (`-` is stdin): one per line, blank lines
/// and `#` comments ignored.
fn read_specs(mut specs: Vec<Spec>, file: Option<&Path>) -> Result<Vec<Spec>> {
    let Some(file) = file else {
        return Ok(specs);
    };
    let (name, text) = if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading SPECs from stdin")?;
        ("stdin".to_owned(), text)
    } else {
        let text =
            fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        (file.display().to_string(), text)
    };
    specs.extend(parse_lines(&name, &text)?);
    Ok(specs)
}

fn parse_lines(name: &str, text: &str) -> Result<Vec<Spec>> {
    let mut specs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let spec = line
            .parse()
            .with_context(|| format!("{name} line {}: invalid SPEC {line:?}", i + 1))?;
        specs.push(spec);
    }
    Ok(specs)
}

/// A validated addition of published ports, not applied yet.
pub struct Change {
    publishes: Publishes,
    add: Vec<Mapping>,
    local: Vec<Ipv4Addr>,
}

/// Validates `specs` as additions to the scope's publishes.
pub async fn plan(ctx: &Ctx, specs: &[Spec]) -> Result<Change> {
    let local = local_addrs(&ctx.nl).await?;
    let (publishes, add) = plan_add(
        &ctx.state.publishes,
        &ctx.state.networks,
        &local,
        specs,
        false,
        ctx.state.masquerade_ports,
    )?;
    Ok(Change {
        publishes,
        add,
        local,
    })
}

impl Change {
    /// Writes the change to the maps, then to the state; returns how many ports it added.
    pub fn commit(self, ctx: &mut Ctx) -> Result<usize> {
        let dp = ctx.datapath()?;
        // The namespace's addresses may have changed since the last `up`.
        dp.set_local_addrs(&self.local)?;
        apply(&dp, &ctx.state.networks, &self.add, &[])?;
        ctx.state.publishes = self.publishes;
        Ok(self.add.len())
    }
}

/// Checks `specs` as additions to `current`, in order and against each other: HOST_IP a local
/// address, the container address a host of a netpath network, no port taken, no host port in
/// the configured masquerade range `nat_ports`. With `existing_ok`, a mapping already
/// published identically is accepted and not added again. Returns the new set and the
/// mappings it adds.
pub fn plan_add(
    current: &Publishes,
    networks: &BTreeMap<String, Network>,
    local: &[Ipv4Addr],
    specs: &[Spec],
    existing_ok: bool,
    nat_ports: Option<NatPorts>,
) -> Result<(Publishes, Vec<Mapping>)> {
    let mut publishes = current.clone();
    let mut added = Vec::new();
    for spec in specs {
        let mut check = || -> Result<()> {
            if let Some(ip) = spec.host_ip
                && !local.contains(&ip)
            {
                bail!("HOST_IP {ip} is not an address of this namespace");
            }
            network_of(networks, spec.container_ip)?;
            for m in spec.mappings() {
                if let Some(range) = nat_ports {
                    range.check_free(&m)?;
                }
                if publishes.insert(m, existing_ok)? {
                    added.push(m);
                }
            }
            Ok(())
        };
        check().with_context(|| format!("cannot publish {spec}"))?;
    }
    Ok((publishes, added))
}

/// The network whose hosts include `ip`: where its publishes lead.
fn network_of(networks: &BTreeMap<String, Network>, ip: Ipv4Addr) -> Result<&Network> {
    let (name, net) = networks
        .iter()
        .find(|(_, n)| n.subnet.contains(ip))
        .with_context(|| format!("container address {ip} is in no netpath network"))?;
    if ip == net.gateway {
        bail!("container address {ip} is the gateway of network {name}");
    }
    net.subnet
        .check_host(ip)
        .with_context(|| format!("network {name}"))?;
    Ok(net)
}

fn entry(networks: &BTreeMap<String, Network>, m: &Mapping) -> Result<(PublishKey, PublishTarget)> {
    let net = network_of(networks, m.container_ip)?;
    Ok((
        m.key(),
        PublishTarget {
            container_addr: m.container_ip.octets(),
            gateway_addr: net.gateway.octets(),
            bridge_ifindex: net.ifindex,
            container_port: m.container_port,
            _pad: 0,
        },
    ))
}

fn entries(
    networks: &BTreeMap<String, Network>,
    ms: &[Mapping],
) -> Result<Vec<(PublishKey, PublishTarget)>> {
    ms.iter().map(|m| entry(networks, m)).collect()
}

/// Writes a validated change to the maps in one batch. If the kernel refuses part of it, what
/// was written is undone: the added keys were free before, the removed ones led where the
/// state says.
fn apply(
    dp: &Datapath,
    networks: &BTreeMap<String, Network>,
    add: &[Mapping],
    remove: &[Mapping],
) -> Result<()> {
    let keys = |ms: &[Mapping]| ms.iter().map(Mapping::key).collect::<Vec<_>>();
    let result = dp.update_publishes(&entries(networks, add)?, &keys(remove));
    if result.is_err() {
        let _ =
            entries(networks, remove).and_then(|old| Ok(dp.update_publishes(&old, &keys(add))?));
    }
    result.context("updating the published ports")
}

/// Takes `removed` out of the datapath and forgets the UDP flows through them: UDP has no
/// close to wait for, so a client that keeps sending would reach the old target until its
/// flow times out (Docker and the CNI portmap plugin flush them too). TCP connections live on
/// until they close, as long as their container does.
fn withdraw(ctx: &mut Ctx, dp: &Datapath, removed: &[Mapping]) -> Result<()> {
    apply(dp, &ctx.state.networks, &[], removed)?;
    conntrack::forget(ctx, dp, |c| removed.iter().any(|m| c.is_udp_through(m)))?;
    Ok(())
}

/// Every IPv4 address of the namespace, and 127.0.0.1 even while lo is down: what HOST_IP
/// may be, and what the socket programs treat as local.
pub async fn local_addrs(nl: &Netlink) -> Result<Vec<Ipv4Addr>> {
    let mut addrs: Vec<Ipv4Addr> = nl
        .addresses_v4()
        .await?
        .into_iter()
        .map(|a| a.addr)
        .collect();
    addrs.push(Ipv4Addr::LOCALHOST);
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
}

/// The external interfaces for `up`: those `given`, else those of the last `up`, else the
/// ones that carry the namespace's default routes. All must exist and none may be a netpath
/// bridge.
pub async fn plan_externals(ctx: &Ctx, given: Vec<String>) -> Result<BTreeSet<String>> {
    let links = ctx.nl.links().await?;
    let (names, hint) = if !given.is_empty() {
        (given.into_iter().collect(), "")
    } else if !ctx.state.externals.is_empty() {
        (
            ctx.state.externals.clone(),
            " (kept from the last `up`; pass --external to change the set)",
        )
    } else {
        let oifs: BTreeSet<u32> = ctx
            .nl
            .routes_v4()
            .await?
            .into_iter()
            .filter(|r| r.prefix_len == 0)
            .filter_map(|r| r.oif)
            .collect();
        let names = links
            .iter()
            .filter(|l| oifs.contains(&l.index))
            .map(|l| l.name.clone())
            .collect();
        (names, "")
    };
    for name in &names {
        check_ifname(name)?;
        if !links.iter().any(|l| l.name == *name) {
            bail!("unknown external interface {name}{hint}");
        }
        if let Some((net, _)) = ctx.state.networks.iter().find(|(_, n)| n.bridge == *name) {
            bail!("interface {name} is the bridge of network {net}, not an external interface");
        }
    }
    Ok(names)
}

/// Makes the datapath publish `publishes` on `externals`. `up` runs it every time, so it also
/// repairs: programs are re-attached atomically and map entries re-written with the current
/// bridges. The publishes are committed before the externals are touched, so that a failure
/// there leaves maps and state agreeing.
pub async fn activate(
    ctx: &mut Ctx,
    externals: BTreeSet<String>,
    publishes: Publishes,
) -> Result<()> {
    let dp = ctx.datapath()?;
    dp.attach_sockets()?;
    dp.set_local_addrs(&local_addrs(&ctx.nl).await?)?;
    let all: Vec<Mapping> = publishes.mappings().collect();
    dp.update_publishes(&entries(&ctx.state.networks, &all)?, &[])
        .context("updating the published ports")?;
    ctx.state.publishes = publishes;
    let dropped: Vec<String> = ctx
        .state
        .externals
        .difference(&externals)
        .cloned()
        .collect();
    for name in dropped {
        let index = ctx.nl.link_by_name(&name).await?.map(|l| l.index);
        dp.detach_external(&name, index)?;
        ctx.state.externals.remove(&name);
    }
    for name in externals {
        let link = ctx.nl.link_by_name(&name).await?;
        let link = link.with_context(|| format!("no external interface {name}"))?;
        dp.attach_external(&name, link.index)?;
        ctx.state.externals.insert(name);
    }
    Ok(())
}

/// Unpublishes every port that leads to an address `selected` picks: those of a container or
/// network being removed. `whose` completes the report ("... published port(s) of web").
pub fn unpublish_where(
    ctx: &mut Ctx,
    whose: &str,
    selected: impl Fn(Ipv4Addr) -> bool,
) -> Teardown {
    let mut t = Teardown::default();
    let removed: Vec<Mapping> = ctx
        .state
        .publishes
        .mappings()
        .filter(|m| selected(m.container_ip))
        .collect();
    if removed.is_empty() {
        return t;
    }
    let result = match Datapath::existing(&ctx.scope) {
        Some(dp) => withdraw(ctx, &dp, &removed),
        None => Ok(()),
    };
    if t.step(
        format!("{} published port(s){whose}", removed.len()),
        result,
    )
    .is_some()
    {
        ctx.state.publishes.retain(|m| !selected(m.container_ip));
    }
    t
}

/// `down`'s part: every publish, the external interfaces and the socket programs. What fails
/// stays in the state for the next `down`.
pub fn teardown(ctx: &mut Ctx) -> Teardown {
    let mut t = unpublish_where(ctx, "", |_| true);
    let Some(dp) = Datapath::existing(&ctx.scope) else {
        ctx.state.externals.clear();
        return t;
    };
    for name in ctx.state.externals.clone() {
        if t.step(
            format!("datapath on external interface {name}"),
            // The whole map goes with the pins once `down` is through.
            dp.detach_external(&name, None).map_err(Into::into),
        )
        .is_some()
        {
            ctx.state.externals.remove(&name);
        }
    }
    t.step("socket programs", dp.detach_sockets().map_err(Into::into));
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ipam::{AddrSet, Subnet};

    fn networks() -> BTreeMap<String, Network> {
        let net = |id, subnet: &str, bridge: &str| Network {
            id,
            subnet: subnet.parse::<Subnet>().unwrap(),
            gateway: subnet.parse::<Subnet>().unwrap().first_host(),
            bridge: bridge.to_owned(),
            ifindex: 10 + id,
            bridge_created: true,
            masquerade: true,
            routes: vec![],
            cluster_exclude: None,
            addresses: AddrSet::default(),
        };
        BTreeMap::from([
            ("default".to_owned(), net(1, "172.17.0.0/16", "netpath0")),
            ("backend".to_owned(), net(2, "10.10.0.0/24", "np-backend")),
        ])
    }

    const LOCAL: [Ipv4Addr; 2] = [Ipv4Addr::LOCALHOST, Ipv4Addr::new(192, 0, 2, 1)];

    fn specs(s: &[&str]) -> Vec<Spec> {
        s.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn plan_err(current: &Publishes, s: &[&str]) -> String {
        let e = plan_add(current, &networks(), &LOCAL, &specs(s), false, None).unwrap_err();
        format!("{e:#}")
    }

    #[test]
    fn plans_additions_and_targets() {
        let (p, added) = plan_add(
            &Publishes::default(),
            &networks(),
            &LOCAL,
            &specs(&["8080:172.17.0.2:80", "192.0.2.1:53:10.10.0.5:53/udp"]),
            false,
            None,
        )
        .unwrap();
        assert_eq!((p.len(), added.len()), (2, 2));
        let (key, target) = entry(&networks(), &added[1]).unwrap();
        assert_eq!(key.host_addr, [192, 0, 2, 1]);
        assert_eq!((key.host_port, key.proto), (53, 17));
        assert_eq!(target.container_addr, [10, 10, 0, 5]);
        assert_eq!(target.gateway_addr, [10, 10, 0, 1]);
        assert_eq!((target.bridge_ifindex, target.container_port), (12, 53));

        // `up` re-applies what is already there without complaint.
        let (again, added) = plan_add(
            &p,
            &networks(),
            &LOCAL,
            &specs(&["8080:172.17.0.2:80", "8081:172.17.0.2:81"]),
            true,
            None,
        )
        .unwrap();
        assert_eq!((again.len(), added.len()), (3, 1));
    }

    #[test]
    fn rejects_bad_additions_whole() {
        let (current, _) = plan_add(
            &Publishes::default(),
            &networks(),
            &LOCAL,
            &specs(&["8080:172.17.0.2:80", "127.0.0.1:9000:172.17.0.2:90"]),
            false,
            None,
        )
        .unwrap();
        for (bad, says) in [
            (
                &["198.51.100.7:80:172.17.0.2:80"][..],
                "cannot publish 198.51.100.7:80:172.17.0.2:80/tcp: HOST_IP 198.51.100.7 is not an address of this namespace",
            ),
            (
                &["80:192.168.9.2:80"],
                "container address 192.168.9.2 is in no netpath network",
            ),
            (
                &["80:172.17.0.1:80"],
                "container address 172.17.0.1 is the gateway of network default",
            ),
            (
                &["80:10.10.0.255:80"],
                "network backend: address 10.10.0.255 is the network or broadcast",
            ),
            (
                &["8080:172.17.0.3:80"],
                "*:8080/tcp is already published (to 172.17.0.2:80)",
            ),
            (
                &["127.0.0.1:8080:172.17.0.3:80"],
                "conflicts with *:8080/tcp",
            ),
            (
                &["9000:172.17.0.3:80"],
                "*:9000/tcp conflicts with 127.0.0.1:9000/tcp",
            ),
            (
                &["81:172.17.0.2:81", "80-81:172.17.0.3:80-81"],
                "cannot publish 80-81:172.17.0.3:80-81/tcp: *:81/tcp is already published",
            ),
        ] {
            let msg = plan_err(&current, bad);
            assert!(msg.contains(says), "{bad:?}: {msg:?} lacks {says:?}");
        }
        // Duplicates within one batch are refused even for `up`.
        let dup = plan_add(
            &Publishes::default(),
            &networks(),
            &LOCAL,
            &specs(&["80:172.17.0.2:80", "80:172.17.0.3:80"]),
            true,
            None,
        );
        assert!(dup.is_err());
        // A host port inside an explicitly configured masquerade range.
        let in_range = plan_add(
            &Publishes::default(),
            &networks(),
            &LOCAL,
            &specs(&["8000:172.17.0.2:80", "8500:172.17.0.2:80"]),
            false,
            "8100-8999".parse().ok(),
        );
        assert_eq!(
            format!("{:#}", in_range.unwrap_err()),
            "cannot publish 8500:172.17.0.2:80/tcp: host port *:8500/tcp is in the masquerade port range 8100-8999 (see `netpath up --masquerade-ports`)"
        );
    }

    #[test]
    fn reads_spec_files() {
        let text = "# web\n8080:172.17.0.2:80\n\n  8081:172.17.0.2:81/udp  # dns\n";
        let got = parse_lines("f", text).unwrap();
        assert_eq!(
            got,
            specs(&["8080:172.17.0.2:80", "8081:172.17.0.2:81/udp"])
        );
        let msg = format!(
            "{:#}",
            parse_lines("f", "8080:172.17.0.2:80\n\n0:172.17.0.2:80\n").unwrap_err()
        );
        assert_eq!(
            msg,
            "f line 3: invalid SPEC \"0:172.17.0.2:80\": HOST_PORT 0 is out of range (1-65535)"
        );
    }
}
