//! Empty on purpose: netpath's build script depends on this crate so that cargo rebuilds the
//! embedded eBPF object whenever the programs or the shared types change. The programs live in
//! `main.rs`, built for `bpfel-unknown-none`.
#![no_std]
