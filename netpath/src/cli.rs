//! The command line. Parsing only: every command is carried out in `ops`.
use std::{net::Ipv4Addr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::{
    model::conntrack::CtProto,
    model::ipam::Subnet,
    model::masquerade::{Exclude, NatPorts},
    model::publish::{PortSpec, Spec},
    model::state::NetMode,
    output::Format,
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
    Up(UpArgs),
    /// Remove every container, network, program and pin netpath created in this namespace.
    Down,
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Create a container: a network namespace wired to a network.
    Run(RunArgs),
    /// Publish ports; with no SPEC and no --from-file, list them.
    ///
    /// SPEC is [HOST_IP:]HOST_PORT[-END]:CONTAINER_IP:CONTAINER_PORT[-END][/tcp|/udp], e.g.
    /// 8088:172.17.0.2:80 or 192.0.2.1:8000-8009:172.17.0.2:9000-9009/udp. Without HOST_IP (or
    /// with 0.0.0.0) the port is published on every address of the namespace; TCP by default;
    /// a range publishes one port per pair. The list has one SPEC per line, as --from-file
    /// reads them.
    Publish(PublishArgs),
    /// Unpublish ports, given as they were published (SPEC as for publish).
    ///
    /// Every port of every SPEC must be published, to that container address and port.
    Unpublish(PublishArgs),
    /// Run a command inside a container's network namespace.
    Exec(ExecArgs),
    /// Attach a running container to another network (as eth1, eth2, ...).
    Connect(ConnectArgs),
    /// Remove a container and the ports published to it.
    Rm { name: String },
    /// List containers with their published ports.
    Ps(ListArgs),
    /// Show everything netpath set up here: networks, containers, published ports,
    /// masquerade, external interfaces, the programs attached and how full the maps are.
    Status(ListArgs),
    /// Show the datapath's counters: drops, new connections, translated traffic, conntrack.
    ///
    /// Counters are summed over CPUs and count from the `up` that loaded the datapath.
    /// Conntrack evictions are derived, not counted: inserts - removals - entries - entries
    /// netpath removed itself (flush, garbage collection).
    Stats(StatsArgs),
    /// List the connections the datapath translates (published ports, masquerade).
    ///
    /// One line per connection: the tuple of its first packet, the tuple it was rewritten to,
    /// its state, how long it has been idle and when it expires. Expired connections are
    /// listed as such until their entries are evicted; they block nothing.
    Conntrack(ConntrackArgs),
    /// Serve Docker's remote network driver on /run/docker/plugins/NAME.sock until Ctrl-C or
    /// SIGTERM (`docker network create -d NAME`); the datapath stays attached when it exits.
    DockerPlugin(DockerPluginArgs),
}

impl Command {
    /// How the command's response is shown: `--json` and `--prometheus` where it has them.
    pub fn format(&self) -> Format {
        let json = match self {
            Command::Ps(a) | Command::Status(a) | Command::Network(NetworkCommand::Ls(a)) => a.json,
            Command::Conntrack(a) => a.json,
            Command::Stats(a) if a.prometheus => return Format::Prometheus,
            Command::Stats(a) => a.json,
            _ => false,
        };
        if json { Format::Json } else { Format::Table }
    }
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
    Create(NetworkCreateArgs),
    /// List networks.
    Ls(ListArgs),
    /// Remove a network that no container uses.
    Rm { name: String },
}

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Exit once the datapath is attached (it runs on without a netpath process).
    /// Without it, netpath stays in the foreground collecting expired conntrack entries
    /// until Ctrl-C or SIGTERM, and leaves the datapath attached when it exits.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Seconds between conntrack garbage collections in the foreground.
    #[arg(long, default_value_t = 30, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub gc_interval: u64,
    /// Log level of the programs: their events (new connections, drops) stream to the
    /// foreground process. Off by default, which costs the hot path nothing.
    #[arg(long, value_enum, default_value_t = LogLevel::Off)]
    pub log_level: LogLevel,
    /// Bridge of the default network; an existing bridge with an address is adopted.
    #[arg(long, value_name = "IFNAME")]
    pub bridge: Option<String>,
    /// Publish ports, as `netpath publish SPEC` (repeatable); publishing again what is
    /// already published is no error here, so that `up` can be re-run.
    #[arg(long, value_name = "SPEC")]
    pub publish: Vec<Spec>,
    /// Interface that faces clients, where published ports are reachable (repeatable).
    /// Replaces the set of the last `up`; default: that set, or at the first `up` the
    /// interfaces of the default routes.
    #[arg(long, value_name = "IFACE")]
    pub external: Vec<String>,
    /// Destination that containers reach with their own address, not masqueraded
    /// (repeatable). Added to those of earlier `up`s; `none` drops those first. The
    /// netpath networks are always excluded.
    #[arg(long, value_name = "CIDR")]
    pub masquerade_exclude: Vec<Exclude>,
    /// Source ports masquerade allocates from when a connection's own is taken; must not
    /// hold a published host port. Kept until given again; default 32768-60999.
    #[arg(long, value_name = "START-END")]
    pub masquerade_ports: Option<NatPorts>,
    /// Entries of the conntrack table (two per connection; the least recently used go when
    /// it is full), 16384 to 4194304; default 262144. Fixed while the datapath is up:
    /// changing it needs `netpath down` first.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(16_384..=4_194_304))]
    pub conntrack_max: Option<u32>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    pub name: String,
    /// Network to attach to (bridge mode).
    #[arg(long, default_value = crate::commands::DEFAULT_NETWORK)]
    pub network: String,
    /// Address to give the container instead of the next free one.
    #[arg(long)]
    pub ip: Option<Ipv4Addr>,
    /// Network mode: bridge, none, host or container:NAME.
    #[arg(long = "net", default_value = "bridge")]
    pub mode: NetMode,
    /// DNS server for the container's resolv.conf (repeatable); default: the host's.
    #[arg(long)]
    pub dns: Vec<Ipv4Addr>,
    /// Publish ports of the container's eth0 (repeatable): HOST_PORT:CONTAINER_PORT,
    /// in full [HOST_IP:]HOST_PORT[-END]:CONTAINER_PORT[-END][/tcp|/udp].
    #[arg(short = 'p', long = "publish", value_name = "PORTS")]
    pub publish: Vec<PortSpec>,
    /// Let the container send from addresses and MACs other than its interfaces' own (a
    /// container that routes other addresses); by default the datapath drops such packets.
    #[arg(long)]
    pub allow_spoofed_source: bool,
}

#[derive(Args, Debug)]
pub struct PublishArgs {
    #[arg(value_name = "SPEC")]
    pub specs: Vec<Spec>,
    /// Also read SPECs from FILE (- for stdin): one per line, # starts a comment.
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    pub name: String,
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ConnectArgs {
    pub name: String,
    pub network: String,
    #[arg(long)]
    pub ip: Option<Ipv4Addr>,
}

/// The read commands' one option.
#[derive(Args, Debug)]
pub struct ListArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    #[arg(long, conflicts_with = "prometheus")]
    pub json: bool,
    /// Print again every SECS seconds (default 1) with per-second rates, until Ctrl-C.
    #[arg(
        long,
        value_name = "SECS",
        num_args = 0..=1,
        default_missing_value = "1",
        value_parser = clap::value_parser!(u64).range(1..),
        conflicts_with = "prometheus"
    )]
    pub watch: Option<u64>,
    /// Print the Prometheus text exposition format.
    #[arg(long)]
    pub prometheus: bool,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ConntrackArgs {
    #[command(subcommand)]
    pub command: Option<ConntrackCommand>,
    #[arg(long)]
    pub json: bool,
    /// Only this protocol: tcp, udp or icmp.
    #[arg(long)]
    pub proto: Option<CtProto>,
    /// Only connections with this address on either side, before or after translation.
    #[arg(long, value_name = "IP")]
    pub addr: Option<Ipv4Addr>,
    /// Only connections with this port (or ICMP echo identifier) on either side.
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
}

#[derive(Args, Debug)]
pub struct DockerPluginArgs {
    /// The plugin's name: the driver of `docker network create -d NAME`.
    #[arg(long, default_value = "netpath")]
    pub name: String,
}

#[derive(Args, Debug)]
pub struct NetworkCreateArgs {
    pub name: String,
    /// Subnet in CIDR form; default: the first free private range, 172.17.0.0/16 first.
    #[arg(long)]
    pub subnet: Option<Subnet>,
    /// Gateway address (on the bridge); default: the subnet's first address.
    #[arg(long)]
    pub gateway: Option<Ipv4Addr>,
    /// Bridge interface name; default: np-NAME.
    #[arg(long, value_name = "IFNAME")]
    pub bridge: Option<String>,
    /// Masquerade the containers' new connections to the outside; with false they leave
    /// with their own address, routed (the outside needs a route back to the subnet).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub masquerade: bool,
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
