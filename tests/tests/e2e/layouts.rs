//! A mixed fleet through the generator and the appliers: lb-a uses the shared-listeners layout,
//! lb-b the per-service one, with real TCP and UDP traffic; on lb-a a node going away rewrites
//! only the host's nodes file, and a Service that needs its own node set keeps per-service
//! rendering beside the wildcard listeners.
//!
//! Both hosts share this machine, and lb-a's wildcard listeners take their ports on every local
//! address: its Services use ports 14150–14199, which no other test uses, and lb-b's another.

use std::collections::{BTreeMap, BTreeSet};

use flipbit_tests::fleet::Fleet;
use flipbit_tests::{probe, repo};

#[test]
fn a_shared_listeners_host_serves_beside_a_per_service_host() {
    let Some(f) = Fleet::start(141) else { return };
    let config = repo::read(&f.repo, "flipbit.yaml").expect("flipbit.yaml");
    let config = config.replacen("  - name: lb-a\n", "  - name: lb-a\n    layout: shared-listeners\n", 1);
    assert!(config.contains("shared-listeners"), "{config}");
    repo::human_commit(
        &f.repo,
        &BTreeMap::from([("flipbit.yaml", config)]),
        &[],
        "lb-a: shared listeners",
    )
    .unwrap();

    let only_a = [("flipbit.io/load-balancers", "lb-a")];
    f.cluster
        .lb_service("web", "dns", &only_a, &[("UDP", 14153, 30053), ("TCP", 14153, 30053)]);
    f.cluster.lb_service("web", "shop", &only_a, &[("TCP", 14180, 30080)]);
    f.cluster.lb_service(
        "web",
        "blog",
        &[("flipbit.io/load-balancers", "lb-b")],
        &[("TCP", 8080, 30080)],
    );
    // Local traffic policy needs its own node set: per-service rendering on lb-a too.
    f.cluster
        .local_service("web", "local", &only_a, &[("TCP", 14181, 30080)], "node-2");
    f.render();
    let files = repo::files_under(&f.repo, "lb/lb-a");
    for want in [
        "lb/lb-a/_flipbit/listeners.conf",
        "lb/lb-a/_flipbit/nodes.conf",
        "lb/lb-a/web/dns.map",
        "lb/lb-a/web/shop.map",
        "lb/lb-a/web/local.conf",
    ] {
        assert!(files.iter().any(|p| p == want), "{want} missing: {files:?}");
    }
    assert!(
        repo::files_under(&f.repo, "lb/lb-b")
            .iter()
            .all(|p| p.ends_with(".conf"))
    );
    for lb in ["lb-a", "lb-b"] {
        f.apply_ok(lb);
    }

    // On lb-a web/dns holds .1, web/local .2, web/shop .3; on lb-b web/blog holds .1.
    let shop = probe::answers(f.addr(1, 3, 14180), false, 12);
    assert!(shop.len() > 1 && shop.iter().all(|a| a.ends_with(":30080")), "{shop:?}");
    let udp = probe::answers(f.addr(1, 1, 14153), true, 3);
    assert!(udp.iter().all(|a| a.ends_with(":30053")), "{udp:?}");
    let tcp = probe::answers(f.addr(1, 1, 14153), false, 3);
    assert!(tcp.iter().all(|a| a.ends_with(":30053")), "{tcp:?}");
    let local = probe::answers(f.addr(1, 2, 14181), false, 6);
    assert_eq!(
        local,
        BTreeSet::from([format!("127.{}.0.11:30080", f.block)]),
        "Local policy"
    );
    let blog = probe::answers(f.addr(2, 1, 8080), false, 6);
    assert!(blog.iter().all(|a| a.ends_with(":30080")), "{blog:?}");

    // A node goes NotReady: on lb-a only the nodes file changes; lb-b's snippets change.
    f.cluster.node(1, f.block, false);
    f.render();
    let changed = repo::head_changed(&f.repo);
    assert!(
        changed.contains(&"lb/lb-a/_flipbit/nodes.conf".to_owned()),
        "{changed:?}"
    );
    assert!(!changed.iter().any(|p| p.ends_with(".map")), "{changed:?}");
    assert!(changed.iter().any(|p| p.starts_with("lb/lb-b/")), "{changed:?}");
    let subject = repo::head_message(&f.repo);
    assert!(subject.contains("update the shared nodes of lb-a"), "{subject}");
    f.apply_ok("lb-a");
    let gone = format!("127.{}.0.10:30080", f.block);
    let shop = probe::answers(f.addr(1, 3, 14180), false, 15);
    assert!(!shop.contains(&gone), "a NotReady node still gets traffic: {shop:?}");
}
