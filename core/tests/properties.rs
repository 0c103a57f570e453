//! Property tests of the address promise: random sequences of Service create/delete/update,
//! shared keys, node churn, pool growth and shrinkage, generator restarts (the ledger reloaded
//! from its YAML), time passing, and two generators racing. After every step:
//! - no address is held twice on a host, except by members of one sharing group;
//! - no live Service's address changes unless it left its host's pools;
//! - deciding again from the written ledger changes nothing (a fresh generator agrees).
//!
//! Also: the `flipbit.yaml` and ledger loaders never panic on arbitrary input.

use std::collections::BTreeMap;
use std::net::IpAddr;

use flipbit_core::config::Config;
use flipbit_core::decide::{Decision, decide};
use flipbit_core::ledger::Ledger;
use flipbit_core::model::{NodeInput, PortInput, ServiceInput, Snapshot};
use flipbit_core::names::ServiceKey;
use jiff::Timestamp;
use proptest::prelude::*;

const SERVICES: usize = 8;
const NODES: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    Create(usize),
    Delete(usize),
    Ports(usize, u16),
    Share(usize, Option<u8>),
    NodeFlip(usize),
    GrowPool,
    ShrinkPool,
    Restart,
    Advance(u32),
    Race(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..SERVICES).prop_map(Op::Create),
        2 => (0..SERVICES).prop_map(Op::Delete),
        2 => (0..SERVICES, 1u16..4).prop_map(|(i, p)| Op::Ports(i, p)),
        2 => (0..SERVICES, proptest::option::of(0u8..2)).prop_map(|(i, k)| Op::Share(i, k)),
        2 => (0..NODES).prop_map(Op::NodeFlip),
        1 => Just(Op::GrowPool),
        1 => Just(Op::ShrinkPool),
        1 => Just(Op::Restart),
        1 => (1u32..7200).prop_map(Op::Advance),
        1 => (0..SERVICES).prop_map(Op::Race),
    ]
}

#[derive(Clone)]
struct World {
    services: BTreeMap<usize, (u16, Option<u8>)>,
    ready: [bool; NODES],
    /// lb-1's pool: small, medium or large.
    pool: usize,
    now: i64,
}

const POOLS: [&str; 3] = ["127.5.1.0/29", "127.5.1.0/28", "127.5.1.0/27"];

impl World {
    fn config(&self) -> Config {
        Config::parse(&format!(
            "zone: k.test\nreleaseGraceSeconds: 3600\nlbHosts:\n  - {{name: lb-1, pools: [{}]}}\n  - {{name: lb-2, pools: [127.5.2.0/28]}}\n",
            POOLS[self.pool]
        ))
        .expect("config")
    }

    fn snapshot(&self) -> Snapshot {
        let services = self
            .services
            .iter()
            .map(|(i, (port, share))| {
                let mut annotations = BTreeMap::new();
                if let Some(k) = share {
                    annotations.insert("flipbit.io/shared-ip-key".to_owned(), format!("k{k}"));
                }
                ServiceInput {
                    namespace: if i % 2 == 0 { "even" } else { "odd" }.into(),
                    name: format!("s{i}"),
                    service_type: "LoadBalancer".into(),
                    load_balancer_class: Some("flipbit.io/nginx".into()),
                    annotations,
                    ports: vec![PortInput {
                        name: None,
                        protocol: None,
                        port: i32::from(*port),
                        node_port: Some(30000),
                    }],
                    external_traffic_policy: None,
                    created: Timestamp::from_second(1_700_000_000 + *i as i64).ok(),
                    ip_families: Vec::new(),
                    external_ips: Vec::new(),
                    load_balancer_source_ranges: Vec::new(),
                    session_affinity: None,
                    labels: Default::default(),
                }
            })
            .collect();
        let nodes = (0..NODES)
            .map(|n| NodeInput {
                name: format!("n{n}"),
                labels: BTreeMap::from([("flipbit.io/lb-backend".into(), "true".into())]),
                ready: self.ready[n],
                unschedulable: false,
                internal_ips: vec![format!("127.5.0.{}", 10 + n)],
            })
            .collect();
        Snapshot {
            services,
            nodes,
            ..Snapshot::default()
        }
    }

    fn time(&self) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + self.now).expect("time")
    }

    fn decide(&self, ledger: &Ledger) -> Decision {
        decide(&self.snapshot(), &self.config(), ledger, self.time())
    }
}

fn live(ledger: &Ledger) -> BTreeMap<ServiceKey, BTreeMap<String, IpAddr>> {
    ledger
        .services
        .iter()
        .filter(|(_, e)| e.released_at.is_none())
        .map(|(k, e)| {
            (
                k.clone(),
                e.addresses.iter().map(|(h, ip)| (h.to_string(), *ip)).collect(),
            )
        })
        .collect()
}

fn check(before: &Ledger, after: &Decision, world: &World) -> Result<(), TestCaseError> {
    // 1. No double holding outside a sharing group (the loader checks exactly that).
    let reloaded = Ledger::parse(&after.ledger.to_yaml()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&reloaded, &after.ledger);
    // 2. Live addresses stay, unless they left the pools.
    let config = world.config();
    let (old, new) = (live(before), live(&after.ledger));
    for (key, hosts) in &old {
        let Some(now) = new.get(key) else { continue };
        for (host, ip) in hosts {
            let still_in_pool = config
                .lb_hosts
                .iter()
                .any(|h| h.name.as_str() == host && h.in_pools(*ip));
            if let Some(current) = now.get(host) {
                prop_assert!(
                    current == ip || !still_in_pool,
                    "{} moved on {} from {} to {}",
                    key,
                    host,
                    ip,
                    current
                );
            }
        }
    }
    // 3. A fresh generator from the written ledger agrees.
    let again = world.decide(&reloaded);
    prop_assert_eq!(&again.ledger, &after.ledger, "deciding again changed the ledger");
    prop_assert_eq!(&again.files, &after.files, "deciding again changed the files");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn addresses_are_never_doubled_or_moved(ops in proptest::collection::vec(op(), 1..40)) {
        let mut world = World { services: BTreeMap::new(), ready: [true; NODES], pool: 1, now: 0 };
        let mut ledger = Ledger::empty();
        for op in ops {
            match op {
                Op::Create(i) => { world.services.entry(i).or_insert((1, None)); }
                Op::Delete(i) => { world.services.remove(&i); }
                Op::Ports(i, p) => { if let Some(s) = world.services.get_mut(&i) { s.0 = p; } }
                Op::Share(i, k) => { if let Some(s) = world.services.get_mut(&i) { s.1 = k; } }
                Op::NodeFlip(n) => world.ready[n] = !world.ready[n],
                Op::GrowPool => world.pool = (world.pool + 1).min(POOLS.len() - 1),
                Op::ShrinkPool => world.pool = world.pool.saturating_sub(1),
                Op::Restart => ledger = Ledger::parse(&ledger.to_yaml()).map_err(|e| TestCaseError::fail(e.to_string()))?,
                Op::Advance(secs) => world.now += i64::from(secs),
                Op::Race(i) => {
                    // Two generators decide from the same ledger; one wins the push, the other
                    // fetches the winner's ledger and decides again.
                    let mut other = world.clone();
                    other.services.entry(i).or_insert((2, None));
                    let winner = world.decide(&ledger);
                    check(&ledger, &winner, &world)?;
                    let loser = other.decide(&winner.ledger);
                    check(&winner.ledger, &loser, &other)?;
                    world = other;
                    ledger = loser.ledger;
                    continue;
                }
            }
            let decision = world.decide(&ledger);
            check(&ledger, &decision, &world)?;
            ledger = decision.ledger;
        }
    }

    #[test]
    fn loaders_never_panic(text in "\\PC{0,400}") {
        let _ = Config::parse(&text);
        let _ = Ledger::parse(&text);
    }

    #[test]
    fn loaders_never_panic_on_near_valid_yaml(
        host in "[a-z0-9-]{0,8}",
        pool in "[0-9./:-]{0,20}",
        ip in "[0-9a-f.:]{0,16}",
        version in 0u32..3,
    ) {
        let _ = Config::parse(&format!("zone: k.test\nlbHosts:\n  - name: {host}\n    pools: [\"{pool}\"]\n"));
        let _ = Ledger::parse(&format!("version: {version}\nservices:\n  a/b:\n    addresses:\n      {host}: \"{ip}\"\n"));
    }
}
