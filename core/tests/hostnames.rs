//! Which DNS names a Service may hold: `flipbit.io/hostname` never reaches the zone's own names
//! (the apex, `reservedNames`), never takes another Service's default name, and under
//! `hostnamePolicy: namespace` stays inside the Service's namespace.

mod common;

use flipbit_core::config::Config;
use flipbit_core::decide::Decision;
use flipbit_core::ledger::Ledger;
use flipbit_core::model::ServiceInput;
use flipbit_core::names::ServiceKey;

use common::{annotated, decide_one_node, lb_service};

const CONFIG: &str = "zone: k.test\nlbHosts:\n  - {name: lb-1, pools: [127.6.1.0/24]}\n";
const HOSTNAME: &str = "flipbit.io/hostname";
const FIELD: &str = "metadata.annotations[\"flipbit.io/hostname\"]";

fn config(extra: &str) -> Config {
    Config::parse(&format!("{CONFIG}{extra}")).expect("config")
}

fn key(text: &str) -> ServiceKey {
    text.parse().expect("key")
}

fn decide(config: &Config, services: Vec<ServiceInput>, ledger: &Ledger) -> Decision {
    decide_one_node(config, services, "127.6.0.10", ledger)
}

fn names(d: &Decision, service: &str) -> Vec<String> {
    d.exposed
        .get(&key(service))
        .map(|s| s.dns_names.clone())
        .unwrap_or_default()
}

/// The problems about `service`, as text.
fn problems(d: &Decision, service: &str) -> Vec<String> {
    let object = format!("Service {service}");
    d.problems
        .iter()
        .filter(|p| p.object.to_string() == object)
        .map(ToString::to_string)
        .collect()
}

#[test]
fn the_zone_apex_and_the_name_servers_are_refused_and_the_service_keeps_its_files() {
    let cfg = config("");
    let good = annotated(lb_service("a", "x"), HOSTNAME, "www.k.test");
    let d1 = decide(&cfg, vec![good], &Ledger::empty());
    assert_eq!(names(&d1, "a/x"), ["www.k.test"]);

    for (claim, why) in [
        (
            "ns.k.test,k.test",
            "\"ns.k.test\" is reserved for the zone's own hosts (reservedNames in flipbit.yaml); \"k.test\" is the zone apex, whose records (SOA, NS) belong to the zone itself",
        ),
        (
            "www.k.test, NS1.k.test.",
            "\"ns1.k.test\" is reserved for the zone's own hosts (reservedNames in flipbit.yaml)",
        ),
        ("mail.k.test", "\"mail.k.test\" is reserved"),
    ] {
        let bad = annotated(lb_service("a", "x"), HOSTNAME, claim);
        let d2 = decide(&cfg, vec![bad], &d1.ledger);
        assert!(d2.kept.contains(&key("a/x")), "{claim}: not kept");
        assert!(d2.exposed.is_empty(), "{claim}: exposed");
        assert_eq!(d2.ledger, d1.ledger, "{claim}: the ledger changed");
        assert!(
            d2.deletions(d1.files.keys()).is_empty(),
            "{claim}: its committed files would go"
        );
        let said = problems(&d2, "a/x");
        assert!(
            said.len() == 1 && said[0].starts_with(&format!("error: Service a/x: {FIELD}: {why}")),
            "{claim}: {said:?}"
        );
    }
}

#[test]
fn reserved_names_come_from_flipbit_yaml() {
    let own = config("reservedNames: [dns1, ns1.infra]\n");
    let ns = annotated(lb_service("a", "x"), HOSTNAME, "ns.k.test");
    let d = decide(&own, vec![ns.clone()], &Ledger::empty());
    assert_eq!(
        names(&d, "a/x"),
        ["ns.k.test"],
        "ns is not reserved once the list is given"
    );
    let dns1 = annotated(lb_service("a", "x"), HOSTNAME, "dns1.k.test");
    let d = decide(&own, vec![dns1], &Ledger::empty());
    assert!(d.kept.contains(&key("a/x")), "{:?}", d.problems);

    // A reserved name that is a Service's default name: that Service is refused too.
    let d = decide(&own, vec![lb_service("infra", "ns1")], &Ledger::empty());
    assert!(d.kept.contains(&key("infra/ns1")));
    let said = problems(&d, "infra/ns1");
    assert!(
        said[0].starts_with("error: Service infra/ns1: metadata.name: its DNS name ns1.infra.k.test is reserved"),
        "{said:?}"
    );

    // `[]`: nothing but the apex.
    let none = config("reservedNames: []\n");
    let d = decide(&none, vec![ns], &Ledger::empty());
    assert_eq!(names(&d, "a/x"), ["ns.k.test"]);
    let apex = annotated(lb_service("a", "x"), HOSTNAME, "k.test.");
    let d = decide(&none, vec![apex], &Ledger::empty());
    assert!(d.kept.contains(&key("a/x")), "the apex is always refused");
}

#[test]
fn a_default_name_is_always_its_services_own() {
    let cfg = config("");
    // a/x comes first in key order and claims blog/frontend's default name.
    let thief = annotated(lb_service("a", "x"), HOSTNAME, "frontend.blog.k.test, shop.k.test");
    let d = decide(
        &cfg,
        vec![thief.clone(), lb_service("blog", "frontend")],
        &Ledger::empty(),
    );
    assert_eq!(names(&d, "blog/frontend"), ["frontend.blog.k.test"]);
    assert_eq!(names(&d, "a/x"), ["shop.k.test"], "its other names stay");
    assert_eq!(
        problems(&d, "a/x"),
        [format!(
            "error: Service a/x: {FIELD}: the DNS name frontend.blog.k.test is the default name of Service blog/frontend, which always keeps it; no record for it"
        )]
    );
    assert!(
        !d.files["dns/k.test/a/x.zone"].contains("frontend.blog"),
        "{}",
        d.files["dns/k.test/a/x.zone"]
    );

    // The default name is blog/frontend's even while it is not exposed (a ClusterIP Service)
    // or publishes other names.
    let mut internal = lb_service("blog", "frontend");
    internal.service_type = "ClusterIP".into();
    let renamed = annotated(lb_service("blog", "frontend"), HOSTNAME, "blog.k.test");
    for owner in [internal, renamed] {
        let d = decide(&cfg, vec![thief.clone(), owner], &Ledger::empty());
        assert_eq!(names(&d, "a/x"), ["shop.k.test"]);
    }

    // Without a Service blog/frontend the name is free; a Service may claim its own.
    let d = decide(&cfg, vec![thief], &Ledger::empty());
    assert_eq!(names(&d, "a/x"), ["frontend.blog.k.test", "shop.k.test"]);
    let own = annotated(
        lb_service("blog", "frontend"),
        HOSTNAME,
        "frontend.blog.k.test, blog.k.test",
    );
    let d = decide(&cfg, vec![own], &Ledger::empty());
    assert_eq!(names(&d, "blog/frontend"), ["blog.k.test", "frontend.blog.k.test"]);
}

#[test]
fn custom_names_are_first_come_first_served_in_key_order() {
    let cfg = config("");
    let first = annotated(lb_service("a", "one"), HOSTNAME, "www.k.test");
    let second = annotated(lb_service("b", "two"), HOSTNAME, "www.k.test");
    let d = decide(&cfg, vec![second, first], &Ledger::empty());
    assert_eq!(names(&d, "a/one"), ["www.k.test"]);
    assert!(names(&d, "b/two").is_empty());
    assert_eq!(
        problems(&d, "b/two"),
        [format!(
            "error: Service b/two: {FIELD}: the DNS name www.k.test already belongs to Service a/one; no record for it"
        )]
    );
}

#[test]
fn the_namespace_policy_keeps_custom_names_inside_the_namespace() {
    let cfg = config("hostnamePolicy: namespace\n");
    for fine in ["blog.k.test", "www.blog.k.test", "a.b.blog.k.test"] {
        let svc = annotated(lb_service("blog", "x"), HOSTNAME, fine);
        let d = decide(&cfg, vec![svc], &Ledger::empty());
        assert_eq!(names(&d, "blog/x"), [fine], "{:?}", d.problems);
    }
    for outside in ["www.k.test", "www.shop.k.test", "blog.shop.k.test", "xblog.k.test"] {
        let svc = annotated(lb_service("blog", "x"), HOSTNAME, &format!("www.blog.k.test,{outside}"));
        let d = decide(&cfg, vec![svc], &Ledger::empty());
        assert!(d.kept.contains(&key("blog/x")), "{outside} accepted");
        let said = problems(&d, "blog/x");
        assert_eq!(
            said,
            [format!(
                "error: Service blog/x: {FIELD}: \"{outside}\" is not a name of namespace blog: flipbit.yaml sets hostnamePolicy: namespace, which allows only blog.k.test and names ending in .blog.k.test"
            )]
        );
    }
    // `any` (the default) lets the same names through.
    let svc = annotated(lb_service("blog", "x"), HOSTNAME, "www.shop.k.test");
    assert_eq!(
        names(&decide(&config(""), vec![svc], &Ledger::empty()), "blog/x"),
        ["www.shop.k.test"]
    );
}
