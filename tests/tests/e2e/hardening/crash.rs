//! Crashes at every instruction: after a kill -9 anywhere, the next run converges, and DNS never
//! names an address nginx does not serve. Also a `current` whose release was deleted, a corrupt
//! journal, the test config a killed run leaves, and a Git server that never answers.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flipbit_tests::cluster::text;
use flipbit_tests::fleet::Fleet;
use flipbit_tests::process::Background;
use flipbit_tests::{bins, probe};

use super::lb_a_records;

const KILL: &str = "FLIPBIT_APPLIER_KILL_AT";

/// The fully qualified name of Service `web/<name>`.
fn fqdn(name: &str) -> String {
    format!("{name}.web.k8s.example.test")
}

/// Fails naming every lb-a record whose address does not answer on port 8080.
fn records_answer(f: &Fleet, names: &[String]) -> Result<(), String> {
    for (name, addrs) in lb_a_records(f, names) {
        for addr in addrs {
            if let Err(e) = probe::tcp(std::net::SocketAddr::new(addr, 8080)) {
                return Err(format!("DNS names {addr} for {name}, which does not answer: {e}"));
            }
        }
    }
    Ok(())
}

fn killed(out: &std::process::Output) -> bool {
    out.status.signal() == Some(libc::SIGKILL)
}

#[test]
fn a_kill_between_swap_and_reload_is_finished_by_the_next_run() {
    let Some(f) = Fleet::with_dns(167, 5372) else { return };
    f.cluster.lb_service("web", "a", &[], &[("TCP", 8080, 30080)]);
    f.render();
    f.apply_ok("lb-a");
    f.cluster.lb_service("web", "b", &[], &[("TCP", 8080, 30080)]);
    f.render();
    // The reload command kills the applier that runs it: the instruction between the swap and
    // the reload.
    let out = f.apply("lb-a", &["--reload-command", "kill -9 $PPID"]);
    assert!(killed(&out), "the applier was not killed: {}", text(&out));
    // `current` already names the new release, but nginx never reloaded onto it.
    let b = f.addr(1, 2, 8080);
    assert!(
        probe::tcp(b).is_err(),
        "nginx serves a release it was never told to load"
    );

    let out = f.apply_ok("lb-a");
    assert!(out.contains("nginx reloaded"), "the next run did not reload: {out}");
    assert!(
        !probe::answers(b, false, 2).is_empty(),
        "the new Service does not answer"
    );
    records_answer(&f, &[fqdn("a"), fqdn("b")]).unwrap();
    assert_eq!(lb_a_records(&f, &[fqdn("b")])[&fqdn("b")], vec![b.ip()]);
    let journal = f.journal("lb-a");
    assert_eq!(journal.pending, None);
    assert_eq!(journal.loaded.map(|l| l.commit), flipbit_tests::repo::head(&f.repo));
    assert!(f.apply_ok("lb-a").contains("up to date"));
}

#[test]
fn a_dangling_current_is_staged_again() {
    let Some(f) = Fleet::start(168) else { return };
    f.cluster.lb_service("web", "a", &[], &[("TCP", 8080, 30080)]);
    f.render();
    f.apply_ok("lb-a");
    let state = f.state_dir("lb-a").to_path_buf();
    let release = state.join(f.current("lb-a").expect("current"));
    std::fs::remove_dir_all(&release).expect("remove the running release");

    let out = f.apply_ok("lb-a");
    assert!(
        !out.contains("up to date"),
        "a dangling current was reported up to date: {out}"
    );
    assert!(release.join("web/a.conf").exists(), "the release was not staged again");
    // The next reload by anyone else (logrotate, a restart) loads the whole release.
    f.lbs["lb-a"].sighup().expect("reloading nginx");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!probe::answers(f.addr(1, 1, 8080), false, 3).is_empty());
    assert!(f.apply_ok("lb-a").contains("up to date"));
}

#[test]
fn a_corrupt_journal_is_rebuilt_with_one_line_and_stale_test_configs_go() {
    let Some(f) = Fleet::with_dns(169, 5373) else { return };
    f.cluster.lb_service("web", "a", &[], &[("TCP", 8080, 30080)]);
    f.cluster.lb_service("web", "b", &[], &[("TCP", 8080, 30080)]);
    f.render();
    f.apply_ok("lb-a");
    assert_eq!(lb_a_records(&f, &[fqdn("b")])[&fqdn("b")].len(), 1);
    let state = f.state_dir("lb-a").to_path_buf();
    let stale = f.lbs["lb-a"].conf.with_file_name(".flipbit-test-2147483646.conf");
    std::fs::write(&stale, "left by a killed run").expect("stale test config");

    for garbage in [
        "half a jour",
        "flipbit-applier journal 1\nlb zzzz\ncheck 0000000000000000\n",
    ] {
        std::fs::write(state.join("journal"), garbage).expect("corrupt the journal");
        // A Service goes meanwhile: its record must still be deleted.
        f.cluster.remove("svc-web-b.yaml");
        f.render();
        let out = f.apply_ok("lb-a");
        let warnings: Vec<&str> = out.lines().filter(|l| l.contains("journal unreadable")).collect();
        assert_eq!(warnings.len(), 1, "{out}");
        assert!(lb_a_records(&f, &[fqdn("b")])[&fqdn("b")].is_empty(), "{out}");
        assert!(probe::tcp(f.addr(1, 2, 8080)).is_err());
        assert!(!probe::answers(f.addr(1, 1, 8080), false, 2).is_empty());
        assert!(f.apply_ok("lb-a").contains("up to date"));
        f.cluster.lb_service("web", "b", &[], &[("TCP", 8080, 30080)]);
        f.render();
        f.apply_ok("lb-a");
    }
    assert!(!stale.exists(), "a killed run's test config was left beside nginx.conf");

    // Lost with nothing new to apply: the running release is the head's, reloaded and confirmed
    // as it is.
    std::fs::write(state.join("journal"), "half a jour").expect("corrupt the journal");
    let out = f.apply_ok("lb-a");
    assert!(out.contains("nginx reloaded"), "{out}");
    assert!(!probe::answers(f.addr(1, 2, 8080), false, 2).is_empty());
    assert!(f.apply_ok("lb-a").contains("up to date"));

    // The files of the applier before the journal: a garbage one is reported, not read as
    // "nothing applied" (which would skip the rewind check).
    std::fs::remove_file(state.join("journal")).expect("remove the journal");
    std::fs::write(state.join("applied-nginx"), "not a commit\n").expect("legacy file");
    let out = f.apply_ok("lb-a");
    assert_eq!(
        out.lines().filter(|l| l.contains("journal unreadable")).count(),
        1,
        "{out}"
    );
    assert!(!state.join("applied-nginx").exists());
}

/// Kill -9 at every step boundary (each named failpoint, and the journal's second and third
/// write), then at random moments; after each kill, DNS names only serving addresses, and the
/// next run converges. A prober checks the same all along, while the appliers run.
#[test]
fn kills_at_every_step_and_at_random_converge_and_dns_never_leads() {
    let Some(f) = Fleet::with_dns(170, 5374) else { return };
    let mut points: Vec<String> = flipbit_applier::failpoint::POINTS
        .iter()
        .map(|p| p.to_string())
        .collect();
    points.extend(["journal-written:2".to_owned(), "journal-written:3".to_owned()]);
    let names: Arc<Mutex<Vec<String>>> = Arc::default();
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    let f = Arc::new(f);
    // Stopped and joined when dropped, so a failed round cannot keep the fleet (its nginx and
    // named) alive after the test.
    let prober = {
        let (f, names, violations) = (f.clone(), names.clone(), violations.clone());
        Background::spawn(move |stop| {
            let mut sweeps = 0;
            while !stop.load(Ordering::Relaxed) {
                let now = names.lock().map(|n| n.clone()).unwrap_or_default();
                if let Err(e) = records_answer(&f, &now) {
                    violations.lock().expect("lock").push(e);
                }
                sweeps += 1;
            }
            sweeps
        })
    };

    let mut seed: u64 = 0x5eed_f11b;
    let mut random = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    let rounds = points.len() + 8;
    let mut kills = 0;
    for round in 0..rounds {
        let name = format!("s{round}");
        f.cluster.lb_service("web", &name, &[], &[("TCP", 8080, 30080)]);
        if round % 3 == 2 {
            // A node flap changes every Service's file.
            f.cluster.node(3, f.block, round % 2 == 0);
        }
        f.render();
        names.lock().expect("lock").push(fqdn(&name));
        let was_killed = match points.get(round) {
            Some(point) => {
                let out = f.apply_with_env("lb-a", &[], &[(KILL, point)]);
                assert!(killed(&out) || out.status.success(), "{point}: {}", text(&out));
                killed(&out)
            }
            None => kill_after(&f, Duration::from_millis(random(400))),
        };
        kills += usize::from(was_killed);
        let now = names.lock().expect("lock").clone();
        records_answer(&f, &now).unwrap_or_else(|e| panic!("round {round}: {e}"));

        let out = f.apply_ok("lb-a");
        for (i, n) in now.iter().enumerate() {
            let addr = f.addr(1, (i + 1) as u8, 8080);
            flipbit_tests::wait::wait_until(Duration::from_secs(3), || probe::tcp(addr))
                .unwrap_or_else(|e| panic!("round {round}: {n} does not answer: {e}; {out}"));
            assert_eq!(
                lb_a_records(&f, std::slice::from_ref(n))[n],
                vec![addr.ip()],
                "round {round}: {n}; {out}"
            );
        }
        assert!(f.apply_ok("lb-a").contains("up to date"), "round {round}");
    }
    let sweeps = prober.finish();
    let violations = violations.lock().expect("lock").clone();
    assert!(violations.is_empty(), "DNS led nginx: {violations:?}");
    assert!(sweeps > 0);
    assert!(kills >= points.len(), "only {kills} of {rounds} runs were killed");
}

/// Starts an apply on lb-a and kills it after `delay`; true when it was still running.
fn kill_after(f: &Fleet, delay: Duration) -> bool {
    let mut args = f.lbs["lb-a"].applier_args(&f.repo, "lb-a");
    let named = f.named.as_ref().expect("named");
    args.extend(f.dns_args(&named.key_file));
    let mut child = Command::new(bins::applier())
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the applier");
    std::thread::sleep(delay);
    let running = matches!(child.try_wait(), Ok(None));
    let _ = child.kill();
    let _ = child.wait();
    running
}

#[test]
fn a_silent_git_server_fails_the_run_and_frees_the_lock() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    // Ends with the test (all tests share one process): connections accepted, never answered.
    let _server = Background::spawn(move |stop| {
        let mut held = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((conn, _)) => held.push(conn),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    let tmp = tempfile::tempdir().expect("tempdir");
    let args: Vec<String> = [
        "apply",
        "--repo",
        &format!("git://127.0.0.1:{port}/state.git"),
        "--lb",
        "lb-a",
        "--state-dir",
        &tmp.path().join("state").display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Two runs at once, as a timer run and a manual one: the second waits for the lock, which
    // the first releases when its fetch gives up.
    let children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(bins::applier())
                .args(&args)
                .env("FLIPBIT_GIT_TIMEOUT", "2")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut outputs = BTreeMap::new();
    for (i, mut child) in children.into_iter().enumerate() {
        while matches!(child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("an applier still waits on a Git server that never answers");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        outputs.insert(i, child.wait_with_output().expect("output"));
    }
    for out in outputs.values() {
        assert!(!out.status.success());
        let err = text(out);
        assert!(err.contains("no answer within") && err.contains("127.0.0.1"), "{err}");
        assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "{err}");
    }
}
