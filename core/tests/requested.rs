//! `flipbit.io/ips`: requested addresses are reserved before lowest-free allocation, never taken
//! from another Service or from a pool that does not admit the requester, and a request that
//! cannot be met leaves the Service where it was.

mod common;

use flipbit_core::allocate::AddressEvent;
use flipbit_core::config::Config;
use flipbit_core::decide::Decision;
use flipbit_core::ledger::Ledger;
use flipbit_core::model::ServiceInput;

fn config() -> Config {
    Config::parse(
        "zone: k.test\nlbHosts:\n  - {name: lb-1, pools: [127.3.1.0/24]}\n  - {name: lb-2, pools: [127.3.2.0/24]}\n",
    )
    .unwrap()
}

fn svc(name: &str, ips: Option<&str>) -> ServiceInput {
    let svc = common::lb_service("a", name);
    match ips {
        Some(ips) => common::annotated(svc, "flipbit.io/ips", ips),
        None => svc,
    }
}

fn run(services: Vec<ServiceInput>, ledger: &Ledger) -> Decision {
    common::decide_one_node(&config(), services, "127.3.0.10", ledger)
}

fn addr(d: &Decision, name: &str, host: &str) -> Option<String> {
    let key: flipbit_core::names::ServiceKey = format!("a/{name}").parse().unwrap();
    d.exposed
        .get(&key)
        .and_then(|s| s.addresses.iter().find(|(h, _)| h.as_str() == host))
        .map(|(_, ip)| ip.to_string())
}

fn errors(d: &Decision) -> Vec<String> {
    d.problems.iter().map(ToString::to_string).collect()
}

#[test]
fn a_free_requested_address_is_reserved_before_lowest_free_allocation() {
    // "a" sorts first and would take .1, which "z" asked for.
    let d = run(vec![svc("a", None), svc("z", Some("127.3.1.1"))], &Ledger::empty());
    assert_eq!(addr(&d, "z", "lb-1").as_deref(), Some("127.3.1.1"));
    assert_eq!(addr(&d, "a", "lb-1").as_deref(), Some("127.3.1.2"));
    // Hosts without a request allocate as usual.
    assert_eq!(addr(&d, "z", "lb-2").as_deref(), Some("127.3.2.2"));
    assert!(d.events.contains(&AddressEvent::Requested {
        key: "a/z".parse().unwrap(),
        host: "lb-1".parse().unwrap(),
        from: None,
        to: "127.3.1.1".parse().unwrap()
    }));
}

#[test]
fn a_held_address_is_never_taken_and_the_requester_stays_put() {
    let d1 = run(vec![svc("a", None), svc("b", None)], &Ledger::empty());
    assert_eq!(addr(&d1, "b", "lb-1").as_deref(), Some("127.3.1.2"));
    let d2 = run(vec![svc("a", None), svc("b", Some("127.3.1.1"))], &d1.ledger);
    assert_eq!(
        addr(&d2, "a", "lb-1").as_deref(),
        Some("127.3.1.1"),
        "a held address was taken"
    );
    assert_eq!(
        addr(&d2, "b", "lb-1").as_deref(),
        Some("127.3.1.2"),
        "the requester moved"
    );
    assert_eq!(
        errors(&d2),
        [
            "error: Service a/b: metadata.annotations[\"flipbit.io/ips\"]: 127.3.1.1 on LB host lb-1 is held by a/a; it keeps 127.3.1.2"
        ]
    );
    // A new Service asking for a held address is not exposed on that host.
    let d3 = run(
        vec![svc("a", None), svc("b", None), svc("c", Some("127.3.1.1"))],
        &d1.ledger,
    );
    assert_eq!(addr(&d3, "c", "lb-1"), None);
    assert_eq!(addr(&d3, "c", "lb-2").as_deref(), Some("127.3.2.3"));
}

#[test]
fn changing_the_request_moves_the_address_and_frees_the_old_one() {
    let d1 = run(vec![svc("a", None)], &Ledger::empty());
    let d2 = run(vec![svc("a", Some("127.3.1.50"))], &d1.ledger);
    assert_eq!(addr(&d2, "a", "lb-1").as_deref(), Some("127.3.1.50"));
    assert_eq!(
        addr(&d2, "a", "lb-2").as_deref(),
        Some("127.3.2.1"),
        "the other host's address moved"
    );
    let d3 = run(vec![svc("a", Some("127.3.1.50")), svc("b", None)], &d2.ledger);
    assert_eq!(
        addr(&d3, "b", "lb-1").as_deref(),
        Some("127.3.1.1"),
        "the old address was not freed"
    );
}

#[test]
fn two_requests_for_one_free_address_go_to_the_first_by_key() {
    let d = run(
        vec![svc("b", Some("127.3.1.9")), svc("a", Some("127.3.1.9"))],
        &Ledger::empty(),
    );
    assert_eq!(addr(&d, "a", "lb-1").as_deref(), Some("127.3.1.9"));
    assert_eq!(addr(&d, "b", "lb-1"), None);
    assert!(
        errors(&d)[0].contains("127.3.1.9 on LB host lb-1 is held by a/a"),
        "{:?}",
        errors(&d)
    );
}

#[test]
fn invalid_requests_name_the_annotation() {
    for (value, why) in [
        ("127.9.9.9", "127.9.9.9 is not in the pools of any LB host"),
        (
            "127.3.1.5, 127.3.1.6",
            "127.3.1.5 and 127.3.1.6 are both on LB host lb-1",
        ),
        ("nope", "\"nope\" is not an address"),
    ] {
        let d = run(vec![svc("a", Some(value))], &Ledger::empty());
        assert!(d.exposed.is_empty(), "{value} was accepted");
        let e = errors(&d);
        assert!(
            e[0].contains("metadata.annotations[\"flipbit.io/ips\"]") && e[0].contains(why),
            "{value}: {e:?}"
        );
    }
    let mut only2 = svc("a", Some("127.3.1.5"));
    only2
        .annotations
        .insert("flipbit.io/load-balancers".into(), "lb-2".into());
    let d = run(vec![only2], &Ledger::empty());
    assert!(
        errors(&d)[0].contains("belongs to LB host lb-1, which the Service does not use"),
        "{:?}",
        errors(&d)
    );
}

/// lb-1 has a pool for everyone and one that admits only team-a (lb-2 as in [`config`]).
fn tenant_config() -> Config {
    Config::parse(
        "zone: k.test\nlbHosts:\n  - name: lb-1\n    pools: [127.3.1.0/24, {cidr: 127.3.9.0/24, namespaces: [team-a]}]\n  - {name: lb-2, pools: [127.3.2.0/24]}\n",
    )
    .unwrap()
}

#[test]
fn a_request_in_a_pool_that_does_not_admit_the_service_is_refused_naming_the_pool() {
    let asking = |ns: &str| common::annotated(common::lb_service(ns, "web"), "flipbit.io/ips", "127.3.9.7");
    let run = |services: Vec<ServiceInput>, ledger: &Ledger| {
        common::decide_one_node(&tenant_config(), services, "127.3.0.10", ledger)
    };
    let web = |d: &Decision, ns: &str| {
        let key: flipbit_core::names::ServiceKey = format!("{ns}/web").parse().unwrap();
        d.exposed.get(&key).map(|s| {
            s.addresses
                .iter()
                .map(|(h, ip)| format!("{h} {ip}"))
                .collect::<Vec<_>>()
        })
    };
    // Admitted: granted.
    let d = run(vec![asking("team-a")], &Ledger::empty());
    assert_eq!(web(&d, "team-a").unwrap(), ["lb-1 127.3.9.7", "lb-2 127.3.2.1"]);
    // Not admitted, before it had an address: not exposed on that host, the others as usual.
    let d = run(vec![asking("team-b")], &Ledger::empty());
    assert_eq!(web(&d, "team-b").unwrap(), ["lb-2 127.3.2.1"]);
    assert_eq!(
        errors(&d),
        [
            "error: Service team-b/web: metadata.annotations[\"flipbit.io/ips\"]: 127.3.9.7 on LB host lb-1: lbHosts[0] (lb-1).pools[1] 127.3.9.0/24 admits only namespaces team-a; it is not exposed there"
        ]
    );
    // Not admitted, with an address: it keeps it, and the address it asked for stays free.
    let before = run(vec![common::lb_service("team-b", "web")], &Ledger::empty());
    let d = run(vec![asking("team-b")], &before.ledger);
    assert_eq!(d.ledger, before.ledger);
    assert!(
        errors(&d)[0].ends_with("admits only namespaces team-a; it keeps 127.3.1.1"),
        "{:?}",
        errors(&d)
    );
    let d = run(vec![asking("team-b"), asking("team-a")], &before.ledger);
    assert_eq!(
        web(&d, "team-a").unwrap()[0],
        "lb-1 127.3.9.7",
        "the refused request reserved it"
    );
}
