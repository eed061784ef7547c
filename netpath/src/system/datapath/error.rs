//! What can go wrong in the datapath, each failure with what it happened to. The aya error
//! (or the io error) is the `source`, so a report prints it after the message.
use std::{fmt, io, path::PathBuf};

use aya::{
    EbpfError,
    maps::MapError,
    pin::PinError,
    programs::{ProgramError, links::LinkError},
};

/// A map's shape: key size, value size and capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapLayout {
    pub key: usize,
    pub value: usize,
    pub entries: u32,
}

impl fmt::Display for MapLayout {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}/{}/{}", self.key, self.value, self.entries)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// Something in the pin directory that netpath did not pin there.
    #[error(
        "{} is not a netpath pin; refusing to use the pin directory (move it away)",
        path.display()
    )]
    ForeignPin { path: PathBuf },
    /// A map pinned under one of netpath's names with another layout.
    #[error(
        "{} was pinned by another netpath version (key/value/entries {found}, this one uses \
         {expected}); run `netpath down` with that version first (its connections are lost \
         either way)",
        path.display()
    )]
    OtherLayout {
        path: PathBuf,
        found: MapLayout,
        expected: MapLayout,
    },
    /// The conntrack table is pinned with another capacity than asked for: its size is
    /// fixed at creation, and replacing it would lose every tracked connection.
    #[error(
        "the conntrack table holds {pinned} entries; giving it {wanted} needs `netpath down` \
         first (its tracked connections are lost)"
    )]
    ConntrackSize { pinned: u32, wanted: u32 },
    #[error("loading the eBPF object")]
    LoadObject(#[source] EbpfError),
    #[error("{0} missing from the eBPF object")]
    MissingProgram(&'static str),
    /// Loading, pinning or opening the pin of a program.
    #[error("{what} {program}")]
    Program {
        program: &'static str,
        what: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("attaching {program} to {target}")]
    Attach {
        program: &'static str,
        target: String,
        #[source]
        source: ProgramError,
    },
    /// Opening, converting or reading a link.
    #[error("{what} {}", path.display())]
    Link {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: LinkError,
    },
    #[error("pinning {}", path.display())]
    Pin {
        path: PathBuf,
        #[source]
        source: PinError,
    },
    #[error("{map}: {what}")]
    Map {
        map: &'static str,
        what: String,
        #[source]
        source: MapError,
    },
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A system call on no path (a clock, a socket option).
    #[error("{what}")]
    Syscall {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("no cgroup v2 hierarchy is mounted; publishing to the host's own sockets needs one")]
    NoCgroup2,
    #[error("opening the programs' log")]
    Log(#[source] aya_log::Error),
    /// A step that failed after others had changed something, and the undo of those that
    /// failed too: both told, each with its sources.
    #[error("{failed} (and undoing it: {undo})")]
    Undo { failed: String, undo: String },
}

/// Closures for `map_err` that wrap an aya or io error with what failed, and on what.
impl DatapathError {
    /// `failed`, or, if `undone` (the undo of the steps before it) failed, both.
    pub(super) fn undone(failed: DatapathError, undone: Result<()>) -> DatapathError {
        crate::system::undone(failed, undone, |failed, undo| DatapathError::Undo {
            failed,
            undo,
        })
    }

    pub(super) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        move |source| DatapathError::Io {
            what,
            path: path.into(),
            source,
        }
    }

    pub(super) fn map(map: &'static str, what: impl Into<String>) -> impl FnOnce(MapError) -> Self {
        move |source| DatapathError::Map {
            map,
            what: what.into(),
            source,
        }
    }

    pub(super) fn program(
        program: &'static str,
        what: &'static str,
    ) -> impl FnOnce(ProgramError) -> Self {
        move |source| DatapathError::Program {
            program,
            what,
            source,
        }
    }

    pub(super) fn link(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(LinkError) -> Self {
        move |source| DatapathError::Link {
            path: path.into(),
            what,
            source,
        }
    }

    pub(super) fn pin(path: impl Into<PathBuf>) -> impl FnOnce(PinError) -> Self {
        move |source| DatapathError::Pin {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = DatapathError> = std::result::Result<T, E>;
