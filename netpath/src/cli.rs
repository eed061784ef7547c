//! The command line. Parsing only: every command is carried out in `ops`.
use std::net::Ipv4Addr;

use clap::{Parser, Subcommand};

use crate::ipam::Subnet;

#[derive(Parser, Debug)]
#[command(
    name = "netpath",
    version,
    about = "Container networking with an eBPF datapath"
)]
pub struct Cli {
    /// Run inside the named network namespace (/run/netns/NS) instead of the current one.
    #[arg(long, global = true, value_name = "NS")]
    pub netns: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create the default network (bridge netpath0) and attach the datapath.
    Up {
        /// Bridge of the default network; an existing bridge with an address is adopted.
        #[arg(long, value_name = "IFNAME")]
        bridge: Option<String>,
    },
    /// Remove every container, network, program and pin netpath created in this namespace.
    Down,
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Create a container: a network namespace wired to a network.
    Run {
        name: String,
        /// Network to attach to (bridge mode).
        #[arg(long, default_value = crate::ops::DEFAULT_NETWORK)]
        network: String,
        /// Address to give the container instead of the next free one.
        #[arg(long)]
        ip: Option<Ipv4Addr>,
        /// Network mode: bridge, none, host or container:NAME.
        #[arg(long = "net", default_value = "bridge")]
        mode: String,
        /// DNS server for the container's resolv.conf (repeatable); default: the host's.
        #[arg(long)]
        dns: Vec<Ipv4Addr>,
    },
    /// Run a command inside a container's network namespace.
    Exec {
        name: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Attach a running container to another network (as eth1, eth2, ...).
    Connect {
        name: String,
        network: String,
        #[arg(long)]
        ip: Option<Ipv4Addr>,
    },
    /// Remove a container.
    Rm { name: String },
    /// List containers.
    Ps {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create a network with its own bridge.
    Create {
        name: String,
        /// Subnet in CIDR form; default: the first free private range, 172.17.0.0/16 first.
        #[arg(long)]
        subnet: Option<Subnet>,
        /// Gateway address (on the bridge); default: the subnet's first address.
        #[arg(long)]
        gateway: Option<Ipv4Addr>,
        /// Bridge interface name; default: np-NAME.
        #[arg(long, value_name = "IFNAME")]
        bridge: Option<String>,
    },
    /// List networks.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove a network that no container uses.
    Rm { name: String },
}
