//! Network namespace plumbing: named namespaces under [`NETNS_RUN_DIR`] (compatible with
//! `ip netns`) and switching the current thread between namespaces.
//!
//! Everything here acts on the calling *thread* (setns/unshare are per-thread), which is what
//! the single-threaded runtime needs: switch, do the namespace-sensitive syscall (e.g. open a
//! socket), switch back.

use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::stat::{Mode, fstat};
use nix::sys::statfs::{NSFS_MAGIC, fstatfs};
use thiserror::Error;

/// Where named network namespaces are bind-mounted; the iproute2 location so `ip netns` sees them.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// `/proc/self` would name the thread-group leader's namespace, not the calling thread's.
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

#[derive(Debug, Error)]
pub enum NetnsError {
    #[error("invalid network namespace name {name:?}")]
    InvalidName { name: String },
    #[error("network namespace {name} does not exist")]
    NotFound { name: String },
    #[error("network namespace {name} already exists")]
    AlreadyExists { name: String },
    /// A leftover file that is not (or no longer) a namespace bind mount.
    #[error("{} is not a network namespace mount", path.display())]
    NotANamespace { path: PathBuf },
    /// A system call failed; `op` says what it was doing ("entering network namespace X").
    #[error("{op}")]
    Syscall {
        op: String,
        #[source]
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, NetnsError>;

/// Names the operation of a failed system call, built only on failure.
trait Op<T> {
    fn op<S: Into<String>>(self, op: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: Into<io::Error>> Op<T> for std::result::Result<T, E> {
    fn op<S: Into<String>>(self, op: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| NetnsError::Syscall {
            op: op().into(),
            source: e.into(),
        })
    }
}

/// An open handle on a network namespace; the namespace stays alive while the handle is open.
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
}

impl Netns {
    /// Opens the named namespace `/run/netns/NAME`.
    pub fn open_named(name: &str) -> Result<Netns> {
        let path = named_path(name)?;
        let opening = || format!("opening network namespace {name}");
        let fd = match open(&path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()) {
            Err(Errno::ENOENT) => {
                return Err(NetnsError::NotFound {
                    name: name.to_owned(),
                });
            }
            r => r.op(opening)?,
        };
        // A leftover unmounted file (e.g. from an interrupted `ip netns add`) would otherwise
        // only fail later, in setns, with a bare EINVAL.
        if fstatfs(&fd).op(opening)?.filesystem_type() != NSFS_MAGIC {
            return Err(NetnsError::NotANamespace { path });
        }
        Ok(Netns { fd })
    }

    /// Opens the namespace at `path`: a bind mount like `/run/netns/X` or a process's
    /// `/proc/PID/ns/net` (what a container runtime hands a CNI plugin).
    pub fn open_path(path: &Path) -> Result<Netns> {
        let opening = || format!("opening network namespace {}", path.display());
        let fd = match open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()) {
            Err(Errno::ENOENT) => {
                return Err(NetnsError::NotFound {
                    name: path.display().to_string(),
                });
            }
            r => r.op(opening)?,
        };
        if fstatfs(&fd).op(opening)?.filesystem_type() != NSFS_MAGIC {
            return Err(NetnsError::NotANamespace {
                path: path.to_owned(),
            });
        }
        Ok(Netns { fd })
    }

    /// Opens the calling thread's current network namespace.
    pub fn current() -> Result<Netns> {
        let fd = open(
            THREAD_NETNS,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .op(|| format!("opening {THREAD_NETNS}"))?;
        Ok(Netns { fd })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The namespace's inode number: two handles refer to the same namespace iff they are equal
    /// (all namespaces live on the single nsfs filesystem).
    pub fn inode(&self) -> Result<u64> {
        Ok(fstat(&self.fd).op(|| "stat of network namespace")?.st_ino)
    }
}

/// The name under [`NETNS_RUN_DIR`] of the calling thread's namespace, if it has one (what
/// `ip netns identify` prints).
pub fn current_name() -> Result<Option<String>> {
    use std::os::unix::fs::MetadataExt as _;
    let current = fstat(Netns::current()?.fd()).op(|| "stat of network namespace")?;
    let Ok(entries) = fs::read_dir(NETNS_RUN_DIR) else {
        return Ok(None);
    };
    Ok(entries.flatten().find_map(|entry| {
        let m = fs::metadata(entry.path()).ok()?;
        (m.ino() == current.st_ino && m.dev() == current.st_dev)
            .then(|| entry.file_name().to_string_lossy().into_owned())
    }))
}

/// Moves the current thread into the named namespace for good (the global `--netns` option,
/// called before any other thread exists so that every thread spawned later inherits it).
pub fn enter_named(name: &str) -> Result<()> {
    let ns = Netns::open_named(name)?;
    setns(ns.fd(), CloneFlags::CLONE_NEWNET).op(|| format!("entering network namespace {name}"))
}

/// Creates a new network namespace and pins it at `/run/netns/NAME` like `ip netns add`, without
/// spawning a process: the current thread unshares into the new namespace just long enough to
/// bind-mount it, then returns to its original namespace.
pub fn create_named(name: &str) -> Result<Netns> {
    let path = named_path(name)?;
    prepare_run_dir()?;
    // O_EXCL makes the existence check and the creation one atomic step, so a concurrent
    // creator of the same name is never clobbered.
    match open(
        &path,
        OFlag::O_RDONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Err(Errno::EEXIST) => {
            return Err(NetnsError::AlreadyExists {
                name: name.to_owned(),
            });
        }
        r => drop(r.op(|| format!("creating {}", path.display()))?),
    }
    let result = bind_new_netns(&path);
    if result.is_err() {
        // Best effort: the mount may or may not have happened.
        let _ = umount2(&path, MntFlags::MNT_DETACH);
        let _ = fs::remove_file(&path);
    }
    result
}

/// Unmounts and removes `/run/netns/NAME` like `ip netns delete`; the namespace itself goes
/// away once nothing else (process, open handle, other mount) holds it. Deleting a namespace
/// that does not exist succeeds, so that cleanup paths can be re-run.
pub fn delete_named(name: &str) -> Result<()> {
    let path = named_path(name)?;
    // MNT_DETACH: do not fail because some process is still using the mount.
    match umount2(&path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (e.g. left over from an interrupted creation).
        Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => {}
        Err(e) => return Err(e).op(|| format!("unmounting network namespace {name}")),
    }
    match fs::remove_file(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r.op(|| format!("removing network namespace {name}")),
    }
}

/// Runs `f` with the current thread in `ns`, then returns the thread to the namespace it was in
/// (whatever `f` returned). Namespace-bound resources created by `f`, such as sockets, keep
/// belonging to `ns`.
pub fn run_in<T>(ns: &Netns, f: impl FnOnce() -> T) -> Result<T> {
    let orig = Netns::current()?;
    setns(ns.fd(), CloneFlags::CLONE_NEWNET).op(|| "entering network namespace")?;
    let out = f();
    restore(&orig)?;
    Ok(out)
}

fn restore(orig: &Netns) -> Result<()> {
    setns(orig.fd(), CloneFlags::CLONE_NEWNET).op(|| "returning to the original network namespace")
}

fn named_path(name: &str) -> Result<PathBuf> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(NetnsError::InvalidName {
            name: name.to_owned(),
        });
    }
    Ok(Path::new(NETNS_RUN_DIR).join(name))
}

/// Makes sure the run directory exists and is a shared mount point, as iproute2 does, so that
/// namespace mounts made here propagate into other mount namespaces (and unmounts too).
///
/// Only the directory's own mount is made shared when it is one already: a namespace mounted
/// under a shared mount is shared by construction, and the recursive change would walk every
/// namespace mounted there, a cost that grows with each container.
fn prepare_run_dir() -> Result<()> {
    fs::create_dir_all(NETNS_RUN_DIR).op(|| format!("creating {NETNS_RUN_DIR}"))?;
    let make_shared = |recursive: bool| {
        let flags = match recursive {
            true => MsFlags::MS_SHARED | MsFlags::MS_REC,
            false => MsFlags::MS_SHARED,
        };
        mount(
            None::<&str>,
            NETNS_RUN_DIR,
            None::<&str>,
            flags,
            None::<&str>,
        )
    };
    match make_shared(false) {
        // EINVAL: not a mount point yet; make it one by bind-mounting it onto itself.
        Err(Errno::EINVAL) => {
            mount(
                Some(NETNS_RUN_DIR),
                NETNS_RUN_DIR,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .op(|| format!("bind-mounting {NETNS_RUN_DIR} onto itself"))?;
            make_shared(true)
        }
        r => r,
    }
    .op(|| format!("making {NETNS_RUN_DIR} a shared mount"))
}

/// Unshares into a fresh namespace, bind-mounts it onto the existing empty file `path` and
/// returns to the original namespace, even if the mount failed.
fn bind_new_netns(path: &Path) -> Result<Netns> {
    let orig = Netns::current()?;
    unshare(CloneFlags::CLONE_NEWNET).op(|| "unsharing a new network namespace")?;
    let mounted = mount(
        Some(THREAD_NETNS),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .op(|| {
        format!(
            "bind-mounting the new network namespace onto {}",
            path.display()
        )
    });
    // Opened before going back, while the new namespace is still the thread's own.
    let new = mounted.and_then(|()| Netns::current());
    restore(&orig)?;
    new
}
