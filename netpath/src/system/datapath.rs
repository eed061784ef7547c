//! The eBPF side as userspace sees it: load the object, pin maps and links under
//! `/sys/fs/bpf/netpath/<scope>/` so the datapath outlives the netpath process, attach
//! programs to interfaces and cgroups, and fill maps. Nothing else in netpath touches aya.
use std::{
    fs,
    io::ErrorKind,
    net::Ipv4Addr,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap, Map, MapData, MapError, MapInfo, PerCpuArray,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{
        CgroupAttachMode, CgroupSockAddr, SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
        tc::{NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle, qdisc_add_clsact},
    },
};
use aya_log::EbpfLogger;
use netpath_common::{
    BridgeInfo, COUNTER_SLOTS, Config, Counter, CtEntry, CtKey, Direction, Endpoint, MAX_CONNTRACK,
    MAX_ENDPOINTS, MAX_EXTERNALS, MAX_LOCAL_ADDRS, MAX_MASQ_EXCLUDE, MAX_NETWORKS, MAX_PUBLISH,
    MAX_SOCK_ORIG, PublishKey, PublishTarget, SockOrig, TRAFFIC_PROTOS, TRAFFIC_SLOTS, Traffic,
    maps, programs, traffic_slot,
};

/// The eBPF object built by build.rs from netpath-ebpf.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netpath"));

pub const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe4a11;
const SO_NETNS_COOKIE: i32 = 71;

/// Every map of the object, all pinned, with the layout this netpath reads and writes:
/// key size, value size and capacity. A pin that differs was made by another netpath
/// version and is refused rather than misread.
const MAPS: [(&str, usize, usize, u32); 12] = [
    (maps::BRIDGES, 4, size_of::<BridgeInfo>(), MAX_NETWORKS),
    (maps::COUNTERS, 4, 8, COUNTER_SLOTS),
    (
        maps::PUBLISH,
        size_of::<PublishKey>(),
        size_of::<PublishTarget>(),
        MAX_PUBLISH,
    ),
    (
        maps::CONNTRACK,
        size_of::<CtKey>(),
        size_of::<CtEntry>(),
        MAX_CONNTRACK,
    ),
    (maps::LOCAL_ADDRS, 4, 4, MAX_LOCAL_ADDRS),
    (maps::SOCK_ORIG, 8, size_of::<SockOrig>(), MAX_SOCK_ORIG),
    (maps::CONFIG, 4, size_of::<Config>(), 1),
    // LPM trie keys carry a 32-bit prefix length before the address.
    (maps::MASQ_EXCLUDE, 8, 4, MAX_MASQ_EXCLUDE),
    (maps::EXTERNALS, 4, 4, MAX_EXTERNALS),
    (maps::TRAFFIC, 4, size_of::<Traffic>(), TRAFFIC_SLOTS),
    (maps::LOGS, 0, 0, maps::LOGS_SIZE),
    (maps::ENDPOINTS, 4, size_of::<Endpoint>(), MAX_ENDPOINTS),
];

/// The container-veth program, pinned so that a container start only attaches it.
const VETH_PROGRAM_PIN: &str = "prog_veth_in";
/// Its filter's priority and handle on every veth: fixed, so that `up` replaces it in place.
const VETH_FILTER: (u16, TcHandle) = (1, TcHandle::new(0, 1));

/// The socket programs and the cgroup hook each goes to.
const SOCK_PROGRAMS: [&str; 4] = [
    programs::CONNECT4,
    programs::SENDMSG4,
    programs::RECVMSG4,
    programs::GETPEERNAME4,
];

pub struct Datapath {
    dir: PathBuf,
}

impl Datapath {
    pub fn pin_dir(scope: &str) -> PathBuf {
        Path::new(BPFFS).join("netpath").join(scope)
    }

    /// Prepares the scope's pin directory, mounting bpffs first if the host has none.
    pub fn open(scope: &str) -> Result<Datapath> {
        ensure_bpffs()?;
        let dir = Self::pin_dir(scope);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let dp = Datapath { dir };
        dp.check_pins()?;
        Ok(dp)
    }

    /// Refuses a pin directory netpath cannot use safely: a file that is not one of its
    /// pins, or a map pinned by a netpath with another layout.
    fn check_pins(&self) -> Result<()> {
        let dir = self.dir.display();
        for entry in fs::read_dir(&self.dir).with_context(|| format!("reading {dir}"))? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.starts_with("link_") || name == VETH_PROGRAM_PIN {
                continue;
            }
            let Some(&(_, key, value, max)) = MAPS.iter().find(|m| m.0 == name) else {
                bail!("{dir}/{name} is not a netpath pin; refusing to use {dir} (move it away)");
            };
            let info = MapInfo::from_pin(self.dir.join(&name))
                .with_context(|| format!("{dir}/{name} is not a pinned map"))?;
            let found = (
                info.key_size() as usize,
                info.value_size() as usize,
                info.max_entries(),
            );
            if found != (key, value, max) {
                bail!(
                    "{dir}/{name} was pinned by another netpath version (key/value/entries \
                     {}/{}/{}, this one uses {key}/{value}/{max}); run `netpath down` with \
                     that version first (its connections are lost either way)",
                    found.0,
                    found.1,
                    found.2
                );
            }
        }
        Ok(())
    }

    /// The scope's pins, if it has any.
    pub fn existing(scope: &str) -> Option<Datapath> {
        let dir = Self::pin_dir(scope);
        dir.exists().then_some(Datapath { dir })
    }

    /// Loads the object with every map bound to its pin (created on first use, reused after).
    fn load(&self) -> Result<Ebpf> {
        let mut loader = EbpfLoader::new();
        let pins: Vec<_> = MAPS
            .iter()
            .map(|(name, ..)| (*name, self.dir.join(name)))
            .collect();
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        // A read-only global: at "off" the verifier drops every log statement.
        let level = self.log_level();
        loader.override_global("AYA_LOG_LEVEL", &level, true);
        loader.load(EBPF_OBJECT).context("loading the eBPF object")
    }

    /// The log level programs are loaded with (kept in the config map; off before there is
    /// one).
    fn log_level(&self) -> u8 {
        let config = MapData::from_pin(self.dir.join(maps::CONFIG))
            .ok()
            .and_then(|data| Map::from_map_data(data).ok())
            .and_then(|map| Array::<_, Config>::try_from(map).ok())
            .and_then(|config| config.get(&0, 0).ok());
        config.map_or(0, |c| c.log_level)
    }

    /// Sets the log level of the programs loaded from now on (`up` re-attaches them all).
    pub fn set_log_level(&self, level: u8) -> Result<()> {
        self.update_config(|c| c.log_level = level)
    }

    /// A reader of the programs' log records (the shared, pinned ring buffer), which it
    /// hands to `logger`.
    pub fn logger<T: log::Log>(&self, logger: T) -> Result<EbpfLogger<T>> {
        let mut ebpf = self.load()?;
        EbpfLogger::init_with_logger(&mut ebpf, logger).context("opening the programs' log")
    }

    fn link_pin(&self, what: &str) -> PathBuf {
        self.dir.join(format!("link_{what}"))
    }

    /// Attaches a TC program and pins its link as `link_<pin>`. An existing live link (from
    /// an earlier run) gets the new program atomically; a link severed by the deletion of its
    /// interface (ENOLINK) is replaced by a new attachment.
    fn attach_tc(&self, prog: &str, ifname: &str, at: TcAttachType, pin: &str) -> Result<()> {
        let mut ebpf = self.load()?;
        let program: &mut SchedClassifier = ebpf
            .program_mut(prog)
            .with_context(|| format!("{prog} missing from the object"))?
            .try_into()?;
        program.load().with_context(|| format!("loading {prog}"))?;
        let pin = self.link_pin(pin);
        let replaced = PinnedLink::from_pin(&pin).ok().and_then(|old| {
            let _ = fs::remove_file(&pin);
            let link = FdLink::from(old).try_into().ok()?;
            program.attach_to_link(link).ok()
        });
        let link_id = match replaced {
            Some(id) => id,
            None => program.attach(ifname, at)?,
        };
        let link: FdLink = program.take_link(link_id)?.try_into()?;
        link.pin(&pin)
            .with_context(|| format!("pinning {}", pin.display()))?;
        Ok(())
    }

    /// Loads the container-veth program and pins it; `attach_veth` then attaches it without
    /// loading the object (which would cost a container start tens of milliseconds of
    /// verification).
    pub fn load_veth_program(&self) -> Result<()> {
        let mut ebpf = self.load()?;
        let program: &mut SchedClassifier = ebpf
            .program_mut(programs::VETH_IN)
            .with_context(|| format!("{} missing from the object", programs::VETH_IN))?
            .try_into()?;
        program
            .load()
            .with_context(|| format!("loading {}", programs::VETH_IN))?;
        let pin = self.dir.join(VETH_PROGRAM_PIN);
        match fs::remove_file(&pin) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", pin.display()));
            }
            _ => {}
        }
        program
            .pin(&pin)
            .with_context(|| format!("pinning {}", pin.display()))
    }

    /// Attaches the container-veth program (pinned by `load_veth_program`, loaded first if it
    /// is not) to the ingress of a container's host-side veth, replacing the program already
    /// there in place. A clsact filter rather than a tcx link: the first tcx link of a device
    /// waits for an RCU grace period (about 10 ms, a container start's whole budget), and
    /// the filter, like the veth, needs no pin: it goes when the veth is deleted.
    pub fn attach_veth(&self, ifname: &str) -> Result<()> {
        let pin = self.dir.join(VETH_PROGRAM_PIN);
        if !pin.exists() {
            self.load_veth_program()?;
        }
        let mut program = SchedClassifier::from_pin(&pin)
            .with_context(|| format!("opening {}", pin.display()))?;
        let (priority, handle) = VETH_FILTER;
        let replaced =
            SchedClassifierLink::attached(ifname, TcAttachType::Ingress, priority, handle, None)
                .ok()
                .and_then(|old| program.attach_to_link(old).ok());
        let link_id = match replaced {
            Some(id) => id,
            None => {
                // A fresh veth has no qdisc yet; an existing clsact is fine.
                let _ = qdisc_add_clsact(ifname);
                let options = NlOptions {
                    priority,
                    handle,
                    ..Default::default()
                };
                program
                    .attach_with_options(
                        ifname,
                        TcAttachType::Ingress,
                        TcAttachOptions::Netlink(options),
                    )
                    .with_context(|| format!("attaching {} to veth {ifname}", programs::VETH_IN))?
            }
        };
        // Dropping the link would detach the filter; it is the veth's to keep.
        std::mem::forget(program.take_link(link_id)?);
        Ok(())
    }

    /// Detaches by unpinning: the pin holds the link's last reference.
    fn detach(&self, pin: &str) -> Result<()> {
        let pin = self.link_pin(pin);
        match PinnedLink::from_pin(&pin) {
            Ok(link) => drop(
                link.unpin()
                    .with_context(|| format!("unpinning {}", pin.display()))?,
            ),
            Err(_) if !pin.exists() => {}
            Err(e) => return Err(e).with_context(|| format!("opening {}", pin.display())),
        }
        Ok(())
    }

    /// Registers a bridge, attaches isolation to its egress and translation to its ingress.
    /// On failure the bridge is left as it was found.
    pub fn attach_bridge(&self, bridge: &str, ifindex: u32, network_id: u32) -> Result<()> {
        let mut bridges: HashMap<_, u32, BridgeInfo> = HashMap::try_from(self.map(maps::BRIDGES)?)?;
        bridges
            .insert(ifindex, BridgeInfo { network_id }, 0)
            .with_context(|| format!("registering bridge {bridge} in {}", maps::BRIDGES))?;
        let attached = self
            .attach_tc(
                programs::ISOLATE,
                bridge,
                TcAttachType::Egress,
                &format!("isolate_{bridge}"),
            )
            .and_then(|()| {
                self.attach_tc(
                    programs::BR_IN,
                    bridge,
                    TcAttachType::Ingress,
                    &format!("br_in_{bridge}"),
                )
            })
            .with_context(|| format!("attaching to bridge {bridge}"));
        if attached.is_err() {
            let _ = self.detach_bridge(bridge, ifindex);
        }
        attached
    }

    /// Detaches the bridge's programs and forgets the bridge.
    pub fn detach_bridge(&self, bridge: &str, ifindex: u32) -> Result<()> {
        self.detach(&format!("isolate_{bridge}"))?;
        self.detach(&format!("br_in_{bridge}"))?;
        let mut bridges: HashMap<_, u32, BridgeInfo> = HashMap::try_from(self.map(maps::BRIDGES)?)?;
        remove_key(&mut bridges, &ifindex)
            .with_context(|| format!("removing bridge {bridge} from {}", maps::BRIDGES))?;
        Ok(())
    }

    /// Attaches translation (published ports in, masquerade replies) to the ingress of an
    /// interface that faces clients, and lets masquerade send out of it.
    pub fn attach_external(&self, ifname: &str, ifindex: u32) -> Result<()> {
        let pin = format!("ext_in_{ifname}");
        self.attach_tc(programs::EXT_IN, ifname, TcAttachType::Ingress, &pin)
            .with_context(|| format!("attaching to external interface {ifname}"))?;
        let mut externals: HashMap<_, u32, u32> = HashMap::try_from(self.map(maps::EXTERNALS)?)?;
        externals
            .insert(ifindex, 1, 0)
            .with_context(|| format!("registering external interface {ifname}"))
    }

    /// The reverse of `attach_external`; `ifindex` is None when it is not known.
    pub fn detach_external(&self, ifname: &str, ifindex: Option<u32>) -> Result<()> {
        if let Some(ifindex) = ifindex {
            let mut externals: HashMap<_, u32, u32> =
                HashMap::try_from(self.map(maps::EXTERNALS)?)?;
            remove_key(&mut externals, &ifindex)
                .with_context(|| format!("unregistering {ifname}"))?;
        }
        self.detach(&format!("ext_in_{ifname}"))
    }

    /// Sets what masquerade leaves alone (destinations in `exclude`: netpath's own subnets
    /// and the user's exclusions) and the source ports NAT may allocate.
    pub fn set_masquerade(&self, exclude: &[(Ipv4Addr, u8)], ports: (u16, u16)) -> Result<()> {
        let mut trie: LpmTrie<_, [u8; 4], u32> = LpmTrie::try_from(self.map(maps::MASQ_EXCLUDE)?)?;
        let wanted: Vec<([u8; 4], u32)> = exclude
            .iter()
            .map(|(addr, len)| (addr.octets(), u32::from(*len)))
            .collect();
        let stale: Vec<Key<[u8; 4]>> = trie
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !wanted.contains(&(k.data(), k.prefix_len())))
            .collect();
        for key in stale {
            let _ = trie.remove(&key);
        }
        for (data, len) in wanted {
            trie.insert(&Key::new(len, data), 1, 0)
                .context("adding a masquerade exclusion")?;
        }
        self.update_config(|c| {
            c.nat_port_min = ports.0;
            c.nat_port_max = ports.1;
        })
    }

    fn update_config(&self, change: impl FnOnce(&mut Config)) -> Result<()> {
        let mut config: Array<_, Config> = Array::try_from(self.map(maps::CONFIG)?)?;
        let mut value = config.get(&0, 0)?;
        change(&mut value);
        config
            .set(0, value, 0)
            .context("writing the datapath configuration")
    }

    /// Removes these conntrack entries (garbage collection); returns how many were there.
    pub fn remove_conntrack(&self, keys: &[CtKey]) -> Result<usize> {
        let mut ct: HashMap<_, CtKey, CtEntry> = HashMap::try_from(self.map(maps::CONNTRACK)?)?;
        let mut removed = 0;
        for key in keys {
            if remove_key(&mut ct, key).context("removing conntrack entries")? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Registers a container interface for direct delivery (see `CT_FLAG_PEER`).
    pub fn set_endpoint(&self, addr: Ipv4Addr, host_ifindex: u32, mac: [u8; 6]) -> Result<()> {
        let mut endpoints: HashMap<_, [u8; 4], Endpoint> =
            HashMap::try_from(self.map(maps::ENDPOINTS)?)?;
        let endpoint = Endpoint {
            host_ifindex,
            mac,
            _pad: [0; 2],
        };
        endpoints
            .insert(addr.octets(), endpoint, 0)
            .with_context(|| format!("registering endpoint {addr}"))
    }

    pub fn remove_endpoint(&self, addr: Ipv4Addr) -> Result<()> {
        let mut endpoints: HashMap<_, [u8; 4], Endpoint> =
            HashMap::try_from(self.map(maps::ENDPOINTS)?)?;
        remove_key(&mut endpoints, &addr.octets())
            .with_context(|| format!("forgetting endpoint {addr}"))?;
        Ok(())
    }

    /// Empties the conntrack table; returns how many entries it removed (the programs may
    /// have deleted some of those it listed meanwhile).
    pub fn flush_conntrack(&self) -> Result<usize> {
        let ct: HashMap<_, CtKey, CtEntry> = HashMap::try_from(self.map(maps::CONNTRACK)?)?;
        let keys: Vec<CtKey> = ct.keys().filter_map(|k| k.ok()).collect();
        self.remove_conntrack(&keys).context("flushing conntrack")
    }

    /// Attaches the socket programs to the root of the cgroup v2 hierarchy, so that every
    /// process of this namespace reaches published ports through local addresses; they only
    /// act on sockets of this namespace (its cookie goes into the config map first).
    pub fn attach_sockets(&self) -> Result<()> {
        let cookie = netns_cookie()?;
        self.update_config(|c| c.netns_cookie = cookie)?;
        let cgroup = cgroup2_root()?;
        let cgroup =
            fs::File::open(&cgroup).with_context(|| format!("opening {}", cgroup.display()))?;
        for prog in SOCK_PROGRAMS {
            let pin = self.link_pin(prog);
            if pin.exists() {
                continue;
            }
            let mut ebpf = self.load()?;
            let program: &mut CgroupSockAddr = ebpf
                .program_mut(prog)
                .with_context(|| format!("{prog} missing from the object"))?
                .try_into()?;
            program.load().with_context(|| format!("loading {prog}"))?;
            // A cgroup link always allows other programs beside it; aya turns AllowMultiple into
            // BPF_F_ALLOW_MULTI, which the kernel refuses on links.
            let id = program
                .attach(&cgroup, CgroupAttachMode::Single)
                .with_context(|| format!("attaching {prog} to the root cgroup"))?;
            let link: FdLink = program.take_link(id)?.try_into()?;
            link.pin(&pin)
                .with_context(|| format!("pinning {}", pin.display()))?;
        }
        Ok(())
    }

    pub fn detach_sockets(&self) -> Result<()> {
        SOCK_PROGRAMS.iter().try_for_each(|prog| self.detach(prog))
    }

    /// Applies a batch of publish changes: removals first, so that a changed target is an
    /// update. Existing connections keep their conntrack entries either way.
    pub fn update_publishes(
        &self,
        add: &[(PublishKey, PublishTarget)],
        remove: &[PublishKey],
    ) -> Result<()> {
        let mut publish: HashMap<_, PublishKey, PublishTarget> =
            HashMap::try_from(self.map(maps::PUBLISH)?)?;
        for key in remove {
            remove_key(&mut publish, key).context("removing a publish")?;
        }
        for (key, target) in add {
            publish.insert(key, target, 0).context("adding a publish")?;
        }
        Ok(())
    }

    /// Replaces the set of local addresses the socket programs know.
    pub fn set_local_addrs(&self, addrs: &[Ipv4Addr]) -> Result<()> {
        let mut local: HashMap<_, [u8; 4], u32> = HashMap::try_from(self.map(maps::LOCAL_ADDRS)?)?;
        let stale: Vec<[u8; 4]> = local
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !addrs.contains(&Ipv4Addr::from(*k)))
            .collect();
        for key in stale {
            let _ = local.remove(&key);
        }
        for addr in addrs {
            local
                .insert(addr.octets(), 1, 0)
                .context("adding a local address")?;
        }
        Ok(())
    }

    /// Every conntrack entry.
    pub fn conntrack(&self) -> Result<Vec<(CtKey, CtEntry)>> {
        let ct: HashMap<_, CtKey, CtEntry> = HashMap::try_from(self.map(maps::CONNTRACK)?)?;
        ct.iter().map(|r| r.map_err(Into::into)).collect()
    }

    fn map(&self, name: &str) -> Result<Map> {
        let path = self.dir.join(name);
        if !path.exists() {
            // First use: loading the object creates and pins every map.
            self.load()?;
        }
        let data =
            MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
        Ok(Map::from_map_data(data)?)
    }

    /// Per-CPU counters, summed.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>> {
        let counters: PerCpuArray<_, u64> = PerCpuArray::try_from(self.pinned(maps::COUNTERS)?.0)?;
        Counter::ALL
            .into_iter()
            .map(|c| Ok((c, counters.get(&(c as u32), 0)?.iter().sum())))
            .collect()
    }

    /// Translated packets and bytes per direction and protocol, summed over CPUs.
    pub fn traffic(&self) -> Result<Vec<(Direction, u8, Traffic)>> {
        let traffic: PerCpuArray<_, Traffic> =
            PerCpuArray::try_from(self.pinned(maps::TRAFFIC)?.0)?;
        let mut out = Vec::new();
        for dir in Direction::ALL {
            for proto in TRAFFIC_PROTOS {
                let sum = traffic.get(&traffic_slot(dir, proto), 0)?.iter().fold(
                    Traffic::default(),
                    |a, t| Traffic {
                        packets: a.packets + t.packets,
                        bytes: a.bytes + t.bytes,
                    },
                );
                out.push((dir, proto, sum));
            }
        }
        Ok(out)
    }

    /// Removes every pin of the scope. Links the state no longer knows of (left by a netpath
    /// that crashed before saving it) are detached with them; anything else left in the
    /// directory is reported, not removed.
    pub fn remove(self) -> Result<()> {
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(what) = name.strip_prefix("link_") {
                self.detach(what)?;
            }
        }
        for name in MAPS.iter().map(|m| m.0).chain([VETH_PROGRAM_PIN]) {
            match fs::remove_file(self.dir.join(name)) {
                Err(e) if e.kind() != ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing pin {name}"));
                }
                _ => {}
            }
        }
        fs::remove_dir(&self.dir).map_err(|e| {
            anyhow!(
                "removing {}: {e} (unexpected pins left behind)",
                self.dir.display()
            )
        })?;
        // The shared parent goes too once the last scope is gone.
        let _ = fs::remove_dir(self.dir.parent().expect("scope dir has a parent"));
        Ok(())
    }
}

/// Removes `key` from `map`; an absent key is no error. Returns whether it was there.
fn remove_key<T: std::borrow::BorrowMut<MapData>, K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<T, K, V>,
    key: &K,
) -> Result<bool, MapError> {
    match map.remove(key) {
        Ok(()) => Ok(true),
        Err(MapError::KeyNotFound) => Ok(false),
        Err(e) => Err(e),
    }
}

fn ensure_bpffs() -> Result<()> {
    let is_bpffs = nix::sys::statfs::statfs(BPFFS)
        .map(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
        .unwrap_or(false);
    if !is_bpffs {
        nix::mount::mount(
            Some("bpf"),
            BPFFS,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .with_context(|| format!("mounting bpffs at {BPFFS}"))?;
    }
    Ok(())
}

/// The clock `bpf_ktime_get_coarse_ns` reads.
pub fn monotonic_coarse_ns() -> Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a timespec to write to.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } != 0 {
        return Err(std::io::Error::last_os_error()).context("reading CLOCK_MONOTONIC_COARSE");
    }
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// The cookie of the current network namespace, as `bpf_get_netns_cookie` returns it.
fn netns_cookie() -> Result<u64> {
    let sock =
        std::net::UdpSocket::bind("0.0.0.0:0").context("opening a socket for the netns cookie")?;
    let mut cookie = 0u64;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: valid socket, and a buffer of the size the kernel writes.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("reading SO_NETNS_COOKIE");
    }
    Ok(cookie)
}

/// Where the cgroup v2 hierarchy is mounted (the unified one on hybrid hosts).
fn cgroup2_root() -> Result<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        if let (Some(_), Some(path), Some("cgroup2")) =
            (fields.next(), fields.next(), fields.next())
        {
            return Ok(PathBuf::from(path));
        }
    }
    bail!("no cgroup v2 hierarchy is mounted; publishing to the host's own sockets needs one")
}

// ------------------------------------------------------------------------------------------
// Inspection: read-only views of the pinned datapath for `netpath status` and `netpath stats`.
// Nothing here loads the object or creates a pin.
// ------------------------------------------------------------------------------------------

/// One pinned link: where it attaches a program, and the kernel's ids of both.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Attachment {
    /// The program's name as the kernel knows it (`np_isolate`, ...).
    pub program: String,
    /// `tc ingress`, `tc egress` or `cgroup <hook>`.
    pub hook: String,
    /// The interface, or the cgroup directory.
    pub target: String,
    /// The pin under the scope's directory: the link's, or for a container veth's filter
    /// (which has no link) the program's.
    pub pin: String,
    pub link_id: Option<u32>,
    pub program_id: u32,
}

/// How full one map is.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MapFill {
    pub name: &'static str,
    pub entries: usize,
    pub max_entries: u32,
}

impl Datapath {
    /// Every pinned link of the scope, sorted by pin name, then the filters on container veths
    /// given as (interface, program ids found in its ingress filters).
    pub fn attachments(&self, veth_filters: &[(String, Vec<u32>)]) -> Result<Vec<Attachment>> {
        let mut pins: Vec<String> = fs::read_dir(&self.dir)
            .with_context(|| format!("listing {}", self.dir.display()))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with("link_"))
            .collect();
        pins.sort();
        let mut out = Vec::new();
        for pin in pins {
            let path = self.dir.join(&pin);
            let link = PinnedLink::from_pin(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let info = FdLink::from(link)
                .info()
                .with_context(|| format!("reading the link info of {}", path.display()))?;
            let (hook, target) = attach_point(&pin)?;
            out.push(Attachment {
                program: String::new(),
                hook,
                target,
                pin,
                link_id: Some(info.id()),
                program_id: info.program_id(),
            });
        }
        for (ifname, ids) in veth_filters {
            for &program_id in ids {
                out.push(Attachment {
                    program: String::new(),
                    hook: "tc ingress".to_owned(),
                    target: ifname.clone(),
                    pin: VETH_PROGRAM_PIN.to_owned(),
                    link_id: None,
                    program_id,
                });
            }
        }
        // The kernel has no lookup of a program's info by id short of iterating them all.
        for prog in aya::programs::loaded_programs() {
            let prog = prog.context("listing the loaded programs")?;
            for a in out.iter_mut().filter(|a| a.program_id == prog.id()) {
                a.program = prog.name_as_str().unwrap_or_default().to_owned();
            }
        }
        Ok(out)
    }

    /// Entries against capacity of every map that fills up (the arrays have fixed slots).
    pub fn map_fill(&self) -> Result<Vec<MapFill>> {
        [
            maps::CONNTRACK,
            maps::PUBLISH,
            maps::BRIDGES,
            maps::LOCAL_ADDRS,
            maps::SOCK_ORIG,
            maps::MASQ_EXCLUDE,
            maps::EXTERNALS,
        ]
        .into_iter()
        .map(|name| {
            let (map, max_entries) = self.pinned(name)?;
            let entries = match name {
                maps::CONNTRACK => count_keys::<CtKey, CtEntry>(map, max_entries)?,
                maps::PUBLISH => count_keys::<PublishKey, PublishTarget>(map, max_entries)?,
                maps::BRIDGES => count_keys::<u32, BridgeInfo>(map, max_entries)?,
                maps::LOCAL_ADDRS => count_keys::<[u8; 4], u32>(map, max_entries)?,
                maps::SOCK_ORIG => count_keys::<u64, SockOrig>(map, max_entries)?,
                maps::EXTERNALS => count_keys::<u32, u32>(map, max_entries)?,
                _ => {
                    let trie: LpmTrie<_, [u8; 4], u32> = LpmTrie::try_from(map)?;
                    trie.keys().take(max_entries as usize).count()
                }
            };
            Ok(MapFill {
                name,
                entries,
                max_entries,
            })
        })
        .collect()
    }

    /// Entries in the conntrack table (both directions of every connection).
    pub fn conntrack_len(&self) -> Result<usize> {
        let (map, max_entries) = self.pinned(maps::CONNTRACK)?;
        count_keys::<CtKey, CtEntry>(map, max_entries)
    }

    /// The conntrack table's capacity, as pinned (not necessarily this build's
    /// `MAX_CONNTRACK`).
    pub fn conntrack_capacity(&self) -> Result<u32> {
        Ok(self.pinned(maps::CONNTRACK)?.1)
    }

    /// A pinned map and its capacity.
    fn pinned(&self, name: &str) -> Result<(Map, u32)> {
        let path = self.dir.join(name);
        let data =
            MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
        let max_entries = data.info()?.max_entries();
        Ok((Map::from_map_data(data)?, max_entries))
    }
}

/// Counts the keys of a hash map by walking them (the kernel keeps no count userspace can
/// read). A walk restarts when its current key is deleted under it, so it is capped at the
/// map's capacity.
fn count_keys<K: aya::Pod, V: aya::Pod>(map: Map, max_entries: u32) -> Result<usize> {
    let map: HashMap<_, K, V> = HashMap::try_from(map)?;
    Ok(map.keys().take(max_entries as usize).count())
}

/// The hook and target of a link, from the name its attach method pinned it under.
fn attach_point(pin: &str) -> Result<(String, String)> {
    let what = pin.strip_prefix("link_").unwrap_or(pin);
    let tc = |hook: &str, ifname: &str| Ok((format!("tc {hook}"), ifname.to_owned()));
    if let Some(bridge) = what.strip_prefix("isolate_") {
        return tc("egress", bridge);
    }
    if let Some(ifname) = what
        .strip_prefix("br_in_")
        .or_else(|| what.strip_prefix("ext_in_"))
    {
        return tc("ingress", ifname);
    }
    match SOCK_PROGRAMS.iter().find(|p| **p == what) {
        Some(prog) => Ok((
            format!("cgroup {}", prog.trim_start_matches("np_")),
            cgroup2_root()?.display().to_string(),
        )),
        None => bail!("unexpected link pin {pin}"),
    }
}
