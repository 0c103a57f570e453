//! `flipbit-generator run` against the in-process API server with a HAProxy host in flipbit.yaml:
//! a Service's UDP port that the HAProxy host cannot carry becomes a Warning Event on the Service
//! (and a line in the commit), while its TCP port is exposed there.

use std::time::{Duration, Instant};

use flipbit_tests::cluster::flipbit_yaml;
use flipbit_tests::genproc::{GeneratorProcess, objects};
use flipbit_tests::live_cluster::LiveCluster;
use flipbit_tests::repo;

#[test]
fn a_udp_port_on_a_haproxy_host_is_a_warning_event() {
    let config = flipbit_yaml(&[("lb-a", "127.153.1.0/24"), ("lb-c", "127.153.3.0/24")])
        .replace("  - name: lb-c\n", "  - name: lb-c\n    flavor: haproxy\n");
    let LiveCluster {
        tmp: _tmp,
        api,
        kubeconfig,
        repo: state,
        ..
    } = LiveCluster::with_config(config, 153, 1);
    let mut svc = objects::lb_service("web", "dns", &[], &[(15353, 30053)]);
    svc["spec"]["ports"]
        .as_array_mut()
        .expect("ports")
        .push(serde_json::json!({"protocol": "UDP", "port": 15353, "nodePort": 30053}));
    api.apply(svc);
    let generator = GeneratorProcess::start(&state, &kubeconfig, "gen-1", &[]);

    let deadline = Instant::now() + Duration::from_secs(20);
    let event = loop {
        let found = api
            .events()
            .into_iter()
            .find(|e| e.get("reason").and_then(|r| r.as_str()) == Some("PortNotServed"));
        if let Some(e) = found {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "no PortNotServed Event; log:\n{}",
            generator.log()
        );
        std::thread::sleep(Duration::from_millis(25));
    };
    let note = event
        .get("note")
        .or_else(|| event.get("message"))
        .and_then(|n| n.as_str())
        .unwrap_or_default();
    assert!(
        note.contains("UDP/15353 not served on LB host lb-c (HAProxy carries TCP only)"),
        "{event}"
    );
    assert!(
        !note.contains("keeps its last committed state"),
        "a warning is not a skip: {note}"
    );
    assert_eq!(event.get("type").and_then(|t| t.as_str()), Some("Warning"), "{event}");
    assert_eq!(
        event
            .pointer("/regarding/name")
            .or_else(|| event.pointer("/involvedObject/name"))
            .and_then(|n| n.as_str()),
        Some("dns"),
        "{event}"
    );
    let cfg = repo::read(&state, "lb/lb-c/web/dns.cfg").expect("lb-c serves the TCP port");
    assert!(cfg.contains("bind 127.153.3.1:15353"), "{cfg}");
    let commits = repo::head_message(&state);
    assert!(commits.contains("Warnings:"), "{commits}");
}
