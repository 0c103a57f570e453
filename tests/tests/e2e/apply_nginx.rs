//! `flipbit-applier apply` against real nginx instances with real TCP and UDP traffic: changes are
//! followed, a commit nginx rejects never replaces the running config, a failed reload rolls back,
//! and a rewritten history is refused. Ports are above 1024, so these run unprivileged.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use flipbit_tests::cluster::{applier, text};
use flipbit_tests::fleet::Fleet;
use flipbit_tests::{probe, repo};

#[test]
fn appliers_serve_tcp_and_udp_and_follow_changes() {
    let Some(f) = Fleet::start(61) else { return };
    f.cluster.lb_service("web", "shop", &[], &[("TCP", 8080, 30080)]);
    f.cluster
        .lb_service("web", "dns", &[], &[("UDP", 8053, 30053), ("TCP", 8053, 30053)]);
    f.render();
    for lb in ["lb-a", "lb-b"] {
        let out = f.apply_ok(lb);
        assert!(out.contains("applied") && out.contains("nginx reloaded"), "{out}");
    }
    // web/dns sorts first, so it holds .1 on each host and web/shop .2.
    for host in [1, 2] {
        let got = probe::answers(f.addr(host, 2, 8080), false, 10);
        assert!(got.len() > 1, "round-robin reached one node only: {got:?}");
        assert!(
            got.iter()
                .all(|a| a.starts_with(&format!("127.{}.0.", f.block)) && a.ends_with(":30080")),
            "{got:?}"
        );
        assert_eq!(probe::answers(f.addr(host, 1, 8053), true, 1).len(), 1);
        assert_eq!(probe::answers(f.addr(host, 1, 8053), false, 1).len(), 1);
    }

    // A node going NotReady leaves the upstreams after the next render and apply.
    f.cluster.node(1, f.block, false);
    f.render();
    f.apply_ok("lb-a");
    let gone = format!("127.{}.0.10:30080", f.block);
    let got = probe::answers(f.addr(1, 2, 8080), false, 12);
    assert!(!got.contains(&gone), "a NotReady node still gets traffic: {got:?}");

    // Deleting a Service takes its listener away.
    let before = f.current("lb-a").expect("current");
    f.cluster.remove("svc-web-shop.yaml");
    f.render();
    f.apply_ok("lb-a");
    // The unchanged file of the other Service is the same inode in both releases (hard-linked).
    let state = &f.lbs["lb-a"].state_dir;
    let inode = |release: &std::path::Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(state.join(release).join("web/dns.conf"))
            .map(|m| m.ino())
            .expect("web/dns.conf in release")
    };
    let after = f.current("lb-a").expect("current");
    assert_ne!(before, after);
    assert_eq!(
        inode(&before),
        inode(&after),
        "an unchanged file was rewritten instead of linked"
    );
    assert!(!state.join(&after).join("web/shop.conf").exists());
    // This release was staged from the first one (a spare) by the difference of two commits
    // that changed one file and deleted another: it holds the commit's files, byte for byte.
    let mut staged = Vec::new();
    for ns in std::fs::read_dir(state.join(&after)).expect("release dir") {
        let ns = ns.expect("entry").path();
        // The release's marker (which commit, which Services withheld) is no repo file.
        if ns.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
            continue;
        }
        for file in std::fs::read_dir(&ns).expect("namespace dir") {
            let file = file.expect("entry").path();
            let rel = file.strip_prefix(state.join(&after)).expect("inside the release");
            staged.push(format!("lb/lb-a/{}", rel.display()));
        }
    }
    staged.sort();
    assert_eq!(staged, repo::files_under(&f.repo, "lb/lb-a/"));
    for path in &staged {
        let on_disk = std::fs::read_to_string(state.join(&after).join(path.trim_start_matches("lb/lb-a/")));
        assert_eq!(on_disk.ok(), repo::read(&f.repo, path), "{path}");
    }
    assert!(
        probe::tcp(f.addr(1, 2, 8080)).is_err(),
        "a withdrawn Service still answers"
    );
    assert_eq!(
        probe::answers(f.addr(1, 1, 8053), true, 1).len(),
        1,
        "the other Service stopped answering"
    );

    // Nothing new for lb-b's files beyond the last change: a re-run is a no-op.
    f.apply_ok("lb-b");
    let out = f.apply_ok("lb-b");
    assert!(out.contains("up to date"), "{out}");
}

#[test]
fn a_commit_nginx_rejects_never_replaces_the_running_config() {
    let Some(f) = Fleet::start(62) else { return };
    f.cluster.lb_service("web", "cart", &[], &[("TCP", 8080, 30080)]);
    f.cluster.lb_service("web", "shop", &[], &[("TCP", 8080, 30080)]);
    f.render();
    f.apply_ok("lb-a");
    let good = f.current("lb-a").expect("current release");
    let applied = f.journal("lb-a");

    // A directive the generator never writes is refused before nginx sees it, naming the line.
    let snippet = repo::read(&f.repo, "lb/lb-a/web/shop.conf").unwrap();
    let broken = snippet.replace(
        "proxy_connect_timeout 5s;",
        "proxy_connect_timeout 5s;\n    bogus_directive on;",
    );
    let bad = repo::human_commit(
        &f.repo,
        &BTreeMap::from([("lb/lb-a/web/shop.conf", broken)]),
        &[],
        "hand edit",
    )
    .unwrap();
    let out = f.apply("lb-a", &[]);
    assert!(
        !out.status.success(),
        "a file the generator could not have written was applied"
    );
    let err = text(&out);
    assert!(
        err.contains(&bad.to_string())
            && err.contains("lb/lb-a/web/shop.conf: line 16")
            && err.contains("bogus_directive"),
        "{err}"
    );
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "{err}");
    assert_eq!(f.current("lb-a"), Some(good.clone()), "the running release was swapped");
    assert_eq!(f.journal("lb-a"), applied);

    // Two Services on one address and port: each file reads as the generator's, but nginx -t
    // refuses the pair, and the running config stays.
    let cart = f.addr(1, 1, 8080).to_string();
    let shop = f.addr(1, 2, 8080).to_string();
    let clash = snippet.replace(&format!("listen {shop};"), &format!("listen {cart};"));
    assert_ne!(clash, snippet);
    let bad = repo::human_commit(
        &f.repo,
        &BTreeMap::from([("lb/lb-a/web/shop.conf", clash)]),
        &[],
        "hand edit: shop on cart's address",
    )
    .unwrap();
    let out = f.apply("lb-a", &[]);
    assert!(!out.status.success(), "a config that fails nginx -t was applied");
    let err = text(&out);
    assert!(
        err.contains(&bad.to_string()) && err.contains("nginx -t failed") && err.contains("duplicate"),
        "{err}"
    );
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "{err}");
    assert_eq!(f.current("lb-a"), Some(good), "the running release was swapped");
    assert_eq!(f.journal("lb-a"), applied);
    assert!(!probe::answers(f.addr(1, 2, 8080), false, 3).is_empty());

    // The human fixes it with another commit; the applier moves on.
    repo::human_commit(
        &f.repo,
        &BTreeMap::from([("lb/lb-a/web/shop.conf", snippet)]),
        &[],
        "undo hand edit",
    )
    .unwrap();
    f.apply_ok("lb-a");
    assert!(!probe::answers(f.addr(1, 2, 8080), false, 3).is_empty());
}

#[test]
fn a_failed_reload_rolls_back_to_the_previous_release() {
    let Some(f) = Fleet::start(63) else { return };
    f.cluster.lb_service("web", "a", &[], &[("TCP", 8080, 30080)]);
    f.render();
    f.apply_ok("lb-a");
    let good = f.current("lb-a").expect("current");
    let confirmed = f.journal("lb-a").loaded;

    // The reload itself fails (here: the configured reload command): nginx keeps its old
    // config, and so do the files.
    f.cluster.lb_service("web", "b", &[], &[("TCP", 8081, 30080)]);
    f.render();
    let out = f.apply("lb-a", &["--reload-command", "exit 3"]);
    assert!(!out.status.success(), "a reload that failed was reported as applied");
    let err = text(&out);
    assert!(err.contains("reload failed") && err.contains("rolled back"), "{err}");
    assert_eq!(
        f.current("lb-a"),
        Some(good),
        "current does not point at the previous release"
    );
    let journal = f.journal("lb-a");
    assert_eq!(
        journal.loaded, confirmed,
        "a release nginx never loaded was recorded as loaded"
    );
    assert_eq!(journal.pending, None);
    assert!(
        !probe::answers(f.addr(1, 1, 8080), false, 3).is_empty(),
        "the old Service stopped answering"
    );

    f.apply_ok("lb-a");
    assert!(!probe::answers(f.addr(1, 2, 8081), false, 2).is_empty());
}

#[test]
fn a_rewritten_history_is_refused_unless_allowed() {
    let Some(f) = Fleet::start(64) else { return };
    f.cluster.lb_service("web", "a", &[], &[("TCP", 8080, 30080)]);
    f.render();
    f.apply_ok("lb-a");

    // Force-push an unrelated history with the same flipbit.yaml.
    let config = repo::read(&f.repo, "flipbit.yaml").unwrap();
    let other = repo::create(
        &f.tmp.path().join("other.git"),
        &BTreeMap::from([("flipbit.yaml", config)]),
    )
    .unwrap();
    let status = std::process::Command::new("git")
        .args(["push", "--force", "-q"])
        .arg(&f.repo)
        .arg("main:main")
        .current_dir(&other)
        .status()
        .expect("git push");
    assert!(status.success());
    let out = f.apply("lb-a", &[]);
    assert!(!out.status.success(), "a rewound head was applied");
    assert!(
        text(&out).contains("does not descend from the applied commit"),
        "{}",
        text(&out)
    );
    assert!(!probe::answers(f.addr(1, 1, 8080), false, 1).is_empty());

    let out = f.apply("lb-a", &["--allow-rewind"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        probe::tcp(f.addr(1, 1, 8080)).is_err(),
        "the rewound head (no Services) was not applied"
    );
}

#[test]
fn an_applier_for_a_host_missing_from_flipbit_yaml_refuses() {
    let Some(f) = Fleet::start(65) else { return };
    f.render();
    let mut args = f.lbs["lb-a"].applier_args(&f.repo, "lb-z");
    args.truncate(args.len());
    let out = applier(&args);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("LB host lb-z is not in its flipbit.yaml"),
        "{}",
        text(&out)
    );
    assert_eq!(f.current("lb-a"), None);
}

#[test]
fn a_dual_stack_service_answers_on_ipv6_loopback_too() {
    // lb-a has an IPv4 pool and ::1; a dual-stack Service gets ::1 there as its IPv6 address.
    let Some(f) = Fleet::with_pools(66, None, "127.66.1.0/24\", \"::1/128", "127.66.2.0/24") else {
        return;
    };
    f.cluster.put(
        "svc-web-dual.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: dual, namespace: web}\nspec:\n  type: LoadBalancer\n  loadBalancerClass: flipbit.io/nginx\n  ipFamilies: [IPv4, IPv6]\n  ports:\n    - {protocol: TCP, port: 8080, nodePort: 30080}\n    - {protocol: UDP, port: 8053, nodePort: 30053}\n",
    );
    f.render();
    f.apply_ok("lb-a");
    f.apply_ok("lb-b");
    let v6_tcp: SocketAddr = "[::1]:8080".parse().unwrap();
    let v6_udp: SocketAddr = "[::1]:8053".parse().unwrap();
    assert!(!probe::answers(v6_tcp, false, 3).is_empty());
    assert!(!probe::answers(v6_udp, true, 1).is_empty());
    assert!(
        !probe::answers(f.addr(1, 1, 8080), false, 1).is_empty(),
        "the IPv4 address stopped answering"
    );
    let snippet = repo::read(&f.repo, "lb/lb-b/web/dual.conf").unwrap();
    assert!(!snippet.contains("[::1]"), "lb-b has no IPv6 pool:\n{snippet}");
    let zone = repo::read(&f.repo, "dns/k8s.example.test/web/dual.zone").unwrap();
    assert!(zone.contains("IN AAAA ::1"), "{zone}");
}

/// lb-a's applier arguments without `--nginx-error-log`, as on a stock host.
fn stock_args(f: &Fleet) -> Vec<String> {
    let mut args = f.lbs["lb-a"].applier_args(&f.repo, "lb-a");
    let at = args
        .iter()
        .position(|a| a == "--nginx-error-log")
        .expect("the fleet passes --nginx-error-log");
    args.drain(at..at + 2);
    args
}

#[test]
fn a_default_site_on_a_wildcard_port_withholds_the_service_and_reload_errors_are_quoted() {
    let Some(f) = Fleet::start(206) else { return };
    let nginx = &f.lbs["lb-a"];
    // As on a stock Debian host: a site of nginx's own config listens on `*:<port>`, and a
    // top-level file the main config includes.
    let extra = nginx.dir.join("extra.conf");
    std::fs::write(&extra, "worker_rlimit_nofile 4096;\n").expect("extra.conf");
    let main = std::fs::read_to_string(&nginx.conf).expect("nginx.conf");
    let stock = format!(
        "{main}include {};\nhttp {{\n    server {{ listen 18091; return 204; }}\n}}\n",
        extra.display()
    );
    std::fs::write(&nginx.conf, stock).expect("nginx.conf");
    let pid = nginx.master_pid().expect("nginx's pid");
    nginx.sighup().expect("reloading nginx");
    flipbit_tests::wait::wait_until(std::time::Duration::from_secs(5), || {
        std::net::TcpStream::connect("127.0.0.1:18091").map_err(|e| e.to_string())
    })
    .expect("the default site listens on *:18091");

    f.cluster.lb_service("web", "a", &[], &[("TCP", 8080, 30080)]);
    f.cluster.lb_service("web", "site", &[], &[("TCP", 18091, 30080)]);
    f.render();
    let site = f.address("web/site", "lb-a").expect("web/site on lb-a");
    let out = applier(&stock_args(&f));
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "withheld web/site: {site}:18091/tcp is covered by *:18091/tcp, a listener of nginx's own config that Flipbit did not write (such as a default site's `listen 18091`)"
        )),
        "{said}"
    );
    assert!(
        !probe::answers(
            SocketAddr::new(f.address("web/a", "lb-a").expect("web/a"), 8080),
            false,
            2
        )
        .is_empty()
    );

    // A reload that fails for a reason `nginx -t` could not see (the included file is gone by
    // the time nginx reloads): the applier finds nginx's log from the main config and quotes
    // the cause, without --nginx-error-log and without waiting out its reload timeout.
    f.cluster.lb_service("web", "b", &[], &[("TCP", 8081, 30080)]);
    f.render();
    let mut args = stock_args(&f);
    args.extend([
        "--reload-command".to_owned(),
        format!("rm {} && kill -HUP {pid}", extra.display()),
        "--reload-timeout".to_owned(),
        "30".to_owned(),
    ]);
    let out = applier(&args);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("nginx reload failed") && said.contains("No such file or directory"),
        "{said}"
    );
    assert!(!said.contains("no new worker processes"), "{said}");
}
