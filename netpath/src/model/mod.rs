//! Plain data: what netpath keeps, plans and shows. Nothing here touches the kernel.
pub mod cni;
pub mod conntrack;
pub mod docker;
pub mod ipam;
pub mod masquerade;
pub mod parse;
pub mod publish;
pub mod state;
pub mod stats;
