//! Conformance: the same ADD / CHECK / DEL sequence, and the same bad input, against
//! netpath-cni and against the reference plugins (Debian's containernetworking-plugins:
//! bridge + host-local + portmap as one conflist), each in a sandbox of its own. The test
//! plays the runtime: it runs each plugin of the list in order (DEL in reverse), passing the
//! previous plugin's result as `prevResult`, and `runtimeConfig.portMappings` to the plugins
//! that declare the capability. Both must give results of the same shape (keys and JSON
//! types) and errors with the same code and a `msg`.
use std::path::{Path, PathBuf};

use netpath_tests::{
    Sandbox,
    cni::{Attachment, Pod, Runtime, TempDir, cni_bin},
    sandbox,
};
use serde_json::{Map, Value, json};

const REFERENCE: &str = "/usr/lib/cni";

fn netpath_list() -> Value {
    json!({"cniVersion": "1.0.0", "name": "conf", "plugins": [
        {"type": "netpath-cni", "subnet": "10.89.8.0/24", "capabilities": {"portMappings": true}}
    ]})
}

fn reference_list(data: &Path) -> Value {
    json!({"cniVersion": "1.0.0", "name": "conf", "plugins": [
        {"type": "bridge", "bridge": "cniref0", "isGateway": true, "isDefaultGateway": true,
         "ipam": {"type": "host-local", "dataDir": data, "ranges": [[{"subnet": "10.89.9.0/24"}]]}},
        {"type": "portmap", "capabilities": {"portMappings": true}}
    ]})
}

/// The keys and JSON types of a value; an array's shape is that of its elements merged (the
/// union of their keys).
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => {
            let merged = a.iter().map(shape).reduce(|acc, s| match (acc, s) {
                (Value::Object(mut a), Value::Object(b)) => {
                    for (k, v) in b {
                        a.entry(k).or_insert(v);
                    }
                    Value::Object(a)
                }
                (acc, _) => acc,
            });
            Value::Array(merged.into_iter().collect())
        }
        Value::String(_) => json!("string"),
        Value::Number(_) => json!("number"),
        Value::Bool(_) => json!("bool"),
        Value::Null => json!("null"),
    }
}

/// The shape of a result, without `dns`: optional in the spec, and netpath-cni gives it only
/// when the configuration has one (the bridge plugin always prints an empty one).
fn result_shape(r: &Value) -> Value {
    let mut s = shape(r);
    s.as_object_mut()
        .map(|m: &mut Map<String, Value>| m.remove("dns"));
    s
}

/// A sequence on one implementation: its ADD result, and the error objects for invalid
/// JSON, an unknown cniVersion and a missing CNI_NETNS.
struct Run {
    result: Value,
    errors: Vec<Value>,
}

fn attachment(pod: &Pod, netns: bool) -> Attachment {
    Attachment {
        id: pod.id.clone(),
        netns: netns.then(|| pod.path()),
        ports: json!([{"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}]),
    }
}

fn sequence(sb: &Sandbox, list: Value) -> Run {
    let dirs = vec![
        PathBuf::from(REFERENCE),
        cni_bin().parent().expect("target dir").to_owned(),
    ];
    let rt = Runtime { sb, list, dirs };
    let pod = Pod::new(sb, "conf");
    let a = attachment(&pod, true);
    let result = rt.add(&a).unwrap_or_else(|e| panic!("ADD: {e}"));
    match rt.each(&a, "CHECK", &result) {
        Ok(()) => {}
        // Debian's portmap (1.1) checks its IPv6 chain even for a pod with no IPv6 address;
        // the plugins before it in the list passed their CHECK.
        Err(e)
            if e["msg"]
                .as_str()
                .is_some_and(|m| m.contains("check ipv6 dnat")) => {}
        Err(e) => panic!("CHECK: {e}"),
    }
    rt.each(&a, "DEL", &result)
        .unwrap_or_else(|e| panic!("DEL: {e}"));
    // DEL is idempotent.
    rt.each(&a, "DEL", &result)
        .unwrap_or_else(|e| panic!("DEL again: {e}"));
    // Bad input, to the list's first plugin as a runtime's first invocation.
    let other = Pod::new(sb, "bad");
    let first = rt.list["plugins"][0]["type"].as_str().unwrap().to_owned();
    let b = attachment(&other, true);
    let mut errors = vec![];
    errors.push(
        rt.raw(&b, &first, "ADD", "{not json")
            .expect_err("invalid JSON"),
    );
    let mut unknown = rt.list.clone();
    unknown["cniVersion"] = json!("9.9.9");
    let rt_unknown = Runtime {
        sb,
        list: unknown,
        dirs: rt.dirs.clone(),
    };
    errors.push(
        rt_unknown
            .invoke(&b, 0, "ADD", None)
            .expect_err("cniVersion"),
    );
    let no_netns = attachment(&other, false);
    errors.push(rt.invoke(&no_netns, 0, "ADD", None).expect_err("CNI_NETNS"));
    Run { result, errors }
}

#[test]
fn netpath_cni_and_the_reference_plugins_answer_alike() {
    assert!(
        Path::new(REFERENCE).join("bridge").exists(),
        "{REFERENCE}/bridge is missing: cargo xtask setup installs containernetworking-plugins"
    );
    let np = sandbox();
    let reference = sandbox();
    let data = TempDir(std::env::temp_dir().join(format!("{}-ipam", reference.name("conf"))));
    let ours = sequence(&np, netpath_list());
    let theirs = sequence(&reference, reference_list(&data.0));

    assert_eq!(
        result_shape(&ours.result),
        result_shape(&theirs.result),
        "netpath-cni: {}\nreference: {}",
        ours.result,
        theirs.result
    );
    for key in ["cniVersion", "interfaces", "ips", "routes"] {
        assert!(ours.result.get(key).is_some(), "{key}: {}", ours.result);
    }
    let names = ["invalid JSON", "unknown cniVersion", "missing CNI_NETNS"];
    for ((name, ours), theirs) in names.iter().zip(&ours.errors).zip(&theirs.errors) {
        for e in [ours, theirs] {
            assert!(e["code"].is_u64(), "{name}: {e}");
            let msg = e["msg"].as_str().unwrap_or_else(|| panic!("{name}: {e}"));
            assert!(!msg.is_empty() && !msg.contains('\n'), "{name}: {e}");
        }
        assert_eq!(
            ours["code"], theirs["code"],
            "{name}: netpath-cni {ours}, reference {theirs}"
        );
    }
}
