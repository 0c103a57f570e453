//! Builders shared by the core tests: a LoadBalancer Service of our class and a decision over
//! one Ready node at a fixed time.
#![allow(dead_code)]

use std::collections::BTreeMap;

use flipbit_core::config::Config;
use flipbit_core::decide::{Decision, decide_with_holds};
use flipbit_core::engine::Change;
use flipbit_core::holds::HoldUpdate;
use flipbit_core::ledger::Ledger;
use flipbit_core::model::{NodeInput, PortInput, ServiceInput, Snapshot};
use jiff::Timestamp;

/// Texts by id, counting writes: the blob store of engine tests.
#[derive(Default)]
pub struct Store {
    pub texts: std::collections::HashMap<u64, String>,
    pub writes: usize,
}

/// Applies an engine step's changes (a blob id to write, or `None` to delete) to a tree.
pub fn commit_changes(tree: &mut BTreeMap<String, u64>, changes: &BTreeMap<String, Change<u64>>) {
    for (path, change) in changes {
        match change.blob() {
            Some(id) => tree.insert(path.clone(), id),
            None => tree.remove(path),
        };
    }
}

pub fn id_of(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

impl flipbit_core::engine::Blobs for Store {
    type Id = u64;
    fn id(&mut self, text: &str) -> Result<u64, String> {
        Ok(id_of(text))
    }
    fn write(&mut self, text: &str) -> Result<u64, String> {
        self.writes += 1;
        let id = id_of(text);
        self.texts.insert(id, text.to_owned());
        Ok(id)
    }
}

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

/// Decides for `services` with one Ready node at `node_ip`, at a fixed time.
pub fn decide_one_node(config: &Config, services: Vec<ServiceInput>, node_ip: &str, ledger: &Ledger) -> Decision {
    decide_one_node_held(config, services, node_ip, ledger, &HoldUpdate::default())
}

/// [`decide_one_node`] with holds in force.
pub fn decide_one_node_held(
    config: &Config,
    services: Vec<ServiceInput>,
    node_ip: &str,
    ledger: &Ledger,
    holds: &HoldUpdate,
) -> Decision {
    let snapshot = Snapshot {
        services,
        nodes: vec![backend_node("n1", node_ip, true)],
        ..Snapshot::default()
    };
    decide_with_holds(
        &snapshot,
        config,
        ledger,
        holds,
        Timestamp::from_second(1_800_000_000).expect("time"),
    )
}
