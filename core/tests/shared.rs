//! `flipbit.io/shared-ip-key`: Services of one namespace with the same key share one address per
//! LB host while their ports do not clash; the older one keeps its ports; nothing ever moves.

mod common;

use flipbit_core::config::Config;
use flipbit_core::decide::Decision;
use flipbit_core::ledger::Ledger;
use flipbit_core::model::ServiceInput;
use jiff::Timestamp;

fn config() -> Config {
    Config::parse(
        "zone: k.test\nlbHosts:\n  - {name: lb-1, pools: [127.4.1.0/24]}\n  - {name: lb-2, pools: [127.4.2.0/24]}\n",
    )
    .unwrap()
}

fn svc(ns: &str, name: &str, key: Option<&str>, port: u16, created: i64) -> ServiceInput {
    let mut svc = common::lb_service(ns, name);
    svc.ports[0].port = i32::from(port);
    svc.created = Timestamp::from_second(1_700_000_000 + created).ok();
    match key {
        Some(k) => common::annotated(svc, "flipbit.io/shared-ip-key", k),
        None => svc,
    }
}

fn run(services: Vec<ServiceInput>, ledger: &Ledger) -> Decision {
    common::decide_one_node(&config(), services, "127.4.0.10", ledger)
}

fn addrs(d: &Decision, key: &str) -> Vec<String> {
    d.exposed
        .get(&key.parse::<flipbit_core::names::ServiceKey>().unwrap())
        .map(|s| s.addresses.values().map(ToString::to_string).collect())
        .unwrap_or_default()
}

#[test]
fn members_without_a_clash_share_one_address_per_host() {
    let d = run(
        vec![svc("a", "web", Some("k"), 80, 0), svc("a", "api", Some("k"), 443, 1)],
        &Ledger::empty(),
    );
    assert_eq!(addrs(&d, "a/web"), ["127.4.1.1", "127.4.2.1"]);
    assert_eq!(addrs(&d, "a/api"), addrs(&d, "a/web"));
    assert!(d.files["lb/lb-1/a/api.conf"].contains("listen 127.4.1.1:443;"));
    assert!(d.files["lb/lb-1/a/web.conf"].contains("listen 127.4.1.1:80;"));
    // The ledger says who shares, and a reload of it accepts the double holding.
    let back = Ledger::parse(&d.ledger.to_yaml()).expect("a shared ledger loads");
    assert_eq!(back, d.ledger);
    assert!(d.ledger.to_yaml().contains("sharedKey: k"));
    // A later Service elsewhere gets the next address.
    let d2 = run(
        vec![
            svc("a", "web", Some("k"), 80, 0),
            svc("a", "api", Some("k"), 443, 1),
            svc("a", "x", None, 80, 2),
        ],
        &d.ledger,
    );
    assert_eq!(addrs(&d2, "a/x"), ["127.4.1.2", "127.4.2.2"]);
}

#[test]
fn on_a_port_clash_the_older_service_keeps_its_ports() {
    // "b" sorts first by name but was created later.
    let d = run(
        vec![svc("a", "b", Some("k"), 80, 5), svc("a", "a", Some("k"), 80, 1)],
        &Ledger::empty(),
    );
    assert_eq!(addrs(&d, "a/a"), ["127.4.1.1", "127.4.2.1"]);
    assert!(addrs(&d, "a/b").is_empty());
    let errors: Vec<String> = d.problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [
            "error: Service a/b: metadata.annotations[\"flipbit.io/shared-ip-key\"]: TCP/80 clashes with Service a/a, which shares the key \"k\" and came first; not exposed"
        ]
    );
}

#[test]
fn the_same_key_in_two_namespaces_shares_nothing() {
    let d = run(
        vec![svc("a", "web", Some("k"), 80, 0), svc("b", "web", Some("k"), 443, 1)],
        &Ledger::empty(),
    );
    assert_ne!(addrs(&d, "a/web"), addrs(&d, "b/web"));
}

#[test]
fn joining_a_group_never_moves_an_address() {
    let d1 = run(
        vec![svc("a", "one", None, 80, 0), svc("a", "two", None, 443, 1)],
        &Ledger::empty(),
    );
    let d2 = run(
        vec![svc("a", "one", Some("k"), 80, 0), svc("a", "two", Some("k"), 443, 1)],
        &d1.ledger,
    );
    assert_eq!(addrs(&d2, "a/one"), addrs(&d1, "a/one"));
    assert_eq!(
        addrs(&d2, "a/two"),
        addrs(&d1, "a/two"),
        "an existing member moved to share"
    );
    // A new member takes the address of the first member in creation order.
    let d3 = run(
        vec![
            svc("a", "one", Some("k"), 80, 0),
            svc("a", "two", Some("k"), 443, 1),
            svc("a", "three", Some("k"), 8080, 2),
        ],
        &d2.ledger,
    );
    assert_eq!(addrs(&d3, "a/three"), addrs(&d1, "a/one"));
}

#[test]
fn a_ledger_with_a_double_holding_outside_a_group_is_refused() {
    let d = run(
        vec![svc("a", "web", Some("k"), 80, 0), svc("a", "api", Some("k"), 443, 1)],
        &Ledger::empty(),
    );
    let broken = d.ledger.to_yaml().replacen("sharedKey: k", "sharedKey: other", 1);
    let err = Ledger::parse(&broken).unwrap_err().to_string();
    assert!(err.contains("is also held by"), "{err}");
}

#[test]
fn a_service_leaving_its_group_gets_its_own_address_and_the_group_keeps_its() {
    let d1 = run(
        vec![svc("a", "web", Some("k"), 80, 0), svc("a", "api", Some("k"), 443, 1)],
        &Ledger::empty(),
    );
    assert_eq!(addrs(&d1, "a/api"), addrs(&d1, "a/web"));
    // api drops the key: it may not keep an address web still holds.
    let d2 = run(
        vec![svc("a", "web", Some("k"), 80, 0), svc("a", "api", None, 443, 1)],
        &d1.ledger,
    );
    assert_eq!(addrs(&d2, "a/web"), addrs(&d1, "a/web"), "the group keeps its address");
    assert_eq!(addrs(&d2, "a/api"), ["127.4.1.2", "127.4.2.2"]);
    Ledger::parse(&d2.ledger.to_yaml()).expect("no address is held twice outside a group");
}
