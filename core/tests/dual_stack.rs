//! Dual-stack: a Service whose ipFamilies include IPv6 also gets an IPv6 address from each LB
//! host with IPv6 pools; nginx listens on `[addr]:port` too and DNS gets AAAA records.

mod common;

use flipbit_core::config::Config;
use flipbit_core::decide::Decision;
use flipbit_core::host_addresses::HostAddresses;
use flipbit_core::ledger::Ledger;
use flipbit_core::model::ServiceInput;
use flipbit_core::names::ServiceKey;

fn config() -> Config {
    Config::parse(
        "zone: k.test\nlbHosts:\n  - {name: lb-1, pools: [127.6.1.0/24, \"fd00:6::/120\"]}\n  - {name: lb-2, pools: [127.6.2.0/24]}\n  - {name: lb-6, pools: [\"fd00:66::10-fd00:66::20\"]}\n",
    )
    .unwrap()
}

fn svc(name: &str, families: &[&str]) -> ServiceInput {
    let mut svc = common::lb_service("a", name);
    svc.ip_families = families.iter().map(|f| (*f).to_owned()).collect();
    svc
}

fn key(name: &str) -> ServiceKey {
    format!("a/{name}").parse().unwrap()
}

/// The address of the first LB host in `addresses`, as text.
fn first(addresses: &HostAddresses) -> Option<String> {
    addresses.values().next().map(ToString::to_string)
}

fn run(services: Vec<ServiceInput>, ledger: &Ledger) -> Decision {
    common::decide_one_node(&config(), services, "127.6.0.10", ledger)
}

#[test]
fn dual_stack_services_get_an_ipv6_address_where_there_is_a_pool() {
    let d = run(vec![svc("dual", &["IPv4", "IPv6"]), svc("v4", &[])], &Ledger::empty());
    let dual = &d.exposed[&key("dual")];
    let list = |m: &HostAddresses| m.iter().map(|(h, ip)| format!("{h} {ip}")).collect::<Vec<_>>();
    assert_eq!(
        list(&dual.addresses),
        ["lb-1 127.6.1.1", "lb-2 127.6.2.1", "lb-6 fd00:66::10"]
    );
    assert_eq!(list(&dual.addresses_v6), ["lb-1 fd00:6::1"]);
    let v4 = &d.exposed[&key("v4")];
    assert!(v4.addresses_v6.is_empty());
    assert_eq!(
        list(&v4.addresses),
        ["lb-1 127.6.1.2", "lb-2 127.6.2.2", "lb-6 fd00:66::11"]
    );
    let conf = &d.files["lb/lb-1/a/dual.conf"];
    assert!(
        conf.contains("    listen 127.6.1.1:80;\n    listen [fd00:6::1]:80;\n"),
        "{conf}"
    );
    let zone = &d.files["dns/k.test/a/dual.zone"];
    assert!(zone.contains("dual.a.k.test. 300 IN AAAA fd00:6::1"), "{zone}");
    assert!(zone.contains("dual.a.k.test. 300 IN AAAA fd00:66::10"), "{zone}");
    assert!(zone.contains("dual.a.k.test. 300 IN A 127.6.1.1"), "{zone}");
    // Round trip and stability.
    let back = Ledger::parse(&d.ledger.to_yaml()).unwrap();
    assert!(d.ledger.to_yaml().contains("addressesV6"));
    let again = run(vec![svc("dual", &["IPv4", "IPv6"]), svc("v4", &[])], &back);
    assert_eq!(again.ledger, d.ledger);
}

#[test]
fn dropping_ipv6_releases_only_the_ipv6_address() {
    let d1 = run(vec![svc("dual", &["IPv4", "IPv6"])], &Ledger::empty());
    let d2 = run(vec![svc("dual", &["IPv4"])], &d1.ledger);
    let dual = &d2.exposed[&key("dual")];
    assert!(dual.addresses_v6.is_empty());
    assert_eq!(dual.addresses, d1.exposed[&key("dual")].addresses);
    let d3 = run(
        vec![svc("dual", &["IPv4"]), svc("other", &["IPv6", "IPv4"])],
        &d2.ledger,
    );
    assert_eq!(
        first(&d3.exposed[&key("other")].addresses_v6).as_deref(),
        Some("fd00:6::1")
    );
}

#[test]
fn an_exhausted_ipv6_pool_leaves_the_service_on_ipv4_there() {
    // lb-1's IPv6 pool holds one address: the first dual-stack Service in key order takes it.
    let config =
        Config::parse("zone: k.test\nlbHosts:\n  - {name: lb-1, pools: [127.6.1.0/24, \"fd00:6::1-fd00:6::1\"]}\n")
            .unwrap();
    let services = || vec![svc("a1", &["IPv4", "IPv6"]), svc("a2", &["IPv4", "IPv6"])];
    let d = common::decide_one_node(&config, services(), "127.6.0.10", &Ledger::empty());
    assert_eq!(first(&d.exposed[&key("a1")].addresses_v6).as_deref(), Some("fd00:6::1"));
    let second = &d.exposed[&key("a2")];
    assert!(second.addresses_v6.is_empty());
    assert_eq!(first(&second.addresses).as_deref(), Some("127.6.1.2"));
    let problems: Vec<String> = d
        .problems
        .iter()
        .map(|p| format!("{} {} {}", p.object, p.field, p.message))
        .collect();
    assert_eq!(
        problems,
        ["Service a/a2 spec.ipFamilies no free IPv6 address on LB host lb-1; served over IPv4 only there"]
    );
    // The next decision from the written ledger keeps both as they are.
    let again = common::decide_one_node(&config, services(), "127.6.0.10", &d.ledger);
    assert_eq!(again.ledger, d.ledger);
    // Once a1 leaves IPv6, a2 gets the address (a1's is free at once: a1 still exists).
    let freed = common::decide_one_node(
        &config,
        vec![svc("a1", &["IPv4"]), svc("a2", &["IPv4", "IPv6"])],
        "127.6.0.10",
        &d.ledger,
    );
    assert!(freed.exposed[&key("a1")].addresses_v6.is_empty());
    assert_eq!(
        first(&freed.exposed[&key("a2")].addresses_v6).as_deref(),
        Some("fd00:6::1")
    );
    assert!(freed.problems.is_empty(), "{:?}", freed.problems);
}
