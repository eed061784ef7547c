//! `netpath status`: everything netpath set up in the scope at a glance, with what the
//! kernel has of it: the programs attached (link and program ids, as bpftool shows them)
//! and how full the maps are.
use anyhow::{Context as _, Result};
use serde::Serialize;

use std::collections::BTreeSet;

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
    output::Response,
    system::datapath::{Attachment, Datapath, MapFill},
};

#[derive(Serialize)]
pub struct Status {
    pub scope: String,
    pub state_dir: String,
    pub pin_dir: String,
    pub networks: Vec<NetworkView>,
    pub containers: Vec<ContainerView>,
    pub publishes: Publishes,
    pub masquerade: Masquerade,
    pub externals: Vec<External>,
    /// Empty when the datapath is not loaded.
    pub attachments: Vec<Attachment>,
    pub maps: Vec<MapFill>,
}

#[derive(Serialize)]
pub struct Publishes {
    /// Published (address, port, protocol) triples: a range counts one per port.
    pub ports: usize,
    pub specs: Vec<Spec>,
}

#[derive(Serialize)]
pub struct Masquerade {
    pub ports: NatPorts,
    /// No `--masquerade-ports` given: the datapath's default range.
    pub default_ports: bool,
    /// `--masquerade-exclude`, beside the networks' subnets (always excluded).
    pub exclude: BTreeSet<Subnet>,
}

#[derive(Serialize)]
pub struct External {
    pub name: String,
    /// None when the interface is gone.
    pub ifindex: Option<u32>,
}

pub async fn status(ctx: &mut Ctx) -> Result<Response> {
    ctx.state.all_containers()?;
    let state = &ctx.state;
    let bridges = state.networks.values().map(|n| n.bridge.as_str());
    let externals = state.externals.iter().map(String::as_str);
    let veths = container::host_veths(state);
    let present = ctx.nl.indexes(bridges.chain(externals).chain(veths))?;
    let mut veth_filters = Vec::new();
    for veth in container::host_veths(state) {
        if let Some(&index) = present.get(veth) {
            let ids = ctx.nl.ingress_bpf_programs(index).await?;
            veth_filters.push((veth.to_owned(), ids));
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
        scope: ctx.scope.clone(),
        state_dir: Store::dir(&ctx.scope).display().to_string(),
        pin_dir: Datapath::pin_dir(&ctx.scope).display().to_string(),
        networks: network::views(state, &present),
        containers: container::views(state, &present),
        publishes: Publishes {
            ports: state.publishes.len(),
            specs: state.publishes.specs(),
        },
        masquerade: Masquerade {
            ports: state.masquerade_ports.unwrap_or(NatPorts::DEFAULT),
            default_ports: state.masquerade_ports.is_none(),
            exclude: state.masquerade_exclude.clone(),
        },
        externals: state
            .externals
            .iter()
            .map(|name| External {
                name: name.clone(),
                ifindex: present.get(name).copied(),
            })
            .collect(),
        attachments,
        maps,
    };
    Ok(Response::Status(Box::new(status)))
}
