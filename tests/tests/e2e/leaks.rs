//! A failed test leaves nothing running: the fixtures own their processes, so a panic (which
//! skips the rest of the test, not the drops) stops nginx and `named` as a pass would, even when
//! a helper thread shares the fixture. A leftover would hold the next test's addresses and ports.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use flipbit_tests::bind::NamedInstance;
use flipbit_tests::nginx::NginxInstance;
use flipbit_tests::process::{Background, runs};
use flipbit_tests::{require, tool};

/// The DNS port of this test's `named`.
const DNS_PORT: u16 = 5449;

#[test]
fn a_panicking_test_leaves_no_nginx_or_named_behind() {
    let Some(()) = require(&[tool::NGINX, tool::BIND]) else {
        return;
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let failed = std::thread::spawn(move || {
        let tmp = tempfile::tempdir().expect("tempdir");
        let nginx = NginxInstance::start(&tmp.path().join("lb-a")).expect("nginx");
        let named = NamedInstance::start(&tmp.path().join("named"), DNS_PORT, "k8s.example.test").expect("named");
        tx.send((nginx.pid(), named.pid())).expect("send the pids");
        // As the crash test's prober: a thread that shares the fixture and loops until stopped.
        let shared = Arc::new((nginx, named));
        let _prober = {
            let shared = shared.clone();
            Background::spawn(move |stop| {
                while !stop.load(Ordering::Relaxed) {
                    let _ = shared.1.query("k8s.example.test", "SOA");
                }
            })
        };
        panic!("a failed assertion, on purpose");
    })
    .join();
    assert!(failed.is_err(), "the fixture thread did not panic");
    let (nginx, named) = rx.recv().expect("the fixture's pids");
    assert!(!runs(nginx, "nginx"), "nginx {nginx} outlived the test that panicked");
    assert!(!runs(named, "named"), "named {named} outlived the test that panicked");
}
