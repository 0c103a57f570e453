//! A mixed fleet: lb-a and lb-b run nginx, lb-c runs HAProxy (`flavor: haproxy`), all fed by one
//! generator and one applier binary, with real TCP traffic through every LB address. On lb-c a
//! UDP port is skipped with a warning in the commit message (and a UDP-only Service gets no
//! address there), a commit HAProxy rejects never replaces the running config, a reload that
//! fails rolls back while the old workers serve, and reloads under traffic fail no connection.
//!
//! Blocks 151 and 152 are this file's own (LB addresses 127.15x.{1,2,3}.x, nodes 127.15x.0.10–14
//! with their backends on node ports 30080/30053, unique by address); LB ports are 15100–15499.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::time::Duration;

use flipbit_core::ledger::Ledger;
use flipbit_tests::cluster::text;
use flipbit_tests::fleet::Fleet;
use flipbit_tests::process::Background;
use flipbit_tests::{probe, repo};

fn ledger(f: &Fleet) -> Ledger {
    Ledger::parse(&repo::read(&f.repo, "ledger.yaml").expect("ledger.yaml")).expect("ledger parses")
}

/// The address `key` holds on `lb`, if any.
fn address(f: &Fleet, key: &str, lb: &str) -> Option<IpAddr> {
    ledger(f)
        .services
        .get(&key.parse::<flipbit_core::names::ServiceKey>().expect("key"))
        .and_then(|e| e.addresses.get(&lb.parse().expect("host")).copied())
}

fn at(f: &Fleet, key: &str, lb: &str, port: u16) -> SocketAddr {
    let ip = address(f, key, lb).unwrap_or_else(|| panic!("{key} has no address on {lb}"));
    SocketAddr::new(ip, port)
}

#[test]
fn a_haproxy_host_serves_tcp_beside_nginx_hosts() {
    let Some(f) = Fleet::with_haproxy(151) else { return };
    f.cluster.lb_service("web", "shop", &[], &[("TCP", 15180, 30080)]);
    f.cluster
        .lb_service("web", "dns", &[], &[("UDP", 15153, 30053), ("TCP", 15153, 30053)]);
    f.cluster.lb_service("web", "voice", &[], &[("UDP", 15154, 30053)]);
    f.cluster.lb_service(
        "web",
        "pinned",
        &[("flipbit.io/max-nodes", "2"), ("flipbit.io/balance", "least-conn")],
        &[("TCP", 15181, 30080)],
    );
    f.cluster
        .local_service("web", "local", &[], &[("TCP", 15182, 30080)], "node-2");
    f.render();

    // The commit says what lb-c leaves out, never silently.
    let message = repo::head_message(&f.repo);
    assert!(
        message.contains(
            "warning: Service web/dns: spec.ports: UDP/15153 not served on LB host lb-c (HAProxy carries TCP only); its TCP ports are served there"
        ),
        "{message}"
    );
    assert!(
        message.contains("warning: Service web/voice: spec.ports: UDP/15154 not served on LB host lb-c")
            && message.contains("no address and no DNS record there"),
        "{message}"
    );
    // lb-c gets `.cfg` files, never for the UDP-only Service, and no address or record for it.
    let files = repo::files_under(&f.repo, "lb/lb-c");
    let want: BTreeSet<String> = ["dns", "local", "pinned", "shop"]
        .iter()
        .map(|s| format!("lb/lb-c/web/{s}.cfg"))
        .collect();
    assert_eq!(files.into_iter().collect::<BTreeSet<_>>(), want);
    assert!(repo::read(&f.repo, "lb/lb-a/web/voice.conf").is_some());
    assert_eq!(address(&f, "web/voice", "lb-c"), None);
    let zone = repo::read(&f.repo, "dns/k8s.example.test/web/voice.zone").expect("voice zone");
    assert!(!zone.contains("127.151.3."), "{zone}");
    let dns_cfg = repo::read(&f.repo, "lb/lb-c/web/dns.cfg").expect("dns.cfg");
    assert!(dns_cfg.contains("# UDP/15153 is not served on this host"), "{dns_cfg}");

    for lb in ["lb-a", "lb-b"] {
        let out = f.apply_ok(lb);
        assert!(out.contains("nginx reloaded"), "{out}");
    }
    let out = f.apply_ok("lb-c");
    assert!(out.contains("haproxy reloaded"), "{out}");
    // One flat directory, as `-f <state>/current` needs.
    let release = f.state_dir("lb-c").join(f.current("lb-c").expect("current"));
    assert!(release.join("web.shop.cfg").is_file() && !release.join("web").exists());

    // Real TCP through every LB address; UDP through the nginx hosts.
    let nodes_30080: BTreeSet<String> = (10..15).map(|i| format!("127.151.0.{i}:30080")).collect();
    for lb in ["lb-a", "lb-b", "lb-c"] {
        let shop = probe::answers(at(&f, "web/shop", lb, 15180), false, 10);
        assert!(shop.len() > 1 && shop.is_subset(&nodes_30080), "{lb}: {shop:?}");
        let dns = probe::answers(at(&f, "web/dns", lb, 15153), false, 2);
        assert!(dns.iter().all(|a| a.ends_with(":30053")), "{lb}: {dns:?}");
        let local = probe::answers(at(&f, "web/local", lb, 15182), false, 4);
        assert_eq!(
            local,
            BTreeSet::from(["127.151.0.11:30080".to_owned()]),
            "{lb}: Local policy"
        );
    }
    for lb in ["lb-a", "lb-b"] {
        assert!(!probe::answers(at(&f, "web/dns", lb, 15153), true, 1).is_empty());
        assert!(!probe::answers(at(&f, "web/voice", lb, 15154), true, 1).is_empty());
    }
    // The same node subset on every flavour (rendezvous hashing in core, not in the renderer).
    let pinned_a = probe::answers(at(&f, "web/pinned", "lb-a", 15181), false, 12);
    let pinned_c = probe::answers(at(&f, "web/pinned", "lb-c", 15181), false, 12);
    assert!(
        pinned_c.len() <= 2 && pinned_c.is_subset(&pinned_a),
        "{pinned_a:?} {pinned_c:?}"
    );
    let pinned_cfg = repo::read(&f.repo, "lb/lb-c/web/pinned.cfg").expect("pinned.cfg");
    assert_eq!(pinned_cfg.matches("    server ").count(), 2, "{pinned_cfg}");
    assert!(pinned_cfg.contains("balance leastconn"), "{pinned_cfg}");

    // A Service withdrawn: its frontend goes from lb-c.
    let shop_c = at(&f, "web/shop", "lb-c", 15180);
    f.cluster.remove("svc-web-shop.yaml");
    f.render();
    f.apply_ok("lb-c");
    assert!(probe::tcp(shop_c).is_err(), "a withdrawn Service still answers on lb-c");
    assert!(!probe::answers(at(&f, "web/dns", "lb-c", 15153), false, 1).is_empty());
}

#[test]
fn a_bad_haproxy_commit_is_refused_and_reloads_drop_no_connection() {
    let Some(f) = Fleet::with_haproxy(152) else { return };
    let only_c = [("flipbit.io/load-balancers", "lb-c")];
    f.cluster.lb_service("web", "shop", &only_c, &[("TCP", 15280, 30080)]);
    f.render();
    f.apply_ok("lb-c");
    let shop = at(&f, "web/shop", "lb-c", 15280);
    assert!(!probe::answers(shop, false, 2).is_empty());
    let good = f.current("lb-c").expect("current");

    // A hand-committed directive the generator never writes is refused before HAProxy sees it,
    // naming the file and line.
    let cfg = repo::read(&f.repo, "lb/lb-c/web/shop.cfg").expect("shop.cfg");
    let broken = cfg.replace("    mode tcp\n", "    mode tcp\n    bogus_directive on\n");
    let bad = repo::human_commit(
        &f.repo,
        &BTreeMap::from([("lb/lb-c/web/shop.cfg", broken)]),
        &[],
        "hand edit",
    )
    .unwrap();
    let out = f.apply("lb-c", &[]);
    assert!(!out.status.success(), "a hand-written directive was applied");
    let err = text(&out);
    assert!(
        err.contains(&bad.to_string()) && err.contains("lb/lb-c/web/shop.cfg: line") && err.contains("bogus_directive"),
        "{err}"
    );
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "{err}");
    assert_eq!(f.current("lb-c"), Some(good.clone()), "the running release was swapped");
    assert!(
        !probe::answers(shop, false, 3).is_empty(),
        "the old config stopped serving"
    );
    repo::human_commit(
        &f.repo,
        &BTreeMap::from([("lb/lb-c/web/shop.cfg", cfg)]),
        &[],
        "undo hand edit",
    )
    .unwrap();
    f.apply_ok("lb-c");

    // Reloads under steady traffic: every connection is answered.
    let traffic = Background::spawn(move |stop| {
        let (mut ok, mut failed) = (0usize, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            match probe::tcp(shop) {
                Ok(_) => ok += 1,
                Err(e) => failed.push(e),
            }
        }
        (ok, failed)
    });
    for (i, port) in (15281..15285).enumerate() {
        f.cluster
            .lb_service("web", &format!("extra{i}"), &only_c, &[("TCP", port, 30080)]);
        f.render();
        let out = f.apply_ok("lb-c");
        assert!(out.contains("haproxy reloaded"), "{out}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, failed) = traffic.finish();
    assert!(
        failed.is_empty(),
        "{} of {} connections failed: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
    assert!(ok > 20, "too little traffic to prove anything: {ok}");
    assert!(!probe::answers(at(&f, "web/extra3", "lb-c", 15284), false, 2).is_empty());

    // Someone else holds the next Service's address: that Service is withheld from lb-c, the
    // rest of the commit is applied and served, and it is tried again on every run.
    // web/shop holds .1 and web/extra0..3 .2 to .5, so the next Service gets .6.
    let next: SocketAddr = "127.152.3.6:15285".parse().unwrap();
    let squatter = TcpListener::bind(next).expect("squat");
    f.cluster.lb_service("web", "late", &only_c, &[("TCP", 15285, 30080)]);
    f.cluster.lb_service("web", "later", &only_c, &[("TCP", 15286, 30080)]);
    f.render();
    assert_eq!(address(&f, "web/late", "lb-c"), Some(next.ip()), "the squatted address");
    let out = f.apply_ok("lb-c");
    assert!(out.contains("withheld web/late") && out.contains("in use by"), "{out}");
    assert!(
        !probe::answers(shop, false, 3).is_empty(),
        "the old config stopped serving"
    );
    let later = at(&f, "web/later", "lb-c", 15286);
    assert!(
        !probe::answers(later, false, 2).is_empty(),
        "the rest of the commit was not applied"
    );

    // A reload that fails (here the configured reload command): HAProxy keeps its old workers,
    // `current` goes back, and the old config goes on serving.
    let good = f.current("lb-c").expect("current");
    f.cluster.lb_service("web", "last", &only_c, &[("TCP", 15287, 30080)]);
    f.render();
    let out = f.apply("lb-c", &["--reload-command", "exit 3"]);
    assert!(!out.status.success(), "a failed reload was reported as applied");
    let err = text(&out);
    assert!(
        err.contains("haproxy reload failed") && err.contains("rolled back"),
        "{err}"
    );
    assert_eq!(
        f.current("lb-c"),
        Some(good),
        "current does not point at the previous release"
    );
    assert!(
        !probe::answers(later, false, 3).is_empty(),
        "the old config stopped serving"
    );
    drop(squatter);
    let out = f.apply_ok("lb-c");
    assert!(!out.contains("withheld"), "{out}");
    assert!(!probe::answers(next, false, 2).is_empty());
    assert!(!probe::answers(at(&f, "web/last", "lb-c", 15287), false, 2).is_empty());
}
