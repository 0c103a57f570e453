//! Property tests of the address promise: random sequences of Service create/delete/update,
//! shared keys, node churn, pool growth and shrinkage, generator restarts (the ledger reloaded
//! from its YAML), time passing, and two generators racing; and, with tenant pools, random
//! admission rules (namespaces, label selectors of every operator) edited at random, random
//! label changes and requested addresses. After every step:
//! - no address is held twice on a host, except by members of one sharing group;
//! - no live Service's address changes while it stays inside a pool of its host that admits it
//!   (unless it asked for another address, or changed its sharing group);
//! - an exposed Service holds only addresses of pools that admit it, and a request in a pool that
//!   does not admit it is refused naming the pool;
//! - deciding again from the written ledger changes nothing (a fresh generator agrees).
//!
//! Also: the `flipbit.yaml` and ledger loaders never panic on arbitrary input.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;

use flipbit_core::config::Config;
use flipbit_core::decide::{Decision, decide};
use flipbit_core::ledger::Ledger;
use flipbit_core::model::{PortInput, ServiceInput, Snapshot};
use flipbit_core::names::ServiceKey;
use flipbit_core::problem::Severity;
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
    /// Sets the admission rule of one of the tenant world's pools (an index into [`RULES`]).
    Rule(usize, usize),
    /// Sets or clears a Service's `tier` label.
    Label(usize, Option<u8>),
    /// Sets or clears a Service's requested address (an index into [`ASKS`]).
    Ask(usize, Option<usize>),
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

/// The tenant world's ops besides [`op`]'s: rules, labels, requests.
fn tenant_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => op(),
        2 => (0..3usize, 0..RULES.len()).prop_map(|(p, r)| Op::Rule(p, r)),
        2 => (0..SERVICES, proptest::option::of(0u8..3)).prop_map(|(i, t)| Op::Label(i, t)),
        1 => (0..SERVICES, proptest::option::of(0..ASKS.len())).prop_map(|(i, a)| Op::Ask(i, a)),
    ]
}

#[derive(Clone, Default)]
struct Svc {
    port: u16,
    share: Option<u8>,
    /// The `tier` label: `t0`, `t1`, `t2`.
    tier: Option<u8>,
    /// `flipbit.io/ips`, an index into [`ASKS`].
    ask: Option<usize>,
}

#[derive(Clone)]
struct World {
    services: BTreeMap<usize, Svc>,
    ready: [bool; NODES],
    /// lb-1's pool: small, medium or large.
    pool: usize,
    now: i64,
    /// Tenant pools: lb-1 gets a tenant pool before its own, and the rules of (lb-1's tenant
    /// pool, lb-1's pool, lb-2's pool) as indices into [`RULES`]; `None` for the plain world.
    rules: Option<[usize; 3]>,
}

const POOLS: [&str; 3] = ["127.5.1.0/29", "127.5.1.0/28", "127.5.1.0/27"];

/// Admission rules (the keys a pool object adds to its `cidr`); services live in namespaces
/// `even` and `odd`.
const RULES: [&str; 9] = [
    "",
    ", namespaces: [even]",
    ", namespaces: [odd]",
    ", serviceSelector: {matchLabels: {tier: t0}}",
    ", serviceSelector: {matchExpressions: [{key: tier, operator: In, values: [t0, t1]}]}",
    ", serviceSelector: {matchExpressions: [{key: tier, operator: NotIn, values: [t0]}]}",
    ", serviceSelector: {matchExpressions: [{key: tier, operator: Exists}]}",
    ", serviceSelector: {matchExpressions: [{key: tier, operator: DoesNotExist}]}",
    ", namespaces: [odd], serviceSelector: {matchExpressions: [{key: tier, operator: Exists}]}",
];

/// Addresses a Service may request: in lb-1's tenant pool, lb-1's pool, lb-2's pool.
const ASKS: [&str; 4] = ["127.5.3.2", "127.5.3.5", "127.5.1.3", "127.5.2.4"];

impl World {
    fn new(rules: Option<[usize; 3]>) -> Self {
        World {
            services: BTreeMap::new(),
            ready: [true; NODES],
            pool: 1,
            now: 0,
            rules,
        }
    }

    fn config(&self) -> Config {
        let text = match self.rules {
            None => format!(
                "zone: k.test\nreleaseGraceSeconds: 3600\nlbHosts:\n  - {{name: lb-1, pools: [{}]}}\n  - {{name: lb-2, pools: [127.5.2.0/28]}}\n",
                POOLS[self.pool]
            ),
            Some([tenant, own, other]) => format!(
                "zone: k.test\nreleaseGraceSeconds: 3600\nlbHosts:\n  - {{name: lb-1, pools: [{{cidr: 127.5.3.0/29{}}}, {{cidr: {}{}}}]}}\n  - {{name: lb-2, pools: [{{cidr: 127.5.2.0/28{}}}]}}\n",
                RULES[tenant], POOLS[self.pool], RULES[own], RULES[other]
            ),
        };
        Config::parse(&text).expect("config")
    }

    fn snapshot(&self) -> Snapshot {
        let services = self
            .services
            .iter()
            .map(|(i, svc)| {
                let mut annotations = BTreeMap::new();
                if let Some(k) = svc.share {
                    annotations.insert("flipbit.io/shared-ip-key".to_owned(), format!("k{k}"));
                }
                if let Some(a) = svc.ask {
                    annotations.insert("flipbit.io/ips".to_owned(), ASKS[a].to_owned());
                }
                let labels = svc
                    .tier
                    .map(|t| ("tier".to_owned(), format!("t{t}")))
                    .into_iter()
                    .collect();
                ServiceInput {
                    namespace: if i % 2 == 0 { "even" } else { "odd" }.into(),
                    name: format!("s{i}"),
                    service_type: "LoadBalancer".into(),
                    load_balancer_class: Some("flipbit.io/nginx".into()),
                    annotations,
                    ports: vec![PortInput {
                        name: None,
                        protocol: None,
                        port: i32::from(svc.port),
                        node_port: Some(30000),
                    }],
                    external_traffic_policy: None,
                    created: Timestamp::from_second(1_700_000_000 + *i as i64).ok(),
                    ip_families: Vec::new(),
                    external_ips: Vec::new(),
                    load_balancer_source_ranges: Vec::new(),
                    session_affinity: None,
                    labels,
                }
            })
            .collect();
        let nodes = (0..NODES)
            .map(|n| common::backend_node(format!("n{n}"), format!("127.5.0.{}", 10 + n), self.ready[n]))
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

/// The promise after one step from `before` (decided in `prev`) to `after` (decided in `world`).
fn check(before: &Ledger, after: &Decision, prev: &World, world: &World) -> Result<(), TestCaseError> {
    // 1. No double holding outside a sharing group (the loader checks exactly that).
    let reloaded = Ledger::parse(&after.ledger.to_yaml()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&reloaded, &after.ledger);
    let config = world.config();
    let snapshot = world.snapshot();
    let input = |key: &ServiceKey| {
        snapshot
            .services
            .iter()
            .find(|s| s.namespace == key.namespace.as_str() && s.name == key.name.as_str())
    };
    // True when `ip` on `host` lies in a pool that admits `key`'s Service.
    let admitted = |key: &ServiceKey, host: &str, ip: IpAddr| {
        let Some(svc) = input(key) else { return false };
        config.lb_hosts.iter().any(|h| {
            h.name.as_str() == host
                && h.pools
                    .iter()
                    .any(|p| p.contains(ip) && p.admits(&svc.namespace, &svc.labels))
        })
    };
    let index = |key: &ServiceKey| key.name.as_str().trim_start_matches('s').parse::<usize>().ok();
    let share_of = |w: &World, key: &ServiceKey| index(key).and_then(|i| w.services.get(&i)).map(|s| s.share);
    // 2. Live addresses stay while they are admitted, unless the Service asked for another or
    //    changed its sharing group.
    let (old, new) = (live(before), live(&after.ledger));
    for (key, hosts) in &old {
        let Some(now) = new.get(key) else { continue };
        let asked = input(key).and_then(|s| s.annotations.get("flipbit.io/ips")).cloned();
        let regrouped = share_of(prev, key) != share_of(world, key);
        for (host, ip) in hosts {
            if let Some(current) = now.get(host) {
                prop_assert!(
                    current == ip
                        || !admitted(key, host, *ip)
                        || asked.as_deref() == Some(current.to_string().as_str())
                        || regrouped,
                    "{} moved on {} from {} to {} while admitted",
                    key,
                    host,
                    ip,
                    current
                );
            }
        }
    }
    // 3. An exposed Service holds only addresses of pools that admit it.
    for (key, summary) in after.exposed.iter() {
        for (host, ip) in summary.addresses.iter().chain(&summary.addresses_v6) {
            prop_assert!(
                admitted(key, host.as_str(), *ip),
                "{} holds {} on {}, which no pool admitting it holds",
                key,
                ip,
                host
            );
        }
    }
    // 4. A request in a pool that does not admit its Service is refused naming the pool.
    for svc in &snapshot.services {
        let Some(ask) = svc.annotations.get("flipbit.io/ips") else {
            continue;
        };
        let Ok(ip) = ask.parse::<IpAddr>() else { continue };
        let key: ServiceKey = format!("{}/{}", svc.namespace, svc.name).parse().expect("key");
        let Some(host) = config.lb_hosts.iter().find(|h| h.in_pools(ip)) else {
            continue;
        };
        if after.kept.contains(&key) || admitted(&key, host.name.as_str(), ip) {
            continue;
        }
        let object = format!("Service {key}");
        prop_assert!(
            after.problems.iter().any(|p| p.severity == Severity::Error
                && p.object.to_string() == object
                && p.message.contains(&format!("{ip} on LB host {}: lbHosts[", host.name))
                && p.message.contains(" admits only ")),
            "the refused request of {} for {} says nothing: {:?}",
            key,
            ip,
            after.problems
        );
    }
    // 5. A fresh generator from the written ledger agrees.
    let again = world.decide(&reloaded);
    prop_assert_eq!(&again.ledger, &after.ledger, "deciding again changed the ledger");
    prop_assert_eq!(&again.files, &after.files, "deciding again changed the files");
    Ok(())
}

/// Applies `ops` to a world, checking the promise after every decision.
fn play(mut world: World, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut ledger = Ledger::empty();
    for op in ops {
        let prev = world.clone();
        match op {
            Op::Create(i) => {
                world.services.entry(i).or_insert(Svc {
                    port: 1,
                    ..Svc::default()
                });
            }
            Op::Delete(i) => {
                world.services.remove(&i);
            }
            Op::Ports(i, p) => {
                if let Some(s) = world.services.get_mut(&i) {
                    s.port = p;
                }
            }
            Op::Share(i, k) => {
                if let Some(s) = world.services.get_mut(&i) {
                    s.share = k;
                }
            }
            Op::NodeFlip(n) => world.ready[n] = !world.ready[n],
            Op::GrowPool => world.pool = (world.pool + 1).min(POOLS.len() - 1),
            Op::ShrinkPool => world.pool = world.pool.saturating_sub(1),
            Op::Restart => ledger = Ledger::parse(&ledger.to_yaml()).map_err(|e| TestCaseError::fail(e.to_string()))?,
            Op::Advance(secs) => world.now += i64::from(secs),
            Op::Rule(p, r) => {
                if let Some(rules) = &mut world.rules {
                    rules[p] = r;
                }
            }
            Op::Label(i, t) => {
                if let Some(s) = world.services.get_mut(&i) {
                    s.tier = t;
                }
            }
            Op::Ask(i, a) => {
                if let Some(s) = world.services.get_mut(&i) {
                    s.ask = a;
                }
            }
            Op::Race(i) => {
                // Two generators decide from the same ledger; one wins the push, the other
                // fetches the winner's ledger and decides again.
                let mut other = world.clone();
                other.services.entry(i).or_insert(Svc {
                    port: 2,
                    ..Svc::default()
                });
                let winner = world.decide(&ledger);
                check(&ledger, &winner, &world, &world)?;
                let loser = other.decide(&winner.ledger);
                check(&winner.ledger, &loser, &world, &other)?;
                world = other;
                ledger = loser.ledger;
                continue;
            }
        }
        let decision = world.decide(&ledger);
        check(&ledger, &decision, &prev, &world)?;
        ledger = decision.ledger;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn addresses_are_never_doubled_or_moved(ops in proptest::collection::vec(op(), 1..40)) {
        play(World::new(None), ops)?;
    }

    #[test]
    fn tenant_pools_keep_admitted_addresses_and_give_none_outside(
        rules in proptest::array::uniform3(0..RULES.len()),
        ops in proptest::collection::vec(tenant_op(), 1..40),
    ) {
        play(World::new(Some(rules)), ops)?;
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

    #[test]
    fn loaders_never_panic_on_near_valid_pool_objects(
        form in "(cidr|range|cidrs)",
        pool in "[0-9./:-]{0,20}",
        namespace in "[a-zA-Z0-9_-]{0,8}",
        key in "[a-zA-Z0-9./_-]{0,12}",
        operator in "(In|NotIn|Exists|DoesNotExist|in)",
        values in proptest::collection::vec("[a-z0-9._ -]{0,6}", 0..3),
    ) {
        let values = values.iter().map(|v| format!("\"{v}\"")).collect::<Vec<_>>().join(", ");
        let text = format!(
            "zone: k.test\nlbHosts:\n  - name: lb-1\n    pools:\n      - {form}: \"{pool}\"\n        namespaces: [\"{namespace}\"]\n        serviceSelector:\n          matchLabels: {{\"{key}\": \"{namespace}\"}}\n          matchExpressions: [{{key: \"{key}\", operator: {operator}, values: [{values}]}}]\n"
        );
        let _ = Config::parse(&text);
    }
}
