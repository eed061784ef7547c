//! netpath's userspace. Data flows one way: `cli` parses, `ops` decides, and only `netlink`
//! (links, addresses, routes), `netns` (namespaces) and `datapath` (eBPF programs and maps)
//! touch the kernel; `state`, `ipam`, `publish`, `masquerade`, `conntrack` and `stats` are
//! plain data.

/// `print!`/`println!` for command output, minus the panic when stdout is gone (`netpath ps
/// | head`): a command must finish its work, and save its state, whoever stopped reading.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
pub mod cli;
pub mod conntrack;
pub mod datapath;
pub mod ipam;
pub mod masquerade;
pub mod netlink;
pub mod netns;
pub mod ops;
pub mod publish;
pub mod state;
pub mod stats;
