//! Decisions for a fleet that mixes flavours: a HAProxy host gets `.cfg` files for TCP ports
//! only, with the same node set as an nginx host; UDP ports are warned about in the problems and
//! the commit message; a UDP-only Service gets no address or record on the HAProxy host, and gets
//! one as soon as it has a TCP port.

mod common;

use std::collections::BTreeMap;

use common::{annotated, decide_one_node, lb_service};
use flipbit_core::config::Config;
use flipbit_core::decide::decide;
use flipbit_core::ledger::Ledger;
use flipbit_core::message;
use flipbit_core::model::{PortInput, ServiceInput, Snapshot};
use flipbit_core::problem::Severity;

const CONFIG: &str = "zone: k8s.example.test\nlbHosts:\n  - {name: lb-1, pools: [127.1.1.0/24]}\n  - {name: lb-3, flavor: haproxy, pools: [127.1.7.0/24]}\n";

fn config() -> Config {
    Config::parse(CONFIG).unwrap()
}

fn port(protocol: &str, port: i32, node_port: i32) -> PortInput {
    PortInput {
        name: None,
        protocol: Some(protocol.into()),
        port,
        node_port: Some(node_port),
    }
}

fn with_ports(mut svc: ServiceInput, ports: Vec<PortInput>) -> ServiceInput {
    svc.ports = ports;
    svc
}

#[test]
fn a_mixed_service_serves_tcp_on_haproxy_and_warns_about_udp() {
    let dns = with_ports(
        lb_service("apps", "dns"),
        vec![port("UDP", 53, 30053), port("TCP", 53, 30053)],
    );
    let d = decide_one_node(&config(), vec![dns], "127.0.0.10", &Ledger::empty());
    let cfg = &d.files["lb/lb-3/apps/dns.cfg"];
    assert!(
        cfg.contains("frontend flipbit_apps_dns_53\n    mode tcp\n    bind 127.1.7.1:53\n"),
        "{cfg}"
    );
    assert!(
        cfg.contains("server 127.0.0.10:30053 127.0.0.10:30053 check\n"),
        "{cfg}"
    );
    assert!(!d.files.contains_key("lb/lb-3/apps/dns.conf"));
    let conf = &d.files["lb/lb-1/apps/dns.conf"];
    assert!(conf.contains("listen 127.1.1.1:53 udp;"), "{conf}");
    let zone = &d.files["dns/k8s.example.test/apps/dns.zone"];
    assert!(zone.contains("127.1.7.1") && zone.contains("127.1.1.1"), "{zone}");
    let warnings: Vec<String> = d
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Warning)
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        warnings,
        [
            "warning: Service apps/dns: spec.ports: UDP/53 not served on LB host lb-3 (HAProxy carries TCP only); its TCP ports are served there"
        ]
    );

    // The commit that exposes it carries the warning.
    let changed = d.files.keys().cloned().collect();
    let msg = message::compose(&d, &changed, 60, &BTreeMap::new()).unwrap();
    assert!(
        msg.contains("\nWarnings:\n- warning: Service apps/dns: spec.ports: UDP/53 not served on LB host lb-3"),
        "{msg}"
    );
    assert!(msg.ends_with("Flipbit-Cause: Service apps/dns exposed\n"), "{msg}");
}

#[test]
fn a_udp_only_service_gets_no_address_on_a_haproxy_host_until_it_has_a_tcp_port() {
    let udp = with_ports(lb_service("apps", "voice"), vec![port("UDP", 3478, 31008)]);
    let d1 = decide_one_node(&config(), vec![udp], "127.0.0.10", &Ledger::empty());
    let key: flipbit_core::names::ServiceKey = "apps/voice".parse().unwrap();
    let entry = &d1.ledger.services[&key];
    assert_eq!(
        entry.addresses.keys().map(ToString::to_string).collect::<Vec<_>>(),
        ["lb-1"]
    );
    assert!(
        d1.files.keys().all(|p| !p.starts_with("lb/lb-3/")),
        "{:?}",
        d1.files.keys()
    );
    let zone = &d1.files["dns/k8s.example.test/apps/voice.zone"];
    assert!(!zone.contains("127.1.7."), "{zone}");
    assert!(
        d1.problems.iter().any(|p| p.severity == Severity::Warning
            && p.message
                .ends_with("the Service gets no address and no DNS record there")),
        "{:?}",
        d1.problems
    );

    // It gains a TCP port: lb-3 gives it an address and a file; lb-1 keeps its address.
    let mixed = with_ports(
        lb_service("apps", "voice"),
        vec![port("UDP", 3478, 31008), port("TCP", 3478, 31009)],
    );
    let d2 = decide_one_node(&config(), vec![mixed], "127.0.0.10", &d1.ledger);
    let entry2 = &d2.ledger.services[&key];
    assert_eq!(
        entry2
            .addresses
            .get(&"lb-1".parse::<flipbit_core::names::LbHostName>().unwrap()),
        entry
            .addresses
            .get(&"lb-1".parse::<flipbit_core::names::LbHostName>().unwrap())
    );
    assert_eq!(
        entry2
            .addresses
            .get(&"lb-3".parse::<flipbit_core::names::LbHostName>().unwrap())
            .map(ToString::to_string)
            .as_deref(),
        Some("127.1.7.1")
    );
    assert!(d2.files["lb/lb-3/apps/voice.cfg"].contains("bind 127.1.7.1:3478"));
}

#[test]
fn haproxy_hosts_use_the_same_nodes_as_nginx_hosts() {
    let node = |i: u8| common::backend_node(format!("node-{i}"), format!("127.0.0.{}", 9 + i), true);
    let svc = annotated(lb_service("apps", "web"), "flipbit.io/max-nodes", "3");
    let snapshot = Snapshot {
        services: vec![annotated(svc, "flipbit.io/balance", "hash")],
        nodes: (1..=8).map(node).collect(),
        ..Snapshot::default()
    };
    let d = decide(&snapshot, &config(), &Ledger::empty(), jiff::Timestamp::UNIX_EPOCH);
    let servers = |text: &str, prefix: &str| -> Vec<String> {
        let mut out: Vec<String> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix(prefix))
            .filter_map(|rest| rest.split([' ', ';']).find(|w| w.contains(':')))
            .map(str::to_owned)
            .collect();
        out.sort();
        out
    };
    let nginx = servers(&d.files["lb/lb-1/apps/web.conf"], "server ");
    let haproxy = servers(&d.files["lb/lb-3/apps/web.cfg"], "server ");
    assert_eq!(nginx.len(), 3);
    assert_eq!(nginx, haproxy);
    assert!(d.files["lb/lb-3/apps/web.cfg"].contains("balance source\n    hash-type consistent\n"));
}

#[test]
fn a_service_that_avoids_the_haproxy_host_gets_no_warning() {
    let udp = with_ports(
        annotated(lb_service("apps", "voice"), "flipbit.io/load-balancers", "lb-1"),
        vec![port("UDP", 3478, 31008)],
    );
    let d = decide_one_node(&config(), vec![udp], "127.0.0.10", &Ledger::empty());
    assert!(d.problems.is_empty(), "{:?}", d.problems);
}
