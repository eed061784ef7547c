//! Everything that talks to the kernel: links, addresses and routes over rtnetlink,
//! network namespaces, and the eBPF datapath (programs, links and maps under bpffs).
pub mod datapath;
pub mod netlink;
pub mod netns;

/// `failed`, or, if `undone` (the undo of the steps before it) failed, the error `both`
/// makes of the two, each told with its sources.
fn undone<E: std::error::Error, U: std::error::Error>(
    failed: E,
    undone: Result<(), U>,
    both: impl FnOnce(String, String) -> E,
) -> E {
    match undone {
        Ok(()) => failed,
        Err(undo) => both(chain(&failed), chain(&undo)),
    }
}

/// An error with its sources, "outer: inner: ...", as a report prints it: for an error that
/// has to be told inside another's message.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(source) = next {
        out.push_str(": ");
        out.push_str(&source.to_string());
        next = source.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::{chain, netlink::NetlinkError};

    #[test]
    fn chain_tells_every_source_in_order() {
        let failed = NetlinkError::Kernel {
            op: "setting np0 up".into(),
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        assert_eq!(
            chain(&failed),
            "setting np0 up: Operation not permitted (os error 1)"
        );
        let undo = NetlinkError::NoSuchDevice { name: "np0".into() };
        let both = NetlinkError::Undo {
            failed: chain(&failed),
            undo: chain(&undo),
        };
        assert_eq!(
            chain(&both),
            "setting np0 up: Operation not permitted (os error 1) (and undoing it: no such \
             interface np0)"
        );
    }
}
