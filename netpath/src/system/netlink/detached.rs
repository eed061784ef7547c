//! One rtnetlink request sent from a detached process, for a request whose effect the kernel
//! echoes long before it acknowledges it. Deleting a link is one: the kernel unregisters the
//! link (a veth with its peer, its bridge port and filters), unlists it and echoes the deletion
//! within a few milliseconds, then, still inside the sender's system call, waits in
//! `rcu_barrier()` for 15-30 ms before acknowledging, only to free memory. A thread cannot take
//! that wait: a process is not reaped before all its threads have left the kernel.
use std::{
    ffi::c_uint,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
};

use netlink_packet_route::RouteNetlinkMessage;
use nix::{
    fcntl::OFlag,
    sys::wait::waitpid,
    unistd::{Pid, pipe2},
};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use tokio::io::{Interest, unix::AsyncFd};

/// A netlink route socket in the calling thread's network namespace, bound, so that replies to a
/// request sent on it by another process queue here.
pub(super) fn socket() -> io::Result<OwnedFd> {
    // SAFETY: a plain system call; its result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_nl is valid (nl_pid 0: the kernel picks the port id).
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `addr` is a sockaddr_nl of the size passed, alive for the call.
    let bound = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if bound < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Sends `request` (one serialized message asking for NLM_F_ECHO and an ack) on `sock` from a
/// grandchild process and returns at the first of: the kernel's echo (a message `echoed`
/// accepts), its ack, or its error. The grandchild, which no one waits for, keeps no file of
/// ours but the socket: the caller's stdout, stderr and lock close as usual.
pub(super) async fn request(
    sock: OwnedFd,
    request: &[u8],
    echoed: impl Fn(&RouteNetlinkMessage) -> bool,
) -> io::Result<()> {
    let (report_r, report_w) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    // SAFETY: the child and the grandchild only make system calls on memory that existed
    // before the fork (no allocation, no lock), then _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        send_detached(sock.as_raw_fd(), report_w.as_raw_fd(), request);
    }
    drop(report_w);
    let _reap = Reap(Pid::from_raw(pid));
    // SAFETY: each AsyncFd owns its OwnedFd, which stays open and unchanged until it drops.
    let (sock, report) = unsafe {
        (
            AsyncFd::register_with_interest(sock, Interest::READABLE).map_err(io::Error::from)?,
            AsyncFd::register_with_interest(report_r, Interest::READABLE)
                .map_err(io::Error::from)?,
        )
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            ready = sock.readable() => {
                let mut ready = ready?;
                if let Ok(got) = ready.try_io(|fd| recv(fd.as_raw_fd(), &mut buf))
                    && let Some(outcome) = answer(&buf[..got?], &echoed)
                {
                    return outcome;
                }
            }
            ready = report.readable() => {
                let mut ready = ready?;
                let mut errno = [0u8; 4];
                if let Ok(got) = ready.try_io(|fd| read(fd.as_raw_fd(), &mut errno)) {
                    if got? == errno.len() {
                        return Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)));
                    }
                    // The grandchild is done, so the kernel's replies are all queued.
                    return match recv(sock.as_raw_fd(), &mut buf) {
                        Ok(got) => answer(&buf[..got], &echoed),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                        Err(e) => Some(Err(e)),
                    }
                    .unwrap_or_else(|| Err(io::Error::other("the kernel did not answer")));
                }
            }
        }
    }
}

/// The forked child: forks the process that sends `request`, then exits at once. The sender
/// closes every file but `sock` and `report`, sends, and exits when the kernel is done
/// (reparented, so nothing waits for it). A fork or a send that fails writes its errno to
/// `report`.
fn send_detached(sock: RawFd, report: RawFd, request: &[u8]) -> ! {
    // SAFETY: fork, close_range, send, write and _exit are system calls, safe after a fork;
    // `request` was allocated before it and is only read.
    unsafe {
        let failed = match libc::fork() {
            0 => {
                let (lo, hi) = (sock.min(report) as c_uint, sock.max(report) as c_uint);
                if lo > 0 {
                    libc::close_range(0, lo - 1, 0);
                }
                if hi > lo + 1 {
                    libc::close_range(lo + 1, hi - 1, 0);
                }
                libc::close_range(hi + 1, c_uint::MAX, 0);
                libc::send(sock, request.as_ptr().cast(), request.len(), 0) < 0
            }
            pid => pid < 0,
        };
        if failed {
            let errno = (*libc::__errno_location()).to_ne_bytes();
            libc::write(report, errno.as_ptr().cast(), errno.len());
        }
        libc::_exit(0)
    }
}

/// Waits for the forked child on drop: it exits right after forking the sender.
struct Reap(Pid);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = waitpid(self.0, None);
    }
}

/// The outcome the messages in `buf` settle, if they settle one.
fn answer(
    mut buf: &[u8],
    echoed: &impl Fn(&RouteNetlinkMessage) -> bool,
) -> Option<io::Result<()>> {
    while !buf.is_empty() {
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
        let msg = match msg {
            Ok(msg) => msg,
            Err(e) => return Some(Err(e)),
        };
        match &msg.payload {
            NetlinkPayload::Error(e) => {
                return Some(match e.code {
                    Some(_) => Err(e.to_io()),
                    None => Ok(()),
                });
            }
            NetlinkPayload::InnerMessage(m) if echoed(m) => return Some(Ok(())),
            _ => {}
        }
        let len = (msg.header.length as usize).max(1).next_multiple_of(4);
        buf = buf.get(len..).unwrap_or_default();
    }
    None
}

fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is writable for its length during the call.
    let got = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    usize::try_from(got).map_err(|_| io::Error::last_os_error())
}

fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is writable for its length during the call.
    let got = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(got).map_err(|_| io::Error::last_os_error())
}
