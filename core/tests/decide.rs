//! The pure decision end to end: snapshot + config + ledger + time in, files and ledger out.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{annotated, lb_service};
use flipbit_core::allocate::AddressEvent;
use flipbit_core::config::Config;
use flipbit_core::decide::{Decision, decide};
use flipbit_core::ledger::Ledger;
use flipbit_core::message;
use flipbit_core::model::{EndpointSliceInput, NodeInput, PortInput, ServiceInput, Snapshot};
use jiff::Timestamp;

const CONFIG: &str = "zone: k8s.example.test\nreleaseGraceSeconds: 60\nlbHosts:\n  - {name: lb-1, pools: [127.1.1.0/24]}\n  - {name: lb-2, pools: [127.1.5.0/29]}\n";

fn config() -> Config {
    Config::parse(CONFIG).unwrap()
}

fn node(i: u8) -> NodeInput {
    common::backend_node(format!("node-{i}"), format!("127.0.0.{}", 9 + i), true)
}

fn snapshot(services: Vec<ServiceInput>) -> Snapshot {
    Snapshot {
        services,
        nodes: (1..=5).map(node).collect(),
        ..Snapshot::default()
    }
}

/// The decision for `services` on the five nodes, from `ledger`, `secs` seconds after the start.
fn decide_at(services: Vec<ServiceInput>, config: &Config, ledger: &Ledger, secs: i64) -> Decision {
    decide(&snapshot(services), config, ledger, t(secs))
}

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn addr(d: &Decision, key: &str, host: &str) -> Option<String> {
    d.exposed.iter().find(|(k, _)| k.to_string() == key).and_then(|(_, s)| {
        s.addresses
            .iter()
            .find(|(h, _)| h.as_str() == host)
            .map(|(_, ip)| ip.to_string())
    })
}

#[test]
fn same_inputs_give_identical_output() {
    let snap = snapshot(vec![lb_service("b", "x"), lb_service("a", "y")]);
    let one = decide(&snap, &config(), &Ledger::empty(), t(0));
    let mut reversed = snap.clone();
    reversed.services.reverse();
    reversed.nodes.reverse();
    let two = decide(&reversed, &config(), &Ledger::empty(), t(0));
    assert_eq!(one.files, two.files);
    assert_eq!(
        addr(&one, "a/y", "lb-1").as_deref(),
        Some("127.1.1.1"),
        "allocation is by key, not input order"
    );
}

#[test]
fn which_services_are_ours() {
    let mut np = lb_service("a", "nodeport");
    np.service_type = "NodePort".into();
    np.load_balancer_class = None;
    let mut classless = lb_service("a", "classless");
    classless.load_balancer_class = None;
    let mut other = lb_service("a", "other");
    other.load_balancer_class = Some("example.com/lb".into());
    let services = vec![
        lb_service("a", "lb"),
        annotated(lb_service("a", "optout"), "flipbit.io/expose", "false"),
        np.clone(),
        annotated(np, "flipbit.io/expose", "true").tap_name("nodeport-in"),
        classless.clone(),
        other,
    ];
    let d = decide_at(services.clone(), &config(), &Ledger::empty(), 0);
    let keys: Vec<String> = d.exposed.keys().map(ToString::to_string).collect();
    assert_eq!(keys, ["a/lb", "a/nodeport-in"]);
    let mut cfg = config();
    cfg.manage_classless_load_balancers = true;
    let d = decide_at(services, &cfg, &Ledger::empty(), 0);
    assert!(d.exposed.keys().any(|k| k.to_string() == "a/classless"));
}

trait TapName {
    fn tap_name(self, name: &str) -> Self;
}

impl TapName for ServiceInput {
    fn tap_name(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }
}

#[test]
fn settings_reach_the_rendered_text() {
    let mut udp = lb_service("a", "udp");
    udp.ports = vec![PortInput {
        name: None,
        protocol: Some("UDP".into()),
        port: 53,
        node_port: Some(30053),
    }];
    let services = vec![
        annotated(lb_service("a", "lc"), "flipbit.io/balance", "least-conn"),
        annotated(lb_service("a", "hash"), "flipbit.io/balance", "hash"),
        annotated(lb_service("a", "pp"), "flipbit.io/proxy-protocol", "true"),
        annotated(lb_service("a", "only2"), "flipbit.io/load-balancers", "lb-2"),
        annotated(lb_service("a", "three"), "flipbit.io/max-nodes", "3"),
        udp,
    ];
    let d = decide_at(services, &config(), &Ledger::empty(), 0);
    let file = |p: &str| {
        d.files
            .get(p)
            .unwrap_or_else(|| panic!("{p} not rendered: {:?}", d.files.keys()))
    };
    assert!(file("lb/lb-1/a/lc.conf").contains("    least_conn;\n"));
    assert!(file("lb/lb-1/a/hash.conf").contains("    hash $remote_addr consistent;\n"));
    assert!(file("lb/lb-1/a/pp.conf").contains("    proxy_protocol on;\n"));
    assert!(!file("lb/lb-1/a/lc.conf").contains("proxy_protocol"));
    assert!(
        file("lb/lb-1/a/udp.conf").contains("listen 127.1.1.5:53 udp;"),
        "{}",
        file("lb/lb-1/a/udp.conf")
    );
    assert!(!d.files.contains_key("lb/lb-1/a/only2.conf"));
    assert!(d.files.contains_key("lb/lb-2/a/only2.conf"));
    assert_eq!(file("lb/lb-1/a/three.conf").matches("    server 127.0.0.").count(), 3);
    assert_eq!(file("lb/lb-1/a/lc.conf").matches("    server 127.0.0.").count(), 5);
}

#[test]
fn local_traffic_uses_only_nodes_with_ready_endpoints() {
    let mut local = lb_service("a", "local");
    local.external_traffic_policy = Some("Local".into());
    let mut snap = snapshot(vec![local]);
    snap.endpoint_slices = vec![EndpointSliceInput {
        namespace: "a".into(),
        service_name: "local".into(),
        ready_nodes: vec!["node-2".into(), "node-4".into(), "gone-node".into()],
        ..EndpointSliceInput::default()
    }];
    let d = decide(&snap, &config(), &Ledger::empty(), t(0));
    let text = &d.files["lb/lb-1/a/local.conf"];
    assert_eq!(text.matches("server 127.0.0.").count(), 2, "{text}");
    assert!(
        text.contains("127.0.0.11:30080") && text.contains("127.0.0.13:30080"),
        "{text}"
    );

    snap.endpoint_slices.clear();
    let d = decide(&snap, &config(), &Ledger::empty(), t(0));
    let text = &d.files["lb/lb-1/a/local.conf"];
    assert!(
        !text.contains("    listen "),
        "no ready endpoint, yet something listens:\n{text}"
    );
    assert_eq!(
        addr(&d, "a/local", "lb-1").as_deref(),
        Some("127.1.1.1"),
        "the address is kept while nothing listens"
    );
}

#[test]
fn addresses_are_kept_withdrawn_held_and_freed() {
    let cfg = config();
    let d1 = decide_at(
        vec![lb_service("a", "one"), lb_service("a", "two")],
        &cfg,
        &Ledger::empty(),
        0,
    );
    assert_eq!(addr(&d1, "a/two", "lb-2").as_deref(), Some("127.1.5.2"));

    let d2 = decide_at(vec![lb_service("a", "two")], &cfg, &d1.ledger, 10);
    assert_eq!(addr(&d2, "a/two", "lb-1").as_deref(), Some("127.1.1.2"));
    assert!(d2.events.contains(&AddressEvent::Withdrawn {
        key: "a/one".parse().unwrap()
    }));
    assert_eq!(
        d2.ledger.services[&"a/one".parse::<flipbit_core::names::ServiceKey>().unwrap()].released_at,
        Some(t(10))
    );
    assert!(
        d2.deletions([&"lb/lb-1/a/one.conf".to_owned()])
            .contains("lb/lb-1/a/one.conf")
    );

    let d3 = decide_at(
        vec![lb_service("a", "two"), lb_service("a", "three")],
        &cfg,
        &d2.ledger,
        20,
    );
    assert_eq!(
        addr(&d3, "a/three", "lb-1").as_deref(),
        Some("127.1.1.3"),
        "a held address was reused"
    );

    let d4 = decide_at(
        vec![lb_service("a", "two"), lb_service("a", "three"), lb_service("a", "one")],
        &cfg,
        &d3.ledger,
        30,
    );
    assert_eq!(
        addr(&d4, "a/one", "lb-1").as_deref(),
        Some("127.1.1.1"),
        "a returning Service lost its address"
    );
    assert!(d4.ledger.services.values().all(|e| e.released_at.is_none()));

    let d5 = decide_at(vec![lb_service("a", "two")], &cfg, &d4.ledger, 40);
    let d6 = decide_at(vec![lb_service("a", "two")], &cfg, &d5.ledger, 40 + 59);
    assert_eq!(d6.ledger.services.len(), 3, "freed before the grace ran out");
    let d7 = decide_at(
        vec![lb_service("a", "two"), lb_service("a", "four")],
        &cfg,
        &d6.ledger,
        40 + 60,
    );
    assert!(d7.events.contains(&AddressEvent::Freed {
        key: "a/one".parse().unwrap()
    }));
    assert_eq!(
        addr(&d7, "a/four", "lb-1").as_deref(),
        Some("127.1.1.1"),
        "the freed lowest address was not reused"
    );
}

#[test]
fn a_skipped_service_keeps_its_ledger_entry_and_files() {
    let cfg = config();
    let d1 = decide_at(vec![lb_service("a", "one")], &cfg, &Ledger::empty(), 0);
    let bad = annotated(lb_service("a", "one"), "flipbit.io/max-nodes", "many");
    let d2 = decide_at(vec![bad], &cfg, &d1.ledger, 5);
    assert_eq!(d2.ledger, d1.ledger, "an invalid Service changed the ledger");
    assert!(d2.kept.contains(&"a/one".parse().unwrap()));
    assert!(
        d2.deletions([&"lb/lb-1/a/one.conf".to_owned()]).is_empty(),
        "its files would be deleted"
    );
    assert!(
        d2.problems[0]
            .to_string()
            .contains("metadata.annotations[\"flipbit.io/max-nodes\"]: \"many\"")
    );
}

#[test]
fn a_service_listed_twice_is_an_error_and_kept() {
    let d = decide_at(
        vec![lb_service("a", "one"), lb_service("a", "one")],
        &config(),
        &Ledger::empty(),
        0,
    );
    assert!(d.exposed.is_empty());
    assert!(d.problems.iter().any(|p| p.message.contains("more than once")));
}

#[test]
fn a_shrunk_pool_moves_only_the_addresses_outside_it() {
    let cfg = config();
    let d1 = decide_at(
        vec![lb_service("a", "one"), lb_service("a", "two")],
        &cfg,
        &Ledger::empty(),
        0,
    );
    let shrunk = Config::parse(&CONFIG.replace("127.1.1.0/24", "127.1.1.2-127.1.1.20")).unwrap();
    let d2 = decide_at(
        vec![lb_service("a", "one"), lb_service("a", "two")],
        &shrunk,
        &d1.ledger,
        1,
    );
    assert_eq!(
        addr(&d2, "a/two", "lb-1").as_deref(),
        Some("127.1.1.2"),
        "an address still in the pool moved"
    );
    assert_eq!(addr(&d2, "a/one", "lb-1").as_deref(), Some("127.1.1.3"));
    assert!(d2.events.iter().any(|e| matches!(e, AddressEvent::Moved { .. })));
}

#[test]
fn pool_exhaustion_hits_only_the_late_service() {
    // lb-2's /29 holds 6 addresses.
    let services: Vec<ServiceInput> = (0..7).map(|i| lb_service("a", &format!("s{i}"))).collect();
    let d = decide_at(services, &config(), &Ledger::empty(), 0);
    assert_eq!(addr(&d, "a/s5", "lb-2").as_deref(), Some("127.1.5.6"));
    assert_eq!(addr(&d, "a/s6", "lb-2"), None);
    assert_eq!(addr(&d, "a/s6", "lb-1").as_deref(), Some("127.1.1.7"));
    let errors: Vec<String> = d.problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        ["error: Service a/s6: no free address on LB host lb-2 (pools 127.1.5.0/29 are exhausted); not exposed there"]
    );
}

#[test]
fn commit_messages_say_what_and_why() {
    let cfg = config();
    let none = BTreeMap::new();
    let d1 = decide_at(vec![lb_service("a", "one")], &cfg, &Ledger::empty(), 0);
    let changed = d1.files.keys().cloned().collect();
    let msg = message::compose(&d1, &changed, cfg.release_grace_seconds, &none).unwrap();
    assert_eq!(
        msg,
        "expose a/one on lb-1 127.1.1.1, lb-2 127.1.5.1\n\nFlipbit-Services: a/one\nFlipbit-Cause: Service a/one exposed\n"
    );

    // node-5 goes NotReady, node-4 is deleted: the upstream change names both, and why.
    let mut snap = snapshot(vec![lb_service("a", "one")]);
    snap.nodes[4].ready = false;
    snap.nodes.remove(3);
    let d2 = decide(&snap, &cfg, &d1.ledger, t(1));
    let changed = ["lb/lb-1/a/one.conf".to_owned(), "lb/lb-2/a/one.conf".to_owned()].into();
    let before: std::collections::BTreeSet<std::net::SocketAddr> = (10..15)
        .map(|i| format!("127.0.0.{i}:30080").parse().unwrap())
        .collect();
    let old = BTreeMap::from([("a/one".parse().unwrap(), before)]);
    let msg = message::compose(&d2, &changed, 60, &old).unwrap();
    assert!(
        msg.starts_with("move upstreams of a/one: -127.0.0.13 (node deleted), -127.0.0.14 (node-5 NotReady)\n"),
        "{msg}"
    );
    assert!(
        msg.contains("Flipbit-Cause: node deleted, node node-5 NotReady"),
        "{msg}"
    );
    assert_eq!(message::compose(&d2, &BTreeSet::<String>::new(), 60, &old), None);

    // Without the old node set (a port change), the line says what kind of change it was.
    let msg = message::compose(&d2, &changed, 60, &none).unwrap();
    assert!(
        msg.starts_with("update a/one on lb-1, lb-2 (ports or settings)\n"),
        "{msg}"
    );

    let d3 = decide_at(vec![], &cfg, &d2.ledger, 2);
    let msg = message::compose(&d3, &["ledger.yaml".to_owned()].into(), 60, &none).unwrap();
    assert!(
        msg.starts_with("withdraw a/one (no longer exposed; addresses held 60 s)"),
        "{msg}"
    );
    assert!(msg.contains("Flipbit-Cause: Service a/one withdrawn"), "{msg}");
}

#[test]
fn a_huge_first_commit_lists_the_first_services_and_counts_the_rest() {
    // Wide pools, so 520 Services all get addresses.
    let wide = CONFIG
        .replace("127.1.5.0/29", "127.5.0.0/16")
        .replace("127.1.1.0/24", "127.4.0.0/16");
    let cfg = Config::parse(&wide).unwrap();
    let services: Vec<ServiceInput> = (0..520).map(|i| lb_service("a", &format!("s{i:03}"))).collect();
    let d = decide_at(services, &cfg, &Ledger::empty(), 0);
    assert_eq!(d.exposed.len(), 520);
    assert!(d.problems.is_empty(), "{:?}", d.problems);
    let changed = d.files.keys().cloned().collect();
    let msg = message::compose(&d, &changed, 60, &BTreeMap::new()).unwrap();
    assert!(msg.starts_with("expose 520 Services\n"), "{}", &msg[..200]);
    let listed = msg.lines().filter(|l| l.starts_with("- expose a/")).count();
    assert_eq!(listed, message::MAX_LISTED);
    assert!(msg.contains("- ... and 20 more (the diff has them all"), "{msg}");
    let trailer = msg.lines().find(|l| l.starts_with("Flipbit-Services: ")).unwrap();
    assert!(trailer.starts_with("Flipbit-Services: a/s000, a/s001,"), "{trailer}");
    assert!(trailer.ends_with("a/s499, and 20 more"), "{trailer}");
}

#[test]
fn external_ips_of_a_managed_service_get_a_warning_not_silence() {
    let mut listed = lb_service("a", "listed");
    listed.external_ips = vec!["203.0.113.7".into(), "203.0.113.8".into()];
    let mut node_port = annotated(lb_service("a", "np"), "flipbit.io/expose", "true");
    node_port.service_type = "NodePort".into();
    node_port.load_balancer_class = None;
    node_port.external_ips = vec!["203.0.113.9".into()];
    let mut not_ours = listed.clone();
    not_ours.name = "other".into();
    not_ours.load_balancer_class = Some("example.com/lb".into());
    let d = decide_at(vec![listed, node_port, not_ours], &config(), &Ledger::empty(), 0);
    assert!(
        d.exposed
            .contains_key(&"a/listed".parse::<flipbit_core::names::ServiceKey>().unwrap()),
        "a warning skips nothing"
    );
    let said: Vec<String> = d.problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        said,
        [
            "warning: Service a/listed: spec.externalIPs: Flipbit does not serve externalIPs (2 addresses listed, left to the cluster); its load-balancer addresses are in status.loadBalancer.ingress",
            "warning: Service a/np: spec.externalIPs: Flipbit does not serve externalIPs (1 address listed, left to the cluster); its load-balancer addresses are in the state repo's ledger.yaml",
        ]
    );
}
