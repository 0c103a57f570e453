//! Cluster inputs the tests of `flipbit-core` and of `flipbit-generator` share: a LoadBalancer
//! Service of our class, a backend node, Services on one node. `generator/tests/format_record.rs`
//! includes this file with `#[path]` (one crate's integration tests cannot name another's), so it
//! uses only `std` and `flipbit_core`'s model.
#![allow(dead_code)]

use std::collections::BTreeMap;

use flipbit_core::model::{NodeInput, PortInput, ServiceInput, Snapshot};

/// `ns/name`, type LoadBalancer, class flipbit.io/nginx, TCP 80 → node port 30080.
pub fn lb_service(ns: &str, name: &str) -> ServiceInput {
    ServiceInput {
        namespace: ns.into(),
        name: name.into(),
        service_type: "LoadBalancer".into(),
        load_balancer_class: Some("flipbit.io/nginx".into()),
        ports: vec![PortInput {
            name: None,
            protocol: None,
            port: 80,
            node_port: Some(30080),
        }],
        ..ServiceInput::default()
    }
}

pub fn annotated(mut svc: ServiceInput, key: &str, value: &str) -> ServiceInput {
    svc.annotations.insert(key.into(), value.into());
    svc
}

/// Node `name` at `ip`, labelled `flipbit.io/lb-backend: "true"` and schedulable.
pub fn backend_node(name: impl Into<String>, ip: impl Into<String>, ready: bool) -> NodeInput {
    NodeInput {
        name: name.into(),
        labels: BTreeMap::from([("flipbit.io/lb-backend".into(), "true".into())]),
        ready,
        unschedulable: false,
        internal_ips: vec![ip.into()],
    }
}

/// `services` on one Ready backend node, `n1` at `node_ip`.
pub fn one_node_snapshot(services: Vec<ServiceInput>, node_ip: &str) -> Snapshot {
    Snapshot {
        services,
        nodes: vec![backend_node("n1", node_ip, true)],
        ..Snapshot::default()
    }
}
