//! The seed's example exactly as `scripts/demo` runs it: three LB hosts with real nginx, traffic
//! through every address and port, and DNS answers from a real `named`; then as
//! `scripts/demo --haproxy` runs it, with lb-3 a HAProxy host. It listens on ports 53, 80 and 443,
//! so it needs root (and both runs sit in one test: they use the same addresses).

use flipbit_tests::{demo, require, tool};

#[test]
fn the_example_serves_traffic_on_three_lb_hosts() {
    // Root for ports 53/80/443.
    let Some(()) = require(&[tool::ROOT, tool::NGINX]) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let opts = demo::DemoOptions {
        dns_port: require(&[tool::BIND]).map(|()| 15399),
        ..demo::DemoOptions::example(work.path())
    };
    let running = demo::start(&opts).unwrap_or_else(|e| panic!("demo setup: {e}"));
    let report = demo::prove(&running).unwrap_or_else(|e| panic!("demo proof: {e}"));
    for c in &report.checks {
        assert!(c.ok, "{} {}: {:?}", c.service, c.target, c.answer);
    }
    // 3 hosts × (frontend 80+443, dashboard 443, dns 53/tcp + 53/udp), and a DNS name per Service.
    let dns_checks = if opts.dns_port.is_some() { 3 } else { 0 };
    assert_eq!(report.checks.len(), 15 + dns_checks, "{:#?}", report.checks);
    if dns_checks > 0 {
        let frontend = report
            .checks
            .iter()
            .find(|c| c.target == "dns frontend.blog.k8s.example.test");
        let answer = frontend.map(|c| c.answer.clone());
        assert_eq!(
            answer,
            Some(Ok("127.1.1.1, 127.1.5.1, 127.1.7.1".to_owned())),
            "{}",
            report.dns_table
        );
    }
    assert_eq!(report.checks.iter().filter(|c| c.target.starts_with("udp")).count(), 3);
    let rows: Vec<&str> = report.table.lines().collect();
    assert!(
        rows.iter().any(|r| r.starts_with("backend") && r.contains(" no ")),
        "{}",
        report.table
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("frontend") && r.contains("lb-1 127.1.1.1, lb-2 127.1.5.1, lb-3 127.1.7.1")),
        "{}",
        report.table
    );
    // max-nodes: 3 of the 5 nodes carry the frontend.
    let frontend = rows.iter().find(|r| r.starts_with("frontend")).unwrap();
    assert_eq!(frontend.matches("127.0.0.").count(), 3, "{frontend}");
    drop(running);
    if require(&[tool::HAPROXY]).is_some() {
        with_haproxy_on_lb_3(&opts);
    }
}

/// `scripts/demo --haproxy`: lb-3 serves every TCP route and skips the one UDP route.
fn with_haproxy_on_lb_3(opts: &demo::DemoOptions) {
    let work = tempfile::tempdir().unwrap();
    let opts = demo::DemoOptions {
        dns_port: opts.dns_port,
        haproxy: true,
        ..demo::DemoOptions::example(work.path())
    };
    let running = demo::start(&opts).unwrap_or_else(|e| panic!("demo setup with --haproxy: {e}"));
    assert_eq!(running.haproxy.keys().collect::<Vec<_>>(), ["lb-3"]);
    let report = demo::prove(&running).unwrap_or_else(|e| panic!("demo proof: {e}"));
    for c in &report.checks {
        assert!(c.ok, "{} {}: {:?}", c.service, c.target, c.answer);
    }
    let lb3: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| c.target.contains("127.1.7."))
        .map(|c| c.target.as_str())
        .collect();
    assert_eq!(lb3.len(), 4, "{lb3:?}");
    assert!(lb3.iter().all(|t| t.starts_with("tcp ")), "{lb3:?}");
    assert_eq!(report.checks.iter().filter(|c| c.target.starts_with("udp")).count(), 2);
}
