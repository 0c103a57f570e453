//! The engine's shortcut (a decision that looks only at the Services that changed) reaches exactly
//! the decision a full one does: same ledger, addresses, summaries, kept Services, events, problems
//! and files, through random sequences of Service changes of every kind (annotations valid and
//! not, ports, hostnames, shared keys, requested addresses, external IPs, Services that stop being
//! ours or appear without being ours (they own their default DNS names all the same), keys that
//! are not keys, Services listed twice, pod-backed Services, `externalTrafficPolicy: Local`),
//! EndpointSlice churn (pods ready, not ready, gone, both families, slices in another order),
//! node churn and time passing, on a per-service host, a shared-listeners host and a HAProxy host.

mod common;

use flipbit_core::config::Config;
use flipbit_core::decide::{Decision, decide_with_holds};
use flipbit_core::engine::Engine;
use flipbit_core::holds::HoldUpdate;
use flipbit_core::model::{
    EndpointInput, EndpointPortInput, EndpointSliceInput, NodeInput, PortInput, ServiceInput, Snapshot,
};
use jiff::Timestamp;
use proptest::prelude::*;

const SERVICES: usize = 10;
const NODES: usize = 4;

fn config() -> Config {
    Config::parse(
        "zone: k.test\nreleaseGraceSeconds: 600\nmaxNodesPerService: 2\nlbHosts:\n  - {name: lb-1, pools: [127.5.1.0/28]}\n  - {name: lb-2, layout: shared-listeners, pools: [127.5.2.0/28]}\n  - {name: lb-3, flavor: haproxy, pools: [127.5.3.0/28]}\n",
    )
    .expect("config")
}

#[derive(Debug, Clone)]
enum Op {
    Create(usize),
    /// Creates a Service that is not ours (ClusterIP): it still owns its default DNS name.
    CreateInternal(usize),
    /// Creates a pod-backed Service with named ports, and two ready pods.
    CreatePods(usize),
    Delete(usize),
    Annotate(usize, &'static str, &'static str),
    Unannotate(usize, &'static str),
    Ports(usize, u8),
    NotOurs(usize),
    /// Lists `spec.externalIPs` on the Service, or clears them (a warning).
    ExternalIps(usize),
    Twice(usize),
    /// Toggles `externalTrafficPolicy: Local`.
    Local(usize),
    /// Replaces the EndpointSlices of Service `i` with variant `v` (see [`slices`]).
    Endpoints(usize, u8),
    /// Reverses the order of all EndpointSlices (as a watch cache may list them).
    ReorderSlices,
    NodeFlip(usize),
    Advance(u32),
    Nothing,
}

/// What `Annotate` sets: good values and bad, hostnames free and taken, a shared key, a requested
/// address, one LB host, and pod backends (listed twice: twice as likely).
const ANNOTATIONS: [(&str, &str); 12] = [
    ("flipbit.io/balance", "least-conn"),
    ("flipbit.io/balance", "bogus"),
    ("flipbit.io/max-nodes", "1"),
    ("flipbit.io/dns-ttl", "60"),
    ("flipbit.io/hostname", "www.k.test"),
    ("flipbit.io/hostname", "s1.a.k.test"),
    ("flipbit.io/hostname", "ns1.k.test"),
    ("flipbit.io/shared-ip-key", "web"),
    ("flipbit.io/ips", "127.5.1.3"),
    ("flipbit.io/load-balancers", "lb-1"),
    ("flipbit.io/backends", "pods"),
    ("flipbit.io/backends", "pods"),
];

fn op() -> impl Strategy<Value = Op> {
    // One of the annotations with equal weights, as `prop_oneof!` of each would be.
    let annotation = proptest::strategy::Union::new(ANNOTATIONS.map(Just));
    let key = prop_oneof![
        Just("flipbit.io/balance"),
        Just("flipbit.io/hostname"),
        Just("flipbit.io/shared-ip-key"),
        Just("flipbit.io/ips"),
        Just("flipbit.io/load-balancers"),
        Just("flipbit.io/backends"),
    ];
    prop_oneof![
        4 => (0..SERVICES).prop_map(Op::Create),
        1 => (0..SERVICES).prop_map(Op::CreateInternal),
        3 => (0..SERVICES).prop_map(Op::CreatePods),
        2 => (0..SERVICES).prop_map(Op::Delete),
        4 => (0..SERVICES, annotation).prop_map(|(i, (k, v))| Op::Annotate(i, k, v)),
        2 => (0..SERVICES, key).prop_map(|(i, k)| Op::Unannotate(i, k)),
        2 => (0..SERVICES, 0u8..4).prop_map(|(i, p)| Op::Ports(i, p)),
        1 => (0..SERVICES).prop_map(Op::NotOurs),
        1 => (0..SERVICES).prop_map(Op::ExternalIps),
        1 => (0..SERVICES).prop_map(Op::Twice),
        1 => (0..SERVICES).prop_map(Op::Local),
        4 => (0..SERVICES, 0u8..7).prop_map(|(i, v)| Op::Endpoints(i, v)),
        1 => Just(Op::ReorderSlices),
        1 => (0..NODES).prop_map(Op::NodeFlip),
        1 => (1u32..900).prop_map(Op::Advance),
        2 => Just(Op::Nothing),
    ]
}

fn node(i: usize, ready: bool) -> NodeInput {
    common::backend_node(format!("n{i}"), format!("127.5.0.{}", 10 + i), ready)
}

/// Service `i`; number 9 has a name that is not a Kubernetes name.
fn service(i: usize) -> ServiceInput {
    let name = if i == 9 { "Bad_Name".to_owned() } else { format!("s{i}") };
    common::lb_service("a", &name)
}

fn ports(p: u8) -> Vec<PortInput> {
    let port = |protocol: &str, port: i32, node_port: i32| PortInput {
        name: Some(format!("{}-{port}", protocol.to_lowercase())),
        protocol: Some(protocol.into()),
        port,
        node_port: Some(node_port),
    };
    match p {
        0 => vec![port("TCP", 80, 30080)],
        1 => vec![port("TCP", 80, 30080), port("TCP", 443, 30443)],
        2 => vec![port("UDP", 53, 30053)],
        _ => vec![port("TCP", 80, 30080), port("UDP", 53, 30053)],
    }
}

/// The EndpointSlices of Service `i`, variant `v`: none; one IPv4 slice of two ready pods; the
/// same with one pod not ready and a third one ready; an IPv4 and an IPv6 slice; a slice whose
/// ports have no names (they serve no named Service port); the pods of a rolling update, spread
/// over two slices with different target ports; a pod that serves one port only (the ports then
/// send to different pods, which needs output format 2). Port names are those of [`ports`].
fn slices(i: usize, v: u8) -> Vec<EndpointSliceInput> {
    let port = |name: Option<&str>, protocol: &str, port: i32| EndpointPortInput {
        name: name.map(str::to_owned),
        protocol: Some(protocol.into()),
        port: Some(port),
    };
    let named = |offset: i32| {
        vec![
            port(Some("tcp-80"), "TCP", 8080 + offset),
            port(Some("tcp-443"), "TCP", 8443 + offset),
            port(Some("udp-53"), "UDP", 5353 + offset),
        ]
    };
    let pod = |ip: String, ready: Option<bool>| EndpointInput {
        addresses: vec![ip],
        ready,
    };
    let v4 = |last: u8| format!("10.9.{i}.{last}");
    let slice = |family: &str, ports, endpoints, ready_nodes: &[&str]| EndpointSliceInput {
        namespace: "a".into(),
        service_name: service(i).name,
        ready_nodes: ready_nodes.iter().map(|n| (*n).to_owned()).collect(),
        address_type: family.into(),
        ports,
        endpoints,
    };
    match v {
        0 => Vec::new(),
        1 => vec![slice(
            "IPv4",
            named(0),
            vec![pod(v4(1), Some(true)), pod(v4(2), None)],
            &["n0"],
        )],
        2 => vec![slice(
            "IPv4",
            named(0),
            vec![pod(v4(1), Some(true)), pod(v4(2), Some(false)), pod(v4(3), Some(true))],
            &["n1", "n2"],
        )],
        3 => vec![
            slice("IPv4", named(0), vec![pod(v4(1), Some(true))], &["n0"]),
            slice(
                "IPv6",
                named(0),
                vec![pod(format!("fd00:9::{i}:1"), Some(true))],
                &["n0"],
            ),
        ],
        4 => vec![slice(
            "IPv4",
            vec![port(None, "TCP", 8080)],
            vec![pod(v4(1), Some(true))],
            &["n3"],
        )],
        5 => vec![
            slice("IPv4", named(0), vec![pod(v4(1), Some(true))], &["n0"]),
            slice("IPv4", named(1), vec![pod(v4(4), Some(true))], &["n1"]),
        ],
        _ => vec![
            slice("IPv4", named(0), vec![pod(v4(1), Some(true))], &["n0"]),
            slice(
                "IPv4",
                vec![port(Some("tcp-80"), "TCP", 8080)],
                vec![pod(v4(5), Some(true))],
                &["n1"],
            ),
        ],
    }
}

struct World {
    snapshot: Snapshot,
    now: Timestamp,
    repo: common::Repo,
    /// After each commit the engine is rebuilt from what it keeps between processes (as
    /// `flipbit-generator render` reads it back from its cache dir), decision memory included.
    restart: bool,
}

impl World {
    fn new() -> Self {
        Self {
            snapshot: Snapshot {
                nodes: (0..NODES).map(|i| node(i, true)).collect(),
                ..Snapshot::default()
            },
            now: Timestamp::from_second(1_800_000_000).expect("time"),
            repo: common::Repo::new(),
            restart: false,
        }
    }

    /// A new world with Services `services` created, nothing decided yet.
    fn with_services(services: impl IntoIterator<Item = usize>) -> Self {
        let mut world = Self::new();
        for i in services {
            world.apply(&Op::Create(i));
        }
        world
    }

    fn position(&self, i: usize) -> Option<usize> {
        let name = service(i).name;
        self.snapshot.services.iter().position(|s| s.name == name)
    }

    fn service_mut(&mut self, i: usize) -> Option<&mut ServiceInput> {
        let p = self.position(i)?;
        self.snapshot.services.get_mut(p)
    }

    fn apply(&mut self, op: &Op) {
        match op.clone() {
            Op::Create(i) => {
                if self.position(i).is_none() {
                    self.snapshot.services.push(service(i));
                }
            }
            Op::CreateInternal(i) => {
                if self.position(i).is_none() {
                    let mut internal = service(i);
                    internal.service_type = "ClusterIP".into();
                    self.snapshot.services.push(internal);
                }
            }
            Op::CreatePods(i) => {
                if self.position(i).is_none() {
                    let mut pods = common::annotated(service(i), "flipbit.io/backends", "pods");
                    pods.ports = ports(1);
                    self.snapshot.services.push(pods);
                    self.apply(&Op::Endpoints(i, 1));
                }
            }
            Op::Delete(i) => self.snapshot.services.retain(|s| s.name != service(i).name),
            Op::Annotate(i, k, v) => {
                if let Some(s) = self.service_mut(i) {
                    s.annotations.insert(k.into(), v.into());
                }
            }
            Op::Unannotate(i, k) => {
                if let Some(s) = self.service_mut(i) {
                    s.annotations.remove(k);
                }
            }
            Op::Ports(i, p) => {
                if let Some(s) = self.service_mut(i) {
                    s.ports = ports(p);
                }
            }
            Op::NotOurs(i) => {
                if let Some(s) = self.service_mut(i) {
                    s.service_type = if s.service_type == "ClusterIP" {
                        "LoadBalancer"
                    } else {
                        "ClusterIP"
                    }
                    .into();
                }
            }
            Op::ExternalIps(i) => {
                if let Some(s) = self.service_mut(i) {
                    s.external_ips = match s.external_ips.is_empty() {
                        true => vec!["203.0.113.7".into()],
                        false => Vec::new(),
                    };
                }
            }
            Op::Twice(i) => {
                if let Some(p) = self.position(i) {
                    let copy = self.snapshot.services[p].clone();
                    if self.snapshot.services.iter().filter(|s| s.name == copy.name).count() > 1 {
                        self.snapshot.services.remove(p);
                    } else {
                        self.snapshot.services.push(copy);
                    }
                }
            }
            Op::Local(i) => {
                if let Some(s) = self.service_mut(i) {
                    s.external_traffic_policy = match s.external_traffic_policy {
                        None => Some("Local".into()),
                        Some(_) => None,
                    };
                }
            }
            Op::Endpoints(i, v) => {
                let name = service(i).name;
                self.snapshot.endpoint_slices.retain(|s| s.service_name != name);
                self.snapshot.endpoint_slices.extend(slices(i, v));
            }
            Op::ReorderSlices => self.snapshot.endpoint_slices.reverse(),
            Op::NodeFlip(i) => self.snapshot.nodes[i].ready = !self.snapshot.nodes[i].ready,
            Op::Advance(s) => self.now = common::after(self.now, s),
            Op::Nothing => {}
        }
    }

    /// One engine decision, checked against a full decision on the same inputs (its nodes' states
    /// too), then committed.
    fn cycle(&mut self) -> Result<(), TestCaseError> {
        let (full, decision, step) = self.repo.decide_as_full(&self.snapshot, &config(), self.now)?;
        prop_assert_eq!(&decision.node_states, &full.node_states);
        let refused = self.repo.engine.settled_refused();
        // A memory read back is refused only when the nodes changed (nothing else here changes
        // what it must fit), never as damaged.
        prop_assert!(
            refused.is_none() || refused.as_deref() == Some("nodes or unreadable Services changed"),
            "refused: {:?}",
            refused
        );
        self.repo.advance(step, &decision);
        if self.restart {
            self.repo.engine = self.repo.reborn();
        }
        Ok(())
    }

    /// A full decision on the world as it is.
    fn full_decision(&self) -> Decision {
        decide_with_holds(
            &self.snapshot,
            &config(),
            &self.repo.ledger,
            &HoldUpdate::default(),
            self.now,
        )
    }

    /// `engine`'s decision on the world as it is, its blobs written to the world's store.
    fn decide_by(&mut self, engine: &mut Engine<u64>) -> Decision {
        let (decision, _) = engine
            .decide(
                &self.snapshot,
                &config(),
                &self.repo.ledger,
                &HoldUpdate::default(),
                self.now,
                &mut self.repo.store,
            )
            .expect("decided");
        decision
    }
}

impl common::Repo {
    /// A new engine from what this one keeps between processes: its files, node choices and the
    /// last decision's memory as bytes, at the last commit (the ledger kept beside them is the
    /// repo's).
    fn reborn(&self) -> Engine<u64> {
        let mut reborn = Engine::restore(&self.last_commit(), self.files(), self.engine.kept_choices());
        if let Some(bytes) = self.memory() {
            reborn.restore_settled(bytes);
        }
        reborn
    }

    /// The engine's files, as [`Engine::restore`] takes them.
    fn files(&self) -> Vec<(String, Option<u64>, u64)> {
        self.engine.files().map(|(p, f, b)| (p.to_owned(), f, b)).collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The same with the engine rebuilt after every commit from what it keeps between processes.
    #[test]
    fn the_shortcut_kept_between_processes_decides_exactly_as_a_full_decision(
        ops in proptest::collection::vec(op(), 1..30),
    ) {
        let mut world = World::new();
        world.restart = true;
        common::create_four_then(&mut world, &ops, Op::Create, World::apply, World::cycle)?;
    }

    #[test]
    fn the_shortcut_decides_exactly_as_a_full_decision(ops in proptest::collection::vec(op(), 1..30)) {
        common::create_four_then(&mut World::new(), &ops, Op::Create, World::apply, World::cycle)?;
    }
}

#[test]
fn a_change_to_one_plain_service_takes_the_shortcut() {
    let mut world = World::with_services(0..6);
    world.cycle().expect("cold");
    assert_eq!(
        world.repo.engine.fast_decisions(),
        0,
        "the first decision is a full one"
    );
    world.apply(&Op::Annotate(2, "flipbit.io/balance", "least-conn"));
    world.cycle().expect("annotation");
    world.apply(&Op::Create(7));
    world.cycle().expect("new Service");
    world.apply(&Op::Delete(0));
    world.cycle().expect("deleted Service");
    world.cycle().expect("nothing changed");
    assert_eq!(world.repo.engine.fast_decisions(), 4);
    // A node change is a change to everything: a full decision.
    world.apply(&Op::NodeFlip(1));
    world.cycle().expect("node flip");
    assert_eq!(world.repo.engine.fast_decisions(), 4);
}

/// The memory of the last decision read back in another process takes the shortcut; damaged
/// (every truncation, a flipped byte) or stale, it is refused with a reason and the decision is
/// a full one, the same as without it.
#[test]
fn a_kept_decision_memory_is_used_when_intact_and_refused_when_damaged_or_stale() {
    let mut world = World::with_services(0..6);
    world.apply(&Op::Annotate(1, "flipbit.io/backends", "pods"));
    world.apply(&Op::Ports(1, 1));
    world.apply(&Op::Endpoints(1, 1));
    world.cycle().expect("cold");
    let bytes = world.repo.memory().expect("the memory of a plain decision");
    world.repo.engine = world.repo.reborn();
    world.apply(&Op::Annotate(2, "flipbit.io/balance", "least-conn"));
    world.cycle().expect("read back");
    assert_eq!(
        world.repo.engine.fast_decisions(),
        1,
        "an intact memory takes the shortcut"
    );

    let full = world.full_decision();
    let files = world.repo.files();
    let base = world.repo.last_commit();
    let good = world.repo.memory().expect("the memory after a fast decision");
    let mut damaged: Vec<Vec<u8>> = (0..good.len()).step_by(3).map(|n| good[..n].to_vec()).collect();
    for i in 0..good.len() {
        let mut flipped = good.clone();
        flipped[i] ^= 0x41;
        damaged.push(flipped);
    }
    assert!(bytes.len() > 100 && damaged.len() > 100);
    for bad in damaged {
        let mut engine = Engine::restore(&base, files.clone(), Vec::new());
        engine.restore_settled(bad);
        let decision = world.decide_by(&mut engine);
        assert!(engine.settled_refused().is_some(), "damage is refused");
        assert_eq!(engine.fast_decisions(), 0, "a full decision");
        assert_eq!(decision.exposed, full.exposed);
        assert_eq!(decision.ledger, full.ledger);
        assert_eq!(decision.problems, full.problems);
    }

    // Stale: the nodes changed since (another context): refused, and a full decision.
    let mut engine = world.repo.reborn();
    world.apply(&Op::NodeFlip(1));
    let full = world.full_decision();
    let fast = engine.fast_decisions();
    let decision = world.decide_by(&mut engine);
    assert_eq!(engine.fast_decisions(), fast, "a full decision");
    assert_eq!(
        engine.settled_refused().as_deref(),
        Some("nodes or unreadable Services changed")
    );
    assert_eq!(decision.exposed, full.exposed);
    assert_eq!(decision.ledger, full.ledger);
}

/// A Service that appears, even one that is not ours, takes its default DNS name back from a
/// Service that claimed it while it did not exist: the shortcut must see that.
#[test]
fn a_new_service_takes_its_default_name_back_from_a_claimant() {
    for create in [Op::Create(1), Op::CreateInternal(1)] {
        let mut world = World::with_services([0, 2, 3]);
        world.apply(&Op::Annotate(3, "flipbit.io/hostname", "s1.a.k.test"));
        world.cycle().expect("the claim");
        world.cycle().expect("nothing changed");
        world.apply(&create);
        world.cycle().expect("the owner appears");
        world.apply(&Op::Delete(1));
        world.cycle().expect("the owner goes");
    }
}

/// A pod-backed Service's endpoints changing (a rolling update, pods going not ready, slices
/// listed in another order) is decided for that Service alone, and rewrites only its files.
#[test]
fn endpoint_churn_takes_the_shortcut_and_touches_one_service() {
    let mut world = World::with_services(0..6);
    for i in 0..6 {
        world.apply(&Op::Ports(i, 1));
        world.apply(&Op::Endpoints(i, 1));
    }
    world.apply(&Op::Annotate(2, "flipbit.io/backends", "pods"));
    world.apply(&Op::Annotate(3, "flipbit.io/backends", "pods"));
    world.cycle().expect("cold");
    let fast = world.repo.engine.fast_decisions();
    for (i, v) in [(2, 2), (2, 5), (2, 3), (3, 0), (2, 1), (4, 2)] {
        let before = world.repo.tree.clone();
        world.apply(&Op::Endpoints(i, v));
        world.cycle().expect("endpoints");
        let touched: std::collections::BTreeSet<String> = world
            .repo
            .tree
            .iter()
            .filter(|(path, id)| before.get(*path) != Some(*id))
            .map(|(path, _)| path.clone())
            .chain(before.keys().filter(|p| !world.repo.tree.contains_key(*p)).cloned())
            .collect();
        let service = service(i).name;
        assert!(
            touched.iter().all(|p| p.contains(&format!("/a/{service}."))),
            "slices of a/{service} changed {touched:?}"
        );
        if i == 4 {
            // A Service that sends to nodes (cluster policy) does not read its slices.
            assert!(touched.is_empty(), "{touched:?}");
        } else {
            // lb-1 (nginx, per-service), lb-2 (shared-listeners: per-service rendering for pods),
            // lb-3 (HAProxy); the DNS record stays.
            assert_eq!(touched.len(), 3, "{touched:?}");
        }
    }
    world.apply(&Op::ReorderSlices);
    let before = world.repo.tree.clone();
    world.cycle().expect("reordered");
    assert_eq!(world.repo.tree, before, "the order of slices changed a file");
    assert_eq!(
        world.repo.engine.fast_decisions(),
        fast + 7,
        "slice churn took a full decision"
    );
    let text = &world.repo.store.texts[&world.repo.tree["lb/lb-2/a/s2.conf"]];
    assert!(text.contains("server 10.9.2.1:8080;"), "{text}");
}
