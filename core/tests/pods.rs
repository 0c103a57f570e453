//! `flipbit.io/backends: pods` through the whole decision: a pod-backed Service's files on an
//! nginx host, a shared-listeners host (per-service rendering) and a HAProxy host send to its ready
//! endpoints at their own ports, pass the applier's grammar, and its summary and commit messages
//! name the pods; nodes-backed Services beside it are untouched by its endpoints.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use flipbit_core::config::Config;
use flipbit_core::decide::{Decision, decide};
use flipbit_core::grammar::{LbFile, OUTPUT_FORMAT, check};
use flipbit_core::ledger::Ledger;
use flipbit_core::message;
use flipbit_core::model::{EndpointInput, EndpointPortInput, EndpointSliceInput, NodeInput, PortInput, Snapshot};
use jiff::Timestamp;

fn config() -> Config {
    Config::parse(
        "zone: k.test\nlbHosts:\n  - {name: lb-1, pools: [127.6.1.0/28]}\n  - {name: lb-2, layout: shared-listeners, pools: [127.6.2.0/28]}\n  - {name: lb-3, flavor: haproxy, pools: [127.6.3.0/28]}\n",
    )
    .expect("config")
}

/// `web/<name>`, pod-backed, ports `http` 80 and `dns` 53/UDP, no node ports.
fn pod_service(name: &str) -> flipbit_core::model::ServiceInput {
    let mut svc = common::annotated(common::lb_service("web", name), "flipbit.io/backends", "pods");
    svc.ports = vec![
        PortInput {
            name: Some("http".into()),
            protocol: None,
            port: 80,
            node_port: None,
        },
        PortInput {
            name: Some("dns".into()),
            protocol: Some("UDP".into()),
            port: 53,
            node_port: None,
        },
    ];
    svc
}

/// A slice of `web/<service>`: `http` at 8080, `dns` at 5353/UDP, the given pods and readiness.
fn slice(service: &str, family: &str, pods: &[(&str, Option<bool>)]) -> EndpointSliceInput {
    EndpointSliceInput {
        namespace: "web".into(),
        service_name: service.into(),
        address_type: family.into(),
        ports: vec![
            EndpointPortInput {
                name: Some("http".into()),
                protocol: Some("TCP".into()),
                port: Some(8080),
            },
            EndpointPortInput {
                name: Some("dns".into()),
                protocol: Some("UDP".into()),
                port: Some(5353),
            },
        ],
        endpoints: pods
            .iter()
            .map(|(ip, ready)| EndpointInput {
                addresses: vec![(*ip).to_owned()],
                ready: *ready,
            })
            .collect(),
        ready_nodes: vec!["n1".into()],
    }
}

fn node() -> NodeInput {
    common::backend_node("n1", "127.6.0.10", true)
}

fn key(k: &str) -> flipbit_core::names::ServiceKey {
    k.parse().expect("a key")
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).expect("time")
}

fn snapshot(slices: Vec<EndpointSliceInput>) -> Snapshot {
    Snapshot {
        services: vec![pod_service("x"), common::lb_service("web", "plain")],
        nodes: vec![node()],
        endpoint_slices: slices,
        ..Snapshot::default()
    }
}

/// Every `lb/` file of the decision passes the grammar of its host.
fn assert_grammar(config: &Config, d: &Decision) {
    for host in &config.lb_hosts {
        for (path, text) in d
            .files
            .iter()
            .filter(|(p, _)| p.starts_with(&format!("lb/{}/", host.name)))
        {
            let file = LbFile::of_path(path, &host.name).expect("a generated path");
            if let Err(e) = check(&file, text, host, OUTPUT_FORMAT) {
                panic!("{path} refused: {e}\n{text}");
            }
        }
    }
}

#[test]
fn every_flavour_and_layout_sends_to_the_ready_pods() {
    let config = config();
    let slices = vec![
        slice(
            "x",
            "IPv4",
            &[("10.2.0.5", Some(true)), ("10.2.0.4", None), ("10.2.0.9", Some(false))],
        ),
        slice("x", "IPv6", &[("fd00:2::4", Some(true))]),
        // The nodes-backed Service's slices mean nothing to its files.
        slice("plain", "IPv4", &[("10.2.1.1", Some(true))]),
    ];
    let d = decide(&snapshot(slices), &config, &Ledger::empty(), at(0));
    // HAProxy carries TCP only; nothing else to say.
    let problems: Vec<&str> = d.problems.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(
        problems,
        ["UDP/53 not served on LB host lb-3 (HAProxy carries TCP only); its TCP ports are served there"]
    );
    let nginx = &d.files["lb/lb-1/web/x.conf"];
    for want in [
        "upstream flipbit_web_x_tcp_80 {\n    server 10.2.0.4:8080;\n    server 10.2.0.5:8080;\n    server [fd00:2::4]:8080;\n}",
        "upstream flipbit_web_x_udp_53 {\n    server 10.2.0.4:5353;\n    server 10.2.0.5:5353;\n    server [fd00:2::4]:5353;\n}",
    ] {
        assert!(nginx.contains(want), "missing {want:?} in:\n{nginx}");
    }
    assert!(!nginx.contains("10.2.0.9"), "a pod that is not ready:\n{nginx}");
    assert!(!nginx.contains("127.6.0.10"), "a node:\n{nginx}");
    // The shared-listeners host renders it per-service, and listens on its ports there.
    assert_eq!(
        &d.files["lb/lb-2/web/x.conf"]
            .replace("lb-2", "lb-1")
            .replace("127.6.2.", "127.6.1."),
        nginx
    );
    assert!(!d.files.contains_key("lb/lb-2/web/x.map"));
    assert!(d.files["lb/lb-2/_flipbit/listeners.conf"].contains("listen 53 udp;"));
    let haproxy = &d.files["lb/lb-3/web/x.cfg"];
    assert!(
        haproxy.contains("    server 10.2.0.4:8080 10.2.0.4:8080 check\n    server 10.2.0.5:8080 10.2.0.5:8080 check\n    server fd00:2::4:8080 [fd00:2::4]:8080 check\n"),
        "{haproxy}"
    );
    assert!(d.files["lb/lb-1/web/plain.conf"].contains("server 127.6.0.10:30080;"));
    assert_grammar(&config, &d);

    let summary = &d.exposed[&key("web/x")];
    assert!(summary.nodes.is_empty());
    let pods: Vec<String> = summary
        .pods
        .as_deref()
        .expect("pods")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        pods,
        [
            "10.2.0.4:5353",
            "10.2.0.4:8080",
            "10.2.0.5:5353",
            "10.2.0.5:8080",
            "[fd00:2::4]:5353",
            "[fd00:2::4]:8080"
        ]
    );
    assert_eq!(d.exposed[&key("web/plain")].pods, None);
}

#[test]
fn without_ready_endpoints_nothing_listens_and_the_port_comes_back_with_them() {
    let config = config();
    let d = decide(&snapshot(Vec::new()), &config, &Ledger::empty(), at(0));
    let text = &d.files["lb/lb-1/web/x.conf"];
    assert!(!text.contains("    listen ") && !text.contains("    server "), "{text}");
    // Only the UDP port's slice port: the TCP port stays unserved.
    let mut udp_only = slice("x", "IPv4", &[("10.2.0.4", Some(true))]);
    udp_only.ports.retain(|p| p.protocol.as_deref() == Some("UDP"));
    let d = decide(&snapshot(vec![udp_only]), &config, &d.ledger, at(1));
    let text = &d.files["lb/lb-1/web/x.conf"];
    assert!(text.contains(":53 udp;") && !text.contains(":80;"), "{text}");
    assert_grammar(&config, &d);
}

#[test]
fn an_endpoint_change_rewrites_only_that_service_and_the_message_names_the_pods() {
    let config = config();
    let before = vec![slice(
        "x",
        "IPv4",
        &[("10.2.0.4", Some(true)), ("10.2.0.5", Some(true))],
    )];
    let d1 = decide(&snapshot(before), &config, &Ledger::empty(), at(0));
    // A rolling update's step: a new pod ready, an old one terminating.
    let after = vec![slice(
        "x",
        "IPv4",
        &[
            ("10.2.0.4", Some(false)),
            ("10.2.0.5", Some(true)),
            ("10.2.0.6", Some(true)),
        ],
    )];
    let d2 = decide(&snapshot(after), &config, &d1.ledger, at(1));
    let changed: BTreeSet<String> = d2
        .files
        .iter()
        .filter(|(path, text)| d1.files.get(*path) != Some(*text))
        .map(|(path, _)| path.clone())
        .collect();
    assert_eq!(
        changed,
        BTreeSet::from([
            "lb/lb-1/web/x.conf".to_owned(),
            "lb/lb-2/web/x.conf".to_owned(),
            "lb/lb-3/web/x.cfg".to_owned()
        ])
    );
    // The generator reads the old upstreams back from the committed files.
    let old: BTreeSet<SocketAddr> = ["10.2.0.4:8080", "10.2.0.5:8080", "10.2.0.4:5353", "10.2.0.5:5353"]
        .iter()
        .map(|a| a.parse().expect("address"))
        .collect();
    let old = BTreeMap::from([("web/x".parse().expect("key"), old)]);
    let msg = message::compose(&d2, &changed, 60, &old).expect("a message");
    assert!(
        msg.starts_with(
            "move upstreams of web/x: -10.2.0.4:5353 (not a ready endpoint now), -10.2.0.4:8080 (not a ready endpoint now), +10.2.0.6:5353 (ready endpoint), +10.2.0.6:8080 (ready endpoint)\n"
        ),
        "{msg}"
    );
    assert!(msg.contains("Flipbit-Cause: endpoints of web/x changed\n"), "{msg}");
}

#[test]
fn a_large_change_of_pods_is_summed_up_in_the_message() {
    let config = config();
    let pods: Vec<String> = (1..=40).map(|i| format!("10.3.0.{i}")).collect();
    let refs: Vec<(&str, Option<bool>)> = pods.iter().map(|p| (p.as_str(), Some(true))).collect();
    let d0 = decide(&snapshot(Vec::new()), &config, &Ledger::empty(), at(0));
    let d = decide(&snapshot(vec![slice("x", "IPv4", &refs)]), &config, &d0.ledger, at(1));
    let changed = BTreeSet::from(["lb/lb-1/web/x.conf".to_owned()]);
    let old = BTreeMap::from([("web/x".parse().expect("key"), BTreeSet::new())]);
    let msg = message::compose(&d, &changed, 60, &old).expect("a message");
    let subject = msg.lines().next().unwrap_or_default();
    assert!(subject.ends_with(" and 72 more"), "{subject}");
    assert!(subject.len() < 300, "{subject}");
}

#[test]
fn max_nodes_does_not_bound_pods_and_says_so() {
    let config = config();
    let mut snap = snapshot(vec![slice(
        "x",
        "IPv4",
        &[
            ("10.2.0.4", Some(true)),
            ("10.2.0.5", Some(true)),
            ("10.2.0.6", Some(true)),
        ],
    )]);
    snap.services[0]
        .annotations
        .insert("flipbit.io/max-nodes".into(), "1".into());
    let d = decide(&snap, &config, &Ledger::empty(), at(0));
    assert_eq!(d.files["lb/lb-1/web/x.conf"].matches("server 10.2.0.").count(), 6);
    let problems: Vec<String> = d.problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        problems[1..],
        [
            "warning: Service web/x: metadata.annotations[\"flipbit.io/max-nodes\"]: has no effect with flipbit.io/backends: pods: every ready endpoint carries traffic"
        ]
    );
}

/// Pods that serve different ports (a rollout adding a named port): each port sends to its own
/// pods. Appliers before format 2 refused a file whose ports' server lists differ, so
/// `format.yaml` says 2 (they then refuse with one line saying to upgrade, instead of a grammar
/// refusal); when every pod serves every port again it goes back to 1.
#[test]
fn ports_with_different_pods_need_format_two() {
    let config = config();
    let mut old = slice("x", "IPv4", &[("10.2.0.4", Some(true))]);
    old.ports.retain(|p| p.name.as_deref() == Some("http"));
    let new = slice("x", "IPv4", &[("10.2.0.5", Some(true))]);
    let d = decide(&snapshot(vec![old, new]), &config, &Ledger::empty(), at(0));
    let text = &d.files["lb/lb-1/web/x.conf"];
    assert!(
        text.contains("server 10.2.0.4:8080;\n    server 10.2.0.5:8080;"),
        "{text}"
    );
    assert!(!text.contains("10.2.0.4:5353"), "{text}");
    assert!(d.files["format.yaml"].contains("outputFormat: 2"));
    assert_grammar(&config, &d);

    let alike = slice("x", "IPv4", &[("10.2.0.5", Some(true))]);
    let d = decide(&snapshot(vec![alike]), &config, &d.ledger, at(1));
    assert!(d.files["format.yaml"].contains("outputFormat: 1"));
}
