//! Tenant pools end to end, with real nginx and TCP traffic: lb-a's first pool admits namespace
//! team-a only, its second Services labelled `tier: web`, its third every Service. An admitted
//! Service gets its tenant pool's address and answers there; a requested address in a pool that
//! does not admit the Service is refused by `render` (the Service keeps what it had); a pool edit
//! that stops admitting a Service moves that Service alone, the commit says why, and traffic
//! follows it to the new address.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use flipbit_tests::cluster::{generator, text};
use flipbit_tests::fleet::Fleet;
use flipbit_tests::{probe, repo};

const PORT: u16 = 8080;

/// `flipbit.yaml` with lb-a's tenant pools; `web` is the `tier` label the second pool admits.
fn config(block: u8, web: &str) -> String {
    format!(
        "zone: k8s.example.test\nlbHosts:\n  - name: lb-a\n    pools:\n      - {{cidr: 127.{block}.3.0/24, namespaces: [team-a]}}\n      - cidr: 127.{block}.4.0/24\n        serviceSelector: {{matchLabels: {{tier: {web}}}}}\n      - 127.{block}.1.0/24\n  - name: lb-b\n    pools: [\"127.{block}.2.0/24\"]\n"
    )
}

fn set_config(f: &Fleet, text: String, why: &str) {
    repo::human_commit(&f.repo, &BTreeMap::from([("flipbit.yaml", text)]), &[], why).expect("committing flipbit.yaml");
}

/// A fleet whose lb-a has the tenant pools, and three Services: team-a/api, team-b/shop
/// (`tier: web`) and team-b/batch, each given `annotations` when named there.
fn fleet(block: u8, annotations: &[(&str, &[(&str, &str)])]) -> Option<Fleet> {
    let f = Fleet::start(block)?;
    set_config(&f, config(block, "web"), "lb-a: tenant pools");
    put(&f, annotations);
    Some(f)
}

fn put(f: &Fleet, annotations: &[(&str, &[(&str, &str)])]) {
    let of = |name: &str| annotations.iter().find(|(n, _)| *n == name).map_or(&[][..], |(_, a)| a);
    let port = [("TCP", PORT, 30080)];
    f.cluster.lb_service_labelled("team-a", "api", &[], of("api"), &port);
    f.cluster
        .lb_service_labelled("team-b", "shop", &[("tier", "web")], of("shop"), &port);
    f.cluster
        .lb_service_labelled("team-b", "batch", &[], of("batch"), &port);
}

fn ip(f: &Fleet, host: u8, last: u8) -> IpAddr {
    f.addr(host, last, PORT).ip()
}

/// Asserts that `addr` answers from a node (its stand-in backend on node port 30080).
fn answers(f: &Fleet, addr: SocketAddr) {
    let got = probe::answers(addr, false, 3);
    let node = format!("127.{}.0.", f.block);
    assert!(
        got.iter().all(|a| a.starts_with(&node) && a.ends_with(":30080")),
        "{addr}: {got:?}"
    );
}

#[test]
fn an_admitted_service_takes_its_tenant_pools_address_and_answers_there() {
    let Some(f) = fleet(181, &[]) else { return };
    f.render();
    f.apply_ok("lb-a");
    for (key, want) in [
        ("team-a/api", ip(&f, 3, 1)),
        ("team-b/shop", ip(&f, 4, 1)),
        ("team-b/batch", ip(&f, 1, 1)),
    ] {
        assert_eq!(f.address(key, "lb-a"), Some(want), "{key}");
        answers(&f, SocketAddr::new(want, PORT));
    }
    // lb-b has one pool for everyone.
    assert_eq!(f.address("team-b/batch", "lb-b"), Some(ip(&f, 2, 2)));
}

#[test]
fn a_request_in_a_pool_that_does_not_admit_the_service_is_refused() {
    let Some(f) = fleet(182, &[]) else { return };
    f.render();
    f.apply_ok("lb-a");
    let batch = ip(&f, 1, 1);
    let snippet = repo::read(&f.repo, "lb/lb-a/team-b/batch.conf").expect("batch's snippet");
    let head = repo::head(&f.repo);

    // team-b/batch asks for an address of team-a's pool: refused, naming the pool and its rule.
    let wanted = ip(&f, 3, 9).to_string();
    put(&f, &[("batch", &[("flipbit.io/ips", &wanted)])]);
    let out = generator("render", &f.repo, f.cluster.path(), &[]);
    let said = text(&out);
    assert!(out.status.success(), "render: {said}");
    let block = f.block;
    assert!(
        said.contains(&format!(
            "error: Service team-b/batch: metadata.annotations[\"flipbit.io/ips\"]: {wanted} on LB host lb-a: lbHosts[0] (lb-a).pools[0] 127.{block}.3.0/24 admits only namespaces team-a; it keeps {batch}"
        )),
        "{said}"
    );
    // It keeps its previous state: nothing was committed, it answers where it did.
    assert_eq!(repo::head(&f.repo), head, "the refusal changed the repo");
    assert_eq!(repo::read(&f.repo, "lb/lb-a/team-b/batch.conf"), Some(snippet));
    f.apply_ok("lb-a");
    answers(&f, SocketAddr::new(batch, PORT));
    assert!(
        probe::tcp(SocketAddr::new(ip(&f, 3, 9), PORT)).is_err(),
        "the refused address answers"
    );

    // The same request from team-a is granted.
    put(
        &f,
        &[
            ("api", &[("flipbit.io/ips", &wanted)]),
            ("batch", &[("flipbit.io/ips", &wanted)]),
        ],
    );
    f.render();
    f.apply_ok("lb-a");
    assert_eq!(f.address("team-a/api", "lb-a"), Some(ip(&f, 3, 9)));
    assert_eq!(f.address("team-b/batch", "lb-a"), Some(batch));
    answers(&f, SocketAddr::new(ip(&f, 3, 9), PORT));
}

#[test]
fn a_pool_edit_that_stops_admitting_a_service_moves_it_alone() {
    let Some(f) = fleet(183, &[]) else { return };
    f.render();
    f.apply_ok("lb-a");
    let (api, shop, batch) = (ip(&f, 3, 1), ip(&f, 4, 1), ip(&f, 1, 1));
    assert_eq!(f.address("team-b/shop", "lb-a"), Some(shop));
    answers(&f, SocketAddr::new(shop, PORT));

    // The second pool now admits tier: api only; shop (tier: web) must leave it.
    set_config(&f, config(f.block, "api"), "lb-a: the second pool is for tier api");
    f.render();
    let moved = ip(&f, 1, 2);
    let message = repo::head_message(&f.repo);
    let block = f.block;
    assert!(
        message.starts_with(&format!(
            "move team-b/shop on lb-a from {shop} to {moved} (pool 127.{block}.4.0/24 no longer admits it)\n"
        )),
        "{message}"
    );
    let touched: Vec<String> = repo::head_changed(&f.repo)
        .into_iter()
        .filter(|p| p.starts_with("lb/") || p.starts_with("dns/"))
        .collect();
    assert!(
        !touched.is_empty() && touched.iter().all(|p| p.contains("team-b/shop.")),
        "more than shop changed: {touched:?}"
    );
    assert_eq!(f.address("team-a/api", "lb-a"), Some(api));
    assert_eq!(f.address("team-b/batch", "lb-a"), Some(batch));
    assert_eq!(f.address("team-b/shop", "lb-a"), Some(moved));

    // Traffic follows: the new address answers, the old one no longer does.
    f.apply_ok("lb-a");
    answers(&f, SocketAddr::new(moved, PORT));
    assert!(
        probe::tcp(SocketAddr::new(shop, PORT)).is_err(),
        "the old address still answers"
    );
    answers(&f, SocketAddr::new(api, PORT));
    answers(&f, SocketAddr::new(batch, PORT));

    // batch gains the label the second pool admits: admitted where it is, it stays.
    f.cluster
        .lb_service_labelled("team-b", "batch", &[("tier", "api")], &[], &[("TCP", PORT, 30080)]);
    let head = repo::head(&f.repo);
    f.render();
    assert_eq!(repo::head(&f.repo), head, "an admitted Service moved");
    assert_eq!(f.address("team-b/batch", "lb-a"), Some(batch));
}
