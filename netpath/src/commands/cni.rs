//! netpath as a CNI plugin (`netpath-cni`): a container runtime's ADD, DEL, CHECK, GC,
//! STATUS and VERSION, on the network of the namespace the plugin runs in (the runtime's
//! host). A pod becomes a netpath container whose namespace is the runtime's
//! ([`NetMode::Cni`]): `ps`, `status`, `conntrack` and `stats` show it, and no teardown ever
//! deletes that namespace. Everything runs under the scope's lock, so parallel invocations
//! serialize.
use std::{
    io::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use super::{Ctx, Teardown, check_ifname, container, host, masquerade, network, publish};
use crate::{
    cli::NetworkCreateArgs,
    model::cni::{
        CniError, CniResult, Interface, IpConfig, IpamResult, NetConf, PortMapping, Route,
        SUPPORTED_VERSIONS, VersionInfo, code, pod_name,
    },
    model::ipam::{self, Subnet},
    model::publish::{Proto, Spec},
    model::state::{CniPod, Container, Endpoint, InstalledRoute, NetMode},
    system::datapath::Datapath,
    system::netlink::Netlink,
    system::netns::Netns,
};

/// The plugin's environment: the spec's CNI_* variables.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub command: String,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub path: Option<String>,
}

impl Env {
    pub fn from_process() -> Env {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        Env {
            command: var("CNI_COMMAND").unwrap_or_default(),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            path: var("CNI_PATH"),
        }
    }

    fn require<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str> {
        value
            .as_deref()
            .ok_or_else(|| refusal(code::INVALID_ENV, format!("{name} is not set")))
    }
}

/// What the plugin prints on success.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Answer {
    Result(Box<CniResult>),
    Version(VersionInfo),
    /// DEL, CHECK, GC and STATUS print nothing.
    Nothing,
}

/// A failure with one of the spec's codes; anything else is reported as [`code::NETPATH`].
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
struct Refusal {
    code: u32,
    msg: String,
    details: String,
}

fn refusal(code: u32, msg: impl Into<String>) -> anyhow::Error {
    Refusal {
        code,
        msg: msg.into(),
        details: String::new(),
    }
    .into()
}

/// Carries out one invocation: `env` and the configuration read from stdin.
pub fn main(env: &Env, stdin: &[u8]) -> Result<Answer, CniError> {
    let mut version = SUPPORTED_VERSIONS.last().expect("some").to_string();
    run(env, stdin, &mut version).map_err(|e| {
        let (code, details) = match e.downcast_ref::<Refusal>() {
            Some(r) => (r.code, r.details.clone()),
            None => (code::NETPATH, String::new()),
        };
        CniError {
            cni_version: version,
            code,
            // The whole chain on one line: what failed and why.
            msg: format!("{e:#}").replace('\n', " "),
            details,
        }
    })
}

fn run(env: &Env, stdin: &[u8], version: &mut String) -> Result<Answer> {
    if env.command == "VERSION" {
        return Ok(Answer::Version(VersionInfo::current()));
    }
    let value: serde_json::Value = serde_json::from_slice(stdin).map_err(|e| {
        refusal(
            code::DECODE,
            format!("the network configuration is not valid JSON: {e}"),
        )
    })?;
    if let Some(v) = value.get("cniVersion").and_then(|v| v.as_str())
        && SUPPORTED_VERSIONS.contains(&v)
    {
        *version = v.to_owned();
    }
    let conf: NetConf = serde_json::from_value(value).map_err(|e| {
        refusal(
            code::INVALID_CONFIG,
            format!("invalid network configuration: {e}"),
        )
    })?;
    if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
        return Err(refusal(
            code::INCOMPATIBLE_VERSION,
            format!(
                "unsupported cniVersion {:?}: netpath-cni speaks {}",
                conf.cni_version,
                SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    if !matches!(
        env.command.as_str(),
        "ADD" | "DEL" | "CHECK" | "GC" | "STATUS"
    ) {
        return Err(refusal(
            code::INVALID_ENV,
            format!("unknown CNI_COMMAND {:?}", env.command),
        ));
    }
    super::check_name("network", &conf.name)
        .map_err(|e| refusal(code::INVALID_CONFIG, e.to_string()))?;
    if !nix::unistd::geteuid().is_root() {
        bail!("netpath-cni must run as root (it needs CAP_NET_ADMIN and CAP_BPF)");
    }
    // The namespace the runtime runs the plugin in is the pods' host.
    let scope = super::scope(None)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut ctx = Ctx::open(&scope)?;
        let result = match env.command.as_str() {
            "ADD" => add(&mut ctx, env, &conf, stdin)
                .await
                .map(|r| Answer::Result(Box::new(r))),
            "DEL" => del(&mut ctx, env, &conf, stdin)
                .await
                .map(|()| Answer::Nothing),
            "CHECK" => check(&mut ctx, env, &conf).await.map(|()| Answer::Nothing),
            "GC" => gc(&mut ctx, &conf).await.map(|()| Answer::Nothing),
            _ => Ok(Answer::Nothing),
        };
        // Saved even after a failure: the state holds exactly what exists.
        let saved = ctx.finish();
        let answer = result?;
        saved?;
        Ok(answer)
    })
}

/// What an ADD has done so far, so that a failure undoes exactly that.
#[derive(Default)]
struct Progress {
    ipam_allocated: bool,
    network_created: bool,
    /// The datapath was not up: what bringing it up found.
    activated: Option<host::Inactive>,
    wired: Option<Endpoint>,
}

async fn add(ctx: &mut Ctx, env: &Env, conf: &NetConf, raw: &[u8]) -> Result<CniResult> {
    let id = Env::require(&env.container_id, "CNI_CONTAINERID")?;
    let ifname = Env::require(&env.ifname, "CNI_IFNAME")?;
    let netns_path = Env::require(&env.netns, "CNI_NETNS")?;
    check_ifname(ifname).map_err(|e| refusal(code::INVALID_ENV, format!("CNI_IFNAME: {e}")))?;
    let name = pod_name(id, ifname);
    if ctx.state.containers.contains(&name)? {
        bail!("container {id} already has interface {ifname} (netpath container {name})");
    }
    let ns = Netns::open_path(Path::new(netns_path))
        .map_err(|e| refusal(code::INVALID_ENV, format!("CNI_NETNS: {e}")))?;
    let first_use = Datapath::existing(&ctx.scope).is_none();
    let mut progress = Progress::default();
    let result = add_steps(ctx, env, conf, raw, &name, &ns, &mut progress).await;
    let Err(failed) = result else {
        return result;
    };
    // Undone in reverse, every step whatever failed before; a failed ADD leaves nothing
    // behind, or says what it could not remove.
    let mut t = Teardown::default();
    if let Some(e) = progress.wired.take() {
        let pod = Container {
            mode: NetMode::Cni(cni_pod(id, ifname, netns_path)),
            endpoints: vec![e],
            allow_spoofed_source: false,
        };
        t.merge(container::teardown(ctx, &name, &pod).await);
    }
    if progress.ipam_allocated
        && let Some(plugin) = conf.ipam_plugin()
    {
        let released = delegate(env, plugin, "DEL", raw);
        t.step(format!("address from IPAM plugin {plugin}"), released);
    }
    let undone = if first_use {
        host::down(ctx).await.map(drop)
    } else {
        // Pins from a bare `network create`: the datapath goes back down, pins kept.
        if let Some(before) = progress.activated.take() {
            t.merge(host::deactivate(ctx, before).await);
        }
        if progress.network_created {
            network::rm(ctx, &conf.name).await.map(drop)
        } else {
            // Cluster routes and exclusion this ADD made for a network no pod uses.
            release_cluster(ctx, &conf.name).await
        }
    };
    t.step(format!("what ADD made of network {}", conf.name), undone);
    Err(match t.failures() {
        None => failed,
        Some(undo) => with_undo_failure(failed, &undo),
    })
}

/// `failed`, its code kept, telling also what undoing the call could not remove.
fn with_undo_failure(failed: anyhow::Error, undo: &str) -> anyhow::Error {
    match failed.downcast::<Refusal>() {
        Ok(mut r) => {
            r.msg = format!("{} (and undoing it: {undo})", r.msg);
            r.into()
        }
        Err(e) => anyhow::anyhow!("{e:#} (and undoing it: {undo})"),
    }
}

fn cni_pod(id: &str, ifname: &str, netns: &str) -> CniPod {
    CniPod {
        container_id: id.to_owned(),
        ifname: ifname.to_owned(),
        netns: netns.to_owned(),
    }
}

async fn add_steps(
    ctx: &mut Ctx,
    env: &Env,
    conf: &NetConf,
    raw: &[u8],
    name: &str,
    ns: &Netns,
    progress: &mut Progress,
) -> Result<CniResult> {
    let ifname = env.ifname.as_deref().expect("checked");
    let netns_path = env.netns.as_deref().expect("checked");
    // Not up after a bare `netpath network create` either: pins, but nothing attached.
    let up = Datapath::existing(&ctx.scope).is_some_and(|dp| dp.is_up());
    // The address: from the IPAM plugin, or netpath's own once the network exists.
    let (given, subnet, gateway) = match conf.ipam_plugin() {
        Some(plugin) => {
            let r = delegate(env, plugin, "ADD", raw)?;
            progress.ipam_allocated = true;
            let (ip, len, gw) = r
                .ipv4()
                .with_context(|| format!("IPAM plugin {plugin} returned no IPv4 address"))?;
            (Some(ip), Subnet::new(ip, len)?, gw)
        }
        None => {
            let subnet = conf.subnet.ok_or_else(|| {
                refusal(
                    code::INVALID_CONFIG,
                    "the configuration needs `subnet` (netpath's IPAM) or an `ipam` section naming a plugin",
                )
            })?;
            (None, subnet, conf.gateway)
        }
    };
    let routes = match &conf.cluster {
        Some(cluster) => {
            cluster
                .check(&subnet)
                .map_err(|m| refusal(code::INVALID_CONFIG, format!("cluster: {m}")))?;
            let local = publish::local_addrs(&ctx.nl).await?;
            plan_routes(ctx, &conf.name, cluster.routes(&subnet, &local)).await?
        }
        None => vec![],
    };
    let masquerade = conf.ip_masq.unwrap_or(true);
    match ctx.state.networks.get(&conf.name) {
        Some(net) if net.subnet != subnet => {
            return Err(refusal(
                code::INVALID_CONFIG,
                format!(
                    "network {} exists with subnet {}, the configuration gives {subnet}",
                    conf.name, net.subnet
                ),
            ));
        }
        Some(net) if net.masquerade != masquerade => {
            return Err(refusal(
                code::INVALID_CONFIG,
                format!(
                    "network {} exists with masquerade {}, the configuration gives ipMasq {masquerade}",
                    conf.name,
                    if net.masquerade { "on" } else { "off" }
                ),
            ));
        }
        Some(net) if conf.bridge.as_ref().is_some_and(|b| *b != net.bridge) => {
            return Err(refusal(
                code::INVALID_CONFIG,
                format!(
                    "network {} exists on bridge {}, the configuration gives bridge {}",
                    conf.name,
                    net.bridge,
                    conf.bridge.as_deref().unwrap_or_default()
                ),
            ));
        }
        Some(_) => {}
        None => {
            let args = NetworkCreateArgs {
                name: conf.name.clone(),
                subnet: Some(subnet),
                gateway,
                bridge: conf.bridge.clone(),
                masquerade,
            };
            network::create(ctx, args)
                .await
                .map_err(|e| refusal(code::INVALID_CONFIG, format!("{e:#}")))?;
            progress.network_created = true;
        }
    }
    if let Some(cluster) = &conf.cluster {
        // Every other node's pods through that node (flannel's host-gw), and no masquerade
        // within the cluster, so that pods see each other's addresses.
        install_routes(ctx, &conf.name, &routes).await?;
        let net = ctx
            .state
            .networks
            .get_mut(&conf.name)
            .context("network gone")?;
        if net.cluster_exclude.replace(cluster.cidr) != Some(cluster.cidr) && up {
            masquerade::resync(ctx)?;
        }
    }
    if !up {
        // As `netpath up -d` would: the datapath stays pinned with no daemon.
        progress.activated = Some(host::inactive(ctx)?);
        host::activate_as_up(ctx).await?;
    }
    let net = ctx.state.network(&conf.name)?.clone();
    let ip = match given {
        Some(ip) => {
            net.subnet.check_host(ip)?;
            if net.in_use(ip) {
                bail!(
                    "address {ip} from IPAM is already in use on network {}",
                    conf.name
                );
            }
            ip
        }
        None => net
            .next_free()
            .with_context(|| format!("network {} is full", conf.name))?,
    };
    let specs = conf
        .runtime_config
        .port_mappings
        .iter()
        .map(|p| port_spec(p, ip))
        .collect::<Result<Vec<Spec>>>()?;
    let publishes = match specs.is_empty() {
        true => None,
        false => Some(publish::plan(ctx, &specs).await?),
    };
    let endpoint = Endpoint {
        network: conf.name.clone(),
        ifname: ifname.to_owned(),
        host_veth: container::host_veth_name(name, ifname),
        ip,
    };
    let cnl = Netlink::open_in(ns)?;
    cnl.set_up("lo").await?;
    // Cleans up after itself when it fails. Pods get source validation like any container.
    container::wire_endpoint(ctx, &cnl, ns, &endpoint, true, false).await?;
    progress.wired = Some(endpoint.clone());
    if let Some(p) = publishes {
        p.commit(ctx)?;
    }
    ctx.state.add_container(
        name,
        Container {
            mode: NetMode::Cni(cni_pod(
                env.container_id.as_deref().expect("checked"),
                ifname,
                netns_path,
            )),
            endpoints: vec![endpoint.clone()],
            allow_spoofed_source: false,
        },
    );
    progress.wired = None;
    let mac = ipam::format_mac(ipam::mac_for(ip));
    Ok(CniResult {
        cni_version: conf.cni_version.clone(),
        interfaces: vec![
            Interface {
                name: net.bridge.clone(),
                mac: String::new(),
                sandbox: None,
            },
            Interface {
                name: endpoint.host_veth.clone(),
                mac: String::new(),
                sandbox: None,
            },
            Interface {
                name: ifname.to_owned(),
                mac,
                sandbox: Some(netns_path.to_owned()),
            },
        ],
        ips: vec![IpConfig {
            version: (conf.cni_version == "0.4.0").then(|| "4".to_owned()),
            address: format!("{ip}/{}", net.subnet.prefix_len()),
            gateway: Some(net.gateway),
            interface: 2,
        }],
        routes: vec![Route {
            dst: "0.0.0.0/0".to_owned(),
            gw: Some(net.gateway),
        }],
        dns: conf.dns.clone(),
    })
}

/// The cluster routes `network` needs that netpath is to make (or repair): those to where it
/// installed a route before (a node's new address replaces it), and those to where no route
/// leads yet. A route someone else made to the
/// same place is left alone (and never removed); one elsewhere is refused rather than taken
/// over. Checked before anything is created.
async fn plan_routes(
    ctx: &Ctx,
    network: &str,
    wanted: Vec<(Subnet, Ipv4Addr)>,
) -> Result<Vec<InstalledRoute>> {
    let ours = ctx
        .state
        .networks
        .get(network)
        .map_or(&[][..], |n| &n.routes[..]);
    let present = ctx.nl.routes_v4().await?;
    let mut plan = vec![];
    for (dst, via) in wanted {
        let route = InstalledRoute { dst, via };
        let theirs = present
            .iter()
            .find(|r| r.dst == dst.network() && r.prefix_len == dst.prefix_len());
        match theirs.map(|r| r.gateway) {
            _ if ours.iter().any(|r| r.dst == dst) => plan.push(route),
            None => plan.push(route),
            Some(Some(gw)) if gw == via => {}
            Some(gw) => {
                let gw = gw.map_or("another device".to_owned(), |gw| gw.to_string());
                return Err(refusal(
                    code::INVALID_CONFIG,
                    format!(
                        "cluster: a route to {dst} via {gw} exists that netpath did not install; the configuration routes it via {via}"
                    ),
                ));
            }
        }
    }
    Ok(plan)
}

/// Makes the planned routes of `network`, recording each in its state so that its last DEL,
/// `network rm` and `down` remove it again.
async fn install_routes(ctx: &mut Ctx, network: &str, plan: &[InstalledRoute]) -> Result<()> {
    for &route in plan {
        let InstalledRoute { dst, via } = route;
        ctx.nl
            .replace_route(dst.network(), dst.prefix_len(), via)
            .await
            .with_context(|| format!("cluster route to {dst}"))?;
        let net = ctx
            .state
            .networks
            .get_mut(network)
            .context("network gone")?;
        net.routes.retain(|r| r.dst != dst);
        net.routes.push(route);
    }
    Ok(())
}

/// Removes the routes netpath installed for `network` and the cluster CIDR it holds in the
/// masquerade exclusions once no pod uses it any more (the next ADD brings them back).
async fn release_cluster(ctx: &mut Ctx, network: &str) -> Result<()> {
    let Some(net) = ctx
        .state
        .networks
        .get(network)
        .filter(|n| n.addresses.is_empty())
    else {
        return Ok(());
    };
    let mut t = network::remove_routes(ctx, net).await;
    let routes_gone = t.errors.is_empty();
    let net = ctx
        .state
        .networks
        .get_mut(network)
        .expect("looked up above");
    if routes_gone {
        net.routes.clear();
    }
    if let Some(cidr) = net.cluster_exclude.take() {
        let released = masquerade::resync(ctx);
        t.step(format!("masquerade exclusion of cluster {cidr}"), released);
    }
    t.finish()?;
    Ok(())
}

/// A `portMappings` entry as the SPEC `netpath publish` would take.
fn port_spec(p: &PortMapping, container_ip: Ipv4Addr) -> Result<Spec> {
    if p.host_port == 0 || p.container_port == 0 {
        return Err(refusal(
            code::INVALID_CONFIG,
            format!(
                "invalid port mapping {}:{}: ports must be 1-65535",
                p.host_port, p.container_port
            ),
        ));
    }
    let proto: Proto = p
        .protocol
        .as_deref()
        .unwrap_or("tcp")
        .to_ascii_lowercase()
        .parse()
        .map_err(|e| refusal(code::INVALID_CONFIG, format!("port mapping: {e}")))?;
    let host_ip = p.host_ip.as_deref().unwrap_or_default();
    Spec::one_port(host_ip, p.host_port, container_ip, p.container_port, proto)
        .map_err(|e| refusal(code::INVALID_CONFIG, format!("port mapping: {e}")))
}

/// DEL: whatever of the attachment exists goes (publishes, conntrack flows, datapath entry,
/// veth); its namespace is the runtime's and is never touched. Succeeds when there is
/// nothing left, after a partial ADD, and twice.
async fn del(ctx: &mut Ctx, env: &Env, conf: &NetConf, raw: &[u8]) -> Result<()> {
    let id = Env::require(&env.container_id, "CNI_CONTAINERID")?;
    let ifname = Env::require(&env.ifname, "CNI_IFNAME")?;
    let name = pod_name(id, ifname);
    // Every step is tried whatever failed before, so that what can go goes; the runtime
    // repeats DEL until it succeeds.
    let mut t = Teardown::default();
    match ctx.state.containers.get(&name)?.map(|c| &c.mode) {
        Some(NetMode::Cni(pod)) if pod.container_id == id => {
            let removed = container::rm(ctx, &name).await;
            t.step(format!("pod {name}"), removed);
        }
        Some(_) => bail!("{name} is another container's, not this attachment"),
        None => {
            // A veth left by an ADD that was killed halfway.
            let veth = container::host_veth_name(&name, ifname);
            let deleted = ctx.nl.delete_link_by_name(&veth).await.map_err(Into::into);
            t.step(format!("veth {veth}"), deleted);
        }
    }
    let released = release_cluster(ctx, &conf.name).await;
    t.step(format!("cluster routes of network {}", conf.name), released);
    if let Some(plugin) = conf.ipam_plugin() {
        t.step(
            format!("address from IPAM plugin {plugin}"),
            delegate(env, plugin, "DEL", raw),
        );
    }
    t.finish()?;
    Ok(())
}

/// CHECK: the interface, its address and default route in the pod's namespace, the host end
/// and the datapath's entry are all still there.
async fn check(ctx: &mut Ctx, env: &Env, conf: &NetConf) -> Result<()> {
    let id = Env::require(&env.container_id, "CNI_CONTAINERID")?;
    let ifname = Env::require(&env.ifname, "CNI_IFNAME")?;
    let netns_path = Env::require(&env.netns, "CNI_NETNS")?;
    let name = pod_name(id, ifname);
    let pod = ctx
        .state
        .containers
        .get(&name)?
        .filter(|c| matches!(&c.mode, NetMode::Cni(pod) if pod.container_id == id))
        .cloned();
    let pod = pod.ok_or_else(|| {
        refusal(
            code::UNKNOWN_CONTAINER,
            format!(
                "container {id} has no interface {ifname} on network {}",
                conf.name
            ),
        )
    })?;
    let e = pod
        .endpoints
        .first()
        .context("the attachment has no interface")?;
    let net = ctx.state.network(&e.network)?;
    let host = ctx
        .nl
        .link_by_name(&e.host_veth)
        .await?
        .with_context(|| format!("veth {} of {name} is missing", e.host_veth))?;
    let dp = Datapath::existing(&ctx.scope).context("the datapath is not up")?;
    if dp.endpoint(e.ip)? != Some((host.index, pod.mac(e))) {
        bail!(
            "the datapath has no endpoint {} on veth {}",
            e.ip,
            e.host_veth
        );
    }
    let ns = Netns::open_path(Path::new(netns_path))
        .map_err(|err| refusal(code::INVALID_ENV, format!("CNI_NETNS: {err}")))?;
    let cnl = Netlink::open_in(&ns)?;
    let link = cnl
        .link_by_name(ifname)
        .await?
        .with_context(|| format!("interface {ifname} is missing in {netns_path}"))?;
    let prefix = net.subnet.prefix_len();
    if !cnl
        .addresses_v4()
        .await?
        .iter()
        .any(|a| a.index == link.index && a.addr == e.ip && a.prefix_len == prefix)
    {
        bail!("interface {ifname} lacks address {}/{prefix}", e.ip);
    }
    if !cnl
        .routes_v4()
        .await?
        .iter()
        .any(|r| r.prefix_len == 0 && r.gateway == Some(net.gateway))
    {
        bail!(
            "the default route via {} is missing in {netns_path}",
            net.gateway
        );
    }
    Ok(())
}

/// GC (spec 1.1): attachments of this network the runtime no longer lists go.
async fn gc(ctx: &mut Ctx, conf: &NetConf) -> Result<()> {
    let valid = conf.valid_attachments.clone().unwrap_or_default();
    let stale: Vec<String> = ctx
        .state
        .users(&conf.name)?
        .filter(|(_, c)| match &c.mode {
            NetMode::Cni(pod) => !valid
                .iter()
                .any(|a| a.container_id == pod.container_id && a.ifname == pod.ifname),
            _ => false,
        })
        .map(|(n, _)| n.to_owned())
        .collect();
    let mut t = Teardown::default();
    for name in stale {
        let removed = container::rm(ctx, &name).await;
        t.step(format!("stale pod {name}"), removed);
    }
    let released = release_cluster(ctx, &conf.name).await;
    t.step(format!("cluster routes of network {}", conf.name), released);
    t.finish()?;
    Ok(())
}

/// Runs the IPAM plugin `plugin` from CNI_PATH with the same environment (but `command`)
/// and configuration, as the spec's delegation says; its result for ADD.
fn delegate(env: &Env, plugin: &str, command: &str, raw: &[u8]) -> Result<IpamResult> {
    let ipam_err = |msg: String, details: String| Refusal {
        code: code::IPAM,
        msg,
        details,
    };
    let bin = find_plugin(env, plugin).ok_or_else(|| {
        ipam_err(
            format!("IPAM plugin {plugin} not found in CNI_PATH"),
            String::new(),
        )
    })?;
    let mut child = Command::new(&bin)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running IPAM plugin {}", bin.display()))?;
    let mut stdin = child.stdin.take().expect("piped");
    let written = stdin.write_all(raw);
    drop(stdin);
    let out = child
        .wait_with_output()
        .with_context(|| format!("running IPAM plugin {}", bin.display()))?;
    written.with_context(|| format!("writing the configuration to IPAM plugin {plugin}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let reported: Option<serde_json::Value> = serde_json::from_str(&stdout).ok();
        let msg = reported
            .as_ref()
            .and_then(|v| v.get("msg")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_owned());
        return Err(ipam_err(
            format!("IPAM plugin {plugin} {command} failed: {msg}"),
            stdout.trim().to_owned(),
        )
        .into());
    }
    if command != "ADD" {
        return Ok(IpamResult { ips: vec![] });
    }
    serde_json::from_str(&stdout).map_err(|e| {
        ipam_err(
            format!("IPAM plugin {plugin} gave an unreadable result: {e}"),
            stdout.trim().to_owned(),
        )
        .into()
    })
}

fn find_plugin(env: &Env, plugin: &str) -> Option<PathBuf> {
    if plugin.contains('/') {
        return None;
    }
    env.path
        .as_deref()?
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(plugin))
        .find(|p| p.is_file())
}
