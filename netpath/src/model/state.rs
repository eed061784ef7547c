//! netpath's record of what it created in one network namespace ("scope"), kept under
//! `/run/netpath/<scope>/`: the host's part (networks, published ports, settings) in
//! `state.json`, and each container in a file of its own under `containers/`, so that a
//! command about one container reads and writes that one alone and costs the same with a
//! thousand beside it. Every command holds the scope's lock from start to end, so concurrent
//! invocations serialize; every write goes to a temporary file renamed into place.
use std::{
    collections::{BTreeMap, BTreeSet, btree_map},
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
    ipam::{self, AddrSet, Subnet},
    masquerade::NatPorts,
    parse::ParseError,
    publish::Publishes,
};

pub const RUN_DIR: &str = "/run/netpath";
/// Present in a scope's directory while a save writes container records and then
/// `state.json`: two writes, so a load that finds it rebuilds the index from the records.
const SAVING: &str = "saving";
/// After a container record's parse error: what removing it means.
const RECORD_ADVICE: &str =
    " (a container's record: mend it, or remove it and netpath forgets the container)";
/// 2: containers in records of their own. A version-1 file (containers inline) is read and
/// saved as 2; an older netpath refuses a version-2 file rather than misread it.
pub const STATE_VERSION: u32 = 2;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub networks: BTreeMap<String, Network>,
    /// Containers as an older netpath kept them, inside this file: read once, then saved as
    /// records of their own.
    #[serde(default, rename = "containers", skip_serializing)]
    inline_containers: BTreeMap<String, Container>,
    /// The containers' records, read as the command needs them.
    #[serde(skip)]
    pub containers: Containers,
    /// For each container whose namespace others share (`--net container:NAME`), their names:
    /// here so that `rm` finds them without reading every record.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sharers: BTreeMap<String, BTreeSet<String>>,
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
    /// The addresses its containers hold (the gateway aside): here so that a new container's
    /// address is chosen without reading every container's record.
    #[serde(default, skip_serializing_if = "AddrSet::is_empty")]
    pub addresses: AddrSet,
}

impl Network {
    /// Whether `ip` is the gateway or a container's.
    pub fn in_use(&self, ip: Ipv4Addr) -> bool {
        ip == self.gateway || self.addresses.contains(ip)
    }

    /// The lowest address no container holds.
    pub fn next_free(&self) -> Result<Ipv4Addr, ipam::IpamError> {
        self.addresses.next_free(&self.subnet, self.gateway)
    }
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
    /// Every container, all records read. What this file knows of them is rebuilt from them,
    /// which repairs any drift a crash between two writes left.
    pub fn all_containers(&mut self) -> Result<&BTreeMap<String, Container>> {
        self.readable_containers()?;
        if let Some(why) = self.containers.unreadable.values().next() {
            bail!("{why}");
        }
        Ok(&self.containers.map)
    }

    /// [`State::all_containers`] for a teardown, which goes on past what it cannot read: the
    /// containers whose records read ([`Containers::unreadable`] tells why the others did not).
    pub fn readable_containers(&mut self) -> Result<&BTreeMap<String, Container>> {
        if !self.containers.complete {
            self.containers.read_all()?;
            self.reindex();
        }
        Ok(&self.containers.map)
    }

    /// Records a network. Containers a `down` could not remove from an earlier network of the
    /// same name keep their addresses on it.
    pub fn add_network(&mut self, name: &str, net: Network) -> Result<()> {
        self.networks.insert(name.to_owned(), net);
        self.containers.read_all()?;
        self.reindex();
        Ok(())
    }

    /// The containers with an endpoint on `network`, by name. Reads every record.
    pub fn users<'a>(
        &'a mut self,
        network: &'a str,
    ) -> Result<impl Iterator<Item = (&'a str, &'a Container)>> {
        Ok(self
            .all_containers()?
            .iter()
            .filter(move |(_, c)| c.endpoints.iter().any(|e| e.network == network))
            .map(|(n, c)| (n.as_str(), c)))
    }

    /// Containers that use `name`'s network namespace (`--net container:NAME`).
    pub fn sharing(&self, name: &str) -> Vec<String> {
        self.sharers
            .get(name)
            .map_or_else(Vec::new, |s| s.iter().cloned().collect())
    }

    pub fn next_network_id(&self) -> u32 {
        self.networks.values().map(|n| n.id).max().unwrap_or(0) + 1
    }

    pub fn network(&self, name: &str) -> Result<&Network> {
        self.networks
            .get(name)
            .with_context(|| format!("no such network: {name}"))
    }

    /// The container's record, read if this command has not yet.
    pub fn container(&mut self, name: &str) -> Result<&Container> {
        self.containers
            .get(name)?
            .with_context(|| format!("no such container: {name}"))
    }

    /// Records a new container, with its addresses on their networks.
    pub fn add_container(&mut self, name: &str, c: Container) {
        self.index(name, &c, true);
        self.containers.put(name, Some(c));
    }

    /// Forgets a container; its addresses become free.
    pub fn remove_container(&mut self, name: &str) -> Result<Option<Container>> {
        let c = self.containers.get(name)?.cloned();
        if let Some(c) = &c {
            self.index(name, c, false);
            self.containers.put(name, None);
        }
        Ok(c)
    }

    /// Adds an interface to a container (`connect`).
    pub fn add_endpoint(&mut self, name: &str, e: Endpoint) -> Result<()> {
        let mut c = self.container(name)?.clone();
        c.endpoints.push(e);
        // Indexing is idempotent: what the container held already stays as it was.
        self.add_container(name, c);
        Ok(())
    }

    /// Keeps what this file knows of `c` (addresses, sharers) in step with its record.
    fn index(&mut self, name: &str, c: &Container, add: bool) {
        for e in &c.endpoints {
            if let Some(net) = self.networks.get_mut(&e.network) {
                match add {
                    true => net.addresses.insert(e.ip),
                    false => net.addresses.remove(e.ip),
                }
            }
        }
        if let NetMode::Container(target) = &c.mode {
            let sharers = self.sharers.entry(target.clone()).or_default();
            match add {
                true => sharers.insert(name.to_owned()),
                false => sharers.remove(name),
            };
            if sharers.is_empty() {
                self.sharers.remove(target);
            }
        }
    }

    /// Rebuilds what this file knows of the containers from their records, all read.
    fn reindex(&mut self) {
        // With a record that does not read, what the index holds of it is all there is: it
        // is kept, so that its addresses are not given out again.
        if self.containers.unreadable.is_empty() {
            for net in self.networks.values_mut() {
                net.addresses.clear();
            }
            self.sharers.clear();
        }
        let all = std::mem::take(&mut self.containers.map);
        for (name, c) in &all {
            self.index(name, c, true);
        }
        self.containers.map = all;
    }
}

/// The containers' records (`containers/<name>.json`), read lazily: a command that names its
/// containers reads those alone, and only one that looks at all of them reads every one.
#[derive(Debug, Default)]
pub struct Containers {
    dir: PathBuf,
    map: BTreeMap<String, Container>,
    /// Whether `map` holds every record.
    complete: bool,
    /// Names already looked for on disk, found (in `map`) or not.
    looked: BTreeSet<String>,
    /// Names whose record `save` writes, or removes when it is not in `map`.
    changed: BTreeSet<String>,
    /// The records that did not read (once all were read), and why.
    unreadable: BTreeMap<String, String>,
}

impl Containers {
    fn path(&self, name: &str) -> Result<PathBuf> {
        // Names are checked where they are made; this keeps a bad one from escaping the
        // directory all the same.
        if name.is_empty() || name.starts_with('.') || name.contains('/') {
            bail!("invalid container name {name:?}");
        }
        if self.dir.as_os_str().is_empty() {
            bail!("container {name}: this state was not loaded from a store");
        }
        Ok(self.dir.join(format!("{name}.json")))
    }

    /// The container's record, if it exists.
    pub fn get(&mut self, name: &str) -> Result<Option<&Container>> {
        if let Some(why) = self.unreadable.get(name) {
            bail!("{why}");
        }
        if !self.complete && !self.looked.contains(name) {
            let path = self.path(name)?;
            if let Some(c) = read_json(&path, RECORD_ADVICE)? {
                self.map.insert(name.to_owned(), c);
            }
            self.looked.insert(name.to_owned());
        }
        Ok(self.map.get(name))
    }

    pub fn contains(&mut self, name: &str) -> Result<bool> {
        Ok(self.get(name)?.is_some())
    }

    /// A record to change in place (what `add_endpoint` and the index do not cover).
    pub fn get_mut(&mut self, name: &str) -> Result<Option<&mut Container>> {
        if self.get(name)?.is_some() {
            self.changed.insert(name.to_owned());
        }
        Ok(self.map.get_mut(name))
    }

    /// The names of the records on disk (temporary files aside).
    fn names_on_disk(&self) -> Result<Vec<String>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.dir.display())),
        };
        let mut names = Vec::new();
        for entry in entries {
            let file = entry?.file_name();
            if let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".json")) {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn read_all(&mut self) -> Result<()> {
        if self.complete {
            return Ok(());
        }
        for name in self.names_on_disk()? {
            if self.looked.contains(&name) {
                continue;
            }
            match self.path(&name).and_then(|p| read_json(&p, RECORD_ADVICE)) {
                Ok(Some(c)) => {
                    self.map.insert(name, c);
                }
                Ok(None) => {}
                Err(e) => {
                    self.unreadable.insert(name, format!("{e:#}"));
                }
            }
        }
        self.complete = true;
        Ok(())
    }

    /// Whether there is no container at all (without reading any record).
    pub fn is_empty(&self) -> Result<bool> {
        if self.complete || !self.map.is_empty() {
            return Ok(self.map.is_empty() && self.unreadable.is_empty());
        }
        // A record this command removed is still on disk until `save`.
        Ok(self
            .names_on_disk()?
            .iter()
            .all(|n| self.changed.contains(n)))
    }

    /// The records that did not read, once all were read: name, and why.
    pub fn unreadable(&self) -> &BTreeMap<String, String> {
        &self.unreadable
    }

    fn put(&mut self, name: &str, c: Option<Container>) {
        self.looked.insert(name.to_owned());
        self.changed.insert(name.to_owned());
        match c {
            Some(c) => self.map.insert(name.to_owned(), c),
            None => self.map.remove(name),
        };
    }

    /// Writes the changed records and removes those of containers gone.
    fn save(&self) -> Result<()> {
        if !self.changed.is_empty() {
            fs::create_dir_all(&self.dir)
                .with_context(|| format!("creating {}", self.dir.display()))?;
        }
        for name in &self.changed {
            let path = self.path(name)?;
            match self.map.get(name) {
                Some(c) => write_json(&path, c)?,
                None => remove_if_present(&path)?,
            }
        }
        Ok(())
    }

    /// Every container, once [`State::all_containers`] has read them.
    pub fn iter(&self) -> btree_map::Iter<'_, String, Container> {
        assert!(self.complete, "containers listed before all were read");
        self.map.iter()
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

    /// The scope's state, no container's record read yet: a command reads those it names
    /// ([`Containers::get`]), or all of them ([`State::all_containers`]) if it needs them.
    pub fn load(&self) -> Result<State> {
        let mut state = read(&self.path())?.unwrap_or(State {
            version: STATE_VERSION,
            ..State::default()
        });
        state.containers.dir = self.dir.join("containers");
        if !state.inline_containers.is_empty() {
            // An older netpath's file: every container is here, and each gets its record.
            let inline = std::mem::take(&mut state.inline_containers);
            state.containers.changed = inline.keys().cloned().collect();
            state.containers.map = inline;
            state.containers.complete = true;
            state.reindex();
        } else if self.dir.join(SAVING).exists() {
            // A save that did not finish: the records and this file's index of them may
            // disagree, so the index is rebuilt from the records.
            state.readable_containers()?;
        }
        Ok(state)
    }

    /// The scope's host state as last saved, read without taking the lock (saves are atomic
    /// renames, so it is always whole): for a command that only looks and must not hold up
    /// the others for long (`stats --watch`). None when the scope has no state.
    pub fn peek(scope: &str) -> Result<Option<State>> {
        read(&Self::dir(scope).join("state.json"))
    }

    /// Writes the changed container records, then the host's part.
    pub fn save(&self, state: &State) -> Result<()> {
        let saving = self.dir.join(SAVING);
        if !state.containers.changed.is_empty() {
            File::create(&saving).with_context(|| format!("creating {}", saving.display()))?;
        }
        state.containers.save()?;
        write_json(&self.path(), state)?;
        remove_if_present(&saving)
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
    let Some(mut state) = read_json::<State>(path, " (remove it to start over)")? else {
        return Ok(None);
    };
    if !(1..=STATE_VERSION).contains(&state.version) {
        bail!(
            "{} has state version {}, this netpath understands {STATE_VERSION}",
            path.display(),
            state.version
        );
    }
    state.version = STATE_VERSION;
    Ok(Some(state))
}

/// The file's value, None if it does not exist; `advice` follows a parse error.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path, advice: &str) -> Result<Option<T>> {
    // Checked as UTF-8 once, which is faster than string by string.
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let value = serde_json::from_str(&text)
        .with_context(|| format!("parsing {}{advice}", path.display()))?;
    Ok(Some(value))
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Compact JSON through a temporary file renamed into place, so that a reader never sees
/// half of it.
fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(&serde_json::to_vec(value)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
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
