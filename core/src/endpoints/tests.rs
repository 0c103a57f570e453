use std::net::SocketAddr;

use super::*;
use crate::exposure::test_service;
use crate::model::{EndpointInput, EndpointPortInput, PortInput};
use crate::traffic::Traffic;

fn pods(mut svc: ExposedService) -> ExposedService {
    svc.settings.traffic = Arc::new(Traffic {
        backends: Backends::Pods,
        ..Traffic::default()
    });
    svc
}

fn port(name: Option<&str>, protocol: Option<&str>, port: i32) -> EndpointPortInput {
    EndpointPortInput {
        name: name.map(str::to_owned),
        protocol: protocol.map(str::to_owned),
        port: Some(port),
    }
}

fn endpoint(address: &str, ready: Option<bool>) -> EndpointInput {
    EndpointInput {
        addresses: vec![address.to_owned()],
        ready,
    }
}

fn slice(family: &str, ports: Vec<EndpointPortInput>, endpoints: Vec<EndpointInput>) -> EndpointSliceInput {
    EndpointSliceInput {
        namespace: "web".into(),
        service_name: "x".into(),
        address_type: family.into(),
        ports,
        endpoints,
        ..EndpointSliceInput::default()
    }
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter().map(|a| a.parse().expect("a socket address")).collect()
}

fn names(list: &[Option<&str>]) -> Vec<Option<String>> {
    list.iter().map(|n| n.map(str::to_owned)).collect()
}

#[test]
fn a_named_port_takes_the_slice_port_of_its_name_and_protocol() {
    // Service ports (sorted by protocol, port): TCP 80 "http", TCP 443 "https", UDP 53 "dns".
    let svc = pods(test_service(
        "web/x",
        &[(Protocol::Tcp, 80, 0), (Protocol::Tcp, 443, 0), (Protocol::Udp, 53, 0)],
    ));
    let names = names(&[Some("http"), Some("https"), Some("dns")]);
    // The named targetPorts resolved per pod: two pods serve http on 8080, a third (another
    // slice, as the controller groups endpoints by port numbers) on 9090.
    let a = slice(
        "IPv4",
        vec![
            port(Some("https"), Some("TCP"), 8443),
            port(Some("http"), None, 8080),
            port(Some("dns"), Some("UDP"), 5353),
            // A TCP port named dns is not the UDP one.
            port(Some("dns"), Some("TCP"), 5354),
        ],
        vec![endpoint("10.1.0.5", Some(true)), endpoint("10.1.0.4", None)],
    );
    let b = slice(
        "IPv4",
        vec![port(Some("http"), Some("TCP"), 9090)],
        vec![endpoint("10.1.0.9", Some(true))],
    );
    let got = upstreams(&svc, &names, &[&a, &b]);
    assert_eq!(
        got.of_port(0),
        addrs(&["10.1.0.4:8080", "10.1.0.5:8080", "10.1.0.9:9090"])
    );
    assert_eq!(got.of_port(1), addrs(&["10.1.0.4:8443", "10.1.0.5:8443"]));
    assert_eq!(got.of_port(2), addrs(&["10.1.0.4:5353", "10.1.0.5:5353"]));
    assert_eq!(
        &*addresses(&got),
        addrs(&[
            "10.1.0.4:5353",
            "10.1.0.4:8080",
            "10.1.0.4:8443",
            "10.1.0.5:5353",
            "10.1.0.5:8080",
            "10.1.0.5:8443",
            "10.1.0.9:9090"
        ])
    );
}

#[test]
fn an_unnamed_single_port_takes_the_unnamed_slice_port() {
    let svc = pods(test_service("web/x", &[(Protocol::Tcp, 80, 0)]));
    for unnamed in [None, Some("")] {
        let s = slice(
            "IPv4",
            vec![port(unnamed, None, 8080)],
            vec![endpoint("10.1.0.4", Some(true))],
        );
        for service_name in [None, Some(String::new())] {
            let got = upstreams(&svc, &[service_name], &[&s]);
            assert_eq!(got.of_port(0), addrs(&["10.1.0.4:8080"]), "{unnamed:?}");
        }
    }
    // A named slice port is another port's.
    let named = slice(
        "IPv4",
        vec![port(Some("http"), None, 8080)],
        vec![endpoint("10.1.0.4", Some(true))],
    );
    assert!(upstreams(&svc, &[None], &[&named]).of_port(0).is_empty());
}

#[test]
fn endpoints_not_ready_are_left_out_unknown_readiness_counts_as_ready() {
    let svc = pods(test_service("web/x", &[(Protocol::Tcp, 80, 0)]));
    let s = slice(
        "IPv4",
        vec![port(None, None, 8080)],
        vec![
            endpoint("10.1.0.1", Some(false)),
            endpoint("10.1.0.2", None),
            endpoint("10.1.0.3", Some(true)),
        ],
    );
    let got = upstreams(&svc, &[None], &[&s]);
    assert_eq!(got.of_port(0), addrs(&["10.1.0.2:8080", "10.1.0.3:8080"]));
}

#[test]
fn both_families_count_fqdn_slices_and_odd_addresses_do_not() {
    let svc = pods(test_service("web/x", &[(Protocol::Tcp, 80, 0)]));
    let v4 = slice(
        "IPv4",
        vec![port(None, None, 8080)],
        vec![
            endpoint("10.1.0.1", Some(true)),
            // An IPv6 address in an IPv4 slice, a link-local one, garbage: none dialled.
            endpoint("fd00:10::1", Some(true)),
            endpoint("169.254.169.254", Some(true)),
            endpoint("0.0.0.0", Some(true)),
            endpoint("not-an-ip", Some(true)),
        ],
    );
    let v6 = slice(
        "IPv6",
        vec![port(None, None, 8080)],
        vec![
            endpoint("fd00:10::1", Some(true)),
            endpoint("fe80::1", Some(true)),
            EndpointInput {
                // Addresses are fungible: the first one is used.
                addresses: vec!["fd00:10::2".into(), "fd00:10::3".into()],
                ready: Some(true),
            },
        ],
    );
    let fqdn = slice(
        "FQDN",
        vec![port(None, None, 8080)],
        vec![endpoint("pod.example.test", Some(true))],
    );
    let got = upstreams(&svc, &[None], &[&v6, &fqdn, &v4]);
    assert_eq!(
        got.of_port(0),
        addrs(&["10.1.0.1:8080", "[fd00:10::1]:8080", "[fd00:10::2]:8080"])
    );
}

#[test]
fn a_port_without_ready_endpoints_is_not_served() {
    let svc = pods(test_service(
        "web/x",
        &[(Protocol::Tcp, 80, 0), (Protocol::Tcp, 443, 0)],
    ));
    let names = names(&[Some("http"), Some("https")]);
    let s = slice(
        "IPv4",
        vec![
            port(Some("http"), None, 8080),
            // No number: nothing to dial.
            EndpointPortInput {
                name: Some("https".into()),
                protocol: None,
                port: None,
            },
        ],
        vec![endpoint("10.1.0.1", Some(true))],
    );
    let got = upstreams(&svc, &names, &[&s]);
    assert_eq!(got.of_port(0), addrs(&["10.1.0.1:8080"]));
    assert!(got.of_port(1).is_empty());
    let text = crate::render::nginx::service(
        &svc,
        &"lb-1".parse().expect("host"),
        &["127.1.1.5".parse().expect("ip")],
        &got,
    )
    .expect("renders");
    assert!(text.contains("server 10.1.0.1:8080;"), "{text}");
    assert!(!text.contains(":443"), "a port without endpoints listens:\n{text}");
    // No slice at all: nothing listens.
    assert!(upstreams(&svc, &names, &[]).0.iter().all(Vec::is_empty));
}

#[test]
fn the_same_endpoint_in_two_slices_is_one_upstream() {
    let svc = pods(test_service("web/x", &[(Protocol::Tcp, 80, 0)]));
    let s = slice(
        "IPv4",
        vec![port(None, None, 8080)],
        vec![endpoint("10.1.0.2", Some(true)), endpoint("10.1.0.1", Some(true))],
    );
    let got = upstreams(&svc, &[None], &[&s, &s.clone()]);
    assert_eq!(got.of_port(0), addrs(&["10.1.0.1:8080", "10.1.0.2:8080"]));
}

#[test]
fn port_names_come_from_the_input_by_protocol_and_port() {
    let svc = pods(test_service("web/x", &[(Protocol::Tcp, 53, 0), (Protocol::Udp, 53, 0)]));
    let input = ServiceInput {
        ports: vec![
            PortInput {
                name: Some("dns-udp".into()),
                protocol: Some("UDP".into()),
                port: 53,
                node_port: None,
            },
            PortInput {
                name: Some("dns-tcp".into()),
                protocol: None,
                port: 53,
                node_port: None,
            },
        ],
        ..ServiceInput::default()
    };
    assert_eq!(port_names(&svc, &input), names(&[Some("dns-tcp"), Some("dns-udp")]));
}

#[test]
fn slices_are_grouped_by_service() {
    let mut other = slice("IPv4", Vec::new(), Vec::new());
    other.service_name = "y".into();
    let all = [
        slice("IPv4", Vec::new(), Vec::new()),
        other,
        slice("IPv6", Vec::new(), Vec::new()),
    ];
    let grouped = SlicesByService::new(&all);
    assert_eq!(grouped.get(&"web/x".parse().expect("key")).len(), 2);
    assert_eq!(grouped.get(&"web/y".parse().expect("key")).len(), 1);
    assert!(grouped.get(&"web/z".parse().expect("key")).is_empty());
    let only_y = SlicesByService::of(&all, |_, name| name == "y");
    assert!(only_y.get(&"web/x".parse().expect("key")).is_empty());
}

#[test]
fn max_nodes_on_a_pod_backed_service_is_a_warning() {
    let mut svc = test_service("web/x", &[(Protocol::Tcp, 80, 0)]);
    svc.settings.max_nodes = Some(2);
    assert!(warnings(&svc).is_none(), "nodes-backed: max-nodes applies");
    let svc = pods(svc);
    let warning = warnings(&svc).expect("a warning");
    assert_eq!(warning.field, "metadata.annotations[\"flipbit.io/max-nodes\"]");
}
