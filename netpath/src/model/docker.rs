//! Docker's remote network driver protocol (libnetwork's `docs/remote.md`): the requests
//! dockerd posts to a plugin as JSON, and what netpath answers. Plain data; the calls are
//! carried out in `commands::docker`.
use std::{collections::BTreeMap, net::Ipv4Addr};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where dockerd looks for plugin sockets (shared by every dockerd on the machine).
pub const PLUGIN_DIR: &str = "/run/docker/plugins";
/// The content type of the plugin protocol.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";
/// Options of `docker network create -o KEY=VALUE`.
pub const GENERIC: &str = "com.docker.network.generic";
/// Port bindings of `docker run -p`, given to ProgramExternalConnectivity.
pub const PORTMAP: &str = "com.docker.network.portmap";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    pub options: BTreeMap<String, Value>,
    #[serde(rename = "IPv4Data")]
    pub ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data")]
    pub ipv6_data: Option<Vec<IpamData>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamData {
    pub pool: String,
    pub gateway: String,
}

/// DeleteNetwork, DeleteEndpoint, EndpointOperInfo, Leave, Join,
/// Program/RevokeExternalConnectivity: a network, mostly an endpoint, maybe options.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointCall {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// Join's network namespace path.
    pub sandbox_key: String,
    pub options: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateEndpoint {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub interface: Option<EndpointInterface>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointInterface {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(rename = "AddressIPv6", skip_serializing_if = "String::is_empty")]
    pub address_ipv6: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
}

/// One `-p` binding as dockerd 20.10 sends it (libnetwork's `types.PortBinding`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortBinding {
    /// IANA protocol number: 6 TCP, 17 UDP.
    pub proto: u8,
    /// The container's address: empty from dockerd 20.10 (netpath uses the endpoint's).
    #[serde(rename = "IP")]
    pub ip: String,
    pub port: u16,
    #[serde(rename = "HostIP")]
    pub host_ip: String,
    pub host_port: u16,
    pub host_port_end: u16,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinResponse {
    pub interface_name: InterfaceName,
    pub gateway: Ipv4Addr,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    pub src_name: String,
    pub dst_prefix: String,
}

/// The protocol's failure: one line naming the problem.
#[derive(Debug, Serialize)]
pub struct ErrResponse {
    #[serde(rename = "Err")]
    pub err: String,
}

/// The netpath network of Docker network `id`.
pub fn network_name(id: &str) -> String {
    format!("docker-{}", short(id))
}

/// The netpath container of Docker endpoint `id`.
pub fn endpoint_name(id: &str) -> String {
    format!("docker-{}", short(id))
}

fn short(id: &str) -> &str {
    let end = id.char_indices().nth(12).map_or(id.len(), |(i, _)| i);
    &id[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(network_name("0123456789abcdef"), "docker-0123456789ab");
        assert_eq!(endpoint_name("ab"), "docker-ab");
    }

    #[test]
    fn join_as_dockerd_sends_it() {
        let join: EndpointCall = serde_json::from_str(
            r#"{"NetworkID":"n","EndpointID":"e","SandboxKey":"/var/run/docker/netns/47fd74dd6ebf","Options":{}}"#,
        )
        .unwrap();
        assert_eq!(join.sandbox_key, "/var/run/docker/netns/47fd74dd6ebf");
    }

    #[test]
    fn port_bindings_as_dockerd_sends_them() {
        let b: Vec<PortBinding> = serde_json::from_str(
            // Verbatim from dockerd 20.10 for `-p 127.0.0.1:9000:9000/udp`: IP stays empty.
            r#"[{"Proto":17,"IP":"","Port":9000,"HostIP":"127.0.0.1","HostPort":9000,"HostPortEnd":9000}]"#,
        )
        .unwrap();
        assert_eq!(
            (b[0].proto, b[0].port, b[0].host_port_end),
            (17, 9000, 9000)
        );
        assert_eq!(b[0].host_ip, "127.0.0.1");
    }
}
