//! Everything that talks to the kernel: links, addresses and routes over rtnetlink,
//! network namespaces, and the eBPF datapath (programs, links and maps under bpffs).
pub mod datapath;
pub mod netlink;
pub mod netns;
