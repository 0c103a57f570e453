//! The fleet knows itself: appliers in watch mode publish their state, take a dead peer's
//! addresses out of DNS within the peer timeout, give them back when it serves again, never act
//! from a minority or empty a name, never lose a race with a peer that came back, and rebuild what
//! they published after losing their state dir.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use flipbit_core::fleet::HostState;
use flipbit_tests::fleet::Fleet;
use flipbit_tests::nginx::NginxInstance;
use flipbit_tests::process::Owned;
use flipbit_tests::wait::{wait_for, wait_until};

/// `flipbit-applier watch` for one host: every 0.5 s, peers judged after 3 s, its metrics
/// served; stopped on drop.
struct Watcher {
    _child: Owned,
    metrics: SocketAddr,
}

const RUNS: &str = "flipbit_applier_runs_total";
const PEERS_DOWN: &str = "flipbit_applier_peers_down";

impl Watcher {
    fn start(f: &Fleet, lb: &str) -> Self {
        Self::start_with(&Self::args(f, lb))
    }

    /// The arguments of `lb`'s watching applier (taken while its nginx instance exists).
    fn args(f: &Fleet, lb: &str) -> Vec<String> {
        let mut args = f.lbs[lb].applier_args(&f.repo, lb);
        args[0] = "watch".into();
        let named = f.named.as_ref().expect("named");
        args.extend(f.dns_args(&named.key_file));
        args.extend(
            [
                "--interval",
                "0.5",
                "--peer-timeout",
                "3",
                "--metrics-listen",
                "127.0.0.1:0",
            ]
            .map(String::from),
        );
        args
    }

    fn start_with(args: &[String]) -> Self {
        let (child, metrics) = super::spawn_with_metrics(args, Duration::from_secs(20));
        Self { _child: child, metrics }
    }

    fn sample(&self, series: &str) -> f64 {
        super::metrics(self.metrics).get(series).copied().unwrap_or(0.0)
    }

    /// Waits until this host has judged `n` peers down and has run twice more since: the
    /// decision a test then looks at has been made, and made again.
    fn wait_judged_down(&self, n: usize) {
        let sample = |series: &str| self.sample(series);
        let runs = wait_until(Duration::from_secs(20), || {
            let down = sample(PEERS_DOWN);
            if down >= n as f64 {
                Ok(sample(RUNS))
            } else {
                Err(format!("{down} peers judged down, not {n}"))
            }
        })
        .unwrap_or_else(|e| panic!("{e}"));
        wait_for(Duration::from_secs(20), "two more runs", || sample(RUNS) >= runs + 2.0)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

fn name(svc: &str) -> String {
    format!("{svc}.web.k8s.example.test")
}

/// The sorted A records of `name`.
fn answers(f: &Fleet, name: &str) -> Vec<String> {
    f.named.as_ref().expect("named").query(name, "A")
}

/// Waits until `check` holds, up to `limit`; how long it took, or the last state seen.
fn until(limit: Duration, check: impl FnMut() -> Result<(), String>) -> Result<Duration, String> {
    let started = Instant::now();
    flipbit_tests::wait::wait_until(limit, check).map(|()| started.elapsed())
}

/// A watching applier per host in `hosts`, returned once every one of them has published a
/// serving state from a watch run (so peers judge it: its interval is under half the timeout).
fn watch_all<'a>(f: &Fleet, hosts: &[&'a str]) -> BTreeMap<&'a str, Watcher> {
    let watchers: BTreeMap<&str, Watcher> = hosts.iter().map(|lb| (*lb, Watcher::start(f, lb))).collect();
    until(Duration::from_secs(10), || {
        for lb in hosts {
            let text = f
                .named
                .as_ref()
                .expect("named")
                .query(&format!("_flipbit.{lb}.k8s.example.test"), "TXT");
            let state = text.first().map(|t| HostState::parse(t.trim_matches('"')));
            // Published by the watcher (`--interval 0.5`), not by the one-shot install apply.
            if !matches!(state, Some(Ok(s)) if s.serving() && s.interval <= 1) {
                return Err(format!("{lb}: {text:?}"));
            }
        }
        Ok(())
    })
    .expect("every host publishes its state");
    watchers
}

/// The addresses of `svc` on the given hosts (`127.<block>.<host>.<n>`), as strings.
fn addresses(f: &Fleet, svc: &str, hosts: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = hosts
        .iter()
        .filter_map(|lb| f.address(&format!("web/{svc}"), lb))
        .map(|ip: IpAddr| ip.to_string())
        .collect();
    out.sort();
    out
}

/// Three hosts serving two Services everywhere and one (`only-b`) on lb-b alone, applied once
/// in turn (as a first install goes) and published.
fn three(block: u8, port: u16) -> Option<Fleet> {
    let f = Fleet::three_with_dns(block, port)?;
    f.cluster.lb_service("web", "a", &[], &[("TCP", 8080, 30080)]);
    f.cluster.lb_service("web", "b", &[], &[("TCP", 8081, 30080)]);
    f.cluster.lb_service(
        "web",
        "only-b",
        &[("flipbit.io/load-balancers", "lb-b")],
        &[("TCP", 8082, 30080)],
    );
    f.render();
    f.apply_ok("lb-a");
    f.apply_ok("lb-b");
    // lb-c, not installed yet, has published nothing: no peer judges it or writes its record.
    let lb_c = f.named.as_ref()?.query("_flipbit.lb-c.k8s.example.test", "TXT");
    assert!(lb_c.is_empty(), "a peer wrote lb-c's state record: {lb_c:?}");
    f.apply_ok("lb-c");
    Some(f)
}

#[test]
fn a_dead_host_leaves_dns_and_comes_back() {
    let Some(mut f) = three(174, 5376) else { return };
    let all = ["lb-a", "lb-b", "lb-c"];
    for svc in ["a", "b"] {
        assert_eq!(answers(&f, &name(svc)), addresses(&f, svc, &all));
    }
    let mut watchers = watch_all(&f, &all);

    // lb-b dies: its nginx and its applier.
    let dir = f.lbs["lb-b"].dir.clone();
    watchers.remove("lb-b");
    f.lbs.remove("lb-b");
    let gone = until(Duration::from_secs(20), || {
        for svc in ["a", "b"] {
            let want = addresses(&f, svc, &["lb-a", "lb-c"]);
            let got = answers(&f, &name(svc));
            if got != want {
                return Err(format!("{svc}: {got:?}, want {want:?}"));
            }
        }
        Ok(())
    })
    .expect("lb-b's addresses leave DNS, the others stay");
    eprintln!("lb-b's records left DNS {gone:?} after it died (peer timeout 3 s)");
    // A name no other host serves keeps its last address.
    assert_eq!(answers(&f, &name("only-b")), addresses(&f, "only-b", &["lb-b"]));

    // lb-b comes back: nginx first, then its applier; its records are back with no Git change.
    f.lbs.insert("lb-b", NginxInstance::start(&dir).expect("nginx"));
    watchers.insert("lb-b", Watcher::start(&f, "lb-b"));
    let back = until(Duration::from_secs(15), || {
        for svc in ["a", "b"] {
            let want = addresses(&f, svc, &all);
            let got = answers(&f, &name(svc));
            if got != want {
                return Err(format!("{svc}: {got:?}, want {want:?}"));
            }
        }
        Ok(())
    })
    .expect("lb-b's records come back");
    eprintln!("lb-b's records were back {back:?} after its applier restarted");
    let state = f
        .named
        .as_ref()
        .expect("named")
        .query("_flipbit.lb-b.k8s.example.test", "TXT");
    assert!(state.first().is_some_and(|t| t.contains(" w=0 ")), "{state:?}");
    drop(watchers);
}

#[test]
fn a_minority_or_a_fleet_without_nginx_removes_nothing() {
    let Some(mut f) = three(175, 5377) else { return };
    let all = ["lb-a", "lb-b", "lb-c"];
    let before: Vec<Vec<String>> = ["a", "b"].iter().map(|s| answers(&f, &name(s))).collect();
    assert_eq!(before[0].len(), 3);
    // lb-a and lb-b publish their state from watch runs, so peers judge them (the interval is
    // under half the peer timeout); lb-c's is from its one install apply (the default interval,
    // more than half the timeout), so it is never judged: unknown, not healthy. Then lb-b and
    // lb-c die, nginx and applier: lb-a judges lb-b down but sees one host of three healthy,
    // itself, no majority, and must withdraw nothing. (Two judged peers dying would not do: one
    // goes stale a moment before the other, and in that moment a majority rightly acts.)
    let watch_args_of: BTreeMap<&str, Vec<String>> = ["lb-b", "lb-c"]
        .into_iter()
        .map(|lb| (lb, Watcher::args(&f, lb)))
        .collect();
    let mut watchers = watch_all(&f, &["lb-a", "lb-b"]);
    watchers.remove("lb-b");
    for lb in ["lb-b", "lb-c"] {
        f.lbs.remove(lb);
    }
    watchers["lb-a"].wait_judged_down(1);
    let after: Vec<Vec<String>> = ["a", "b"].iter().map(|s| answers(&f, &name(s))).collect();
    assert_eq!(after, before, "a host in the minority removed records");
    drop(watchers);

    // Every host's nginx down, appliers running: no host is healthy, nothing is removed.
    let args = Watcher::args(&f, "lb-a");
    f.lbs.remove("lb-a");
    let watchers: Vec<Watcher> = all
        .iter()
        .map(|lb| match *lb {
            "lb-a" => Watcher::start_with(&args),
            _ => Watcher::start_with(&watch_args_of[*lb]),
        })
        .collect();
    for w in &watchers {
        w.wait_judged_down(2);
    }
    let after: Vec<Vec<String>> = ["a", "b"].iter().map(|s| answers(&f, &name(s))).collect();
    assert_eq!(after, before, "a fleet without nginx emptied names");
}

/// ApplyOptions for `lb` of fleet `f`, as the command line would make them.
fn options(f: &Fleet, lb: &str) -> flipbit_applier::apply::ApplyOptions {
    use flipbit_applier::apply::{ApplyOptions, DnsSettings, FleetOptions, default_git_limits};
    let nginx = &f.lbs[lb];
    let named = f.named.as_ref().expect("named");
    ApplyOptions {
        repo: f.repo.display().to_string(),
        branch: "main".into(),
        lb: lb.parse().expect("host"),
        state_dir: nginx.state_dir.clone(),
        nginx: flipbit_applier::nginx::Nginx {
            bin: "nginx".into(),
            conf: nginx.conf.clone(),
            prefix: Some(nginx.dir.clone()),
            error_log: Some(nginx.error_log.clone()),
            pid_file: nginx.pid_file.clone(),
            reload_command: None,
            reload_timeout: Duration::from_secs(10),
            found_log: Default::default(),
        },
        haproxy: flipbit_applier::haproxy::Haproxy {
            bin: "haproxy".into(),
            conf: "/nonexistent".into(),
            master_socket: "/nonexistent".into(),
            log: None,
            reload_command: None,
            reload_timeout: Duration::from_secs(10),
        },
        allow_rewind: false,
        dns: Some(DnsSettings {
            server: named.addr(),
            auth: flipbit_applier::dns::auth::AuthConfig::Tsig(named.key_file.clone()),
            timeout: Duration::from_secs(2),
        }),
        signatures: None,
        git_limits: default_git_limits(Duration::from_secs(30)),
        fleet: FleetOptions {
            peer_timeout: Duration::from_secs(3),
            status_zone: None,
            interval: Duration::from_secs(1),
        },
        metrics_file: None,
    }
}

#[test]
fn a_peer_that_refreshed_its_state_keeps_its_records() {
    let Some(f) = three(180, 5378) else { return };
    let opts = options(&f, "lb-a");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut store = flipbit_store::Store::open(&tmp.path().join("cache.git"), &opts.repo, "main").expect("cache");
    store.limit_fetches(opts.git_limits);
    let head = store.fetch().expect("fetch").expect("main");
    let fleet = flipbit_applier::fleet::for_run(&opts, &store, head)
        .expect("fleet")
        .expect("the DNS step is on");
    // lb-a decides from lb-b's state as it read it...
    let stale = fleet.read("lb-b").expect("read");
    assert!(stale.state.is_some());
    // ...and lb-b refreshes its state before lb-a's UPDATE goes out.
    std::thread::sleep(Duration::from_secs(3));
    let out = f.apply("lb-b", &["--run-interval", "1", "--peer-timeout", "3"]);
    assert!(out.status.success() && flipbit_tests::cluster::text(&out).contains("up to date"));
    let fresh = fleet.read("lb-b").expect("read");
    assert_ne!(fresh.record, stale.record, "lb-b did not refresh its state");
    let healthy: Vec<flipbit_core::names::LbHostName> =
        vec!["lb-a".parse().expect("host"), "lb-c".parse().expect("host")];
    let withdrew = fleet
        .withdraw(&"lb-b".parse().expect("host"), &stale, &healthy)
        .expect("withdraw");
    assert!(!withdrew, "a withdrawal went through against a state it did not read");
    for svc in ["a", "b"] {
        assert_eq!(answers(&f, &name(svc)), addresses(&f, svc, &["lb-a", "lb-b", "lb-c"]));
    }
    assert!(!fleet.read("lb-b").expect("read").state.expect("state").withdrawn);
}

#[test]
fn a_lost_state_dir_still_deletes_what_went() {
    let Some(f) = three(184, 5379) else { return };
    assert_eq!(answers(&f, &name("b")), addresses(&f, "b", &["lb-a", "lb-b", "lb-c"]));
    // lb-a loses its state dir while web/b is deleted.
    let b_on_a = addresses(&f, "b", &["lb-a"]);
    std::fs::remove_dir_all(f.state_dir("lb-a")).expect("remove the state dir");
    f.cluster.remove("svc-web-b.yaml");
    f.render();
    f.apply_ok("lb-a");
    let left = answers(&f, &name("b"));
    assert!(
        !left.contains(&b_on_a[0]),
        "the deleted Service's lb-a record stayed: {left:?}"
    );
    assert!(!answers(&f, &name("a")).is_empty());
}
