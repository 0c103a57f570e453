//! One Service never blocks a whole host: when another process holds a socket a Service needs,
//! that Service is withheld from the host (no listener, no DNS record from there), every other
//! Service and every later commit is served, and the Service is tried again on every run.

use std::net::TcpListener;

use flipbit_tests::fleet::Fleet;
use flipbit_tests::probe;

use super::lb_a_records;

#[test]
fn a_service_whose_listener_is_taken_is_withheld_and_retried() {
    let Some(f) = Fleet::with_dns(171, 5375) else { return };
    f.cluster.lb_service("web", "a", &[], &[("TCP", 8080, 30080)]);
    f.cluster.lb_service("web", "b", &[], &[("TCP", 8081, 30080)]);
    f.render();
    // Another program on the host holds web/b's address and port (web/b sorts second: .2).
    let squatter = TcpListener::bind(f.addr(1, 2, 8081)).expect("squat");
    let out = f.apply_ok("lb-a");
    assert!(out.contains("withheld web/b") && out.contains("in use by"), "{out}");
    f.apply_ok("lb-b");
    assert!(!probe::answers(f.addr(1, 1, 8080), false, 2).is_empty());
    let names = ["a.web.k8s.example.test".to_owned(), "b.web.k8s.example.test".to_owned()];
    let published = lb_a_records(&f, &names);
    assert_eq!(published[&names[0]].len(), 1, "{published:?}");
    assert!(
        published[&names[1]].is_empty(),
        "lb-a published a Service it does not serve"
    );
    let named = f.named.as_ref().expect("named");
    assert_eq!(
        named.query(&names[1], "A"),
        vec![f.addr(2, 2, 8081).ip().to_string()],
        "the other host's record is gone"
    );

    // Later commits are applied on the host all the same.
    f.cluster.lb_service("web", "c", &[], &[("TCP", 8082, 30080)]);
    f.render();
    let out = f.apply_ok("lb-a");
    assert!(out.contains("withheld web/b"), "{out}");
    assert!(!probe::answers(f.addr(1, 3, 8082), false, 2).is_empty());
    assert_eq!(
        lb_a_records(&f, &["c.web.k8s.example.test".to_owned()])
            .values()
            .next()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(f.journal("lb-a").loaded.map(|l| l.withheld.len()), Some(1));

    // The socket comes free: the next run serves the Service, with no new commit.
    drop(squatter);
    let out = f.apply_ok("lb-a");
    assert!(out.contains("nginx reloaded") && !out.contains("withheld"), "{out}");
    assert!(!probe::answers(f.addr(1, 2, 8081), false, 2).is_empty());
    assert_eq!(lb_a_records(&f, &names)[&names[1]], vec![f.addr(1, 2, 8081).ip()]);
    assert_eq!(f.journal("lb-a").loaded.map(|l| l.withheld.len()), Some(0));
    assert!(f.apply_ok("lb-a").contains("up to date"));
}

#[test]
fn a_wildcard_port_taken_elsewhere_withholds_only_its_services() {
    let Some(f) = Fleet::start(172) else { return };
    f.set_host("lb-a", "layout: shared-listeners");
    f.cluster.lb_service("web", "a", &[], &[("TCP", 17280, 30080)]);
    f.cluster.lb_service("web", "b", &[], &[("TCP", 17282, 30080)]);
    f.render();
    // Another program holds the port on another address: nginx's wildcard `listen 17282` cannot
    // be bound, so nothing on that port can be served here.
    let squatter = TcpListener::bind("127.0.0.1:17282").expect("squat");
    let out = f.apply_ok("lb-a");
    assert!(out.contains("withheld web/b") && out.contains("*:17282/tcp"), "{out}");
    assert!(!probe::answers(f.addr(1, 1, 17280), false, 2).is_empty());
    let release = f.state_dir("lb-a").join(f.current("lb-a").expect("current"));
    let listeners = std::fs::read_to_string(release.join("_flipbit/listeners.conf")).expect("listeners");
    assert!(
        listeners.contains("listen 17280;") && !listeners.contains("17282"),
        "{listeners}"
    );
    assert!(!release.join("web/b.map").exists());

    drop(squatter);
    let out = f.apply_ok("lb-a");
    assert!(!out.contains("withheld"), "{out}");
    assert!(!probe::answers(f.addr(1, 2, 17282), false, 2).is_empty());
}
