//! The eBPF side as userspace sees it: load the object, pin maps and links under
//! `/sys/fs/bpf/netpath/<scope>/` so the datapath outlives the netpath process, attach
//! programs to interfaces and fill maps. Nothing else in netpath touches aya.
use std::{
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, Map, MapData, PerCpuArray},
    programs::{
        SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
    },
};
use netpath_common::{BridgeInfo, Counter, maps, programs};

/// The eBPF object built by build.rs from netpath-ebpf.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netpath"));

pub const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

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
        Ok(Datapath { dir })
    }

    /// The scope's pins, if it has any.
    pub fn existing(scope: &str) -> Option<Datapath> {
        let dir = Self::pin_dir(scope);
        dir.exists().then_some(Datapath { dir })
    }

    /// Loads the object with every map bound to its pin (created on first use, reused after).
    fn load(&self) -> Result<Ebpf> {
        let mut loader = EbpfLoader::new();
        let pins: Vec<_> = [maps::BRIDGES, maps::COUNTERS]
            .into_iter()
            .map(|name| (name, self.dir.join(name)))
            .collect();
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        loader.load(EBPF_OBJECT).context("loading the eBPF object")
    }

    fn link_pin(&self, bridge: &str) -> PathBuf {
        self.dir.join(format!("link_isolate_{bridge}"))
    }

    /// Registers a bridge and attaches the isolation program to its egress. An existing
    /// link (from an earlier run) is replaced atomically rather than detached first.
    pub fn attach_bridge(&self, bridge: &str, ifindex: u32, network_id: u32) -> Result<()> {
        let mut ebpf = self.load()?;
        let mut bridges: HashMap<_, u32, BridgeInfo> =
            HashMap::try_from(ebpf.take_map(maps::BRIDGES).context("map missing")?)?;
        bridges
            .insert(ifindex, BridgeInfo { network_id }, 0)
            .with_context(|| format!("registering bridge {bridge} in {}", maps::BRIDGES))?;
        let attached = (|| -> Result<()> {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(programs::ISOLATE)
                .context("program missing from the object")?
                .try_into()?;
            prog.load()
                .with_context(|| format!("loading {}", programs::ISOLATE))?;
            let pin = self.link_pin(bridge);
            // Replace the program of a live link in place; a link severed by the bridge's
            // deletion (ENOLINK) cannot be updated and is replaced by a new attachment.
            let replaced = PinnedLink::from_pin(&pin).ok().and_then(|old| {
                let _ = fs::remove_file(&pin);
                let link = FdLink::from(old).try_into().ok()?;
                prog.attach_to_link(link).ok()
            });
            let link_id = match replaced {
                Some(id) => id,
                None => prog.attach(bridge, TcAttachType::Egress)?,
            };
            let link: FdLink = prog.take_link(link_id)?.try_into()?;
            link.pin(&pin)
                .with_context(|| format!("pinning {}", pin.display()))?;
            Ok(())
        })()
        .with_context(|| format!("attaching {} to {bridge}", programs::ISOLATE));
        if attached.is_err() {
            let _ = bridges.remove(&ifindex);
        }
        attached
    }

    /// Detaches the bridge's program (by dropping its pinned link) and forgets the bridge.
    pub fn detach_bridge(&self, bridge: &str, ifindex: u32) -> Result<()> {
        let pin = self.link_pin(bridge);
        match PinnedLink::from_pin(&pin) {
            Ok(link) => drop(
                link.unpin()
                    .with_context(|| format!("unpinning {}", pin.display()))?,
            ),
            Err(_) if !pin.exists() => {}
            Err(e) => return Err(e).with_context(|| format!("opening {}", pin.display())),
        }
        let mut bridges: HashMap<_, u32, BridgeInfo> =
            HashMap::try_from(self.pinned_map(maps::BRIDGES)?)?;
        match bridges.remove(&ifindex) {
            Err(aya::maps::MapError::KeyNotFound) | Ok(()) => Ok(()),
            Err(e) => {
                Err(e).with_context(|| format!("removing bridge {bridge} from {}", maps::BRIDGES))
            }
        }
    }

    fn pinned_map(&self, name: &str) -> Result<Map> {
        let path = self.dir.join(name);
        let data =
            MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
        Ok(Map::from_map_data(data)?)
    }

    /// Per-CPU counters, summed.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>> {
        let counters: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.pinned_map(maps::COUNTERS)?)?;
        Counter::ALL
            .into_iter()
            .map(|c| Ok((c, counters.get(&(c as u32), 0)?.iter().sum())))
            .collect()
    }

    /// Removes every pin of the scope. Links must be gone already (see `detach_bridge`);
    /// whatever is left is reported, not silently unpinned.
    pub fn remove(self) -> Result<()> {
        for name in [maps::BRIDGES, maps::COUNTERS] {
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
