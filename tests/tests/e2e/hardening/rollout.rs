//! Staged rollout end to end (`rollout:` in flipbit.yaml): lb-b, in the second wave, applies a
//! head only once lb-a's state record in real `named` says lb-a has served it healthy for the
//! soak; a failure of the head on lb-a halts lb-b on it, and a new good head resumes. lb-a's
//! record is written by the test (what its applier publishes after each run), so each case is
//! exact; lb-a's and lb-b's nginx are real, and traffic shows what lb-b serves. Then the same
//! with lb-a's real applier: a head its `nginx -t` refuses halts lb-b (and `status` says so)
//! until a good head has soaked. And the post-apply probe: a reload that confirms but serves
//! nothing new keeps DNS where it was.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use flipbit_core::fleet::{Cause, HostState, StepState};
use flipbit_store::{CommitId, Store};
use flipbit_tests::cluster::text;
use flipbit_tests::fleet::Fleet;
use flipbit_tests::{probe, repo};

/// Adds the rollout (lb-a, then lb-b, a soak of 30 s) to flipbit.yaml, as a human commit.
fn with_rollout(f: &Fleet) {
    with_rollout_soak(f, 30);
}

fn with_rollout_soak(f: &Fleet, soak: u64) {
    let rollout = format!("rollout:\n  waves: [[lb-a], [lb-b]]\n  soakSeconds: {soak}\n");
    let config = repo::read(&f.repo, "flipbit.yaml").expect("flipbit.yaml") + &rollout;
    repo::human_commit(
        &f.repo,
        &BTreeMap::from([("flipbit.yaml", config)]),
        &[],
        "rollout: lb-a, then lb-b",
    )
    .expect("committing flipbit.yaml");
}

fn head(f: &Fleet) -> String {
    repo::head(&f.repo).expect("a head").to_string()
}

/// Adds Service web/`name` (TCP 8080) and renders: the new head.
fn head_with(f: &Fleet, name: &str) -> String {
    f.cluster.lb_service("web", name, &[], &[("TCP", 8080, 30080)]);
    f.render();
    head(f)
}

/// The rollout and its first head (web/a): applied on lb-a, lb-a's record serving it healthy
/// past the soak, then lb-b's apply. The head and what lb-b's applier said.
fn first_head_on_both(f: &Fleet) -> (String, String) {
    with_rollout(f);
    let first = head_with(f, "a");
    f.apply_ok("lb-a");
    publish(f, &serving(&first, 100));
    (first, f.apply_ok("lb-b"))
}

/// Two runs of lb-b while lb-a's record says `bad` failed there: each succeeds, says lb-b is
/// halted at `bad`, and lb-b keeps serving web/a and not web/b.
fn assert_lb_b_halted_at(f: &Fleet, bad: &str) {
    for _ in 0..2 {
        let out = f.apply("lb-b", &[]);
        assert!(out.status.success(), "a halt is no failure of lb-b: {}", text(&out));
        let out = text(&out);
        assert!(
            out.contains(&format!("held {bad}: halted at {} on lb-a: invalid", &bad[..12])),
            "{out}"
        );
        probe::tcp(on_lb_b(f, "a")).expect("web/a through lb-b");
        assert!(probe::tcp(on_lb_b(f, "b")).is_err(), "lb-b serves a halted head");
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// lb-a serving `commit` healthy for `healthy` seconds, as of now.
fn serving(commit: &str, healthy: u64) -> HostState {
    HostState {
        commit: Some(commit.to_owned()),
        since: now() - healthy,
        head: Some(commit.to_owned()),
        at: now(),
        lb: StepState::Ok,
        dns: StepState::Ok,
        withdrawn: false,
        interval: 1,
    }
}

/// Writes lb-a's state record as its applier would.
fn publish(f: &Fleet, state: &HostState) {
    let name = "_flipbit.lb-a.k8s.example.test";
    f.named
        .as_ref()
        .expect("named")
        .nsupdate(&format!(
            "update delete {name} TXT\nupdate add {name} 60 TXT \"{}\"",
            state.render()
        ))
        .expect("nsupdate");
}

/// lb-b's address of Service `web/<name>` on port 8080.
fn on_lb_b(f: &Fleet, name: &str) -> std::net::SocketAddr {
    let ip = f.address(&format!("web/{name}"), "lb-b").expect("an address on lb-b");
    std::net::SocketAddr::new(ip, 8080)
}

/// The post-apply probe of lb-b's release at `commit`, as its applier runs it after a reload.
fn probe_lb_b(f: &Fleet, commit: &str, previous: &str) -> Result<usize, String> {
    let store = Store::open(&f.tmp.path().join("probe-cache"), &f.repo.display().to_string(), "main").expect("store");
    store.fetch().expect("fetch");
    let (commit, previous): (CommitId, CommitId) = (commit.parse().expect("id"), previous.parse().expect("id"));
    let config = flipbit_applier::lb_step::config_at(&store, commit).expect("flipbit.yaml");
    let host = config.host(&"lb-b".parse().expect("name")).expect("lb-b").clone();
    flipbit_applier::selfcheck::Probe {
        store: &store,
        commit,
        previous: Some(previous),
        host: &host,
        format: flipbit_applier::verify::output_format(&store, commit).expect("format"),
        withheld: &Default::default(),
        limit: flipbit_applier::selfcheck::DEFAULT_LIMIT,
        timeout: flipbit_applier::selfcheck::DEFAULT_TIMEOUT,
    }
    .run()
}

#[test]
fn a_later_wave_applies_a_head_once_the_earlier_one_served_it_through_the_soak() {
    let Some(f) = Fleet::with_dns(191, 5361) else { return };
    let (first, out) = first_head_on_both(&f);
    assert!(out.contains(&format!("applied {first}")), "{out}");
    probe::tcp(on_lb_b(&f, "a")).expect("web/a through lb-b");

    // A new head: lb-a applies it, lb-b waits.
    let second = head_with(&f, "b");
    f.apply_ok("lb-a");
    probe::tcp(f.addr(1, 2, 8080)).expect("web/b through lb-a");
    // lb-a's record still names the previous commit.
    publish(&f, &serving(&first, 200));
    let out = f.apply_ok("lb-b");
    assert!(
        out.contains(&format!(
            "held {second}: waiting for lb-a: it serves {}, not {}",
            &first[..12],
            &second[..12]
        )),
        "{out}"
    );
    // lb-b still serves the previous commit's Services, and only those.
    probe::tcp(on_lb_b(&f, "a")).expect("web/a through lb-b");
    assert!(probe::tcp(on_lb_b(&f, "b")).is_err(), "lb-b serves a held head");
    // The probe of the held release names the listener it would add, which is not there yet.
    let err = probe_lb_b(&f, &second, &first).unwrap_err();
    assert!(
        err.contains(&format!("{}/tcp of web/b does not accept", on_lb_b(&f, "b"))),
        "{err}"
    );
    // lb-a serves the head, for less than the soak.
    publish(&f, &serving(&second, 10));
    let out = f.apply_ok("lb-b");
    assert!(
        out.contains(&format!(
            "held {second}: waiting for lb-a: it has served {} healthy for 10 s of the 30 s soak",
            &second[..12]
        )),
        "{out}"
    );
    assert!(probe::tcp(on_lb_b(&f, "b")).is_err(), "lb-b serves a held head");

    // Past the soak: lb-b applies it.
    publish(&f, &serving(&second, 31));
    let out = f.apply_ok("lb-b");
    assert!(out.contains(&format!("applied {second}")), "{out}");
    probe::tcp(on_lb_b(&f, "b")).expect("web/b through lb-b");
    probe::tcp(on_lb_b(&f, "a")).expect("web/a through lb-b");
    assert_eq!(probe_lb_b(&f, &second, &first), Ok(2));
    // It runs the head now: nothing holds it, whatever lb-a publishes later.
    publish(&f, &serving(&first, 0));
    assert!(f.apply_ok("lb-b").contains("up to date"));
}

#[test]
fn a_head_that_failed_on_the_earlier_wave_halts_the_later_until_a_good_one() {
    let Some(f) = Fleet::with_dns(192, 5362) else { return };
    let (first, _) = first_head_on_both(&f);

    // lb-a tried the next head and `nginx -t` refused it: it keeps the first.
    let bad = head_with(&f, "b");
    publish(
        &f,
        &HostState {
            head: Some(bad.clone()),
            lb: StepState::Failed(Cause::Invalid),
            ..serving(&first, 100)
        },
    );
    assert_lb_b_halted_at(&f, &bad);

    // A new head that lb-a serves healthy through the soak resumes the rollout.
    let good = head_with(&f, "c");
    f.apply_ok("lb-a");
    publish(&f, &serving(&good, 60));
    let out = f.apply_ok("lb-b");
    assert!(out.contains(&format!("applied {good}")), "{out}");
    for name in ["a", "b", "c"] {
        probe::tcp(on_lb_b(&f, name)).unwrap_or_else(|e| panic!("web/{name} through lb-b: {e}"));
    }
}

#[test]
fn a_later_wave_without_the_dns_step_holds_every_head() {
    let Some(f) = Fleet::start(193) else { return };
    with_rollout(&f);
    let first = head_with(&f, "a");
    assert!(f.apply_ok("lb-a").contains(&format!("applied {first}")));
    let out = f.apply_ok("lb-b");
    assert!(
        out.contains(&format!(
            "held {first}: lb-b is in wave 2 of flipbit.yaml's rollout but runs without --dns-server"
        )),
        "{out}"
    );
    assert!(f.current("lb-b").is_none(), "lb-b staged a release");
}

#[test]
fn a_reload_whose_listeners_do_not_answer_keeps_dns_where_it_was() {
    let Some(f) = Fleet::with_dns(199, 5385) else { return };
    f.cluster.lb_service("web", "a", &[], &[("TCP", 8080, 30080)]);
    f.render();
    f.apply_ok("lb-a");
    let fqdn = |name: &str| format!("{name}.web.k8s.example.test");
    let a = f.address("web/a", "lb-a").expect("web/a on lb-a");
    assert_eq!(super::lb_a_records(&f, &[fqdn("a")])[&fqdn("a")], vec![a]);

    // The operator freezes nginx on a copy of today's release and leaves the include of
    // `current` behind in a comment: `nginx -t` passes and every reload confirms, but nothing
    // new is ever served.
    let nginx = &f.lbs["lb-a"];
    let original = std::fs::read_to_string(&nginx.conf).expect("nginx.conf");
    let frozen = nginx.dir.join("frozen");
    let release = f.current("lb-a").expect("current");
    let copied = Command::new("cp")
        .arg("-rL")
        .arg(nginx.state_dir.join(&release))
        .arg(&frozen)
        .status()
        .expect("cp");
    assert!(copied.success());
    let include = format!("include {}/current/*/*.conf;", nginx.state_dir.display());
    assert!(original.contains(&include), "{original}");
    let broken = original.replace(
        &include,
        &format!("# {include}\n    include {}/*/*.conf;", frozen.display()),
    );
    std::fs::write(&nginx.conf, &broken).expect("writing nginx.conf");

    f.cluster.lb_service("web", "b", &[], &[("TCP", 8080, 30080)]);
    f.render();
    let b = f.address("web/b", "lb-a").expect("web/b on lb-a");
    for _ in 0..2 {
        let out = f.apply("lb-a", &[]);
        let said = text(&out);
        assert!(!out.status.success(), "a probe that failed is a failed run: {said}");
        assert!(
            said.contains(&format!("{b}:8080/tcp of web/b does not accept")),
            "{said}"
        );
        assert!(
            super::lb_a_records(&f, &[fqdn("b")])[&fqdn("b")].is_empty(),
            "DNS names web/b on lb-a"
        );
        probe::tcp(std::net::SocketAddr::new(a, 8080)).expect("web/a still through lb-a");
    }
    let journal = f.journal("lb-a");
    assert_eq!(journal.loaded.map(|l| l.commit.to_string()), Some(head(&f)));
    assert_ne!(journal.dns.map(|d| d.commit.to_string()), Some(head(&f)));

    // Fixed and reloaded by hand: the next run probes again, and DNS follows.
    std::fs::write(&nginx.conf, &original).expect("writing nginx.conf");
    nginx.sighup().expect("reloading nginx");
    assert!(!probe::answers(std::net::SocketAddr::new(b, 8080), false, 2).is_empty());
    let out = f.apply_ok("lb-a");
    assert!(!out.contains("does not accept"), "{out}");
    assert_eq!(super::lb_a_records(&f, &[fqdn("b")])[&fqdn("b")], vec![b]);
    assert_eq!(super::lb_a_records(&f, &[fqdn("a")])[&fqdn("a")], vec![a]);
}

/// `flipbit-applier status` from an operator's machine.
fn status(f: &Fleet) -> String {
    let named = f.named.as_ref().expect("named");
    let args: Vec<String> = [
        "status".to_owned(),
        "--repo".into(),
        f.repo.display().to_string(),
        "--dns-server".into(),
        named.addr().to_string(),
        "--state-dir".into(),
        f.tmp.path().join("operator").display().to_string(),
    ]
    .into();
    let out = flipbit_tests::cluster::applier(&args);
    assert!(out.status.success(), "status: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// lb-a's applier, publishing a run interval of 1 s (so its heartbeat comes every 2.5 s).
fn apply_lb_a(f: &Fleet) -> std::process::Output {
    f.apply("lb-a", &["--run-interval", "1"])
}

#[test]
fn a_head_nginx_refuses_on_the_first_wave_never_reaches_the_second() {
    let Some(f) = Fleet::with_dns(200, 5386) else { return };
    with_rollout_soak(&f, 2);
    let first = head_with(&f, "a");
    assert!(apply_lb_a(&f).status.success());
    std::thread::sleep(std::time::Duration::from_secs(3));
    // Its heartbeat: served healthy past the soak.
    assert!(apply_lb_a(&f).status.success());
    assert!(f.apply_ok("lb-b").contains(&format!("applied {first}")));

    // lb-a's own nginx config already listens where the next Service lands, so `nginx -t`
    // refuses the head there (a host-local clash the generator cannot see).
    let bad = head_with(&f, "b");
    let clash = f.address("web/b", "lb-a").expect("web/b on lb-a");
    let nginx = &f.lbs["lb-a"];
    let original = std::fs::read_to_string(&nginx.conf).expect("nginx.conf");
    let clashing = original.replacen(
        "stream {\n",
        &format!("stream {{\n    server {{ listen {clash}:8080; return \"local\\n\"; }}\n"),
        1,
    );
    assert_ne!(clashing, original);
    std::fs::write(&nginx.conf, &clashing).expect("writing nginx.conf");
    let out = apply_lb_a(&f);
    assert!(!out.status.success(), "nginx -t passed: {}", text(&out));
    assert!(text(&out).contains("duplicate"), "{}", text(&out));
    probe::tcp(f.addr(1, 1, 8080)).expect("web/a through lb-a");

    assert_lb_b_halted_at(&f, &bad);
    let table = status(&f);
    assert!(
        table.contains(&format!(
            "rollout: halted at {} on lb-a: invalid (wave 2 and later keep their commit)",
            &bad[..12]
        )),
        "{table}"
    );
    assert!(table.contains("failed: invalid"), "{table}");

    // The tenant takes web/b back and gives web/a a second port: a good head. lb-a applies it
    // at once; lb-b after lb-a served it through the soak.
    f.cluster.remove("svc-web-b.yaml");
    f.cluster
        .lb_service("web", "a", &[], &[("TCP", 8080, 30080), ("TCP", 8081, 30080)]);
    f.render();
    let good = head(&f);
    assert!(apply_lb_a(&f).status.success(), "lb-a refused the good head");
    probe::tcp(f.addr(1, 1, 8081)).expect("web/a's new port through lb-a");
    let second_port = std::net::SocketAddr::new(on_lb_b(&f, "a").ip(), 8081);
    let out = f.apply_ok("lb-b");
    assert!(out.contains(&format!("held {good}: waiting for lb-a")), "{out}");
    assert!(
        probe::tcp(second_port).is_err(),
        "lb-b applied the head before the soak"
    );
    assert!(status(&f).contains("rollout: wave 2 is waiting for lb-a"));
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(apply_lb_a(&f).status.success());
    assert!(f.apply_ok("lb-b").contains(&format!("applied {good}")));
    probe::tcp(second_port).expect("web/a's new port through lb-b");
    assert!(status(&f).contains("rollout: every wave may apply the head"));
}
