//! Containers: a named network namespace (`ip netns` sees it) with one veth per network,
//! or one of Docker's other network modes.
use std::{
    collections::BTreeMap,
    ffi::CString,
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, unshare},
};
use serde::Serialize;

use super::{Ctx, Teardown, check_name, conntrack, publish};
use crate::{
    cli::{ConnectArgs, ExecArgs, RunArgs},
    model::ipam,
    model::publish::Spec,
    model::state::{Container, Endpoint, NetMode, State, Store},
    output::Response,
    system::datapath::Datapath,
    system::netlink::{Netlink, NetlinkError},
    system::netns::{self, Netns},
};

const ETC_NETNS: &str = "/etc/netns";

pub async fn run(ctx: &mut Ctx, args: RunArgs) -> Result<Response> {
    let RunArgs {
        name,
        network,
        ip,
        mode,
        dns,
        publish: ports,
        allow_spoofed_source,
    } = args;
    let name = name.as_str();
    check_name("container", name)?;
    if ctx.state.containers.contains(name)? {
        bail!("container {name} already exists");
    }
    let endpoints = match &mode {
        NetMode::Bridge => vec![plan_endpoint(&ctx.state, name, &network, ip, 0)?],
        NetMode::Container(target) => {
            if !ctx.state.container(target)?.owns_netns() {
                bail!("container {target} has no network namespace of its own to share");
            }
            vec![]
        }
        NetMode::None | NetMode::Host => vec![],
        NetMode::Cni(_) => bail!("CNI pods are added by netpath-cni, not `netpath run`"),
        NetMode::Docker(_) => bail!("Docker endpoints are added by `netpath docker-plugin`"),
    };
    let specs: Vec<Spec> = match (&ports[..], endpoints.first()) {
        ([], _) => vec![],
        (_, Some(eth0)) => ports.iter().map(|p| p.to_spec(eth0.ip)).collect(),
        (_, None) => {
            bail!("publishing ports (-p) needs a container on a bridge network (--net bridge)")
        }
    };
    let publishes = if specs.is_empty() {
        None
    } else {
        Some(publish::plan(ctx, &specs).await?)
    };
    let container = Container {
        mode,
        endpoints,
        allow_spoofed_source,
    };
    if container.owns_netns() {
        let ns = netns::create_named(name)?;
        let built = async {
            build(ctx, name, &ns, &container, &dns).await?;
            publishes.map_or(Ok(0), |p| p.commit(ctx))
        }
        .await;
        if let Err(e) = built {
            // The veths go with the namespace (not by name: a failure may be a name taken by
            // an interface that is not ours); the datapath's entries for them do not.
            let mut t = Teardown::default();
            if let Some(dp) = Datapath::existing(&ctx.scope) {
                for ep in &container.endpoints {
                    forget_endpoint(&mut t, &dp, ep);
                }
            }
            drop(ns);
            t.merge(remove_namespace(name));
            return Err(t.undoing(e));
        }
    }
    let done = container
        .endpoints
        .iter()
        .map(|e| attached(name, e))
        .chain(specs.iter().map(|spec| format!("{name}: published {spec}")))
        .collect();
    ctx.state.add_container(name, container);
    Ok(Response::Done(done))
}

fn attached(name: &str, e: &Endpoint) -> String {
    format!("{name}: {} {} on network {}", e.ifname, e.ip, e.network)
}

/// Wires up a fresh namespace: resolv.conf, lo, and the planned endpoints. Each endpoint
/// cleans up after itself on failure; the caller removes the namespace.
async fn build(
    ctx: &Ctx,
    name: &str,
    ns: &Netns,
    container: &Container,
    dns: &[Ipv4Addr],
) -> Result<()> {
    write_resolv_conf(name, dns)?;
    let cnl = Netlink::open_in(ns)?;
    cnl.set_up("lo").await?;
    for (i, e) in container.endpoints.iter().enumerate() {
        wire_endpoint(ctx, &cnl, ns, e, i == 0, container.allow_spoofed_source).await?;
    }
    Ok(())
}

/// Chooses (or validates) the address and names of a container's interface on `network`.
fn plan_endpoint(
    state: &State,
    container: &str,
    network: &str,
    ip: Option<Ipv4Addr>,
    slot: usize,
) -> Result<Endpoint> {
    let net = state.network(network).with_context(|| {
        if network == super::DEFAULT_NETWORK {
            "the default network does not exist: run `netpath up` first".to_owned()
        } else {
            format!("cannot attach {container}")
        }
    })?;
    let ip = match ip {
        Some(ip) => {
            net.subnet.check_host(ip)?;
            if ip == net.gateway {
                bail!("address {ip} is the gateway of network {network}");
            }
            if net.in_use(ip) {
                bail!("address {ip} is already in use on network {network}");
            }
            ip
        }
        None => net
            .next_free()
            .with_context(|| format!("network {network} is full"))?,
    };
    let ifname = format!("eth{slot}");
    Ok(Endpoint {
        network: network.to_owned(),
        host_veth: host_veth_name(container, &ifname),
        ifname,
        ip,
    })
}

/// `np` + a hash of container and interface: unique per endpoint, stable, within 15 bytes.
pub(super) fn host_veth_name(container: &str, ifname: &str) -> String {
    let hash = container
        .bytes()
        .chain([0])
        .chain(ifname.bytes())
        .fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
        });
    format!("np{:012x}", hash & 0xffff_ffff_ffff)
}

/// Creates the veth (host end on the bridge, peer already inside the namespace) and configures
/// the container side. The first interface also gets the default route; `any_source` is the
/// container's `--allow-spoofed-source`.
pub(super) async fn wire_endpoint(
    ctx: &Ctx,
    cnl: &Netlink,
    ns: &Netns,
    e: &Endpoint,
    default_route: bool,
    any_source: bool,
) -> Result<()> {
    let net = ctx.state.network(&e.network)?;
    let bridge = ctx.nl.link_by_name(&net.bridge).await?.with_context(|| {
        format!(
            "bridge {} of network {} is missing: run `netpath up` to repair",
            net.bridge, e.network
        )
    })?;
    let created = ctx
        .nl
        .create_veth(
            &e.host_veth,
            bridge.index,
            ns,
            &e.ifname,
            ipam::mac_for(e.ip),
        )
        .await;
    let index = match created {
        Err(NetlinkError::Kernel { source, .. }) if source.raw_os_error() == Some(libc::EXFULL) => {
            bail!(
                "network {} is full: its bridge {} has no free port (a Linux bridge takes at most 1023)",
                e.network,
                net.bridge
            )
        }
        created => created?,
    };
    let gateway = default_route.then_some(net.gateway);
    let dp = Datapath::existing(&ctx.scope);
    let configured = async {
        cnl.configure_container_iface(&e.ifname, e.ip, net.subnet.prefix_len(), gateway)
            .await?;
        match &dp {
            Some(dp) => register(dp, e, ipam::mac_for(e.ip), index, bridge.index, any_source),
            None => Ok(()),
        }
    }
    .await;
    let Err(failed) = configured else {
        return configured;
    };
    Err(unwire(ctx, dp.as_ref(), e, index).await.undoing(failed))
}

/// Undoes a wired endpoint `e` whose host veth has `index`: its datapath entries (with a
/// datapath), then the veth, which takes its filter with it.
pub(super) async fn unwire(ctx: &Ctx, dp: Option<&Datapath>, e: &Endpoint, index: u32) -> Teardown {
    let mut t = Teardown::default();
    if let Some(dp) = dp {
        forget_endpoint(&mut t, dp, e);
    }
    let deleted = ctx.nl.delete_link(index).await;
    t.step(format!("veth {}", e.host_veth), deleted.map_err(Into::into));
    t
}

/// Forgets `e` in the datapath (its delivery and source entries), as a step of `t`.
fn forget_endpoint(t: &mut Teardown, dp: &Datapath, e: &Endpoint) {
    let forgotten = dp.remove_endpoint(e.ip).map_err(Into::into);
    t.step(format!("datapath endpoint {}", e.ip), forgotten);
}

/// Puts a container's veth on the fast path: translated packets from the container leave
/// through its host end's program, and those to it go straight in. Its source is set first:
/// the program drops frames from any other (unless `any_source`), and passes everything on a
/// veth without an entry. `mac` is the container interface's ([`Container::mac`]);
/// `bridge_ifindex` is the bridge of the endpoint's network.
pub fn register(
    dp: &Datapath,
    e: &Endpoint,
    mac: [u8; 6],
    host_ifindex: u32,
    bridge_ifindex: u32,
    any_source: bool,
) -> Result<()> {
    dp.set_source(host_ifindex, e.ip, mac, any_source)?;
    let rest = dp
        .attach_veth(&e.host_veth)
        .and_then(|()| dp.set_endpoint(e.ip, host_ifindex, bridge_ifindex, mac));
    let Err(failed) = rest else {
        return Ok(());
    };
    // Undone here: `remove_endpoint` finds the source entry through the endpoint entry,
    // which this failure may not have written.
    let mut t = Teardown::default();
    let forgot = dp.forget_source(host_ifindex, e.ip);
    t.step(
        format!("source entry of veth {}", e.host_veth),
        forgot.map_err(Into::into),
    );
    Err(t.undoing(failed.into()))
}

pub async fn connect(ctx: &mut Ctx, args: ConnectArgs) -> Result<Response> {
    let ConnectArgs { name, network, ip } = args;
    let (name, network) = (name.as_str(), network.as_str());
    let container = ctx.state.container(name)?.clone();
    if !matches!(container.mode, NetMode::Bridge | NetMode::None) {
        bail!("container {name} shares another network namespace and cannot be connected");
    }
    if container.endpoints.iter().any(|e| e.network == network) {
        bail!("container {name} is already connected to network {network}");
    }
    let slot = (0..)
        .find(|i| {
            !container
                .endpoints
                .iter()
                .any(|e| e.ifname == format!("eth{i}"))
        })
        .expect("a free slot");
    let default_route = container.endpoints.is_empty();
    let any_source = container.allow_spoofed_source;
    let endpoint = plan_endpoint(&ctx.state, name, network, ip, slot)?;
    let ns = Netns::open_named(name)?;
    let cnl = Netlink::open_in(&ns)?;
    wire_endpoint(ctx, &cnl, &ns, &endpoint, default_route, any_source).await?;
    let done = attached(name, &endpoint);
    ctx.state.add_endpoint(name, endpoint)?;
    Ok(Response::Done(vec![done]))
}

pub async fn rm(ctx: &mut Ctx, name: &str) -> Result<Response> {
    let container = ctx.state.container(name)?.clone();
    let users = ctx.state.sharing(name);
    if !users.is_empty() {
        bail!(
            "container {name} shares its network namespace with {}; remove them first",
            users.join(", ")
        );
    }
    // As Docker drops a container's port mappings with it.
    let ips: Vec<Ipv4Addr> = container.endpoints.iter().map(|e| e.ip).collect();
    let mut t = publish::unpublish_where(ctx, &format!(" of {name}"), |ip| ips.contains(&ip));
    forget_flows(ctx, name, &container, &mut t);
    t.merge(teardown(ctx, name, &container).await);
    if t.errors.is_empty() {
        ctx.state.remove_container(name)?;
    }
    Ok(t.finish()?)
}

/// Removes the container's connections from conntrack, TCP included: nothing will answer
/// them, and a container started later on the same address must not inherit them. (`down`
/// flushes the whole table once instead of walking it for every container.)
pub fn forget_flows(ctx: &mut Ctx, name: &str, container: &Container, t: &mut Teardown) {
    let Some(dp) = Datapath::existing(&ctx.scope) else {
        return;
    };
    let ips: Vec<Ipv4Addr> = container.endpoints.iter().map(|e| e.ip).collect();
    match conntrack::forget(ctx, &dp, |c| ips.iter().any(|ip| c.involves(*ip))) {
        Ok(0) => {}
        forgotten => {
            let what = match &forgotten {
                Ok(n) => format!("{n} conntrack entries of {name}"),
                Err(_) => format!("conntrack entries of {name}"),
            };
            t.step(what, forgotten);
        }
    }
}

/// Removes a container's namespace and its /etc/netns directory, each if it is there.
fn remove_namespace(name: &str) -> Teardown {
    let mut t = Teardown::default();
    if Path::new(netns::NETNS_RUN_DIR).join(name).exists() {
        let deleted = netns::delete_named(name);
        t.step(
            format!("network namespace {name}"),
            deleted.map_err(Into::into),
        );
    }
    let etc = etc_dir(name);
    if etc.exists() {
        let removed = fs::remove_dir_all(&etc).with_context(|| etc.display().to_string());
        t.step(etc.display(), removed);
    }
    t
}

/// Removes the container's host-side veths (their peers go with them), its namespace and its
/// /etc/netns directory. Pieces already gone are skipped, not errors.
pub async fn teardown(ctx: &Ctx, name: &str, container: &Container) -> Teardown {
    let mut all = teardown_all(ctx, &[(name, container)]).await;
    all.pop().expect("one per container")
}

/// [`teardown`] of many containers at once, one [`Teardown`] each: their veths go in one
/// netlink batch and their namespaces from several threads, so that the kernel waits for RCU
/// a few times for all of them rather than once or twice for each.
pub async fn teardown_all(ctx: &Ctx, containers: &[(&str, &Container)]) -> Vec<Teardown> {
    let mut ts: Vec<Teardown> = containers.iter().map(|_| Teardown::default()).collect();
    let dp = Datapath::existing(&ctx.scope);
    let mut veths: Vec<(usize, &str)> = Vec::new();
    for (i, (_, c)) in containers.iter().enumerate() {
        for e in &c.endpoints {
            if let Some(dp) = &dp {
                forget_endpoint(&mut ts[i], dp, e);
            }
            veths.push((i, &e.host_veth));
        }
    }
    let names: Vec<&str> = veths.iter().map(|(_, v)| *v).collect();
    match ctx.nl.delete_links(&names).await {
        Ok(each) => {
            for ((i, veth), deleted) in veths.iter().zip(each) {
                if !matches!(deleted, Ok(false)) {
                    let what = format!("veth {veth} of {}", containers[*i].0);
                    ts[*i].step(what, deleted.map_err(Into::into));
                }
            }
        }
        Err(e) => {
            let e = format!("{e:#}");
            for (i, veth) in &veths {
                let what = format!("veth {veth} of {}", containers[*i].0);
                ts[*i].step(what, Err::<(), _>(anyhow::anyhow!("{e}")));
            }
        }
    }
    let owners: Vec<&str> = containers
        .iter()
        .filter(|(_, c)| c.owns_netns())
        .map(|(name, _)| *name)
        .collect();
    let removed = in_parallel(&owners, |name| remove_namespace(name));
    let owners_ts = ts
        .iter_mut()
        .zip(containers)
        .filter(|(_, (_, c))| c.owns_netns());
    for (done, (t, _)) in removed.into_iter().zip(owners_ts) {
        t.merge(done);
    }
    ts
}

/// `f` of every item, from a few threads at once; the results in order. Unmounting a
/// namespace waits for an RCU grace period after it releases the mount lock, and removing a
/// directory waits for the file system's journal: waits that overlap cost one.
fn in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    const THREADS: usize = 8;
    if items.len() < 2 {
        return items.iter().map(f).collect();
    }
    let f = &f;
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(items.len().div_ceil(THREADS))
            .map(|chunk| scope.spawn(move || chunk.iter().map(f).collect::<Vec<_>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a teardown thread panicked"))
            .collect()
    })
}

/// A container as `ps` shows it.
#[derive(Serialize)]
pub struct ContainerView {
    pub name: String,
    #[serde(flatten)]
    pub container: Container,
    /// Ports published to the container's addresses, as SPECs.
    pub ports: Vec<Spec>,
    /// What exists in the state but is gone from the kernel (deleted behind netpath's back).
    pub missing: Vec<String>,
}

pub fn ps(ctx: &mut Ctx) -> Result<Response> {
    ctx.state.all_containers()?;
    let present = ctx.nl.indexes(host_veths(&ctx.state))?;
    Ok(Response::Containers(views(&ctx.state, &present)))
}

/// The host ends of every container's veths, all read.
pub(super) fn host_veths(state: &State) -> impl Iterator<Item = &str> {
    state
        .containers
        .iter()
        .flat_map(|(_, c)| c.endpoints.iter().map(|e| e.host_veth.as_str()))
}

/// Every container as `ps` shows it, all read; `present` are the interfaces of the scope's
/// namespace among those the state names (`Netlink::indexes`).
pub(super) fn views(state: &State, present: &BTreeMap<String, u32>) -> Vec<ContainerView> {
    let published = state.publishes.specs();
    state
        .containers
        .iter()
        .map(|(name, c)| {
            let mut missing = Vec::new();
            if c.owns_netns() && !Path::new(netns::NETNS_RUN_DIR).join(name).exists() {
                missing.push(format!("network namespace {name}"));
            }
            for e in &c.endpoints {
                if !present.contains_key(&e.host_veth) {
                    missing.push(format!("veth {}", e.host_veth));
                }
            }
            let ports = published
                .iter()
                .filter(|s| c.endpoints.iter().any(|e| e.ip == s.container_ip))
                .copied()
                .collect();
            ContainerView {
                name: name.clone(),
                container: c.clone(),
                ports,
                missing,
            }
        })
        .collect()
}

fn etc_dir(name: &str) -> PathBuf {
    Path::new(ETC_NETNS).join(name)
}

/// The container's resolv.conf: `--dns` servers, else the host's, minus loopback servers
/// that cannot answer from inside another namespace (as Docker filters them).
fn write_resolv_conf(name: &str, dns: &[Ipv4Addr]) -> Result<()> {
    let mut out = String::new();
    if dns.is_empty() {
        let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        for line in host.lines() {
            let loopback = line
                .strip_prefix("nameserver")
                .and_then(|a| a.trim().parse::<std::net::IpAddr>().ok())
                .is_some_and(|a| a.is_loopback());
            if !loopback {
                out.push_str(line);
                out.push('\n');
            }
        }
    } else {
        for server in dns {
            out.push_str(&format!("nameserver {server}\n"));
        }
    }
    let dir = etc_dir(name);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::write(dir.join("resolv.conf"), out)
        .with_context(|| format!("writing {}/resolv.conf", dir.display()))
}

/// `netpath exec`: runs before any runtime or thread exists, so the whole process can switch
/// namespaces. Like `ip netns exec`, it gives the command a private mount namespace with the
/// container's resolv.conf and a /sys that shows the container's interfaces.
pub fn exec(scope: &str, args: &ExecArgs) -> Result<std::convert::Infallible> {
    let ExecArgs { name, command } = args;
    let netns_name = {
        let store = Store::open(scope)?;
        let mut state = store.load()?;
        let container = state.container(name)?;
        match &container.mode {
            NetMode::Bridge | NetMode::None => Some(name.to_owned()),
            NetMode::Container(target) => Some(target.clone()),
            NetMode::Host => None,
            NetMode::Cni(pod) => bail!(
                "container {name} is a CNI pod: enter its namespace with nsenter --net={}",
                pod.netns
            ),
            NetMode::Docker(_) => {
                bail!("container {name} is a Docker endpoint: enter it with `docker exec`")
            }
        }
    };
    if let Some(ns) = &netns_name {
        netns::enter_named(ns)?;
        unshare(CloneFlags::CLONE_NEWNS).context("creating a mount namespace")?;
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        )
        .context("making / a slave mount")?;
        let resolv = etc_dir(ns).join("resolv.conf");
        if resolv.exists() {
            mount(
                Some(&resolv),
                "/etc/resolv.conf",
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .context("bind-mounting the container's resolv.conf")?;
        }
        if umount2("/sys", MntFlags::MNT_DETACH).is_ok() {
            mount(
                Some("sysfs"),
                "/sys",
                Some("sysfs"),
                MsFlags::empty(),
                None::<&str>,
            )
            .context("mounting the container's /sys")?;
        }
    }
    let args: Vec<CString> = command
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()
        .context("command contains a NUL byte")?;
    let err = nix::unistd::execvp(&args[0], &args).unwrap_err();
    bail!("running {}: {err}", command[0])
}
