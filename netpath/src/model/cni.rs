//! The JSON a container runtime and a CNI plugin exchange (CNI spec 1.0.0, with 1.1's STATUS
//! and GC): the network configuration on stdin, the result, the error and the version
//! answer on stdout. Pure data: no netlink, no files.
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::ipam::Subnet;

/// The spec versions netpath-cni speaks; results take the request's version.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.4.0", "1.0.0", "1.1.0"];

/// The spec's well-known error codes (plugin-specific ones start at 100).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    /// netpath refused or failed the operation (a port taken, a netlink failure...).
    pub const NETPATH: u32 = 100;
    /// The delegated IPAM plugin failed.
    pub const IPAM: u32 = 101;
}

/// A network configuration as the runtime passes it on stdin: the spec's keys and netpath's.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin: String,
    /// The bridge of the network; default: netpath's name for it (np-NAME).
    #[serde(default)]
    pub bridge: Option<String>,
    /// netpath's own IPAM: addresses from this subnet (instead of an `ipam` plugin).
    #[serde(default)]
    pub subnet: Option<Subnet>,
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// Masquerade outbound traffic (default true).
    #[serde(default)]
    pub ip_masq: Option<bool>,
    /// A delegated IPAM plugin's section (`type` names it).
    #[serde(default)]
    pub ipam: Option<Value>,
    /// Passed through into the result.
    #[serde(default)]
    pub dns: Option<Value>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// Several nodes (flannel host-gw style): the cluster CIDR and every node's pod subnet.
    #[serde(default)]
    pub cluster: Option<Cluster>,
    /// GC (1.1): the attachments the runtime still knows of.
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
}

impl NetConf {
    /// The delegated IPAM plugin's name, if the config names one.
    pub fn ipam_plugin(&self) -> Option<&str> {
        self.ipam
            .as_ref()?
            .get("type")?
            .as_str()
            .filter(|t| !t.is_empty())
    }
}

/// The nodes of a cluster: each node's pods are reached through that node's address, and
/// traffic within `cidr` keeps its source (no masquerade).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    pub cidr: Subnet,
    #[serde(default)]
    pub nodes: Vec<ClusterNode>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNode {
    pub name: String,
    /// The node's address on the network that joins the nodes.
    pub address: Ipv4Addr,
    /// The node's pod subnet, inside the cluster CIDR.
    pub pod_cidr: Subnet,
}

impl Cluster {
    /// Checks the nodes against the cluster CIDR and each other; `own` is this node's pod
    /// subnet (the network's). One line naming the problem.
    pub fn check(&self, own: &Subnet) -> Result<(), String> {
        let inside = |s: &Subnet| {
            self.cidr.contains(s.network())
                && self.cidr.contains(s.broadcast())
                && s.prefix_len() >= self.cidr.prefix_len()
        };
        if !inside(own) {
            return Err(format!(
                "the network's subnet {own} is not inside the cluster CIDR {}",
                self.cidr
            ));
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if !inside(&n.pod_cidr) {
                return Err(format!(
                    "node {}: podCidr {} is not inside the cluster CIDR {}",
                    n.name, n.pod_cidr, self.cidr
                ));
            }
            if self.cidr.contains(n.address) {
                return Err(format!(
                    "node {}: address {} is inside the cluster CIDR {}",
                    n.name, n.address, self.cidr
                ));
            }
            if let Some(m) = self.nodes[..i]
                .iter()
                .find(|m| m.pod_cidr.overlaps(&n.pod_cidr))
            {
                return Err(format!(
                    "nodes {} and {} have overlapping pod subnets {} and {}",
                    m.name, n.name, m.pod_cidr, n.pod_cidr
                ));
            }
        }
        Ok(())
    }

    /// The routes this node needs: every other node's pod subnet via its address. A node is
    /// this one when its pod subnet is `own` or its address is one of `local`.
    pub fn routes(&self, own: &Subnet, local: &[Ipv4Addr]) -> Vec<(Subnet, Ipv4Addr)> {
        self.nodes
            .iter()
            .filter(|n| n.pod_cidr != *own && !local.contains(&n.address))
            .map(|n| (n.pod_cidr, n.address))
            .collect()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
}

/// The `portMappings` capability: one `-p` of the runtime.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(rename = "hostIP", default)]
    pub host_ip: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// A successful ADD's answer (and what CHECK receives back as `prevResult`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Interface {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IpConfig {
    /// Only in results of spec 0.4.0 and older.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// ADDRESS/PREFIX.
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// Index into `interfaces`.
    pub interface: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Route {
    pub dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gw: Option<Ipv4Addr>,
}

/// The answer to VERSION.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub cni_version: String,
    pub supported_versions: Vec<String>,
}

impl VersionInfo {
    pub fn current() -> VersionInfo {
        VersionInfo {
            cni_version: SUPPORTED_VERSIONS.last().expect("some").to_string(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect(),
        }
    }
}

/// The spec's error: printed on stdout, with a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
#[error("{msg}")]
pub struct CniError {
    pub cni_version: String,
    pub code: u32,
    /// One line that names the problem.
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

/// What a delegated IPAM plugin answers (the parts netpath uses).
#[derive(Debug, Clone, Deserialize)]
pub struct IpamResult {
    #[serde(default)]
    pub ips: Vec<IpamIp>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IpamIp {
    pub address: String,
    #[serde(default)]
    pub gateway: Option<String>,
}

impl IpamResult {
    /// The first IPv4 address with its prefix length and gateway.
    pub fn ipv4(&self) -> Option<(Ipv4Addr, u8, Option<Ipv4Addr>)> {
        self.ips.iter().find_map(|ip| {
            let (addr, len) = ip.address.split_once('/')?;
            let addr: Ipv4Addr = addr.parse().ok()?;
            let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
            let gw = ip.gateway.as_deref().and_then(|g| g.parse().ok());
            Some((addr, len, gw))
        })
    }
}

/// The netpath name of a CNI attachment: readable (`cni-` + the short container id +
/// interface), a valid container name, unique per (container id, interface).
pub fn pod_name(container_id: &str, ifname: &str) -> String {
    let short: String = container_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect();
    let ifname: String = ifname
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("cni-{short}-{ifname}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_with_defaults_and_capabilities() {
        let conf: NetConf = serde_json::from_str(
            r#"{"cniVersion":"1.0.0","name":"np","type":"netpath-cni","subnet":"10.89.0.0/24",
               "runtimeConfig":{"portMappings":[{"hostPort":8088,"containerPort":80,"protocol":"tcp","hostIP":""}]}}"#,
        )
        .unwrap();
        assert_eq!(conf.subnet.unwrap().to_string(), "10.89.0.0/24");
        assert_eq!(conf.ip_masq, None);
        assert_eq!(conf.ipam_plugin(), None);
        assert_eq!(conf.runtime_config.port_mappings[0].host_port, 8088);
        let bad = serde_json::from_str::<NetConf>(
            r#"{"cniVersion":"1.0.0","name":"np","subnet":"10.89.0.1/24"}"#,
        );
        assert!(bad.unwrap_err().to_string().contains("host bits are set"));
    }

    #[test]
    fn cluster_nodes_give_routes_to_the_others() {
        let conf: NetConf = serde_json::from_str(
            r#"{"cniVersion":"1.0.0","name":"np","subnet":"10.244.1.0/24","cluster":{"cidr":"10.244.0.0/16","nodes":[
                {"name":"a","address":"192.0.2.10","podCidr":"10.244.0.0/24"},
                {"name":"b","address":"192.0.2.11","podCidr":"10.244.1.0/24"},
                {"name":"c","address":"192.0.2.12","podCidr":"10.244.2.0/24"}]}}"#,
        )
        .unwrap();
        let cluster = conf.cluster.unwrap();
        let own = conf.subnet.unwrap();
        cluster.check(&own).unwrap();
        let routes: Vec<String> = cluster
            .routes(&own, &[Ipv4Addr::new(192, 0, 2, 11)])
            .iter()
            .map(|(s, gw)| format!("{s} via {gw}"))
            .collect();
        assert_eq!(
            routes,
            [
                "10.244.0.0/24 via 192.0.2.10",
                "10.244.2.0/24 via 192.0.2.12"
            ]
        );
        let outside: Subnet = "10.245.0.0/24".parse().unwrap();
        assert!(cluster.check(&outside).unwrap_err().contains("not inside"));
        let mut twice = cluster.clone();
        twice.nodes[2].pod_cidr = "10.244.1.0/25".parse().unwrap();
        assert!(twice.check(&own).unwrap_err().contains("overlapping"));
    }

    #[test]
    fn ipam_results_and_names() {
        let r: IpamResult = serde_json::from_str(
            r#"{"cniVersion":"1.0.0","ips":[{"address":"fd00::2/64"},{"address":"10.88.0.5/16","gateway":"10.88.0.1"}]}"#,
        )
        .unwrap();
        assert_eq!(
            r.ipv4(),
            Some((
                Ipv4Addr::new(10, 88, 0, 5),
                16,
                Some(Ipv4Addr::new(10, 88, 0, 1))
            ))
        );
        assert_eq!(
            pod_name("0123456789abcdef", "eth0"),
            "cni-0123456789ab-eth0"
        );
        let e = CniError {
            cni_version: "1.0.0".into(),
            code: code::DECODE,
            msg: "bad".into(),
            details: String::new(),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"cniVersion":"1.0.0","code":6,"msg":"bad"}"#
        );
    }
}
