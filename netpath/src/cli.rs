//! The command line. Parsing only: every command is carried out in `ops`.
use std::{net::Ipv4Addr, path::PathBuf};

use clap::{Parser, Subcommand};

use crate::{
    model::conntrack::CtProto,
    model::ipam::Subnet,
    model::masquerade::{Exclude, NatPorts},
    model::publish::{PortSpec, Spec},
};

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
    ///
    /// Run again, it re-applies everything (external interfaces, published ports) and repairs
    /// what was deleted behind netpath's back.
    Up {
        /// Exit once the datapath is attached (it runs on without a netpath process).
        /// Without it, netpath stays in the foreground collecting expired conntrack entries
        /// until Ctrl-C or SIGTERM, and leaves the datapath attached when it exits.
        #[arg(short = 'd', long)]
        detach: bool,
        /// Seconds between conntrack garbage collections in the foreground.
        #[arg(long, default_value_t = 30, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        gc_interval: u64,
        /// Log level of the programs: their events (new connections, drops) stream to the
        /// foreground process. Off by default, which costs the hot path nothing.
        #[arg(long, value_enum, default_value_t = LogLevel::Off)]
        log_level: LogLevel,
        /// Bridge of the default network; an existing bridge with an address is adopted.
        #[arg(long, value_name = "IFNAME")]
        bridge: Option<String>,
        /// Publish ports, as `netpath publish SPEC` (repeatable); publishing again what is
        /// already published is no error here, so that `up` can be re-run.
        #[arg(long, value_name = "SPEC")]
        publish: Vec<Spec>,
        /// Interface that faces clients, where published ports are reachable (repeatable).
        /// Replaces the set of the last `up`; default: that set, or at the first `up` the
        /// interfaces of the default routes.
        #[arg(long, value_name = "IFACE")]
        external: Vec<String>,
        /// Destination that containers reach with their own address, not masqueraded
        /// (repeatable). Added to those of earlier `up`s; `none` drops those first. The
        /// netpath networks are always excluded.
        #[arg(long, value_name = "CIDR")]
        masquerade_exclude: Vec<Exclude>,
        /// Source ports masquerade allocates from when a connection's own is taken; must not
        /// hold a published host port. Kept until given again; default 32768-60999.
        #[arg(long, value_name = "START-END")]
        masquerade_ports: Option<NatPorts>,
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
        #[arg(long, default_value = crate::commands::DEFAULT_NETWORK)]
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
        /// Publish ports of the container's eth0 (repeatable): HOST_PORT:CONTAINER_PORT,
        /// in full [HOST_IP:]HOST_PORT[-END]:CONTAINER_PORT[-END][/tcp|/udp].
        #[arg(short = 'p', long = "publish", value_name = "PORTS")]
        publish: Vec<PortSpec>,
    },
    /// Publish ports; with no SPEC and no --from-file, list them.
    ///
    /// SPEC is [HOST_IP:]HOST_PORT[-END]:CONTAINER_IP:CONTAINER_PORT[-END][/tcp|/udp], e.g.
    /// 8088:172.17.0.2:80 or 192.0.2.1:8000-8009:172.17.0.2:9000-9009/udp. Without HOST_IP (or
    /// with 0.0.0.0) the port is published on every address of the namespace; TCP by default;
    /// a range publishes one port per pair. The list has one SPEC per line, as --from-file
    /// reads them.
    Publish {
        #[arg(value_name = "SPEC")]
        specs: Vec<Spec>,
        /// Also read SPECs from FILE (- for stdin): one per line, # starts a comment.
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
    },
    /// Unpublish ports, given as they were published (SPEC as for publish).
    ///
    /// Every port of every SPEC must be published, to that container address and port.
    Unpublish {
        #[arg(value_name = "SPEC")]
        specs: Vec<Spec>,
        /// Also read SPECs from FILE (- for stdin): one per line, # starts a comment.
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
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
    /// Remove a container and the ports published to it.
    Rm { name: String },
    /// List containers with their published ports.
    Ps {
        #[arg(long)]
        json: bool,
    },
    /// Show everything netpath set up here: networks, containers, published ports,
    /// masquerade, external interfaces, the programs attached and how full the maps are.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Show the datapath's counters: drops, new connections, translated traffic, conntrack.
    ///
    /// Counters are summed over CPUs and count from the `up` that loaded the datapath.
    /// Conntrack evictions are derived, not counted: inserts - removals - entries - entries
    /// netpath removed itself (flush, garbage collection).
    Stats {
        #[arg(long, conflicts_with = "prometheus")]
        json: bool,
        /// Print again every SECS seconds (default 1) with per-second rates, until Ctrl-C.
        #[arg(
            long,
            value_name = "SECS",
            num_args = 0..=1,
            default_missing_value = "1",
            value_parser = clap::value_parser!(u64).range(1..),
            conflicts_with = "prometheus"
        )]
        watch: Option<u64>,
        /// Print the Prometheus text exposition format.
        #[arg(long)]
        prometheus: bool,
    },
    /// List the connections the datapath translates (published ports, masquerade).
    ///
    /// One line per connection: the tuple of its first packet, the tuple it was rewritten to,
    /// its state, how long it has been idle and when it expires. Expired connections are
    /// listed as such until their entries are evicted; they block nothing.
    #[command(args_conflicts_with_subcommands = true)]
    Conntrack {
        #[command(subcommand)]
        command: Option<ConntrackCommand>,
        #[arg(long)]
        json: bool,
        /// Only this protocol: tcp, udp or icmp.
        #[arg(long)]
        proto: Option<CtProto>,
        /// Only connections with this address on either side, before or after translation.
        #[arg(long, value_name = "IP")]
        addr: Option<Ipv4Addr>,
        /// Only connections with this port (or ICMP echo identifier) on either side.
        #[arg(long, value_name = "N")]
        port: Option<u16>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConntrackCommand {
    /// Remove every conntrack entry: tracked connections are forgotten (their next packets
    /// are treated as new ones, or dropped where nothing matches).
    Flush,
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

/// aya-log's levels, in its numbering (0 turns logging off).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[repr(u8)]
pub enum LogLevel {
    Off = 0,
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}
