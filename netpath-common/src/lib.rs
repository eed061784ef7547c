//! Types and names shared by the eBPF programs and userspace. Everything that crosses the
//! kernel/userspace boundary is defined here once, `#[repr(C)]`, with no implicit padding.
#![no_std]

/// Program names, as the `#[classifier]` functions are called in netpath-ebpf.
pub mod programs {
    /// TC egress on every netpath bridge: drops traffic routed in from another netpath network.
    pub const ISOLATE: &str = "np_isolate";
}

/// Map names (kernel map names are cut at 15 bytes, so keep them short and prefixed).
pub mod maps {
    /// Bridge ifindex -> [`crate::BridgeInfo`].
    pub const BRIDGES: &str = "NP_BRIDGES";
    /// Per-CPU `u64` counters indexed by [`crate::Counter`].
    pub const COUNTERS: &str = "NP_COUNTERS";
}

/// Most netpath networks (bridges) one namespace can hold.
pub const MAX_NETWORKS: u32 = 1024;

/// What the datapath knows about one bridge, keyed by its ifindex.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BridgeInfo {
    /// netpath's identifier of the network the bridge belongs to (never 0).
    pub network_id: u32,
}
const _: () = assert!(size_of::<BridgeInfo>() == 4);

/// Event counters kept per CPU; userspace sums them.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// A packet routed from one netpath network into another was dropped.
    DropIsolation = 0,
}

impl Counter {
    pub const ALL: [Counter; 1] = [Counter::DropIsolation];

    pub const fn name(self) -> &'static str {
        match self {
            Counter::DropIsolation => "drop_isolation",
        }
    }
}

/// Number of slots in the counters map.
pub const COUNTER_SLOTS: u32 = Counter::ALL.len() as u32;

#[cfg(feature = "user")]
// SAFETY: BridgeInfo is repr(C), has no padding and every bit pattern is valid.
unsafe impl aya::Pod for BridgeInfo {}
