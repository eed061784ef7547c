//! Read-only views of the pinned datapath for `netpath status`, `stats` and `conntrack`.
//! Nothing here loads the object or creates a pin.
use std::{
    fs,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{
    maps::{HashMap, MapData, MapInfo, PerCpuArray, lpm_trie::LpmTrie},
    programs::links::{FdLink, PinnedLink},
};
use netpath_common::{
    BridgeInfo, Counter, CtEntry, CtKey, Direction, FragKey, PublishKey, PublishTarget, SockOrig,
    SourceGuard, TRAFFIC_PROTOS, Traffic, maps, traffic_slot,
};

use super::{
    Datapath,
    error::{DatapathError, Result},
    maps::Conntrack,
    pins::{VETH_PROGRAM_PIN, link_of},
    sockets::{SOCK_PROGRAMS, cgroup2_root},
};

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

/// How full one map is, and what it costs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MapFill {
    pub name: &'static str,
    pub entries: usize,
    pub max_entries: u32,
    /// The memory the kernel charges for it (hash maps are allocated whole, full or not).
    pub memory_bytes: u64,
}

impl Datapath {
    /// Every pinned link of the scope, sorted by pin name, then the filters on container veths
    /// given as (interface, program ids found in its ingress filters).
    pub fn attachments(&self, veth_filters: &[(String, Vec<u32>)]) -> Result<Vec<Attachment>> {
        let mut pins: Vec<String> = self.pins()?;
        pins.retain(|name| link_of(name).is_some());
        pins.sort();
        let mut out = Vec::new();
        for pin in pins {
            let path = self.dir.join(&pin);
            let link =
                PinnedLink::from_pin(&path).map_err(DatapathError::link("opening", &path))?;
            let info = FdLink::from(link)
                .info()
                .map_err(DatapathError::link("reading the link info of", &path))?;
            let Some((hook, target)) = attach_point(&pin)? else {
                return Err(DatapathError::ForeignPin { path });
            };
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
            let prog = prog.map_err(DatapathError::program("the loaded programs", "listing"))?;
            for a in out.iter_mut().filter(|a| a.program_id == prog.id()) {
                a.program = prog.name_as_str().unwrap_or_default().to_owned();
            }
        }
        Ok(out)
    }

    /// Entries against capacity of every map that fills up (the arrays have fixed slots).
    pub fn map_fill(&self) -> Result<Vec<MapFill>> {
        fn fill<K: aya::Pod, V: aya::Pod>(dp: &Datapath, name: &'static str) -> Result<MapFill> {
            let (map, max_entries) = dp.open_pin::<HashMap<MapData, K, V>>(name)?;
            let entries = map.keys().take(max_entries as usize).count();
            Ok(MapFill {
                name,
                entries,
                max_entries,
                memory_bytes: dp.memory(name)?,
            })
        }
        let (trie, max_entries) =
            self.open_pin::<LpmTrie<MapData, [u8; 4], u32>>(maps::MASQ_EXCLUDE)?;
        let masq_exclude = MapFill {
            name: maps::MASQ_EXCLUDE,
            entries: trie.keys().take(max_entries as usize).count(),
            max_entries,
            memory_bytes: self.memory(maps::MASQ_EXCLUDE)?,
        };
        Ok(vec![
            fill::<CtKey, CtEntry>(self, maps::CONNTRACK)?,
            fill::<PublishKey, PublishTarget>(self, maps::PUBLISH)?,
            fill::<u32, BridgeInfo>(self, maps::BRIDGES)?,
            fill::<[u8; 4], u32>(self, maps::LOCAL_ADDRS)?,
            fill::<u64, SockOrig>(self, maps::SOCK_ORIG)?,
            masq_exclude,
            fill::<u32, u32>(self, maps::EXTERNALS)?,
            fill::<FragKey, CtKey>(self, maps::FRAGS)?,
            fill::<u32, SourceGuard>(self, maps::SOURCES)?,
        ])
    }

    /// The memory the kernel charges for a pinned map: `memlock` in its fdinfo.
    fn memory(&self, name: &'static str) -> Result<u64> {
        let info = MapInfo::from_pin(self.dir.join(name))
            .map_err(DatapathError::map(name, "reading its info"))?;
        let fd = info.fd().map_err(DatapathError::map(name, "opening it"))?;
        let fdinfo = format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd());
        let text = fs::read_to_string(&fdinfo).map_err(DatapathError::io("reading", &fdinfo))?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0))
    }

    /// Entries in the conntrack table (both directions of every connection). A walk restarts
    /// when its current key is deleted under it, so it is capped at the map's capacity.
    pub fn conntrack_len(&self) -> Result<usize> {
        let (ct, max_entries) = self.open_pin::<Conntrack>(maps::CONNTRACK)?;
        Ok(ct.keys().take(max_entries as usize).count())
    }

    /// The conntrack table's capacity, as pinned (not necessarily this build's
    /// `MAX_CONNTRACK`).
    pub fn conntrack_capacity(&self) -> Result<u32> {
        Ok(self.open_pin::<Conntrack>(maps::CONNTRACK)?.1)
    }

    /// Every conntrack entry.
    pub fn conntrack(&self) -> Result<Vec<(CtKey, CtEntry)>> {
        let (ct, _) = self.open_pin::<Conntrack>(maps::CONNTRACK)?;
        ct.iter()
            .collect::<Result<_, _>>()
            .map_err(DatapathError::map(maps::CONNTRACK, "reading entries"))
    }

    /// Per-CPU counters, summed.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>> {
        let (counters, _) = self.open_pin::<PerCpuArray<MapData, u64>>(maps::COUNTERS)?;
        Counter::ALL
            .into_iter()
            .map(|c| {
                let values = counters.get(&(c as u32), 0).map_err(DatapathError::map(
                    maps::COUNTERS,
                    format!("reading {}", c.name()),
                ))?;
                Ok((c, values.iter().sum()))
            })
            .collect()
    }

    /// Translated packets and bytes per direction and protocol, summed over CPUs.
    pub fn traffic(&self) -> Result<Vec<(Direction, u8, Traffic)>> {
        let (traffic, _) = self.open_pin::<PerCpuArray<MapData, Traffic>>(maps::TRAFFIC)?;
        let mut out = Vec::new();
        for dir in Direction::ALL {
            for proto in TRAFFIC_PROTOS {
                let slot = traffic_slot(dir, proto);
                let per_cpu = traffic.get(&slot, 0).map_err(DatapathError::map(
                    maps::TRAFFIC,
                    format!("reading slot {slot}"),
                ))?;
                let sum = per_cpu.iter().fold(Traffic::default(), |a, t| Traffic {
                    packets: a.packets + t.packets,
                    bytes: a.bytes + t.bytes,
                    hits: a.hits + t.hits,
                });
                out.push((dir, proto, sum));
            }
        }
        Ok(out)
    }
}

/// The hook and target of a link, from the name its attach method pinned it under; None for
/// a name no attach method gives.
fn attach_point(pin: &str) -> Result<Option<(String, String)>> {
    let what = link_of(pin).unwrap_or(pin);
    let tc = |hook: &str, ifname: &str| Ok(Some((format!("tc {hook}"), ifname.to_owned())));
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
        Some(prog) => Ok(Some((
            format!("cgroup {}", prog.trim_start_matches("np_")),
            cgroup2_root()?.display().to_string(),
        ))),
        None => Ok(None),
    }
}
