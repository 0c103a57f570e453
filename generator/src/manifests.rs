//! Reads a folder of Kubernetes YAML as `kubectl get -o yaml` writes it: single objects, `List`s,
//! multi-document files. A Service whose object is malformed but whose name can be read is kept
//! on its last state; anything whose identity cannot be read stops the run, because going on
//! would withdraw Services that merely failed to parse.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;
use serde_json::Value;

use flipbit_core::model::{Snapshot, UnreadableService};
use flipbit_core::names::ServiceKey;
use flipbit_core::problem::{Problem, Severity};

use crate::convert;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {message}; nothing was committed, since the cluster snapshot would be incomplete")]
    Unreadable { path: String, message: String },
}

/// The snapshot, plus problems with single objects that were skipped.
pub fn load_dir(dir: &Path) -> Result<(Snapshot, Vec<Problem>), ManifestError> {
    let mut files = Vec::new();
    collect(dir, &mut files)?;
    files.sort();
    let mut snapshot = Snapshot::default();
    let mut problems = Vec::new();
    for file in files {
        let where_ = file.display().to_string();
        let text = std::fs::read_to_string(&file).map_err(|e| ManifestError::Unreadable {
            path: where_.clone(),
            message: e.to_string(),
        })?;
        for (i, doc) in serde_norway::Deserializer::from_str(&text).enumerate() {
            let value = Value::deserialize(doc).map_err(|e| ManifestError::Unreadable {
                path: where_.clone(),
                message: format!("document {}: not YAML: {e}", i + 1),
            })?;
            let at = format!("{where_}: document {}", i + 1);
            add(&at, value, &mut snapshot, &mut problems)?;
        }
    }
    Ok((snapshot, problems))
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ManifestError> {
    let unreadable = |e: std::io::Error| ManifestError::Unreadable {
        path: dir.display().to_string(),
        message: e.to_string(),
    };
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")) {
            out.push(path);
        }
    }
    Ok(())
}

fn add(at: &str, value: Value, snapshot: &mut Snapshot, problems: &mut Vec<Problem>) -> Result<(), ManifestError> {
    if value.is_null() {
        return Ok(());
    }
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
    if kind == "List" || kind.ends_with("List") {
        let items = value
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (i, item) in items.into_iter().enumerate() {
            add(&format!("{at}: items[{i}]"), item, snapshot, problems)?;
        }
        return Ok(());
    }
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let namespace = value
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_owned();
    match kind.as_str() {
        "Service" => {
            let Some(name) = name else {
                return Err(ManifestError::Unreadable {
                    path: at.to_owned(),
                    message: "a Service without metadata.name".into(),
                });
            };
            match serde_json::from_value::<Service>(value) {
                Ok(svc) => snapshot.services.push(convert::service(&svc)),
                Err(e) => match ServiceKey::new(&namespace, &name) {
                    Ok(key) => snapshot.unreadable_services.push(UnreadableService {
                        key,
                        message: format!("{at}: malformed Service: {e}"),
                    }),
                    Err(bad) => {
                        return Err(ManifestError::Unreadable {
                            path: at.to_owned(),
                            message: format!("malformed Service: {bad}"),
                        });
                    }
                },
            }
        }
        "Node" => match serde_json::from_value::<Node>(value) {
            Ok(node) => snapshot.nodes.push(convert::node(&node)),
            Err(e) => problems.push(Problem {
                severity: Severity::Warning,
                object: format!("Node {:?}", name.unwrap_or_default()),
                field: String::new(),
                message: format!("{at}: malformed Node, given no traffic: {e}"),
            }),
        },
        "EndpointSlice" => match serde_json::from_value::<EndpointSlice>(value) {
            Ok(slice) => snapshot.endpoint_slices.extend(convert::endpoint_slice(&slice)),
            Err(e) => problems.push(Problem {
                severity: Severity::Warning,
                object: format!("EndpointSlice {namespace}/{}", name.unwrap_or_default()),
                field: String::new(),
                message: format!("{at}: malformed EndpointSlice, ignored: {e}"),
            }),
        },
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `spec.externalIPs` reaches the model, so the core can warn about it.
    #[test]
    fn external_ips_are_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let service = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  type: LoadBalancer\n  externalIPs: [203.0.113.7]\n  ports: [{port: 80, nodePort: 30080}]\n";
        std::fs::write(dir.path().join("svc.yaml"), service).expect("write");
        let (snapshot, problems) = load_dir(dir.path()).expect("load");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(snapshot.services[0].external_ips, ["203.0.113.7"]);
    }

    /// An EndpointSlice reaches the model whole enough for `flipbit.io/backends: pods`: its
    /// family, its ports by name, each endpoint's addresses and readiness (unknown stays unknown).
    #[test]
    fn endpoint_slices_are_read_with_ports_and_endpoints() {
        let dir = tempfile::tempdir().expect("temp dir");
        let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-abc\n  namespace: shop\n  labels: {kubernetes.io/service-name: web}\naddressType: IPv6\nports: [{name: http, protocol: TCP, port: 8080}, {port: 9090}]\nendpoints:\n  - addresses: [\"fd00::4\"]\n    conditions: {ready: true}\n    nodeName: n1\n  - addresses: [\"fd00::5\"]\n    conditions: {ready: false}\n    nodeName: n2\n  - addresses: [\"fd00::6\"]\n";
        std::fs::write(dir.path().join("slice.yaml"), slice).expect("write");
        let (snapshot, problems) = load_dir(dir.path()).expect("load");
        assert!(problems.is_empty(), "{problems:?}");
        let s = &snapshot.endpoint_slices[0];
        assert_eq!((s.namespace.as_str(), s.service_name.as_str()), ("shop", "web"));
        assert_eq!(s.address_type, "IPv6");
        assert_eq!(s.ready_nodes, ["n1"]);
        let ports: Vec<_> = s
            .ports
            .iter()
            .map(|p| (p.name.as_deref(), p.protocol.as_deref(), p.port))
            .collect();
        assert_eq!(
            ports,
            [(Some("http"), Some("TCP"), Some(8080)), (None, None, Some(9090))]
        );
        let endpoints: Vec<_> = s.endpoints.iter().map(|e| (e.addresses.join(","), e.ready)).collect();
        assert_eq!(
            endpoints,
            [
                ("fd00::4".to_owned(), Some(true)),
                ("fd00::5".to_owned(), Some(false)),
                ("fd00::6".to_owned(), None)
            ]
        );
    }
}
