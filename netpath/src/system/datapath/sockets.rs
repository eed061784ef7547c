//! The socket programs: on the root of the cgroup v2 hierarchy, they translate what the
//! namespace's own processes connect to (traffic that never passes a TC hook).
use std::{fs, os::fd::AsRawFd as _, path::PathBuf};

use aya::programs::{CgroupAttachMode, CgroupSockAddr};
use netpath_common::programs;

use super::{
    Datapath,
    attach::pin_link,
    error::{DatapathError, Result},
    program,
};

const SO_NETNS_COOKIE: i32 = 71;

/// The socket programs, each attached to the cgroup hook of its name.
pub(super) const SOCK_PROGRAMS: [&str; 4] = [
    programs::CONNECT4,
    programs::SENDMSG4,
    programs::RECVMSG4,
    programs::GETPEERNAME4,
];

impl Datapath {
    /// Attaches the socket programs to the root of the cgroup v2 hierarchy, so that every
    /// process of this namespace reaches published ports through local addresses; they only
    /// act on sockets of this namespace (its cookie goes into the config map first).
    pub fn attach_sockets(&self) -> Result<()> {
        let cookie = netns_cookie()?;
        self.update_config(|c| c.netns_cookie = cookie)?;
        let root = cgroup2_root()?;
        let cgroup = fs::File::open(&root).map_err(DatapathError::io("opening", &root))?;
        for prog in SOCK_PROGRAMS {
            let pin = self.link_pin(prog);
            if pin.exists() {
                continue;
            }
            self.with_ebpf(|ebpf| {
                let program = program(ebpf, prog, CgroupSockAddr::load)?;
                let attach = |source| DatapathError::Attach {
                    program: prog,
                    target: format!("cgroup {}", root.display()),
                    source,
                };
                // A cgroup link always allows other programs beside it; aya turns
                // AllowMultiple into BPF_F_ALLOW_MULTI, which the kernel refuses on links.
                let id = program
                    .attach(&cgroup, CgroupAttachMode::Single)
                    .map_err(attach)?;
                let link = program.take_link(id).map_err(attach)?;
                pin_link(link.try_into(), pin)
            })?;
        }
        Ok(())
    }

    /// Whether the datapath was brought up (`up`, or a plugin's first use): only that
    /// attaches the socket programs, while `network create` alone just makes pins.
    pub fn is_up(&self) -> bool {
        SOCK_PROGRAMS
            .iter()
            .all(|prog| self.link_pin(prog).exists())
    }

    pub fn detach_sockets(&self) -> Result<()> {
        SOCK_PROGRAMS.iter().try_for_each(|prog| self.detach(prog))
    }
}

/// The cookie of the current network namespace, as `bpf_get_netns_cookie` returns it.
fn netns_cookie() -> Result<u64> {
    let syscall = |source| DatapathError::Syscall {
        what: "reading SO_NETNS_COOKIE",
        source,
    };
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").map_err(syscall)?;
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
        return Err(syscall(std::io::Error::last_os_error()));
    }
    Ok(cookie)
}

/// Where the cgroup v2 hierarchy is mounted (the unified one on hybrid hosts).
pub(super) fn cgroup2_root() -> Result<PathBuf> {
    let mounts = "/proc/self/mounts";
    let mounts = fs::read_to_string(mounts).map_err(DatapathError::io("reading", mounts))?;
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        if let (Some(_), Some(path), Some("cgroup2")) =
            (fields.next(), fields.next(), fields.next())
        {
            return Ok(PathBuf::from(path));
        }
    }
    Err(DatapathError::NoCgroup2)
}
