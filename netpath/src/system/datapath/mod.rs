//! The eBPF side as userspace sees it: load the object, pin maps and links under
//! `/sys/fs/bpf/netpath/<scope>/` so the datapath outlives the netpath process, attach
//! programs to interfaces and cgroups, and fill maps. Nothing else in netpath touches aya.
//!
//! `pins` lays out the pin directory, `attach` puts programs on interfaces and cgroups,
//! `maps` fills the maps, and `inspect` reads it all back for `status` and `stats`.
mod attach;
mod error;
mod inspect;
mod maps;
mod pins;
mod sockets;

use std::{cell::RefCell, fs, path::PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::MapInfo,
    programs::{Program, ProgramError},
};
use aya_log::EbpfLogger;
use netpath_common::MAX_CONNTRACK;

use self::{
    error::Result,
    maps::ConfigMap,
    pins::{MAPS, VETH_PROGRAM_PIN, ensure_bpffs, link_of, remove_pin},
};
pub use self::{
    error::{DatapathError, MapLayout},
    inspect::{Attachment, MapFill},
};

/// The eBPF object built by build.rs from netpath-ebpf.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netpath"));

pub struct Datapath {
    dir: PathBuf,
    /// The conntrack table's capacity: what a new table is created with, and what a pinned
    /// one must have.
    conntrack_max: u32,
    /// The object, loaded by the first operation that needs a program or creates the maps,
    /// then reused: each program is loaded (and verified) at most once per `Datapath`.
    loaded: RefCell<Option<Loaded>>,
}

struct Loaded {
    ebpf: Ebpf,
    /// What its programs log at: fixed when the object is loaded.
    log_level: u8,
}

impl Datapath {
    fn new(dir: PathBuf, conntrack_max: u32) -> Datapath {
        Datapath {
            dir,
            conntrack_max,
            loaded: RefCell::new(None),
        }
    }

    /// Prepares the scope's pin directory, mounting bpffs first if the host has none, for a
    /// datapath whose conntrack table holds `conntrack_max` entries.
    pub fn open(scope: &str, conntrack_max: u32) -> Result<Datapath> {
        ensure_bpffs()?;
        let dir = Self::pin_dir(scope);
        fs::create_dir_all(&dir).map_err(DatapathError::io("creating", &dir))?;
        let dp = Datapath::new(dir, conntrack_max);
        dp.check_pins()?;
        Ok(dp)
    }

    /// The scope's pins, if it has any, with the conntrack table they have.
    pub fn existing(scope: &str) -> Option<Datapath> {
        let dir = Self::pin_dir(scope);
        if !dir.exists() {
            return None;
        }
        let pinned = MapInfo::from_pin(dir.join(netpath_common::maps::CONNTRACK));
        let conntrack_max = pinned.map_or(MAX_CONNTRACK, |info| info.max_entries());
        Some(Datapath::new(dir, conntrack_max))
    }

    /// Runs `f` on the object, loading it first if this `Datapath` has not yet.
    fn with_ebpf<T>(&self, f: impl FnOnce(&mut Ebpf) -> Result<T>) -> Result<T> {
        let mut loaded = self.loaded.borrow_mut();
        let loaded = match &mut *loaded {
            Some(loaded) => loaded,
            empty => empty.insert(self.load()?),
        };
        f(&mut loaded.ebpf)
    }

    /// Loads the object with every map bound to its pin (created on first use, reused after).
    /// Its programs are loaded one by one, as they are attached.
    fn load(&self) -> Result<Loaded> {
        let mut loader = EbpfLoader::new();
        let pins: Vec<_> = MAPS
            .iter()
            .map(|(name, _)| (*name, self.dir.join(name)))
            .collect();
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        loader.map_max_entries(netpath_common::maps::CONNTRACK, self.conntrack_max);
        // A read-only global: at "off" the verifier drops every log statement.
        let log_level = self.log_level();
        loader.override_global("AYA_LOG_LEVEL", &log_level, true);
        let ebpf = loader
            .load(EBPF_OBJECT)
            .map_err(DatapathError::LoadObject)?;
        Ok(Loaded { ebpf, log_level })
    }

    /// The log level programs are loaded with (kept in the config map; off before there is
    /// one).
    fn log_level(&self) -> u8 {
        let config = self
            .open_pin::<ConfigMap>(netpath_common::maps::CONFIG)
            .ok()
            .and_then(|(config, _)| config.get(&0, 0).ok());
        config.map_or(0, |c| c.log_level)
    }

    /// Sets the log level of the programs loaded from now on (`up` re-attaches them all).
    pub fn set_log_level(&self, level: u8) -> Result<()> {
        self.update_config(|c| c.log_level = level)?;
        // An object loaded at another level (to create the config map, say) would give its
        // programs that one: the next program loads it again.
        let mut loaded = self.loaded.borrow_mut();
        if loaded.as_ref().is_some_and(|l| l.log_level != level) {
            *loaded = None;
        }
        Ok(())
    }

    /// A reader of the programs' log records (the shared, pinned ring buffer), which it
    /// hands to `logger`.
    pub fn logger<T: log::Log>(&self, logger: T) -> Result<EbpfLogger<T>> {
        let logger = self.with_ebpf(|ebpf| {
            EbpfLogger::init_with_logger(ebpf, logger).map_err(DatapathError::Log)
        })?;
        // The logger took the ring buffer out of the object: programs loaded from now on
        // need a whole one.
        *self.loaded.borrow_mut() = None;
        Ok(logger)
    }

    /// Removes every pin of the scope. Links the state no longer knows of (left by a netpath
    /// that crashed before saving it) are detached with them; anything else left in the
    /// directory is reported, not removed.
    pub fn remove(self) -> Result<()> {
        for name in self.pins()? {
            if let Some(what) = link_of(&name) {
                self.detach(what)?;
            }
        }
        for name in MAPS.iter().map(|m| m.0).chain([VETH_PROGRAM_PIN]) {
            remove_pin(&self.dir.join(name))?;
        }
        if let Some(name) = self.pins()?.into_iter().next() {
            return Err(DatapathError::ForeignPin {
                path: self.dir.join(name),
            });
        }
        fs::remove_dir(&self.dir).map_err(DatapathError::io("removing", &self.dir))?;
        // The shared parent goes too once the last scope is gone.
        let _ = fs::remove_dir(self.dir.parent().expect("scope dir has a parent"));
        Ok(())
    }
}

/// The object's program `name` as `P`, loaded into the kernel unless it already is.
pub(super) fn program<'a, P>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
    load: fn(&mut P) -> Result<(), ProgramError>,
) -> Result<&'a mut P>
where
    &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
{
    let program = ebpf
        .program_mut(name)
        .ok_or(DatapathError::MissingProgram(name))?;
    let loaded = program.fd().is_ok();
    let program: &mut P = program
        .try_into()
        .map_err(DatapathError::program(name, "loading"))?;
    if !loaded {
        load(program).map_err(DatapathError::program(name, "loading"))?;
    }
    Ok(program)
}

/// The clock `bpf_ktime_get_coarse_ns` reads.
pub fn monotonic_coarse_ns() -> Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a timespec to write to.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } != 0 {
        return Err(DatapathError::Syscall {
            what: "reading CLOCK_MONOTONIC_COARSE",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}
