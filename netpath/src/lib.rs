//! netpath's userspace, in three layers that data flows down through: `cli` parses,
//! `commands` decides (one module per command group), `model` is plain data with no kernel
//! in it (state, IPAM, publishes, masquerade settings, conntrack rows, counters), and only
//! `system` touches the kernel (netlink, namespaces, the eBPF datapath). Commands return
//! what they did and what they show; `output` alone writes it, as a table or as JSON.

pub mod cli;
pub mod commands;
pub mod model;
pub mod output;
pub mod system;
