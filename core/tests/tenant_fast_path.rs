//! Tenant pools through the engine's shortcut: with pools that admit Services by namespace and by
//! label selector, on a per-service host and a shared-listeners host, random Service changes
//! (labels above all, which end or begin a Service's admission), requested addresses, node churn,
//! time passing and pool edits give exactly the decision a full one does: same ledger, addresses,
//! events, problems and files. Along the way, an exposed Service holds only addresses of pools
//! that admit it.

mod common;

use flipbit_core::config::Config;
use flipbit_core::decide::Decision;
use flipbit_core::model::{ServiceInput, Snapshot};
use jiff::Timestamp;
use proptest::prelude::*;

const SERVICES: usize = 8;
const NODES: usize = 3;

/// lb-1: web Services' pool first, then one for everyone; lb-2 (shared listeners): namespace a's
/// pool, then b's. The edits change one rule at a time.
const CONFIGS: [&str; 3] = [
    "zone: k.test\nreleaseGraceSeconds: 600\nlbHosts:\n  - name: lb-1\n    pools:\n      - {cidr: 127.6.4.0/29, serviceSelector: {matchExpressions: [{key: tier, operator: In, values: [web]}]}}\n      - 127.6.1.0/28\n  - name: lb-2\n    layout: shared-listeners\n    pools: [{cidr: 127.6.2.0/28, namespaces: [a]}, {range: 127.6.3.1-127.6.3.9, namespaces: [b]}]\n",
    "zone: k.test\nreleaseGraceSeconds: 600\nlbHosts:\n  - name: lb-1\n    pools:\n      - {cidr: 127.6.4.0/29, serviceSelector: {matchExpressions: [{key: tier, operator: In, values: [web, db]}]}}\n      - 127.6.1.0/28\n  - name: lb-2\n    layout: shared-listeners\n    pools: [{cidr: 127.6.2.0/28, namespaces: [a]}, {range: 127.6.3.1-127.6.3.9, namespaces: [b]}]\n",
    "zone: k.test\nreleaseGraceSeconds: 600\nlbHosts:\n  - name: lb-1\n    pools:\n      - {cidr: 127.6.4.0/29, serviceSelector: {matchExpressions: [{key: tier, operator: In, values: [web]}]}}\n      - 127.6.1.0/28\n  - name: lb-2\n    layout: shared-listeners\n    pools: [{cidr: 127.6.2.0/28, namespaces: [a, b]}, {range: 127.6.3.1-127.6.3.9, namespaces: [b]}]\n",
];

#[derive(Debug, Clone)]
enum Op {
    Create(usize),
    Delete(usize),
    /// Sets (or, with `None`, removes) the `tier` label.
    Label(usize, Option<&'static str>),
    /// Requests an address, or stops requesting.
    Ask(usize, Option<&'static str>),
    /// Another label, which no pool looks at.
    Other(usize),
    NodeFlip(usize),
    Advance(u32),
    Config(usize),
    Nothing,
}

fn op() -> impl Strategy<Value = Op> {
    let tier = prop_oneof![Just(None), Just(Some("web")), Just(Some("db")), Just(Some("api"))];
    let ask = prop_oneof![
        Just(None),
        Just(Some("127.6.4.3")),
        Just(Some("127.6.1.9")),
        Just(Some("127.6.3.2"))
    ];
    prop_oneof![
        4 => (0..SERVICES).prop_map(Op::Create),
        2 => (0..SERVICES).prop_map(Op::Delete),
        5 => (0..SERVICES, tier).prop_map(|(i, t)| Op::Label(i, t)),
        1 => (0..SERVICES, ask).prop_map(|(i, a)| Op::Ask(i, a)),
        1 => (0..SERVICES).prop_map(Op::Other),
        1 => (0..NODES).prop_map(Op::NodeFlip),
        1 => (1u32..900).prop_map(Op::Advance),
        1 => (0..CONFIGS.len()).prop_map(Op::Config),
        2 => Just(Op::Nothing),
    ]
}

/// Service `i`: `a/s<i>` for even `i`, `b/s<i>` for odd.
fn service(i: usize) -> ServiceInput {
    common::lb_service(if i.is_multiple_of(2) { "a" } else { "b" }, &format!("s{i}"))
}

struct World {
    snapshot: Snapshot,
    config: usize,
    now: Timestamp,
    repo: common::Repo,
}

impl World {
    fn new() -> Self {
        let node = |i: usize| common::backend_node(format!("n{i}"), format!("127.6.0.{}", 10 + i), true);
        Self {
            snapshot: Snapshot {
                nodes: (0..NODES).map(node).collect(),
                ..Snapshot::default()
            },
            config: 0,
            now: Timestamp::from_second(1_800_000_000).expect("time"),
            repo: common::Repo::new(),
        }
    }

    fn config(&self) -> Config {
        Config::parse(CONFIGS[self.config]).expect("config")
    }

    fn service_mut(&mut self, i: usize) -> Option<&mut ServiceInput> {
        let name = service(i).name;
        self.snapshot.services.iter_mut().find(|s| s.name == name)
    }

    fn apply(&mut self, op: &Op) {
        match op.clone() {
            Op::Create(i) => {
                if self.service_mut(i).is_none() {
                    self.snapshot.services.push(service(i));
                }
            }
            Op::Delete(i) => self.snapshot.services.retain(|s| s.name != service(i).name),
            Op::Label(i, tier) => {
                if let Some(s) = self.service_mut(i) {
                    match tier {
                        Some(t) => s.labels.insert("tier".into(), t.into()),
                        None => s.labels.remove("tier"),
                    };
                }
            }
            Op::Ask(i, ask) => {
                if let Some(s) = self.service_mut(i) {
                    match ask {
                        Some(ip) => s.annotations.insert("flipbit.io/ips".into(), ip.into()),
                        None => s.annotations.remove("flipbit.io/ips"),
                    };
                }
            }
            Op::Other(i) => {
                if let Some(s) = self.service_mut(i) {
                    let n = s.labels.get("rev").map_or(0, |v| v.len());
                    s.labels.insert("rev".into(), "x".repeat(n % 3 + 1));
                }
            }
            Op::NodeFlip(i) => self.snapshot.nodes[i].ready = !self.snapshot.nodes[i].ready,
            Op::Advance(s) => self.now = common::after(self.now, s),
            Op::Config(c) => self.config = c,
            Op::Nothing => {}
        }
    }

    /// One engine decision, checked against a full decision on the same inputs, then committed.
    fn cycle(&mut self) -> Result<Decision, TestCaseError> {
        let config = self.config();
        let (_, decision, step) = self.repo.decide_as_full(&self.snapshot, &config, self.now)?;
        // Every exposed Service holds addresses of pools that admit it only.
        for (key, summary) in decision.exposed.iter() {
            let svc = self
                .snapshot
                .services
                .iter()
                .find(|s| s.namespace == key.namespace.as_str() && s.name == key.name.as_str())
                .expect("an exposed Service is an input");
            for (host, ip) in summary.addresses.iter().chain(&summary.addresses_v6) {
                let admitted = config.host(host).is_some_and(|h| {
                    h.pools
                        .iter()
                        .any(|p| p.contains(*ip) && p.admits(&svc.namespace, &svc.labels))
                });
                prop_assert!(
                    admitted,
                    "{} holds {} on {}, outside the pools admitting it",
                    key,
                    ip,
                    host
                );
            }
        }
        self.repo.advance(step, &decision);
        Ok(decision)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_shortcut_decides_tenant_pools_exactly_as_a_full_decision(ops in proptest::collection::vec(op(), 1..30)) {
        common::create_four_then(&mut World::new(), &ops, Op::Create, World::apply, World::cycle)?;
    }
}

/// A label change that ends a Service's admission is decided by the shortcut and moves that
/// Service alone.
#[test]
fn a_label_change_takes_the_shortcut_and_moves_one_service() {
    let mut world = World::new();
    for i in 0..4 {
        world.apply(&Op::Create(i));
        world.apply(&Op::Label(i, Some("web")));
    }
    let cold = world.cycle().expect("cold");
    let fast = world.repo.engine.fast_decisions();
    world.apply(&Op::Label(2, Some("api")));
    let moved = world.cycle().expect("label");
    assert_eq!(
        world.repo.engine.fast_decisions(),
        fast + 1,
        "a label change took a full decision"
    );
    for (key, summary) in cold.exposed.iter() {
        let now = &moved.exposed[key];
        if key.to_string() == "a/s2" {
            assert_eq!(
                now.addresses
                    .iter()
                    .find(|(h, _)| h.as_str() == "lb-1")
                    .map(|(_, ip)| ip.to_string()),
                Some("127.6.1.1".into())
            );
        } else {
            assert_eq!(now.addresses, summary.addresses, "{key} moved");
        }
    }
    assert!(
        moved
            .problems
            .iter()
            .any(|p| p.message.contains("pool 127.6.4.0/29 no longer admits it")),
        "{:?}",
        moved.problems
    );
}
