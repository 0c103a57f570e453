//! The state repo is untrusted input to an LB host: whatever a hand-pushed commit holds, the
//! load balancer runs only what the generator could have rendered, DNS is written only in the
//! configured zone and never at the zone's own names, and nothing from the repo forges a log line.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use flipbit_tests::cluster::text;
use flipbit_tests::fleet::Fleet;
use flipbit_tests::{probe, repo};

use super::records;

/// Commits `files` as a hand edit and runs the applier on lb-a; returns its output.
fn push_and_apply(f: &Fleet, files: &[(&str, String)], why: &str) -> (git2::Oid, std::process::Output) {
    let map: BTreeMap<&str, String> = files.iter().cloned().collect();
    let commit = repo::human_commit(&f.repo, &map, &[], why).expect("hand commit");
    (commit, f.apply("lb-a", &[]))
}

fn error_lines(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.starts_with("error:")).collect()
}

#[test]
fn hand_pushed_directives_never_reach_nginx() {
    let Some(f) = Fleet::start(161) else { return };
    f.cluster.lb_service("web", "shop", &[], &[("TCP", 8080, 30080)]);
    f.render();
    f.apply_ok("lb-a");
    let good = f.current("lb-a").expect("current");
    let snippet = repo::read(&f.repo, "lb/lb-a/web/shop.conf").expect("snippet");
    let secret = f.tmp.path().join("secret");
    std::fs::write(&secret, "SECRET-TOKEN-1234 more\n").expect("secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let owned = f.tmp.path().join("owned");

    let attacks = [
        // A log file of the attacker's choosing, written by nginx's root master.
        (
            "lb/lb-a/web/shop.conf",
            format!(
                "log_format basic '$remote_addr';\n{}",
                snippet.replace(
                    "    proxy_connect_timeout 5s;\n",
                    &format!(
                        "    proxy_connect_timeout 5s;\n    access_log {} basic;\n",
                        owned.display()
                    ),
                )
            ),
            "line 1",
        ),
        // A listener on an address of the host that no pool holds.
        (
            "lb/lb-a/web/evil.conf",
            "server {\n    listen 127.0.0.1:16122;\n    proxy_pass 127.161.0.10:30080;\n}\n".to_owned(),
            "line 1",
        ),
        // A root-only file read through include: its content must never be printed.
        (
            "lb/lb-a/web/leak.conf",
            format!("include {};\n", secret.display()),
            "line 1",
        ),
    ];
    for (path, content, expect) in attacks {
        let (bad, out) = push_and_apply(&f, &[(path, content)], "hand edit");
        let out = text(&out);
        assert!(
            out.contains(&bad.to_string()) && out.contains(path) && out.contains(expect),
            "{path}: {out}"
        );
        assert_eq!(error_lines(&out).len(), 1, "{out}");
        assert!(
            !out.contains("SECRET-TOKEN"),
            "a refused file's content reached the log: {out}"
        );
        assert_eq!(
            f.current("lb-a"),
            Some(good.clone()),
            "{path}: the running release was swapped"
        );
        assert!(!owned.exists(), "nginx wrote the attacker's log file");
        assert!(
            probe::tcp("127.0.0.1:16122".parse().unwrap()).is_err(),
            "the attacker's listener answers"
        );
        assert!(!probe::answers(f.addr(1, 1, 8080), false, 2).is_empty());
        // Put the repo back for the next attack.
        let deletes: Vec<&str> = if path.ends_with("shop.conf") {
            vec![]
        } else {
            vec![path]
        };
        repo::human_commit(
            &f.repo,
            &BTreeMap::from([("lb/lb-a/web/shop.conf", snippet.clone())]),
            &deletes,
            "undo",
        )
        .expect("undo");
    }

    // A host-level file name the generator never writes is never staged, so nginx's
    // `current/*/*.conf` include never loads it.
    let (_, out) = push_and_apply(
        &f,
        &[(
            "lb/lb-a/_flipbit/evil.conf",
            "server {\n    listen 127.0.0.1:16123;\n    proxy_pass 127.161.0.10:30080;\n}\n".to_owned(),
        )],
        "a host file of another name",
    );
    assert!(out.status.success(), "{}", text(&out));
    let release = f.lbs["lb-a"].state_dir.join(f.current("lb-a").expect("current"));
    assert!(
        !release.join("_flipbit/evil.conf").exists(),
        "an unknown host file was staged"
    );
    assert!(probe::tcp("127.0.0.1:16123".parse().unwrap()).is_err());
    assert!(!probe::answers(f.addr(1, 1, 8080), false, 2).is_empty());
}

#[test]
fn a_hand_pushed_haproxy_section_is_refused() {
    let Some(f) = Fleet::with_haproxy(162) else { return };
    f.cluster.lb_service("web", "shop", &[], &[("TCP", 8080, 30080)]);
    f.render();
    let out = f.apply("lb-c", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let good = f.current("lb-c").expect("current");
    let cfg = repo::read(&f.repo, "lb/lb-c/web/shop.cfg").expect("cfg");
    let evil =
        format!("{cfg}\nlisten takeover\n    bind 127.0.0.1:16222\n    mode tcp\n    server s 127.162.0.10:30080\n");
    let bad = repo::human_commit(
        &f.repo,
        &BTreeMap::from([("lb/lb-c/web/shop.cfg", evil)]),
        &[],
        "hand edit",
    )
    .expect("commit");
    let out = f.apply("lb-c", &[]);
    assert!(!out.status.success());
    let out = text(&out);
    assert!(
        out.contains(&bad.to_string()) && out.contains("lb/lb-c/web/shop.cfg: line"),
        "{out}"
    );
    assert_eq!(f.current("lb-c"), Some(good));
    assert!(probe::tcp("127.0.0.1:16222".parse().unwrap()).is_err());
    assert!(!probe::answers(f.addr(3, 1, 8080), false, 2).is_empty());
}

#[test]
fn a_newer_output_format_is_refused_with_one_line_and_older_output_is_read() {
    let newer = flipbit_core::format::OUTPUT_FORMAT + 1;
    let Some(f) = Fleet::start(163) else { return };
    f.cluster.lb_service("web", "shop", &[], &[("TCP", 8080, 30080)]);
    f.render();
    f.apply_ok("lb-a");
    let (_, out) = push_and_apply(
        &f,
        &[("format.yaml", format!("outputFormat: {newer}\n"))],
        "a newer generator",
    );
    assert!(!out.status.success());
    let out = text(&out);
    assert_eq!(error_lines(&out).len(), 1, "{out}");
    assert!(
        out.contains(&format!("output format {newer}")) && out.contains("upgrade flipbit-applier"),
        "{out}"
    );
    assert!(!probe::answers(f.addr(1, 1, 8080), false, 2).is_empty());
    // The format this applier reads, and a repo from before the format was recorded (format 1).
    repo::human_commit(
        &f.repo,
        &BTreeMap::from([("format.yaml", "outputFormat: 1\n".to_owned())]),
        &[],
        "format 1",
    )
    .expect("commit");
    f.apply_ok("lb-a");
    repo::human_commit(&f.repo, &BTreeMap::new(), &["format.yaml"], "no format record").expect("commit");
    f.apply_ok("lb-a");
    assert!(!probe::answers(f.addr(1, 1, 8080), false, 2).is_empty());
}

#[test]
fn links_under_a_host_are_refused_the_same_on_every_host() {
    let Some(f) = Fleet::start(164) else { return };
    f.cluster.lb_service("web", "shop", &[], &[("TCP", 8080, 30080)]);
    f.render();
    f.apply_ok("lb-a");
    f.apply_ok("lb-b");
    let before = (f.current("lb-a"), f.current("lb-b"));
    repo::raw_commit(
        &f.repo,
        &[
            (b"lb/lb-a/web/shop.conf", b"/etc/passwd", 0o120000),
            (b"lb/lb-b/web/shop.conf", b"../../lb-a/web/shop.conf", 0o120000),
        ],
        "links",
    )
    .expect("commit");
    for lb in ["lb-a", "lb-b"] {
        let out = f.apply(lb, &[]);
        assert!(!out.status.success(), "{lb} applied a link");
        let out = text(&out);
        assert!(
            out.contains(&format!("lb/{lb}/web/shop.conf is a symbolic link")),
            "{lb}: {out}"
        );
    }
    assert_eq!((f.current("lb-a"), f.current("lb-b")), before);
    assert!(!probe::answers(f.addr(1, 1, 8080), false, 2).is_empty());
    assert!(!probe::answers(f.addr(2, 1, 8080), false, 2).is_empty());
}

#[test]
fn repo_paths_cannot_forge_log_lines() {
    let Some(f) = Fleet::start(165) else { return };
    f.cluster.lb_service("web", "shop", &[], &[("TCP", 8080, 30080)]);
    f.render();
    f.apply_ok("lb-a");
    repo::raw_commit(
        &f.repo,
        &[
            (b"lb/lb-a/web/x\nerror: forged.txt", b"x", 0o100644),
            (b"dns/k8s.example.test/web/y\nerror: forged2.zone", b"x", 0o100644),
        ],
        "newlines in paths",
    )
    .expect("commit");
    let out = f.apply("lb-a", &[]);
    let out = text(&out);
    assert!(
        !out.lines().any(|l| l.trim_start().starts_with("error: forged")),
        "a repo path forged a log line: {out}"
    );
    assert!(
        out.contains("x\\nerror: forged.txt"),
        "the path is not shown escaped: {out}"
    );
}

#[test]
fn dns_is_written_only_in_the_configured_zone_and_never_at_its_own_names() {
    let Some(f) = Fleet::with_dns(166, 5371) else { return };
    let named = f.named.as_ref().expect("named");
    f.cluster.lb_service("web", "shop", &[], &[("TCP", 8080, 30080)]);
    f.render();
    f.apply_ok("lb-a");
    let shop = "shop.web.k8s.example.test";
    let addr = f.addr(1, 1, 8080).ip().to_string();
    assert_eq!(records(&f, shop), vec![addr.clone()]);

    // Names that hold what Flipbit did not write: an address outside every pool, a CNAME.
    named
        .nsupdate("update add www.k8s.example.test 60 A 127.200.0.1\nupdate add alias.k8s.example.test 60 CNAME www.k8s.example.test.")
        .expect("nsupdate");
    let names = [
        "k8s.example.test",
        "ns.k8s.example.test",
        "mail.k8s.example.test",
        "www.k8s.example.test",
        "alias.k8s.example.test",
        "fresh.k8s.example.test",
    ];
    let fragment: String = names.iter().map(|n| format!("{n}. 60 IN A {addr}\n")).collect();
    let other = format!("shop.web.other.test. 60 IN A {addr}\n");
    let (_, out) = push_and_apply(
        &f,
        &[
            (
                "dns/k8s.example.test/web/shop.zone",
                format!("{shop}. 60 IN A {addr}\n{fragment}"),
            ),
            ("dns/other.test/web/shop.zone", other),
        ],
        "hand-pushed names",
    );
    assert!(out.status.success(), "{}", text(&out));
    let log = text(&out);
    assert!(
        named.query("shop.web.other.test", "A").is_empty(),
        "a record was written in another zone"
    );
    assert!(
        named.query("k8s.example.test", "A").is_empty(),
        "the zone apex got an address"
    );
    assert_eq!(named.query("ns.k8s.example.test", "A"), vec!["127.0.0.1".to_owned()]);
    assert!(
        named.query("mail.k8s.example.test", "A").is_empty(),
        "a reserved name got an address"
    );
    assert_eq!(named.query("www.k8s.example.test", "A"), vec!["127.200.0.1".to_owned()]);
    assert!(!named.query("alias.k8s.example.test", "CNAME").is_empty());
    assert!(!named.query("alias.k8s.example.test", "A").iter().any(|a| a == &addr));
    for name in ["ns.k8s.example.test", "www.k8s.example.test", "alias.k8s.example.test"] {
        assert!(log.contains(name), "{name} is not reported: {log}");
    }
    // The free name is published, and so is the Service's own.
    assert_eq!(named.query("fresh.k8s.example.test", "A"), vec![addr.clone()]);
    assert_eq!(records(&f, shop), vec![addr.clone()]);

    // Once the foreign address goes, the name is published on the next run, with no new commit.
    named
        .nsupdate("update delete www.k8s.example.test A 127.200.0.1")
        .expect("nsupdate");
    f.apply_ok("lb-a");
    assert_eq!(named.query("www.k8s.example.test", "A"), vec![addr]);
}

#[test]
fn a_wildcard_port_no_service_uses_is_refused() {
    let Some(f) = Fleet::start(173) else { return };
    f.set_host("lb-a", "layout: shared-listeners");
    f.cluster.lb_service("web", "shop", &[], &[("TCP", 17380, 30080)]);
    f.render();
    f.apply_ok("lb-a");
    let good = f.current("lb-a").expect("current");
    let path = "lb/lb-a/_flipbit/listeners.conf";
    let listeners = repo::read(&f.repo, path).expect("listeners");
    // Each line reads as the generator's, but port 17322 on every address serves no Service.
    let grabbed = listeners.replace("    listen 17380;\n", "    listen 17380;\n    listen 17322;\n");
    assert_ne!(grabbed, listeners);
    let (_, out) = push_and_apply(&f, &[(path, grabbed)], "take a port on every address");
    assert!(!out.status.success());
    let out = text(&out);
    assert!(
        out.contains("listens on *:17322/tcp, which no Service of this host uses"),
        "{out}"
    );
    assert_eq!(f.current("lb-a"), Some(good));
    assert!(probe::tcp("127.0.0.1:17322".parse().unwrap()).is_err());
    assert!(!probe::answers(f.addr(1, 1, 17380), false, 2).is_empty());
}
