//! netpath's record of what it created in one network namespace ("scope"), kept under
//! `/run/netpath/<scope>/`. Every command holds the scope's lock from start to end, so
//! concurrent invocations serialize; writes go to a temporary file renamed into place.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs::{self, File},
    io::Write as _,
    net::Ipv4Addr,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::model::{
    ipam::{self, Subnet},
    masquerade::NatPorts,
    parse::ParseError,
    publish::Publishes,
};

pub const RUN_DIR: &str = "/run/netpath";
pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub networks: BTreeMap<String, Network>,
    pub containers: BTreeMap<String, Container>,
    /// The value of net.ipv4.ip_forward before `up` turned it on, restored by `down`.
    pub ip_forward_before: Option<String>,
    /// Interfaces that face clients, with port publishing attached to their ingress.
    #[serde(default)]
    pub externals: BTreeSet<String>,
    /// Published ports, stored as the fewest specs that describe them.
    #[serde(default)]
    pub publishes: Publishes,
    /// `up --masquerade-exclude`: destinations containers reach with their own address
    /// (beside the netpath networks, always excluded).
    #[serde(default)]
    pub masquerade_exclude: BTreeSet<Subnet>,
    /// `up --masquerade-ports`; None: the datapath's default range.
    #[serde(default)]
    pub masquerade_ports: Option<NatPorts>,
    /// `up --conntrack-max`; None: the datapath's default capacity.
    #[serde(default)]
    pub conntrack_max: Option<u32>,
    /// Conntrack entries netpath removed itself (`conntrack flush`, garbage collection):
    /// `stats` subtracts them to tell how many the LRU evicted.
    #[serde(default)]
    pub conntrack_removed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Network {
    /// Identifies the network in the datapath's maps; never 0, never reused while alive.
    pub id: u32,
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    pub bridge: String,
    /// The bridge's ifindex when the datapath was last attached to it (its key in the maps).
    pub ifindex: u32,
    /// False when `up --bridge` adopted a bridge that existed before: netpath never deletes it.
    pub bridge_created: bool,
    /// Whether the containers' new connections to the outside are masqueraded; false routes
    /// them with their own address (`network create --masquerade false`). True in the state
    /// of an older netpath.
    #[serde(default = "yes")]
    pub masquerade: bool,
    /// Routes netpath installed for the network (netpath-cni's `cluster`: other nodes' pod
    /// subnets through those nodes), removed with its last pod, the network and `down`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<InstalledRoute>,
    /// netpath-cni's cluster CIDR while a pod uses the network: excluded from masquerade
    /// beside the user's exclusions (which `up --masquerade-exclude` alone changes), so that
    /// pods keep their address within the cluster. Cleared with the last pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_exclude: Option<Subnet>,
}

/// A route netpath added: `dst` via `via`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledRoute {
    pub dst: Subnet,
    pub via: Ipv4Addr,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "mode", content = "target")]
pub enum NetMode {
    /// Own namespace with one interface per network.
    Bridge,
    /// Own namespace with only `lo`.
    None,
    /// No namespace of its own: the scope's namespace.
    Host,
    /// Shares the namespace of the named container.
    Container(String),
    /// A pod a container runtime wired through netpath-cni: its namespace is the runtime's,
    /// never created or deleted by netpath.
    Cni(CniPod),
    /// A Docker endpoint wired by `netpath docker-plugin`: dockerd moves the interface into
    /// its own sandbox, which netpath neither knows nor ever deletes.
    Docker(DockerEndpoint),
}

/// What identifies a Docker endpoint, and the MAC address its interface has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerEndpoint {
    pub network_id: String,
    pub endpoint_id: String,
    pub mac: String,
    /// The sandbox (network namespace path) Join gave, if the plugin shares dockerd's mount
    /// namespace; dockerd mounts it when the container starts and unmounts it when it removes
    /// the sandbox, even when it does not tell the driver.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

/// What identifies a CNI attachment: the runtime's container id and interface name, and the
/// namespace path it was given (not owned by netpath).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniPod {
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
}

/// `--net`: Docker's network modes.
impl std::str::FromStr for NetMode {
    type Err = ParseError;

    fn from_str(mode: &str) -> Result<NetMode, ParseError> {
        Ok(match mode {
            "bridge" => NetMode::Bridge,
            "none" => NetMode::None,
            "host" => NetMode::Host,
            other => match other.strip_prefix("container:") {
                Some(target) if !target.is_empty() => NetMode::Container(target.to_owned()),
                _ => {
                    return Err(ParseError::NetMode {
                        mode: mode.to_owned(),
                    });
                }
            },
        })
    }
}

impl std::fmt::Display for NetMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetMode::Bridge => f.write_str("bridge"),
            NetMode::None => f.write_str("none"),
            NetMode::Host => f.write_str("host"),
            NetMode::Container(target) => write!(f, "container:{target}"),
            NetMode::Cni(_) => f.write_str("cni"),
            NetMode::Docker(_) => f.write_str("docker"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Container {
    pub mode: NetMode,
    pub endpoints: Vec<Endpoint>,
    /// `--allow-spoofed-source`: the datapath lets the container send from any address and
    /// MAC (it routes other addresses); by default it drops what does not come from the
    /// interface's own. Absent (false) in the state of an older netpath and in `ps` unless
    /// set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_spoofed_source: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoint {
    pub network: String,
    /// The interface inside the container: eth0, eth1, ...
    pub ifname: String,
    /// The veth end on the bridge, in the scope's namespace.
    pub host_veth: String,
    pub ip: Ipv4Addr,
}

impl Container {
    /// Whether the container owns a named network namespace (`/run/netns/<name>`).
    pub fn owns_netns(&self) -> bool {
        matches!(self.mode, NetMode::Bridge | NetMode::None)
    }

    /// The MAC of the container's interface `e`: the one a Docker endpoint was given (Docker
    /// may choose it), else netpath's own from the address.
    pub fn mac(&self, e: &Endpoint) -> [u8; 6] {
        match &self.mode {
            NetMode::Docker(d) => ipam::parse_mac(&d.mac),
            _ => None,
        }
        .unwrap_or_else(|| ipam::mac_for(e.ip))
    }
}

impl State {
    /// Addresses of `network` already in use: its gateway and every container's.
    pub fn taken(&self, network: &str) -> BTreeSet<Ipv4Addr> {
        let gateway = self.networks.get(network).map(|n| n.gateway);
        self.containers
            .values()
            .flat_map(|c| &c.endpoints)
            .filter(|e| e.network == network)
            .map(|e| e.ip)
            .chain(gateway)
            .collect()
    }

    /// The containers with an endpoint on `network`, by name.
    pub fn users<'a>(&'a self, network: &'a str) -> impl Iterator<Item = (&'a str, &'a Container)> {
        self.containers
            .iter()
            .filter(move |(_, c)| c.endpoints.iter().any(|e| e.network == network))
            .map(|(n, c)| (n.as_str(), c))
    }

    /// Containers that use `name`'s network namespace (`--net container:NAME`).
    pub fn sharing(&self, name: &str) -> Vec<String> {
        self.containers
            .iter()
            .filter(|(_, c)| matches!(&c.mode, NetMode::Container(t) if t == name))
            .map(|(n, _)| n.clone())
            .collect()
    }

    pub fn next_network_id(&self) -> u32 {
        self.networks.values().map(|n| n.id).max().unwrap_or(0) + 1
    }

    pub fn network(&self, name: &str) -> Result<&Network> {
        self.networks
            .get(name)
            .with_context(|| format!("no such network: {name}"))
    }

    pub fn container(&self, name: &str) -> Result<&Container> {
        self.containers
            .get(name)
            .with_context(|| format!("no such container: {name}"))
    }
}

/// The scope's state directory, held locked for as long as this value lives.
pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl Store {
    /// Where the scope's state and lock live.
    pub fn dir(scope: &str) -> PathBuf {
        Path::new(RUN_DIR).join(scope)
    }

    pub fn open(scope: &str) -> Result<Store> {
        let dir = Self::dir(scope);
        let path = dir.join("lock");
        // The holder of the lock may remove the whole directory (`remove`): a waiter then holds
        // a lock on a file nobody else can find, so it starts over until the lock it holds is
        // the one at the path.
        loop {
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let lock = Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, e)| e)
                .with_context(|| format!("locking {}", path.display()))?;
            let held = lock.metadata()?.ino();
            if fs::metadata(&path).is_ok_and(|m| m.ino() == held) {
                return Ok(Store { dir, _lock: lock });
            }
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    pub fn load(&self) -> Result<State> {
        Ok(read(&self.path())?.unwrap_or(State {
            version: STATE_VERSION,
            ..State::default()
        }))
    }

    /// The scope's state as last saved, read without taking the lock (saves are atomic
    /// renames, so it is always whole): for a command that only looks and must not hold up
    /// the others for long (`stats --watch`). None when the scope has no state.
    pub fn peek(scope: &str) -> Result<Option<State>> {
        read(&Self::dir(scope).join("state.json"))
    }

    pub fn save(&self, state: &State) -> Result<()> {
        let path = self.path();
        let tmp = self.dir.join("state.json.tmp");
        let mut file = File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        // Compact: the state grows with every container, and every command reads and
        // writes it whole.
        file.write_all(&serde_json::to_vec(state)?)?;
        fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))
    }

    /// Removes the scope's directory: called by `down` once nothing is left.
    pub fn remove(self) -> Result<()> {
        fs::remove_dir_all(&self.dir)
            .with_context(|| format!("removing {}", self.dir.display()))?;
        // The shared parent goes too once the last scope is gone.
        let _ = fs::remove_dir(RUN_DIR);
        Ok(())
    }
}

fn read(path: &Path) -> Result<Option<State>> {
    // Checked as UTF-8 once, which is faster than string by string.
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let state: State = serde_json::from_str(&text)
        .with_context(|| format!("parsing {} (remove it to start over)", path.display()))?;
    if state.version != STATE_VERSION {
        bail!(
            "{} has state version {}, this netpath understands {STATE_VERSION}",
            path.display(),
            state.version
        );
    }
    Ok(Some(state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_modes_parse_and_print_back() {
        for mode in ["bridge", "none", "host", "container:web"] {
            let parsed: NetMode = mode.parse().unwrap();
            assert_eq!(parsed.to_string(), mode);
        }
        for bad in ["", "bridged", "container:", "container"] {
            let err = bad.parse::<NetMode>().unwrap_err();
            assert_eq!(
                err,
                ParseError::NetMode {
                    mode: bad.to_owned()
                }
            );
            assert_eq!(
                err.to_string(),
                format!("invalid network mode {bad:?}: use bridge, none, host or container:NAME")
            );
        }
    }
}
