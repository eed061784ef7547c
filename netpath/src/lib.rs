//! netpath's userspace. Data flows one way: `cli` parses, `ops` decides, and only `netlink`
//! (links, addresses, routes), `netns` (namespaces) and `datapath` (eBPF programs and maps)
//! touch the kernel; `state`, `ipam`, `publish`, `masquerade`, `conntrack` and `stats` are
//! plain data.
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
