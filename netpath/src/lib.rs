//! netpath's userspace, in three layers that data flows down through: `cli` parses,
//! `commands` decides (one module per command group), `model` is plain data with no kernel
//! in it (state, IPAM, publishes, masquerade settings, conntrack rows, counters), and only
//! `system` touches the kernel (netlink, namespaces, the eBPF datapath).

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
pub mod commands;
pub mod model;
pub mod system;
