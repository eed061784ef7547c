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
