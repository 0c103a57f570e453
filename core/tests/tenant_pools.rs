//! Tenant pools: a pool that lists `namespaces` or a `serviceSelector` gives its addresses only to
//! the Services it admits. Admitted Services never move; a pool edit or a label change that ends a
//! Service's admission moves that Service alone, and says why; a host where no pool admits a
//! Service gives it no address.

mod common;

use std::collections::BTreeMap;

use flipbit_core::allocate::AddressEvent;
use flipbit_core::config::Config;
use flipbit_core::decide::Decision;
use flipbit_core::ledger::Ledger;
use flipbit_core::message;
use flipbit_core::model::ServiceInput;

/// lb-1: team-a and team-b's pool first, then web Services', then one for everyone; lb-2: team-a
/// only.
const CONFIG: &str = "zone: k.test\nlbHosts:\n  - name: lb-1\n    pools:\n      - {cidr: 127.3.1.0/29, namespaces: [team-a, team-b]}\n      - cidr: 127.3.2.0/29\n        serviceSelector: {matchExpressions: [{key: tier, operator: In, values: [web]}]}\n      - 127.3.3.0/29\n  - name: lb-2\n    pools: [{range: 127.3.4.1-127.3.4.9, namespaces: [team-a]}]\n";

fn config(text: &str) -> Config {
    Config::parse(text).expect("config")
}

fn svc(ns: &str, name: &str, labels: &[(&str, &str)]) -> ServiceInput {
    let mut svc = common::lb_service(ns, name);
    svc.labels = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    svc
}

fn run(config: &Config, services: Vec<ServiceInput>, ledger: &Ledger) -> Decision {
    common::decide_one_node(config, services, "127.3.0.10", ledger)
}

/// `host ip` of every exposed Service, by key.
fn table(d: &Decision) -> BTreeMap<String, Vec<String>> {
    d.exposed
        .iter()
        .map(|(k, s)| {
            let addrs = s.addresses.iter().map(|(h, ip)| format!("{h} {ip}")).collect();
            (k.to_string(), addrs)
        })
        .collect()
}

fn problems(d: &Decision) -> Vec<String> {
    d.problems.iter().map(ToString::to_string).collect()
}

fn services() -> Vec<ServiceInput> {
    vec![
        svc("team-a", "api", &[]),
        svc("team-c", "shop", &[("tier", "web")]),
        svc("team-c", "batch", &[]),
    ]
}

#[test]
fn services_take_addresses_only_from_pools_that_admit_them() {
    let d = run(&config(CONFIG), services(), &Ledger::empty());
    assert_eq!(
        table(&d),
        BTreeMap::from([
            (
                "team-a/api".into(),
                vec!["lb-1 127.3.1.1".into(), "lb-2 127.3.4.1".into()]
            ),
            ("team-c/batch".into(), vec!["lb-1 127.3.3.1".into()]),
            ("team-c/shop".into(), vec!["lb-1 127.3.2.1".into()]),
        ])
    );
    // lb-2 admits team-a only: the others get no address there, with a warning each.
    assert_eq!(
        problems(&d),
        [
            "warning: Service team-c/batch: no pool of LB host lb-2 admits it (lbHosts[1] (lb-2).pools[0] 127.3.4.1-127.3.4.9 admits only namespaces team-a); not exposed there",
            "warning: Service team-c/shop: no pool of LB host lb-2 admits it (lbHosts[1] (lb-2).pools[0] 127.3.4.1-127.3.4.9 admits only namespaces team-a); not exposed there",
        ]
    );
    // Deciding again changes nothing.
    let again = run(&config(CONFIG), services(), &d.ledger);
    assert_eq!(again.ledger, d.ledger);
    assert!(again.events.is_empty(), "{:?}", again.events);
}

#[test]
fn a_service_no_host_admits_is_not_exposed_and_says_why() {
    let d = run(&config(CONFIG), vec![svc("team-c", "x", &[])], &Ledger::empty());
    let only_tenants = CONFIG.replace("      - 127.3.3.0/29\n", "");
    let d2 = run(&config(&only_tenants), vec![svc("team-c", "x", &[])], &d.ledger);
    assert!(d2.exposed.is_empty() && d2.ledger.services.is_empty());
    let p = problems(&d2);
    assert!(
        p.iter().any(|l| l.contains("no pool of LB host lb-1 admits it (lbHosts[0] (lb-1).pools[0] 127.3.1.0/29 admits only namespaces team-a, team-b; lbHosts[0] (lb-1).pools[1] 127.3.2.0/29 admits only Services matching tier in (web)); not exposed there")),
        "{p:?}"
    );
    // The address it had went with it, and the commit says so.
    assert!(d2.events.contains(&AddressEvent::Dropped {
        key: "team-c/x".parse().unwrap(),
        host: "lb-1".parse().unwrap(),
        ip: "127.3.3.1".parse().unwrap(),
    }));
}

#[test]
fn a_pool_edit_that_stops_admitting_a_service_moves_it_alone_and_says_why() {
    let c = config(CONFIG);
    let d1 = run(&c, services(), &Ledger::empty());
    let mut more = services();
    more.push(svc("team-b", "db", &[]));
    let d1 = run(&c, more.clone(), &d1.ledger);
    assert_eq!(table(&d1)["team-b/db"], ["lb-1 127.3.1.2"]);
    // team-b leaves the first pool.
    let edited = config(&CONFIG.replace("namespaces: [team-a, team-b]", "namespaces: [team-a]"));
    let d2 = run(&edited, more.clone(), &d1.ledger);
    let (before, after) = (table(&d1), table(&d2));
    for key in ["team-a/api", "team-c/shop", "team-c/batch"] {
        assert_eq!(before[key], after[key], "{key} moved");
    }
    assert_eq!(after["team-b/db"], ["lb-1 127.3.3.2"]);
    assert_eq!(
        d2.events,
        [AddressEvent::Moved {
            key: "team-b/db".parse().unwrap(),
            host: "lb-1".parse().unwrap(),
            from: "127.3.1.2".parse().unwrap(),
            to: "127.3.3.2".parse().unwrap(),
        }]
    );
    assert!(
        problems(&d2).contains(&"warning: Service team-b/db: 127.3.1.2 on LB host lb-1: pool 127.3.1.0/29 no longer admits it (lbHosts[0] (lb-1).pools[0] 127.3.1.0/29 admits only namespaces team-a); moved to 127.3.3.2".to_owned()),
        "{:?}",
        problems(&d2)
    );
    let changed = std::collections::BTreeSet::from(["lb/lb-1/team-b/db.conf".to_owned()]);
    let msg = message::compose(&d2, &changed, 3600, &BTreeMap::new()).expect("a message");
    assert!(
        msg.starts_with("move team-b/db on lb-1 from 127.3.1.2 to 127.3.3.2 (pool 127.3.1.0/29 no longer admits it)\n"),
        "{msg}"
    );
    assert!(
        msg.contains("Flipbit-Cause: pool admission (flipbit.yaml pools or the Service's labels) changed"),
        "{msg}"
    );
    // The freed address goes to the next Service the pool admits.
    more.push(svc("team-a", "new", &[]));
    let d3 = run(&edited, more, &d2.ledger);
    assert_eq!(table(&d3)["team-a/new"][0], "lb-1 127.3.1.2");
}

#[test]
fn a_label_change_moves_only_that_service() {
    let c = config(CONFIG);
    let d1 = run(&c, services(), &Ledger::empty());
    let relabelled = vec![
        svc("team-a", "api", &[]),
        svc("team-c", "shop", &[("tier", "api")]),
        svc("team-c", "batch", &[("tier", "web")]),
    ];
    let d2 = run(&c, relabelled, &d1.ledger);
    let after = table(&d2);
    assert_eq!(after["team-a/api"], table(&d1)["team-a/api"]);
    // batch is now admitted by the web pool too, but it keeps the address it has.
    assert_eq!(after["team-c/batch"], ["lb-1 127.3.3.1"]);
    assert_eq!(after["team-c/shop"], ["lb-1 127.3.3.2"]);
    assert_eq!(d2.events.len(), 1, "{:?}", d2.events);
}

#[test]
fn a_requested_address_freed_by_a_move_is_granted_in_the_same_decision() {
    let c = config(CONFIG);
    let d1 = run(&c, vec![svc("m", "old", &[("tier", "web")])], &Ledger::empty());
    assert_eq!(table(&d1)["m/old"][0], "lb-1 127.3.2.1");
    // m/old stops being a web Service; a/asker (placed before it) asks for its address, and
    // z/new (placed after it) needs the web pool's lowest free address.
    let services = vec![
        svc("m", "old", &[("tier", "api")]),
        common::annotated(svc("a", "asker", &[("tier", "web")]), "flipbit.io/ips", "127.3.2.1"),
        svc("z", "new", &[("tier", "web")]),
    ];
    let d2 = run(&c, services.clone(), &d1.ledger);
    let t = table(&d2);
    assert_eq!(t["m/old"][0], "lb-1 127.3.3.1");
    assert_eq!(t["a/asker"][0], "lb-1 127.3.2.1");
    assert_eq!(t["z/new"][0], "lb-1 127.3.2.2", "the promised address was given twice");
    let reloaded = Ledger::parse(&d2.ledger.to_yaml()).expect("no address held twice");
    let again = run(&c, services, &reloaded);
    assert_eq!(again.ledger, d2.ledger, "a fresh decision agrees");
}

#[test]
fn ipv6_pools_admit_the_same_way() {
    let text = "zone: k.test\nlbHosts:\n  - name: lb-1\n    pools:\n      - 127.3.1.0/29\n      - {cidr: \"fd00:3::/120\", namespaces: [team-a]}\n      - \"fd00:4::/120\"\n";
    let dual = |ns: &str| {
        let mut s = svc(ns, "web", &[]);
        s.ip_families = vec!["IPv4".into(), "IPv6".into()];
        s
    };
    let d = run(&config(text), vec![dual("team-a"), dual("team-b")], &Ledger::empty());
    let v6 = |ns: &str| {
        let key: flipbit_core::names::ServiceKey = format!("{ns}/web").parse().unwrap();
        d.exposed[&key]
            .addresses_v6
            .values()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(v6("team-a"), ["fd00:3::1"]);
    assert_eq!(v6("team-b"), ["fd00:4::1"]);
    // Without the open IPv6 pool, team-b is served over IPv4 only, and told so.
    let closed = text.replace("      - \"fd00:4::/120\"\n", "");
    let d2 = run(&config(&closed), vec![dual("team-a"), dual("team-b")], &d.ledger);
    let key: flipbit_core::names::ServiceKey = "team-b/web".parse().unwrap();
    assert!(d2.exposed[&key].addresses_v6.is_empty());
    assert_eq!(d2.exposed[&key].addresses.len(), 1);
    assert!(
        problems(&d2)
            .iter()
            .any(|p| p.contains("team-b/web: no IPv6 pool of LB host lb-1 admits it")
                && p.ends_with("served over IPv4 only there")),
        "{:?}",
        problems(&d2)
    );
}

#[test]
fn members_of_a_sharing_group_are_admitted_one_by_one() {
    // Two Services share an address; the pool then admits only one of them.
    let text = "zone: k.test\nlbHosts:\n  - name: lb-1\n    pools:\n      - {cidr: 127.3.1.0/29, serviceSelector: {matchLabels: {tier: web}}}\n      - 127.3.3.0/29\n";
    let member = |name: &str, port: i32, tier: &str| {
        let mut s = common::annotated(svc("team-a", name, &[("tier", tier)]), "flipbit.io/shared-ip-key", "k");
        s.ports[0].port = port;
        s
    };
    let d1 = run(
        &config(text),
        vec![member("a", 80, "web"), member("b", 81, "web")],
        &Ledger::empty(),
    );
    assert_eq!(table(&d1)["team-a/a"], table(&d1)["team-a/b"]);
    let d2 = run(
        &config(text),
        vec![member("a", 80, "api"), member("b", 81, "web"), svc("team-x", "c", &[])],
        &d1.ledger,
    );
    let t = table(&d2);
    assert_eq!(t["team-a/b"], ["lb-1 127.3.1.1"], "the admitted member stays");
    assert_eq!(t["team-a/a"], ["lb-1 127.3.3.1"]);
    assert_eq!(t["team-x/c"], ["lb-1 127.3.3.2"]);
    Ledger::parse(&d2.ledger.to_yaml()).expect("no address held twice");
}

#[test]
fn a_member_joining_on_an_address_its_holder_gives_up_keeps_it_for_itself() {
    let text = "zone: k.test\nlbHosts:\n  - name: lb-1\n    pools:\n      - {cidr: 127.3.1.0/29, serviceSelector: {matchLabels: {tier: web}}}\n      - 127.3.3.0/29\n";
    let member = |name: &str, port: i32, tier: &str| {
        let mut s = common::annotated(svc("team-a", name, &[("tier", tier)]), "flipbit.io/shared-ip-key", "k");
        s.ports[0].port = port;
        s
    };
    let d1 = run(&config(text), vec![member("holder", 80, "web")], &Ledger::empty());
    assert_eq!(table(&d1)["team-a/holder"], ["lb-1 127.3.1.1"]);
    // A new member (placed first) joins on the group's address just as the holder stops being
    // admitted there; a Service placed after both must not get that address as well.
    let services = vec![
        member("holder", 80, "api"),
        member("a-new", 81, "web"),
        svc("team-z", "c", &[("tier", "web")]),
    ];
    let d2 = run(&config(text), services, &d1.ledger);
    let t = table(&d2);
    assert_eq!(t["team-a/a-new"], ["lb-1 127.3.1.1"]);
    assert_eq!(t["team-a/holder"], ["lb-1 127.3.3.1"]);
    assert_eq!(t["team-z/c"], ["lb-1 127.3.1.2"]);
    Ledger::parse(&d2.ledger.to_yaml()).expect("no address held twice");
}
