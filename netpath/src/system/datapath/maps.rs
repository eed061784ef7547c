//! Typed handles on the pinned maps, and what netpath writes into them: publishes,
//! endpoints, the masquerade trie, the config, local addresses, conntrack removals.
use std::net::Ipv4Addr;

use aya::maps::{
    Array, HashMap, Map, MapData, MapError,
    lpm_trie::{Key, LpmTrie},
};
use netpath_common::{
    BridgeInfo, Config, CtEntry, CtKey, Endpoint, PublishKey, PublishTarget, SOURCE_ANY,
    SourceGuard, maps,
};

use super::{
    Datapath,
    error::{DatapathError, Result},
};

pub(super) type Bridges = HashMap<MapData, u32, BridgeInfo>;
pub(super) type Externals = HashMap<MapData, u32, u32>;
pub(super) type Conntrack = HashMap<MapData, CtKey, CtEntry>;
pub(super) type ConfigMap = Array<MapData, Config>;
type Publish = HashMap<MapData, PublishKey, PublishTarget>;
type LocalAddrs = HashMap<MapData, [u8; 4], u32>;
type Endpoints = HashMap<MapData, [u8; 4], Endpoint>;
type Sources = HashMap<MapData, u32, SourceGuard>;
type MasqExclude = LpmTrie<MapData, [u8; 4], u32>;

impl Datapath {
    /// A pinned map as `M`, with its capacity. Never loads the object nor creates a pin.
    pub(super) fn open_pin<M: TryFrom<Map, Error = MapError>>(
        &self,
        name: &'static str,
    ) -> Result<(M, u32)> {
        let open = || -> Result<(M, u32), MapError> {
            let data = MapData::from_pin(self.dir.join(name))?;
            let max_entries = data.info()?.max_entries();
            Ok((M::try_from(Map::from_map_data(data)?)?, max_entries))
        };
        open().map_err(|source| DatapathError::Map {
            map: name,
            what: format!("opening its pin in {}", self.dir.display()),
            source,
        })
    }

    /// A map to write to as `M`. The first use of a scope loads the object, which creates and
    /// pins every map.
    pub(super) fn map<M: TryFrom<Map, Error = MapError>>(&self, name: &'static str) -> Result<M> {
        if !self.dir.join(name).exists() {
            self.with_ebpf(|_| Ok(()))?;
        }
        Ok(self.open_pin(name)?.0)
    }

    pub(super) fn update_config(&self, change: impl FnOnce(&mut Config)) -> Result<()> {
        let mut config: ConfigMap = self.map(maps::CONFIG)?;
        let mut value = config.get(&0, 0).map_err(DatapathError::map(
            maps::CONFIG,
            "reading the datapath configuration",
        ))?;
        change(&mut value);
        config.set(0, value, 0).map_err(DatapathError::map(
            maps::CONFIG,
            "writing the datapath configuration",
        ))
    }

    /// Sets what masquerade leaves alone (destinations in `exclude`: netpath's own subnets
    /// and the user's exclusions) and the source ports NAT may allocate.
    pub fn set_masquerade(&self, exclude: &[(Ipv4Addr, u8)], ports: (u16, u16)) -> Result<()> {
        let mut trie: MasqExclude = self.map(maps::MASQ_EXCLUDE)?;
        let wanted: Vec<([u8; 4], u32)> = exclude
            .iter()
            .map(|(addr, len)| (addr.octets(), u32::from(*len)))
            .collect();
        let listed: Vec<Key<[u8; 4]>> =
            trie.keys()
                .collect::<Result<_, _>>()
                .map_err(DatapathError::map(
                    maps::MASQ_EXCLUDE,
                    "listing the exclusions",
                ))?;
        for key in listed
            .iter()
            .filter(|k| !wanted.contains(&(k.data(), k.prefix_len())))
        {
            absent_ok(trie.remove(key)).map_err(DatapathError::map(
                maps::MASQ_EXCLUDE,
                format!(
                    "removing {}/{}",
                    Ipv4Addr::from(key.data()),
                    key.prefix_len()
                ),
            ))?;
        }
        for (data, len) in wanted {
            trie.insert(&Key::new(len, data), 1, 0)
                .map_err(DatapathError::map(
                    maps::MASQ_EXCLUDE,
                    "adding an exclusion",
                ))?;
        }
        self.update_config(|c| {
            c.nat_port_min = ports.0;
            c.nat_port_max = ports.1;
        })
    }

    /// Applies a batch of publish changes: removals first, so that a changed target is an
    /// update. Existing connections keep their conntrack entries either way.
    pub fn update_publishes(
        &self,
        add: &[(PublishKey, PublishTarget)],
        remove: &[PublishKey],
    ) -> Result<()> {
        let mut publish: Publish = self.map(maps::PUBLISH)?;
        for key in remove {
            remove_key(&mut publish, key)
                .map_err(DatapathError::map(maps::PUBLISH, "removing a publish"))?;
        }
        for (key, target) in add {
            publish
                .insert(key, target, 0)
                .map_err(DatapathError::map(maps::PUBLISH, "adding a publish"))?;
        }
        Ok(())
    }

    /// The local addresses the socket programs know (none before the map is pinned).
    pub fn local_addrs(&self) -> Result<Vec<Ipv4Addr>> {
        if !self.dir.join(maps::LOCAL_ADDRS).exists() {
            return Ok(vec![]);
        }
        let (local, _) = self.open_pin::<LocalAddrs>(maps::LOCAL_ADDRS)?;
        list_local_addrs(&local)
    }

    /// Replaces the set of local addresses the socket programs know.
    pub fn set_local_addrs(&self, addrs: &[Ipv4Addr]) -> Result<()> {
        let mut local: LocalAddrs = self.map(maps::LOCAL_ADDRS)?;
        for addr in list_local_addrs(&local)?
            .into_iter()
            .filter(|a| !addrs.contains(a))
        {
            remove_key(&mut local, &addr.octets()).map_err(DatapathError::map(
                maps::LOCAL_ADDRS,
                format!("removing {addr}"),
            ))?;
        }
        for addr in addrs {
            local
                .insert(addr.octets(), 1, 0)
                .map_err(DatapathError::map(
                    maps::LOCAL_ADDRS,
                    format!("adding {addr}"),
                ))?;
        }
        Ok(())
    }

    /// Registers a container interface for direct delivery (see `CT_FLAG_PEER`), on the
    /// veth `host_ifindex` of bridge `bridge_ifindex`.
    pub fn set_endpoint(
        &self,
        addr: Ipv4Addr,
        host_ifindex: u32,
        bridge_ifindex: u32,
        mac: [u8; 6],
    ) -> Result<()> {
        let mut endpoints: Endpoints = self.map(maps::ENDPOINTS)?;
        let endpoint = Endpoint {
            host_ifindex,
            bridge_ifindex,
            mac,
            _pad: [0; 2],
        };
        endpoints
            .insert(addr.octets(), endpoint, 0)
            .map_err(DatapathError::map(
                maps::ENDPOINTS,
                format!("registering endpoint {addr}"),
            ))
    }

    /// Sets the only source (`addr`, `mac`) the container behind the host-side veth
    /// `host_ifindex` may send from, or with `any` lets it send from every source (a
    /// container that routes other addresses). Set before the veth's program is attached,
    /// which lets a veth without an entry pass.
    pub fn set_source(
        &self,
        host_ifindex: u32,
        addr: Ipv4Addr,
        mac: [u8; 6],
        any: bool,
    ) -> Result<()> {
        let mut sources: Sources = self.map(maps::SOURCES)?;
        let guard = SourceGuard {
            addr: addr.octets(),
            mac,
            flags: if any { SOURCE_ANY } else { 0 },
            _pad: 0,
        };
        sources
            .insert(host_ifindex, guard, 0)
            .map_err(DatapathError::map(
                maps::SOURCES,
                format!("setting the source of endpoint {addr}"),
            ))
    }

    /// The registration of `addr` (host-side ifindex and MAC), if there is one.
    pub fn endpoint(&self, addr: Ipv4Addr) -> Result<Option<(u32, [u8; 6])>> {
        let endpoints: Endpoints = self.map(maps::ENDPOINTS)?;
        let found = get_key(&endpoints, &addr.octets()).map_err(DatapathError::map(
            maps::ENDPOINTS,
            format!("reading endpoint {addr}"),
        ))?;
        Ok(found.map(|e| (e.host_ifindex, e.mac)))
    }

    /// Forgets a container interface: its delivery entry, and the source entry of its veth.
    pub fn remove_endpoint(&self, addr: Ipv4Addr) -> Result<()> {
        if let Some((host_ifindex, _)) = self.endpoint(addr)? {
            self.forget_source(host_ifindex, addr)?;
        }
        let mut endpoints: Endpoints = self.map(maps::ENDPOINTS)?;
        remove_key(&mut endpoints, &addr.octets()).map_err(DatapathError::map(
            maps::ENDPOINTS,
            format!("forgetting endpoint {addr}"),
        ))?;
        Ok(())
    }

    /// Removes the source entry of the veth `host_ifindex` if it is `addr`'s: only the
    /// veth's own, as its ifindex may belong to a newer veth by now.
    pub fn forget_source(&self, host_ifindex: u32, addr: Ipv4Addr) -> Result<()> {
        let mut sources: Sources = self.map(maps::SOURCES)?;
        let forgetting = || format!("forgetting the source of endpoint {addr}");
        let found = get_key(&sources, &host_ifindex)
            .map_err(DatapathError::map(maps::SOURCES, forgetting()))?;
        if found.is_some_and(|g| g.addr == addr.octets()) {
            remove_key(&mut sources, &host_ifindex)
                .map_err(DatapathError::map(maps::SOURCES, forgetting()))?;
        }
        Ok(())
    }

    /// Removes these conntrack entries (garbage collection); returns how many were there.
    pub fn remove_conntrack(&self, keys: &[CtKey]) -> Result<usize> {
        let mut ct: Conntrack = self.map(maps::CONNTRACK)?;
        let mut removed = 0;
        for key in keys {
            if remove_key(&mut ct, key)
                .map_err(DatapathError::map(maps::CONNTRACK, "removing entries"))?
            {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Empties the conntrack table; returns how many entries it removed (the programs may
    /// have deleted some of those it listed meanwhile).
    pub fn flush_conntrack(&self) -> Result<usize> {
        let ct: Conntrack = self.map(maps::CONNTRACK)?;
        let keys: Vec<CtKey> = ct
            .keys()
            .collect::<Result<_, _>>()
            .map_err(DatapathError::map(maps::CONNTRACK, "listing the entries"))?;
        self.remove_conntrack(&keys)
    }
}

/// The local addresses in the map: all of them, or an error (a key listing that fails
/// halfway would otherwise look like a shorter list).
fn list_local_addrs(local: &LocalAddrs) -> Result<Vec<Ipv4Addr>> {
    local
        .keys()
        .map(|k| k.map(Ipv4Addr::from))
        .collect::<Result<_, _>>()
        .map_err(DatapathError::map(
            maps::LOCAL_ADDRS,
            "listing the addresses",
        ))
}

/// The value under `key` in `map`, if there is one; an absent key is no error.
fn get_key<K: aya::Pod, V: aya::Pod>(
    map: &HashMap<MapData, K, V>,
    key: &K,
) -> Result<Option<V>, MapError> {
    match map.get(key, 0) {
        Ok(v) => Ok(Some(v)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes `key` from `map`; an absent key is no error. Returns whether it was there.
pub(super) fn remove_key<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    key: &K,
) -> Result<bool, MapError> {
    absent_ok(map.remove(key))
}

/// A removal's result, an absent key being no error; whether the key was there.
fn absent_ok(removed: Result<(), MapError>) -> Result<bool, MapError> {
    match removed {
        Ok(()) => Ok(true),
        // aya reports a missing key on delete as the syscall's ENOENT.
        Err(MapError::SyscallError(e)) if e.io_error.kind() == std::io::ErrorKind::NotFound => {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}
