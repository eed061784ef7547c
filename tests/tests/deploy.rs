//! The Kubernetes manifest (deploy/kubernetes/netpath-cni.yaml) parses and has what a CNI
//! DaemonSet needs: host network, privileged, the CNI, bpffs and netns mounts, an init
//! container that installs the binary and writes the conflist, and a conflist whose plugin
//! is netpath-cni with the portMappings capability and a configuration netpath-cni accepts.
use std::path::Path;

use serde::Deserialize as _;
use serde_json::Value;

fn documents() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/netpath-cni.yaml");
    let text = std::fs::read_to_string(&path).expect("the manifest");
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("a YAML document"))
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

#[test]
fn daemonset_installs_the_plugin_with_the_mounts_it_needs() {
    let docs = documents();
    let ds = kind(&docs, "DaemonSet");
    assert_eq!(ds["apiVersion"], "apps/v1");
    assert_eq!(ds["metadata"]["namespace"], "kube-system");
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true);
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    for (k, v) in ds["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "the selector matches the pods");
    }
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|k| spec[k].as_array().unwrap_or_else(|| panic!("{k}")))
        .collect();
    for c in &containers {
        assert_eq!(c["securityContext"]["privileged"], true, "{}", c["name"]);
    }
    // Every volume mounted names a host path; the four the plugin needs are there.
    let host_paths: Vec<(&str, &str)> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| Some((v["name"].as_str()?, v["hostPath"]["path"].as_str()?)))
        .collect();
    for wanted in [
        "/opt/cni/bin",
        "/etc/cni/net.d",
        "/sys/fs/bpf",
        "/run/netns",
    ] {
        let (name, _) = host_paths
            .iter()
            .find(|(_, p)| *p == wanted)
            .unwrap_or_else(|| panic!("no hostPath volume {wanted}"));
        assert!(
            containers.iter().any(|c| c["volumeMounts"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["name"] == *name))),
            "{wanted} is not mounted"
        );
    }
    // The init container copies the binary and writes the conflist.
    let init = &spec["initContainers"][0];
    let script = init["command"].to_string();
    assert!(script.contains("/host/opt/cni/bin/netpath-cni"), "{script}");
    assert!(
        script.contains("/host/etc/cni/net.d/10-netpath.conflist"),
        "{script}"
    );
}

#[test]
fn the_conflist_names_netpath_cni_with_port_mappings() {
    let docs = documents();
    let cm = kind(&docs, "ConfigMap");
    let text = cm["data"]["10-netpath.conflist"]
        .as_str()
        .expect("conflist");
    // As the init container writes it for a node.
    let conflist: Value =
        serde_json::from_str(&text.replace("__POD_CIDR__", "10.244.3.0/24")).expect("JSON");
    assert_eq!(conflist["cniVersion"], "1.0.0");
    let plugins = conflist["plugins"].as_array().unwrap();
    assert_eq!(plugins.len(), 1);
    let p = &plugins[0];
    assert_eq!(p["type"], "netpath-cni");
    assert_eq!(p["capabilities"]["portMappings"], true);
    // What the runtime hands the plugin: the list's name and version, the plugin's keys.
    let mut conf = p.clone();
    conf["name"] = conflist["name"].clone();
    conf["cniVersion"] = conflist["cniVersion"].clone();
    let conf: netpath::model::cni::NetConf = serde_json::from_value(conf).expect("a NetConf");
    let cluster = conf.cluster.expect("cluster section");
    cluster
        .check(&conf.subnet.expect("subnet"))
        .expect("a valid cluster");
}
