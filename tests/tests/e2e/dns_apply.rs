//! The applier's DNS step against a real `named` over RFC 2136 with TSIG: records follow the LB
//! hosts that serve a Service, node churn does not touch DNS, records Flipbit did not write
//! survive, and a rejected key or a dead server fails the step without undoing nginx.

use std::process::Command;

use flipbit_tests::cluster::{applier, text};
use flipbit_tests::fleet::Fleet;
use flipbit_tests::probe;

const SHOP: &str = "shop.web.k8s.example.test";

fn dns(f: &Fleet, name: &str) -> Vec<String> {
    f.named.as_ref().expect("named").query(name, "A")
}

fn ips(f: &Fleet, pairs: &[(u8, u8)]) -> Vec<String> {
    let mut v: Vec<String> = pairs.iter().map(|(h, l)| format!("127.{}.{h}.{l}", f.block)).collect();
    v.sort();
    v
}

#[test]
fn records_follow_the_hosts_that_serve_a_service() {
    let Some(f) = Fleet::with_dns(71, 5381) else { return };
    f.cluster.lb_service("web", "shop", &[], &[("TCP", 8080, 30080)]);
    f.render();

    // Only lb-a serves it so far: only lb-a's address is published.
    let out = f.apply_ok("lb-a");
    assert!(out.contains("dns: 1 records added, 0 deleted"), "{out}");
    assert_eq!(dns(&f, SHOP), ips(&f, &[(1, 1)]));
    f.apply_ok("lb-b");
    assert_eq!(dns(&f, SHOP), ips(&f, &[(1, 1), (2, 1)]));

    // Node churn rewrites upstreams but not DNS.
    f.cluster.node(1, f.block, false);
    f.render();
    let out = f.apply_ok("lb-a");
    assert!(
        out.contains("nginx reloaded") && out.contains("dns: 0 records added, 0 deleted"),
        "{out}"
    );

    // New names and TTL: the old name goes, the new one carries both addresses.
    f.cluster.lb_service(
        "web",
        "shop",
        &[
            ("flipbit.io/hostname", "shop.k8s.example.test, www.k8s.example.test."),
            ("flipbit.io/dns-ttl", "60"),
        ],
        &[("TCP", 8080, 30080)],
    );
    f.render();
    f.apply_ok("lb-a");
    f.apply_ok("lb-b");
    assert!(dns(&f, SHOP).is_empty(), "the old name still answers");
    assert_eq!(dns(&f, "www.k8s.example.test"), ips(&f, &[(1, 1), (2, 1)]));
    let port = f.named.as_ref().map(|n| n.port).unwrap_or_default();
    let answer = Command::new("dig")
        .args([
            "+noall",
            "+answer",
            "-p",
            &port.to_string(),
            "@127.0.0.1",
            "shop.k8s.example.test",
            "A",
        ])
        .output()
        .expect("dig");
    let answer = String::from_utf8_lossy(&answer.stdout).into_owned();
    assert!(
        answer.lines().count() == 2 && answer.lines().all(|l| l.split_whitespace().nth(1) == Some("60")),
        "{answer}"
    );

    // Withdrawn from lb-b: lb-b removes its own record only.
    f.cluster.lb_service(
        "web",
        "shop",
        &[
            ("flipbit.io/hostname", "shop.k8s.example.test"),
            ("flipbit.io/load-balancers", "lb-a"),
        ],
        &[("TCP", 8080, 30080)],
    );
    f.render();
    f.apply_ok("lb-b");
    assert_eq!(dns(&f, "shop.k8s.example.test"), ips(&f, &[(1, 1)]));
    assert!(
        dns(&f, "www.k8s.example.test").contains(&ips(&f, &[(1, 1)])[0]),
        "lb-b removed lb-a's record"
    );
    f.apply_ok("lb-a");
    assert!(dns(&f, "www.k8s.example.test").is_empty());

    // Deleted: gone everywhere.
    f.cluster.remove("svc-web-shop.yaml");
    f.render();
    f.apply_ok("lb-a");
    f.apply_ok("lb-b");
    assert!(dns(&f, "shop.k8s.example.test").is_empty());
}

#[test]
fn records_flipbit_did_not_write_survive() {
    let Some(f) = Fleet::with_dns(72, 5382) else { return };
    let named = f.named.as_ref().expect("named");
    named
        .nsupdate(&format!(
            "update add {SHOP}. 300 A 127.72.9.9\nupdate add {SHOP}. 300 TXT \"hand-made\"\nupdate add manual.k8s.example.test. 300 A 127.72.9.8\n"
        ))
        .expect("nsupdate");
    f.cluster.lb_service("web", "shop", &[], &[("TCP", 8080, 30080)]);
    f.render();
    // The Service's name already holds an address Flipbit did not write: the hosts do not join
    // that RRset (clients would be sent to it and to them alike), and say why.
    for lb in ["lb-a", "lb-b"] {
        let out = f.apply_ok(lb);
        assert!(
            out.contains(SHOP) && out.contains("127.72.9.9 not written by Flipbit"),
            "{out}"
        );
    }
    assert_eq!(dns(&f, SHOP), ips(&f, &[(9, 9)]));
    f.cluster.remove("svc-web-shop.yaml");
    f.render();
    f.apply_ok("lb-a");
    f.apply_ok("lb-b");
    assert_eq!(
        dns(&f, SHOP),
        vec!["127.72.9.9".to_owned()],
        "a hand-made record was deleted"
    );
    assert_eq!(named.query(SHOP, "TXT"), vec!["\"hand-made\"".to_owned()]);
    assert_eq!(dns(&f, "manual.k8s.example.test"), vec!["127.72.9.8".to_owned()]);
}

#[test]
fn a_rejected_key_fails_the_dns_step_only_and_is_retried() {
    let Some(f) = Fleet::with_dns(73, 5383) else { return };
    f.cluster.lb_service("web", "shop", &[], &[("TCP", 8080, 30080)]);
    f.render();
    let wrong = f.tmp.path().join("wrong.key");
    let key = Command::new("tsig-keygen")
        .args(["-a", "hmac-sha256", "flipbit-test"])
        .output()
        .expect("tsig-keygen");
    std::fs::write(&wrong, &key.stdout).unwrap();
    let mut args = f.lbs["lb-a"].applier_args(&f.repo, "lb-a");
    args.extend(f.dns_args(&wrong));
    let out = applier(&args);
    assert!(!out.status.success(), "a rejected key was reported as success");
    let err = text(&out);
    assert!(
        err.contains("TSIG key") && err.contains("rejected by 127.0.0.1:5383"),
        "{err}"
    );
    assert!(err.contains("the load balancer is applied"), "{err}");
    assert!(probe::tcp(f.addr(1, 1, 8080)).is_ok(), "nginx did not keep the commit");
    assert!(dns(&f, SHOP).is_empty());
    assert_eq!(f.journal("lb-a").dns, None, "the failed DNS step was recorded");

    // The next run with the right key does the DNS step without reloading nginx again.
    let out = f.apply_ok("lb-a");
    assert!(
        out.contains("up to date") && out.contains("dns: 1 records added"),
        "{out}"
    );
    assert_eq!(dns(&f, SHOP), ips(&f, &[(1, 1)]));
}

#[test]
fn a_dead_dns_server_fails_the_dns_step_with_one_line() {
    let Some(f) = Fleet::with_dns(74, 5384) else { return };
    f.cluster.lb_service("web", "shop", &[], &[("TCP", 8080, 30080)]);
    f.render();
    let key = f.named.as_ref().map(|n| n.key_file.clone()).unwrap();
    let mut args = f.lbs["lb-a"].applier_args(&f.repo, "lb-a");
    args.extend(
        [
            "--dns-server",
            "127.0.0.1:5389",
            "--tsig-key",
            key.to_str().unwrap(),
            "--dns-timeout",
            "1",
        ]
        .map(String::from),
    );
    let out = applier(&args);
    assert!(!out.status.success());
    let err = text(&out);
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "{err}");
    assert!(err.contains("127.0.0.1:5389"), "{err}");
    assert!(probe::tcp(f.addr(1, 1, 8080)).is_ok(), "nginx did not keep the commit");
}
