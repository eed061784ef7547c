//! Packet tests: crafted packets pushed through the eBPF programs with BPF_PROG_TEST_RUN.
//! Each test runs on its own thread inside a fresh network namespace, so the interfaces it
//! names in the skb context exist and nothing outside is touched.
use std::process::Command;

use aya::{
    Ebpf,
    maps::{HashMap, PerCpuArray},
    programs::{SchedClassifier, TestRun, TestRunOptions},
};
use netpath::datapath::EBPF_OBJECT;
use netpath_common::{BridgeInfo, Counter, maps, programs};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

/// Runs `f` on a thread that lives in a new, empty network namespace.
fn in_fresh_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        f()
    })
    .join()
    .expect("test thread panicked")
}

/// Creates a bridge in the current thread's namespace (children inherit it) and returns its
/// ifindex.
fn bridge(name: &str) -> u32 {
    let ok = Command::new("ip")
        .args(["link", "add", name, "type", "bridge"])
        .status()
        .unwrap();
    assert!(ok.success());
    // Not /sys/class/net: this process's sysfs shows the namespace it was mounted in.
    let out = Command::new("ip")
        .args(["-j", "link", "show", name])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    u32::try_from(v[0]["ifindex"].as_u64().unwrap()).unwrap()
}

/// A `struct __sk_buff` prefix with only the fields BPF_PROG_TEST_RUN lets us set here.
fn skb_ctx(ingress_ifindex: u32, ifindex: u32) -> [u8; 44] {
    let mut ctx = [0u8; 44];
    ctx[36..40].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

/// An Ethernet + IPv4 + UDP packet from 172.17.0.2 to 172.18.0.2.
fn packet() -> Vec<u8> {
    let mut p = vec![
        0x02, 0x42, 0xac, 0x12, 0, 2, 0x02, 0x42, 0xac, 0x11, 0, 2, 0x08, 0x00,
    ];
    p.extend_from_slice(&[
        0x45, 0, 0, 32, 0, 1, 0x40, 0, 63, 17, 0, 0, 172, 17, 0, 2, 172, 18, 0, 2,
    ]);
    p.extend_from_slice(&[0x30, 0x39, 0, 53, 0, 12, 0, 0, b'p', b'i', b'n', b'g']);
    p
}

#[test]
fn isolate_drops_only_traffic_routed_between_netpath_networks() {
    in_fresh_netns(|| {
        let (br_a, br_b, other) = (bridge("bra"), bridge("brb"), bridge("foreign"));
        let mut ebpf = Ebpf::load(EBPF_OBJECT).expect("load object");
        let mut bridges: HashMap<_, u32, BridgeInfo> =
            HashMap::try_from(ebpf.take_map(maps::BRIDGES).unwrap()).unwrap();
        bridges
            .insert(br_a, BridgeInfo { network_id: 1 }, 0)
            .unwrap();
        bridges
            .insert(br_b, BridgeInfo { network_id: 2 }, 0)
            .unwrap();
        let counters: PerCpuArray<_, u64> =
            PerCpuArray::try_from(ebpf.take_map(maps::COUNTERS).unwrap()).unwrap();
        let prog: &mut SchedClassifier = ebpf
            .program_mut(programs::ISOLATE)
            .unwrap()
            .try_into()
            .unwrap();
        prog.load().expect("the verifier accepts np_isolate");

        let input = packet();
        let run = |ingress: u32, egress: u32| {
            let ctx = skb_ctx(ingress, egress);
            let mut out = vec![0u8; input.len()];
            let result = prog
                .test_run(TestRunOptions {
                    data_in: Some(&input),
                    data_out: Some(&mut out),
                    ctx_in: Some(&ctx),
                    ..TestRunOptions::new()
                })
                .expect("BPF_PROG_TEST_RUN");
            // np_isolate decides, it never rewrites.
            assert_eq!(out[..result.data_size_out as usize], input[..]);
            result.return_value
        };
        let drops = || -> u64 {
            counters
                .get(&(Counter::DropIsolation as u32), 0)
                .unwrap()
                .iter()
                .sum()
        };

        assert_eq!(run(br_a, br_b), TC_ACT_SHOT, "network 1 -> network 2");
        assert_eq!(run(br_b, br_a), TC_ACT_SHOT, "network 2 -> network 1");
        assert_eq!(drops(), 2);
        assert_eq!(run(0, br_b), TC_ACT_OK, "sent by the host itself");
        assert_eq!(
            run(other, br_b),
            TC_ACT_OK,
            "from an interface netpath does not own"
        );
        assert_eq!(
            run(br_a, other),
            TC_ACT_OK,
            "to an interface netpath does not own"
        );
        bridges
            .insert(br_b, BridgeInfo { network_id: 1 }, 0)
            .unwrap();
        assert_eq!(run(br_a, br_b), TC_ACT_OK, "two bridges of one network");
        assert_eq!(drops(), 2, "passes are not counted as drops");
    });
}
