//! The pin directory `/sys/fs/bpf/netpath/<scope>/`: which pins belong there, the layout
//! every pinned map must have, and bpffs itself.
use std::{
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
};

use aya::maps::MapInfo;
use netpath_common::{
    BridgeInfo, COUNTER_SLOTS, Config, CtEntry, CtKey, Endpoint, FragKey, MAX_CONNTRACK,
    MAX_ENDPOINTS, MAX_EXTERNALS, MAX_FRAGS, MAX_LOCAL_ADDRS, MAX_MASQ_EXCLUDE, MAX_NETWORKS,
    MAX_PUBLISH, MAX_SOCK_ORIG, PublishKey, PublishTarget, SockOrig, SourceGuard, TRAFFIC_SLOTS,
    Traffic, maps,
};

use super::{
    Datapath,
    error::{DatapathError, MapLayout, Result},
};

const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

const fn layout(key: usize, value: usize, entries: u32) -> MapLayout {
    MapLayout {
        key,
        value,
        entries,
    }
}

/// Every map of the object, all pinned, with the layout this netpath reads and writes. A pin
/// that differs was made by another netpath version and is refused rather than misread. The
/// conntrack table's capacity is the default here; each datapath sets its own.
pub(super) const MAPS: [(&str, MapLayout); 14] = [
    (
        maps::BRIDGES,
        layout(4, size_of::<BridgeInfo>(), MAX_NETWORKS),
    ),
    (maps::COUNTERS, layout(4, 8, COUNTER_SLOTS)),
    (
        maps::PUBLISH,
        layout(
            size_of::<PublishKey>(),
            size_of::<PublishTarget>(),
            MAX_PUBLISH,
        ),
    ),
    (
        maps::CONNTRACK,
        layout(size_of::<CtKey>(), size_of::<CtEntry>(), MAX_CONNTRACK),
    ),
    (maps::LOCAL_ADDRS, layout(4, 4, MAX_LOCAL_ADDRS)),
    (
        maps::SOCK_ORIG,
        layout(8, size_of::<SockOrig>(), MAX_SOCK_ORIG),
    ),
    (maps::CONFIG, layout(4, size_of::<Config>(), 1)),
    // LPM trie keys carry a 32-bit prefix length before the address.
    (maps::MASQ_EXCLUDE, layout(8, 4, MAX_MASQ_EXCLUDE)),
    (maps::EXTERNALS, layout(4, 4, MAX_EXTERNALS)),
    (
        maps::TRAFFIC,
        layout(4, size_of::<Traffic>(), TRAFFIC_SLOTS),
    ),
    (maps::LOGS, layout(0, 0, maps::LOGS_SIZE)),
    (
        maps::ENDPOINTS,
        layout(4, size_of::<Endpoint>(), MAX_ENDPOINTS),
    ),
    (
        maps::FRAGS,
        layout(size_of::<FragKey>(), size_of::<CtKey>(), MAX_FRAGS),
    ),
    (
        maps::SOURCES,
        layout(4, size_of::<SourceGuard>(), MAX_ENDPOINTS),
    ),
];

/// The container-veth program, pinned so that a container start only attaches it.
pub(super) const VETH_PROGRAM_PIN: &str = "prog_veth_in";
/// Links are pinned as `link_<what>`.
const LINK_PREFIX: &str = "link_";

/// What a link pin is named after (`isolate_<bridge>`, a socket program, ...), if it is one.
pub(super) fn link_of(pin: &str) -> Option<&str> {
    pin.strip_prefix(LINK_PREFIX)
}

impl Datapath {
    pub fn pin_dir(scope: &str) -> PathBuf {
        Path::new(BPFFS).join("netpath").join(scope)
    }

    pub(super) fn link_pin(&self, what: &str) -> PathBuf {
        self.dir.join(format!("{LINK_PREFIX}{what}"))
    }

    /// The names in the pin directory.
    pub(super) fn pins(&self) -> Result<Vec<String>> {
        let entries = fs::read_dir(&self.dir).map_err(DatapathError::io("listing", &self.dir))?;
        entries
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()
            .map_err(DatapathError::io("listing", &self.dir))
    }

    /// Refuses a pin directory netpath cannot use safely: a file that is not one of its
    /// pins, or a map pinned by a netpath with another layout.
    pub(super) fn check_pins(&self) -> Result<()> {
        for name in self.pins()? {
            if link_of(&name).is_some() || name == VETH_PROGRAM_PIN {
                continue;
            }
            let path = self.dir.join(&name);
            let Some(&(map, mut expected)) = MAPS.iter().find(|m| m.0 == name) else {
                return Err(DatapathError::ForeignPin { path });
            };
            if map == maps::CONNTRACK {
                expected.entries = self.conntrack_max;
            }
            let info = MapInfo::from_pin(&path).map_err(DatapathError::map(
                map,
                format!("{} is not a pinned map", path.display()),
            ))?;
            let found = layout(
                info.key_size() as usize,
                info.value_size() as usize,
                info.max_entries(),
            );
            if map == maps::CONNTRACK
                && (found.key, found.value) == (expected.key, expected.value)
                && found.entries != expected.entries
            {
                return Err(DatapathError::ConntrackSize {
                    pinned: found.entries,
                    wanted: expected.entries,
                });
            }
            if found != expected {
                return Err(DatapathError::OtherLayout {
                    path,
                    found,
                    expected,
                });
            }
        }
        Ok(())
    }
}

/// Removes a pin; one that is not there is no error.
pub(super) fn remove_pin(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(DatapathError::io("removing", path)(e)),
        _ => Ok(()),
    }
}

pub(super) fn ensure_bpffs() -> Result<()> {
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
        .map_err(|e| DatapathError::io("mounting bpffs at", BPFFS)(e.into()))?;
    }
    Ok(())
}
