//! `netpath status`: everything netpath set up in the scope at a glance, with what the
//! kernel has of it: the programs attached (link and program ids, as bpftool shows them)
//! and how full the maps are.
use anyhow::{Context as _, Result};
use serde::Serialize;

use super::{
    Ctx,
    container::{self, ContainerView},
    network::{self, NetworkView},
};
use crate::{
    model::ipam::Subnet,
    model::masquerade::NatPorts,
    model::publish::Spec,
    model::state::Store,
    system::datapath::{Attachment, Datapath, MapFill},
};

#[derive(Serialize)]
struct Status<'a> {
    scope: &'a str,
    state_dir: String,
    pin_dir: String,
    networks: Vec<NetworkView<'a>>,
    containers: Vec<ContainerView<'a>>,
    publishes: Publishes,
    masquerade: Masquerade<'a>,
    externals: Vec<External<'a>>,
    /// Empty when the datapath is not loaded.
    attachments: Vec<Attachment>,
    maps: Vec<MapFill>,
}

#[derive(Serialize)]
struct Publishes {
    /// Published (address, port, protocol) triples: a range counts one per port.
    ports: usize,
    specs: Vec<Spec>,
}

#[derive(Serialize)]
struct Masquerade<'a> {
    ports: NatPorts,
    /// No `--masquerade-ports` given: the datapath's default range.
    default_ports: bool,
    /// `--masquerade-exclude`, beside the networks' subnets (always excluded).
    exclude: &'a std::collections::BTreeSet<Subnet>,
}

#[derive(Serialize)]
struct External<'a> {
    name: &'a str,
    /// None when the interface is gone.
    ifindex: Option<u32>,
}

pub async fn status(ctx: &Ctx, json: bool) -> Result<()> {
    let links = ctx.nl.links().await?;
    let state = &ctx.state;
    let mut veth_filters = Vec::new();
    for e in state.containers.values().flat_map(|c| &c.endpoints) {
        if let Some(link) = links.iter().find(|l| l.name == e.host_veth) {
            let ids = ctx.nl.ingress_bpf_programs(link.index).await?;
            veth_filters.push((e.host_veth.clone(), ids));
        }
    }
    let (attachments, maps) = match Datapath::existing(&ctx.scope) {
        Some(dp) => (
            dp.attachments(&veth_filters)
                .context("reading the attached programs")?,
            dp.map_fill().context("reading the maps")?,
        ),
        None => (Vec::new(), Vec::new()),
    };
    let status = Status {
        scope: &ctx.scope,
        state_dir: Store::dir(&ctx.scope).display().to_string(),
        pin_dir: Datapath::pin_dir(&ctx.scope).display().to_string(),
        networks: network::views(state, &links),
        containers: container::views(state, &links),
        publishes: Publishes {
            ports: state.publishes.len(),
            specs: state.publishes.specs(),
        },
        masquerade: Masquerade {
            ports: state.masquerade_ports.unwrap_or(NatPorts::DEFAULT),
            default_ports: state.masquerade_ports.is_none(),
            exclude: &state.masquerade_exclude,
        },
        externals: state
            .externals
            .iter()
            .map(|name| External {
                name,
                ifindex: links.iter().find(|l| &l.name == name).map(|l| l.index),
            })
            .collect(),
        attachments,
        maps,
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print_status(&status);
    }
    Ok(())
}

fn print_status(s: &Status) {
    outln!(
        "scope {}: state in {}, pins in {}",
        s.scope,
        s.state_dir,
        s.pin_dir
    );
    outln!("\nNETWORKS");
    network::print_table(&s.networks, true);
    outln!("\nCONTAINERS");
    container::print_table(&s.containers);
    outln!("\nPUBLISHED PORTS: {}", s.publishes.ports);
    for spec in &s.publishes.specs {
        outln!("{spec}");
    }
    let m = &s.masquerade;
    let exclude: Vec<String> = m.exclude.iter().map(Subnet::to_string).collect();
    outln!("\nMASQUERADE");
    outln!(
        "ports {}{}; excluded beside the networks: {}",
        m.ports,
        if m.default_ports { " (default)" } else { "" },
        if exclude.is_empty() {
            "none".to_owned()
        } else {
            exclude.join(", ")
        }
    );
    outln!("\nEXTERNAL INTERFACES");
    outln!("{:<16} {:<8} STATUS", "NAME", "IFINDEX");
    for e in &s.externals {
        let (ifindex, status) = match e.ifindex {
            Some(i) => (i.to_string(), "ok"),
            None => ("-".to_owned(), "missing (run netpath up)"),
        };
        outln!("{:<16} {ifindex:<8} {status}", e.name);
    }
    outln!("\nATTACHMENTS");
    outln!(
        "{:<16} {:<20} {:<24} {:>8} {:>8}",
        "PROGRAM",
        "HOOK",
        "TARGET",
        "LINK",
        "PROG"
    );
    for a in &s.attachments {
        outln!(
            "{:<16} {:<20} {:<24} {:>8} {:>8}",
            a.program,
            a.hook,
            a.target,
            a.link_id.map_or("-".to_owned(), |id| id.to_string()),
            a.program_id
        );
    }
    outln!("\nMAPS");
    outln!("{:<16} {:>8} {:>8} {:>7}", "NAME", "ENTRIES", "MAX", "FILL");
    for m in &s.maps {
        let fill = 100.0 * m.entries as f64 / f64::from(m.max_entries.max(1));
        outln!(
            "{:<16} {:>8} {:>8} {:>6.1}%",
            m.name,
            m.entries,
            m.max_entries,
            fill
        );
    }
}
