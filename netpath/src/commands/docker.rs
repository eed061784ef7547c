//! `netpath docker-plugin`: Docker's remote network driver (libnetwork's `docs/remote.md`),
//! JSON over HTTP/1.1 on `/run/docker/plugins/NAME.sock`. A Docker network becomes a netpath
//! network with its bridge, an endpoint a netpath container ([`NetMode::Docker`]) whose
//! interface dockerd moves into its own sandbox, and `-p` bindings become publishes exactly
//! as `netpath publish` makes them. Each call opens a [`Ctx`] like a CLI command, one at a
//! time; a failed call undoes what it built and answers `{"Err": "..."}`. Everything lives in
//! the state and the pinned datapath, so traffic goes on while the plugin is stopped, and a
//! restarted plugin carries on from the state.
use std::{
    collections::BTreeSet,
    convert::Infallible,
    io::Write,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    rc::Rc,
};

use anyhow::{Context as _, Result, bail};
use http_body_util::{BodyExt as _, Full};
use hyper::{
    Request,
    body::{Bytes, Incoming},
    header::CONTENT_TYPE,
};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::{
    net::UnixListener,
    signal::unix::{SignalKind, signal},
    sync::Mutex,
};

use super::{Ctx, Teardown, check_name, container, host, network, publish};
use crate::{
    cli::NetworkCreateArgs,
    model::docker::{
        self, CreateEndpoint, CreateNetwork, EndpointCall, ErrResponse, GENERIC, InterfaceName,
        JoinResponse, PORTMAP, PortBinding,
    },
    model::ipam::{self, Subnet},
    model::publish::{Proto, Spec},
    model::state::{Container, DockerEndpoint, Endpoint, NetMode},
    output,
    system::datapath::Datapath,
    system::netns::Netns,
};

/// Serves the plugin `name` for `scope` until Ctrl-C or SIGTERM; removes its socket then.
pub async fn serve(scope: &str, name: &str, out: &mut impl Write) -> Result<()> {
    check_name("plugin", name)?;
    let dir = Path::new(docker::PLUGIN_DIR);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.sock"));
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        bail!("plugin {name} is already served at {}", path.display());
    }
    // A socket left by a plugin that was killed.
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).with_context(|| format!("listening on {}", path.display()))?;
    let _socket = Socket(path.clone());
    output::line(
        out,
        &format!(
            "netpath docker-plugin serves {} (docker network create -d {name}); Ctrl-C leaves the datapath attached",
            path.display()
        ),
    )?;
    let mut term = signal(SignalKind::terminate()).context("watching SIGTERM")?;
    // One call at a time: a call holds the scope's (blocking) lock across awaits.
    let calls = Rc::new(Mutex::new(()));
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    _ = term.recv() => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let sees = shares_mounts(&stream);
                        let (scope, calls) = (scope.to_owned(), calls.clone());
                        let service = hyper::service::service_fn(move |req| {
                            let (scope, calls) = (scope.clone(), calls.clone());
                            async move {
                                let _one = calls.lock().await;
                                Ok::<_, Infallible>(answer(&scope, sees, req).await)
                            }
                        });
                        tokio::task::spawn_local(async move {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                }
            }
        })
        .await;
    output::line(
        out,
        "netpath docker-plugin: exiting; the datapath stays attached",
    )?;
    Ok(())
}

/// Whether the caller (dockerd) shares the plugin's mount namespace, so that the sandbox
/// paths it gives are the same files here.
fn shares_mounts(stream: &tokio::net::UnixStream) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let mnt =
        |pid: String| std::fs::metadata(format!("/proc/{pid}/ns/mnt")).map(|m| (m.dev(), m.ino()));
    let peer = stream.peer_cred().ok().and_then(|c| c.pid());
    peer.is_some_and(
        |pid| matches!((mnt(pid.to_string()), mnt("self".into())), (Ok(a), Ok(b)) if a == b),
    )
}

/// Removes the plugin's socket when the server stops.
struct Socket(PathBuf);

impl Drop for Socket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn answer(scope: &str, sees: bool, req: Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    let call = req.uri().path().trim_start_matches('/').to_owned();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => Bytes::from(format!("unreadable request: {e}")),
    };
    let value = match handle(scope, sees, &call, &body).await {
        Ok(v) => v,
        Err(e) => {
            let err = format!("{call}: {e:#}").replace('\n', " ");
            serde_json::to_value(ErrResponse { err }).unwrap_or_default()
        }
    };
    hyper::Response::builder()
        .header(CONTENT_TYPE, docker::CONTENT_TYPE)
        .body(Full::new(Bytes::from(value.to_string())))
        .unwrap_or_default()
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).context("invalid request")
}

/// One call of the protocol: its answer as JSON. `sees`: the caller's sandbox paths are
/// the same files here ([`shares_mounts`]).
pub async fn handle(scope: &str, sees: bool, call: &str, body: &[u8]) -> Result<Value> {
    let call = call.trim_start_matches('/');
    match call {
        "Plugin.Activate" => return Ok(json!({"Implements": ["NetworkDriver"]})),
        "NetworkDriver.GetCapabilities" => {
            return Ok(json!({"Scope": "local", "ConnectivityScope": "local"}));
        }
        "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => return Ok(json!({})),
        _ => {}
    }
    let mut ctx = Ctx::open(scope)?;
    let result = match call {
        "NetworkDriver.CreateNetwork" => create_network(&mut ctx, parse(body)?).await,
        "NetworkDriver.DeleteNetwork" => delete_network(&mut ctx, parse(body)?).await,
        "NetworkDriver.CreateEndpoint" => create_endpoint(&mut ctx, parse(body)?).await,
        "NetworkDriver.DeleteEndpoint" => delete_endpoint(&mut ctx, parse(body)?).await,
        "NetworkDriver.EndpointOperInfo" => oper_info(&mut ctx, parse(body)?),
        "NetworkDriver.Join" => join(&mut ctx, sees, parse(body)?).await,
        "NetworkDriver.Leave" => leave(&mut ctx, parse(body)?).await,
        "NetworkDriver.ProgramExternalConnectivity" => program(&mut ctx, parse(body)?).await,
        "NetworkDriver.RevokeExternalConnectivity" => revoke(&mut ctx, parse(body)?),
        other => Err(anyhow::anyhow!("netpath does not implement {other}")),
    };
    // Saved even after a failure: the state holds exactly what exists.
    let saved = ctx.finish();
    let value = result?;
    saved?;
    Ok(value)
}

/// The `-o` options of `docker network create`.
#[derive(Debug, PartialEq)]
struct NetworkOptions {
    bridge: Option<String>,
    /// False: the network's containers leave with their own address.
    masquerade: bool,
}

fn network_options(req: &CreateNetwork) -> Result<NetworkOptions> {
    let mut opts = NetworkOptions {
        bridge: None,
        masquerade: true,
    };
    let Some(generic) = req.options.get(GENERIC).and_then(Value::as_object) else {
        return Ok(opts);
    };
    for (key, value) in generic {
        let value = value.as_str().unwrap_or_default();
        match key.as_str() {
            "bridge" | "com.docker.network.bridge.name" => opts.bridge = Some(value.to_owned()),
            "masquerade" | "com.docker.network.bridge.enable_ip_masquerade" => {
                opts.masquerade = match value {
                    "true" => true,
                    "false" => false,
                    _ => bail!("option {key} takes true or false, not {value:?}"),
                }
            }
            _ => bail!("unknown option {key} (netpath takes bridge and masquerade)"),
        }
    }
    Ok(opts)
}

/// The pool and gateway Docker's IPAM chose.
fn pool(req: &CreateNetwork) -> Result<(Subnet, Option<Ipv4Addr>)> {
    if req.ipv6_data.as_ref().is_some_and(|v| !v.is_empty()) {
        bail!("netpath networks are IPv4 only (drop --ipv6)");
    }
    let data = match req.ipv4_data.as_deref() {
        Some([one]) => one,
        Some([]) | None => bail!("Docker gave no IPv4 pool"),
        Some(_) => bail!("netpath networks have one IPv4 subnet, Docker gave several"),
    };
    let subnet: Subnet = data
        .pool
        .parse()
        .with_context(|| format!("invalid pool {:?}", data.pool))?;
    let gateway = match data.gateway.split('/').next() {
        None | Some("") => None,
        Some(gw) => Some(
            gw.parse()
                .with_context(|| format!("invalid gateway {:?}", data.gateway))?,
        ),
    };
    Ok((subnet, gateway))
}

async fn create_network(ctx: &mut Ctx, req: CreateNetwork) -> Result<Value> {
    let opts = network_options(&req)?;
    let (subnet, gateway) = pool(&req)?;
    let name = docker::network_name(&req.network_id);
    let existing = Datapath::existing(&ctx.scope);
    let first_use = existing.is_none();
    // Pins alone (a CLI `network create`) are not a datapath that is up.
    let up = existing.is_some_and(|dp| dp.is_up());
    let args = NetworkCreateArgs {
        name: name.clone(),
        subnet: Some(subnet),
        gateway,
        bridge: opts.bridge,
        masquerade: opts.masquerade,
    };
    let mut activated = None;
    let result = async {
        network::create(ctx, args).await?;
        if !up {
            activated = Some(host::inactive(ctx)?);
            host::activate_as_up(ctx).await?;
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        // Nothing half-built: everything goes on first use; else the network, and the
        // datapath goes back down if it was not up (pins from a bare `network create`).
        let mut t = Teardown::default();
        if first_use {
            t.step("what the call made", host::down(ctx).await);
        } else {
            if let Some(before) = activated {
                t.merge(host::deactivate(ctx, before).await);
            }
            if ctx.state.networks.contains_key(&name) {
                t.step(format!("network {name}"), network::rm(ctx, &name).await);
            }
        }
        return Err(t.undoing(e));
    }
    Ok(json!({}))
}

async fn delete_network(ctx: &mut Ctx, req: EndpointCall) -> Result<Value> {
    let name = docker::network_name(&req.network_id);
    if ctx.state.networks.contains_key(&name) {
        // Docker deletes a network only once none of its endpoints is left: any still here
        // are stale.
        let stale = docker_endpoints(ctx, |d, _| d.network_id == req.network_id)?;
        reclaim(ctx, stale).await?;
        network::rm(ctx, &name).await?;
    }
    // The last network gone: nothing of netpath stays behind (as `netpath down`).
    let s = &ctx.state;
    if s.networks.is_empty() && s.publishes.is_empty() && s.containers.is_empty()? {
        host::down(ctx).await?;
    }
    Ok(json!({}))
}

/// The netpath containers of the Docker endpoints (with their interface) that `which` selects.
fn docker_endpoints(
    ctx: &mut Ctx,
    which: impl Fn(&DockerEndpoint, &Endpoint) -> bool,
) -> Result<Vec<String>> {
    Ok(ctx
        .state
        .all_containers()?
        .iter()
        .filter(|(_, c)| match &c.mode {
            NetMode::Docker(d) => c.endpoints.iter().any(|e| which(d, e)),
            _ => false,
        })
        .map(|(name, _)| name.clone())
        .collect())
}

/// Removes stale endpoints, their publishes and flows with them. A dockerd that was killed
/// (SIGKILL, a crash) kills its containers when it starts again and releases their addresses,
/// but it never sends Leave or DeleteEndpoint for them: their endpoints stay in the state
/// until they stand in the way of a new one.
async fn reclaim(ctx: &mut Ctx, stale: Vec<String>) -> Result<()> {
    let mut t = Teardown::default();
    for name in stale {
        let removed = container::rm(ctx, &name).await;
        t.step(format!("stale endpoint {name}"), removed);
    }
    t.finish()?;
    Ok(())
}

/// The endpoint's container in the state: its name, record and interface.
fn endpoint(ctx: &mut Ctx, req: &EndpointCall) -> Result<(String, Container, Endpoint)> {
    let name = docker::endpoint_name(&req.endpoint_id);
    let c = ctx
        .state
        .containers
        .get(&name)?
        .filter(|c| matches!(&c.mode, NetMode::Docker(d) if d.endpoint_id == req.endpoint_id))
        .cloned()
        .with_context(|| format!("no endpoint {}", req.endpoint_id))?;
    let e = c
        .endpoints
        .first()
        .context("the endpoint has no interface")?
        .clone();
    Ok((name, c, e))
}

async fn create_endpoint(ctx: &mut Ctx, req: CreateEndpoint) -> Result<Value> {
    let network = docker::network_name(&req.network_id);
    let net = ctx.state.network(&network)?.clone();
    let name = docker::endpoint_name(&req.endpoint_id);
    if ctx.state.containers.contains(&name)? {
        bail!("endpoint {} exists already", req.endpoint_id);
    }
    let iface = req.interface.unwrap_or_default();
    if !iface.address_ipv6.is_empty() {
        bail!("netpath networks are IPv4 only");
    }
    let (ip, len) = iface
        .address
        .split_once('/')
        .context("Docker gave the endpoint no IPv4 address")?;
    let ip: Ipv4Addr = ip
        .parse()
        .with_context(|| format!("invalid address {:?}", iface.address))?;
    if len != net.subnet.prefix_len().to_string() {
        bail!("address {} is not in subnet {}", iface.address, net.subnet);
    }
    net.subnet.check_host(ip)?;
    // Docker's IPAM owns the network's addresses: another of its endpoints that still holds
    // this one is stale.
    if net.in_use(ip) {
        let stale = docker_endpoints(ctx, |d, e| d.network_id == req.network_id && e.ip == ip)?;
        reclaim(ctx, stale).await?;
    }
    if ctx.state.network(&network)?.in_use(ip) {
        bail!("address {ip} is already in use on network {network}");
    }
    let given_mac = !iface.mac_address.is_empty();
    let mac = match given_mac {
        true => ipam::parse_mac(&iface.mac_address)
            .with_context(|| format!("invalid MAC address {:?}", iface.mac_address))?,
        false => ipam::mac_for(ip),
    };
    let ifname = "eth".to_owned();
    ctx.state.add_container(
        &name,
        Container {
            mode: NetMode::Docker(DockerEndpoint {
                network_id: req.network_id,
                endpoint_id: req.endpoint_id,
                mac: ipam::format_mac(mac),
                sandbox: String::new(),
            }),
            endpoints: vec![Endpoint {
                network,
                host_veth: container::host_veth_name(&name, &ifname),
                ifname,
                ip,
            }],
            allow_spoofed_source: false,
        },
    );
    // The MAC goes back only when Docker gave none (dockerd refuses an answer that sets what
    // it set).
    Ok(match given_mac {
        true => json!({}),
        false => json!({"Interface": {"MacAddress": ipam::format_mac(mac)}}),
    })
}

async fn delete_endpoint(ctx: &mut Ctx, req: EndpointCall) -> Result<Value> {
    let name = docker::endpoint_name(&req.endpoint_id);
    if ctx.state.containers.contains(&name)? {
        endpoint(ctx, &req)?;
        container::rm(ctx, &name).await?;
    }
    Ok(json!({}))
}

fn oper_info(ctx: &mut Ctx, req: EndpointCall) -> Result<Value> {
    let (_, c, e) = endpoint(ctx, &req)?;
    let mac = match &c.mode {
        NetMode::Docker(d) => d.mac.clone(),
        _ => String::new(),
    };
    Ok(json!({"Value": {"ip": e.ip, "mac": mac, "veth": e.host_veth, "network": e.network}}))
}

/// The temporary name of the container end, until dockerd moves and renames it.
fn container_end(host_veth: &str) -> String {
    format!("npc{}", host_veth.trim_start_matches("np"))
}

async fn join(ctx: &mut Ctx, sees: bool, req: EndpointCall) -> Result<Value> {
    let (name, c, e) = endpoint(ctx, &req)?;
    let mac = c.mac(&e);
    let net = ctx.state.network(&e.network)?.clone();
    let bridge = ctx.nl.link_by_name(&net.bridge).await?.with_context(|| {
        format!(
            "bridge {} of network {} is missing: run `netpath up` to repair",
            net.bridge, e.network
        )
    })?;
    // A veth left by a Join whose sandbox never took it goes; anything else under these
    // names is not netpath's to delete.
    let peer = container_end(&e.host_veth);
    for stale in [e.host_veth.as_str(), peer.as_str()] {
        let Some(link) = ctx.nl.link_by_name(stale).await? else {
            continue;
        };
        if link.kind.as_deref() != Some("veth") {
            bail!("interface {stale} exists and is not a veth netpath left; remove or rename it");
        }
        ctx.nl.delete_link_by_name(stale).await?;
    }
    let here = Netns::current()?;
    let index = ctx
        .nl
        .create_veth(&e.host_veth, bridge.index, &here, &peer, mac)
        .await?;
    let dp = ctx.datapath()?;
    if let Err(err) = container::register(&dp, &e, mac, index, bridge.index, false) {
        let t = container::unwire(ctx, Some(&dp), &e, index).await;
        return Err(t.undoing(err.context(format!("putting {name} on the datapath"))));
    }
    // Recorded only if the plugin sees it as dockerd does (a plugin in another mount
    // namespace does not), so that its absence later means something. For `docker run` it
    // is no namespace yet: dockerd mounts it when the container starts.
    if sees
        && let Some(Container {
            mode: NetMode::Docker(d),
            ..
        }) = ctx.state.containers.get_mut(&name)?
    {
        d.sandbox = req.sandbox_key;
    }
    let answer = JoinResponse {
        interface_name: InterfaceName {
            src_name: peer,
            dst_prefix: "eth".to_owned(),
        },
        gateway: net.gateway,
    };
    Ok(serde_json::to_value(answer)?)
}

/// The veth goes (the sandbox's end with it), and the endpoint's flows and datapath entry;
/// the endpoint stays until DeleteEndpoint.
async fn leave(ctx: &mut Ctx, req: EndpointCall) -> Result<Value> {
    let (name, c, _) = endpoint(ctx, &req)?;
    let mut t = Teardown::default();
    container::forget_flows(ctx, &name, &c, &mut t);
    t.merge(container::teardown(ctx, &name, &c).await);
    t.finish()?;
    Ok(json!({}))
}

/// A `-p` binding as the SPEC `netpath publish` takes.
fn port_spec(b: &PortBinding, container_ip: Ipv4Addr) -> Result<Spec> {
    let proto = match b.proto {
        6 => Proto::Tcp,
        17 => Proto::Udp,
        p => bail!("port binding with protocol {p}: netpath publishes TCP (6) and UDP (17)"),
    };
    // Docker's own driver picks these ports itself; a remote driver cannot tell Docker the
    // port it would pick (dockerd drops what EndpointOperInfo reports), so the user chooses.
    if b.port == 0 || b.host_port == 0 {
        bail!(
            "-p {}: netpath cannot pick the host port, since Docker cannot learn it from a remote driver; give one (-p HOST_PORT:{})",
            b.port,
            b.port
        );
    }
    if b.host_port_end != 0 && b.host_port_end != b.host_port {
        bail!(
            "-p {}-{}:{}: netpath cannot pick a port of the range, since Docker cannot learn it from a remote driver; give one host port per container port",
            b.host_port,
            b.host_port_end,
            b.port
        );
    }
    Ok(Spec::one_port(
        &b.host_ip,
        b.host_port,
        container_ip,
        b.port,
        proto,
    )?)
}

async fn program(ctx: &mut Ctx, req: EndpointCall) -> Result<Value> {
    let (_, _, e) = endpoint(ctx, &req)?;
    let bindings: Vec<PortBinding> = match req.options.get(PORTMAP) {
        None | Some(Value::Null) => vec![],
        Some(v) => serde_json::from_value(v.clone()).context("invalid port bindings")?,
    };
    let specs = bindings
        .iter()
        .map(|b| port_spec(b, e.ip))
        .collect::<Result<Vec<_>>>()?;
    if specs.is_empty() {
        return Ok(json!({}));
    }
    let plan = match publish::plan(ctx, &specs).await {
        Ok(plan) => plan,
        // The ports may be held by an endpoint whose container is gone: only then are the
        // others looked at, so that a start costs the same however many there are.
        Err(refused) => {
            let stale = match stale_publishers(ctx, &req).await {
                Ok(stale) if !stale.is_empty() => stale,
                Ok(_) => return Err(refused),
                Err(e) => bail!("{refused:#} (and looking for endpoints that hold them: {e:#})"),
            };
            reclaim(ctx, stale).await?;
            publish::plan(ctx, &specs).await?
        }
    };
    plan.commit(ctx)?;
    Ok(json!({}))
}

/// Other endpoints that still publish though their container is gone: their veth is gone,
/// or dockerd moved the veth's end into the sandbox (which it mounts first) and that sandbox
/// is no longer a network namespace: dockerd unmounted it. The veth outlives the unmount by
/// as long as the kernel takes to destroy the namespace (a few hundred ms, more under load),
/// so it alone is no timely sign. An endpoint whose container has not started yet still has
/// its end here.
async fn stale_publishers(ctx: &mut Ctx, req: &EndpointCall) -> Result<Vec<String>> {
    let links: BTreeSet<String> = ctx.nl.links().await?.into_iter().map(|l| l.name).collect();
    let published: BTreeSet<Ipv4Addr> = ctx
        .state
        .publishes
        .mappings()
        .map(|m| m.container_ip)
        .collect();
    docker_endpoints(ctx, |d, o| {
        let unmounted = !d.sandbox.is_empty()
            && !links.contains(&container_end(&o.host_veth))
            && Netns::open_path(Path::new(&d.sandbox)).is_err();
        let gone = unmounted || !links.contains(&o.host_veth);
        d.endpoint_id != req.endpoint_id && published.contains(&o.ip) && gone
    })
}

/// Unpublishes what ProgramExternalConnectivity published (which forgets its UDP flows).
fn revoke(ctx: &mut Ctx, req: EndpointCall) -> Result<Value> {
    let (name, _, e) = endpoint(ctx, &req)?;
    publish::unpublish_where(ctx, &format!(" of {name}"), |ip| ip == e.ip).finish()?;
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_become_specs() {
        let b = PortBinding {
            proto: 17,
            ip: "172.18.0.2".into(),
            port: 9000,
            host_ip: "127.0.0.1".into(),
            host_port: 9000,
            host_port_end: 9000,
        };
        let ip = Ipv4Addr::new(172, 18, 0, 2);
        assert_eq!(
            port_spec(&b, ip).unwrap().to_string(),
            "127.0.0.1:9000:172.18.0.2:9000/udp"
        );
        let tcp = PortBinding {
            proto: 6,
            host_ip: String::new(),
            host_port_end: 0,
            ..b
        };
        assert_eq!(
            port_spec(&tcp, ip).unwrap().to_string(),
            "9000:172.18.0.2:9000/tcp"
        );
        let range = PortBinding {
            proto: 6,
            port: 80,
            host_port: 8000,
            host_port_end: 8010,
            ..Default::default()
        };
        let err = port_spec(&range, ip).unwrap_err().to_string();
        assert!(
            err.starts_with("-p 8000-8010:80: netpath cannot pick"),
            "{err}"
        );
        let any = PortBinding {
            host_port: 0,
            host_port_end: 0,
            ..range
        };
        let err = port_spec(&any, ip).unwrap_err().to_string();
        assert!(err.starts_with("-p 80: netpath cannot pick"), "{err}");
    }

    #[test]
    fn network_options_from_dash_o() {
        let req: CreateNetwork = serde_json::from_str(
            r#"{"NetworkID":"n","Options":{"com.docker.network.generic":{"bridge":"br-web"}},
                "IPv4Data":[{"AddressSpace":"LocalDefault","Pool":"172.18.0.0/16","Gateway":"172.18.0.1/16"}],"IPv6Data":[]}"#,
        )
        .unwrap();
        assert_eq!(
            network_options(&req).unwrap().bridge.as_deref(),
            Some("br-web")
        );
        let (subnet, gw) = pool(&req).unwrap();
        assert_eq!(subnet.to_string(), "172.18.0.0/16");
        assert_eq!(gw, Some(Ipv4Addr::new(172, 18, 0, 1)));
        assert!(network_options(&req).unwrap().masquerade);
        for key in [
            "masquerade",
            "com.docker.network.bridge.enable_ip_masquerade",
        ] {
            let off: CreateNetwork = serde_json::from_str(&format!(
                r#"{{"Options":{{"com.docker.network.generic":{{"{key}":"false"}}}}}}"#
            ))
            .unwrap();
            assert!(!network_options(&off).unwrap().masquerade, "{key}");
        }
        let bad: CreateNetwork = serde_json::from_str(
            r#"{"Options":{"com.docker.network.generic":{"masquerade":"no"}}}"#,
        )
        .unwrap();
        assert!(network_options(&bad).is_err());
    }
}
