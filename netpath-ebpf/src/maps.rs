//! Every map of the object, shared by all programs; userspace pins each under its name.
use aya_ebpf::{
    btf_maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
    macros::btf_map,
};
use netpath_common::{
    BridgeInfo, COUNTER_SLOTS, Config, Counter, CtEntry, CtKey, Direction, Endpoint, FragEntry,
    FragKey, MAX_CONNTRACK, MAX_ENDPOINTS, MAX_EXTERNALS, MAX_FRAGS, MAX_LOCAL_ADDRS,
    MAX_MASQ_EXCLUDE, MAX_NETWORKS, MAX_PUBLISH, MAX_SOCK_ORIG, PublishKey, PublishTarget,
    SockOrig, SourceGuard, TRAFFIC_SLOTS, Traffic, traffic_slot,
};

#[btf_map]
pub static NP_BRIDGES: HashMap<u32, BridgeInfo, { MAX_NETWORKS as usize }> = HashMap::new();

#[btf_map]
pub static NP_COUNTERS: PerCpuArray<u64, { COUNTER_SLOTS as usize }> = PerCpuArray::new();

#[btf_map]
pub static NP_PUBLISH: HashMap<PublishKey, PublishTarget, { MAX_PUBLISH as usize }> =
    HashMap::new();

#[btf_map]
pub static NP_CT: LruHashMap<CtKey, CtEntry, { MAX_CONNTRACK as usize }> = LruHashMap::new();

#[btf_map]
pub static NP_LOCAL_ADDRS: HashMap<[u8; 4], u32, { MAX_LOCAL_ADDRS as usize }> = HashMap::new();

#[btf_map]
pub static NP_SOCK_ORIG: LruHashMap<u64, SockOrig, { MAX_SOCK_ORIG as usize }> = LruHashMap::new();

#[btf_map]
pub static NP_CONFIG: Array<Config, 1> = Array::new();

#[btf_map]
pub static NP_MASQ_EXCL: LpmTrie<[u8; 4], u32, { MAX_MASQ_EXCLUDE as usize }> = LpmTrie::new();

#[btf_map]
pub static NP_EXTERNALS: HashMap<u32, u32, { MAX_EXTERNALS as usize }> = HashMap::new();

#[btf_map]
pub static NP_ENDPOINTS: HashMap<[u8; 4], Endpoint, { MAX_ENDPOINTS as usize }> = HashMap::new();

#[btf_map]
pub static NP_FRAGS: LruHashMap<FragKey, FragEntry, { MAX_FRAGS as usize }> = LruHashMap::new();

#[btf_map]
pub static NP_SOURCES: HashMap<u32, SourceGuard, { MAX_ENDPOINTS as usize }> = HashMap::new();

#[btf_map]
pub static NP_TRAFFIC: PerCpuArray<Traffic, { TRAFFIC_SLOTS as usize }> = PerCpuArray::new();

#[inline(always)]
pub fn count(counter: Counter) {
    count_n(counter, 1);
}

#[inline(always)]
pub fn count_n(counter: Counter, n: u64) {
    if let Some(slot) = NP_COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while the program runs.
        unsafe { *slot += n };
    }
}

/// One translated packet of `bytes` bytes; a conntrack hit if `hit`.
#[inline(always)]
pub fn count_traffic(dir: Direction, proto: u8, bytes: u32, hit: bool) {
    if let Some(slot) = NP_TRAFFIC.get_ptr_mut(traffic_slot(dir, proto)) {
        // SAFETY: as in `count_n`.
        unsafe {
            (*slot).packets += 1;
            (*slot).bytes += u64::from(bytes);
            (*slot).hits += u64::from(hit);
        }
    }
}

/// The published target of `(addr, port, proto)`: the every-address entry if `is_local`
/// says the address belongs to this namespace, else the entry for exactly this address.
/// Userspace never lets both exist for one port (one conflicts with the other), so the
/// every-address one, the common publish (Docker's default), goes first: it is then found in
/// one lookup.
#[inline(always)]
pub fn find_publish(
    addr: [u8; 4],
    port: u16,
    proto: u8,
    is_local: impl FnOnce() -> bool,
) -> Option<PublishTarget> {
    let mut key = PublishKey {
        host_addr: [0; 4],
        host_port: port,
        proto,
        _pad: 0,
    };
    // SAFETY: plain data read once; a concurrent update can only replace it whole.
    if let Some(t) = unsafe { NP_PUBLISH.get(key) } {
        return is_local().then_some(*t);
    }
    key.host_addr = addr;
    // SAFETY: as above.
    unsafe { NP_PUBLISH.get(key) }.copied()
}
