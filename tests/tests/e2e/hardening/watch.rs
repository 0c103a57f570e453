//! `flipbit-applier watch` between its runs (docs/design.md §5.8): it checks the branch head the
//! Git server advertises, fetches only when the head moved, and then runs at once; with
//! `--check-interval 0` it asks the server only once per `--interval`. The run interval here is an
//! hour, so after the first run any run at all can only have been started by a check.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use flipbit_tests::fleet::Fleet;
use flipbit_tests::process::Owned;
use flipbit_tests::repo;
use flipbit_tests::wait::{wait_for, wait_until};

const WAIT: Duration = Duration::from_secs(20);

/// A watching applier on lb-a with its metrics served; killed on drop.
struct Watch {
    _child: Owned,
    metrics: SocketAddr,
}

impl Watch {
    fn start(f: &Fleet, extra: &[&str]) -> Self {
        let mut args = f.lbs["lb-a"].applier_args(&f.repo, "lb-a");
        args[0] = "watch".into();
        args.extend(["--interval", "3600", "--metrics-listen", "127.0.0.1:0"].map(String::from));
        args.extend(extra.iter().map(|s| s.to_string()));
        let (child, metrics) = super::spawn_with_metrics(&args, WAIT);
        Self { _child: child, metrics }
    }

    /// Every sample of /metrics, by series as written (`name{labels}`).
    fn samples(&self) -> BTreeMap<String, f64> {
        super::metrics(self.metrics)
    }

    fn get(&self, series: &str) -> f64 {
        self.samples().get(series).copied().unwrap_or(0.0)
    }

    /// Waits until `check` holds for the metrics.
    fn wait_for(&self, what: &str, check: impl Fn(&BTreeMap<String, f64>) -> bool) -> BTreeMap<String, f64> {
        wait_until(WAIT, || {
            let samples = self.samples();
            if check(&samples) {
                Ok(samples)
            } else {
                Err(format!("timed out waiting for {what}: {samples:?}"))
            }
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }
}

const RUNS: &str = "flipbit_applier_runs_total";
const UNCHANGED: &str = "flipbit_applier_head_checks_total{result=\"unchanged\"}";
const MOVED: &str = "flipbit_applier_head_checks_total{result=\"moved\"}";
const FAILED: &str = "flipbit_applier_head_checks_total{result=\"failed\"}";

fn get(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

#[test]
fn watch_fetches_only_when_the_advertised_head_moves_and_then_at_once() {
    let Some(f) = Fleet::start(211) else { return };
    f.cluster.lb_service("web", "a", &[], &[("TCP", 8080, 30080)]);
    f.render();
    let first = repo::head(&f.repo).expect("a head");
    let w = Watch::start(&f, &["--check-interval", "0.05"]);
    w.wait_for("the first run", |m| get(m, RUNS) >= 1.0);
    assert_eq!(f.journal("lb-a").lb, Some(first));

    // The head stays: checks come and go, and no run (no fetch) follows any of them.
    let quiet = w.wait_for("five head checks", |m| get(m, UNCHANGED) >= 5.0);
    assert_eq!(get(&quiet, RUNS), 1.0, "{quiet:?}");
    assert_eq!(get(&quiet, MOVED), 0.0, "{quiet:?}");
    assert_eq!(get(&quiet, FAILED), 0.0, "{quiet:?}");

    // A new commit: the next check sees it and the run it starts fetches and applies it, an
    // hour before the run interval would have.
    f.cluster.lb_service("web", "b", &[], &[("TCP", 8081, 30080)]);
    f.render();
    let second = repo::head(&f.repo).expect("a head");
    assert_ne!(first, second);
    wait_for(WAIT, "the new head applied", || f.journal("lb-a").lb == Some(second))
        .unwrap_or_else(|e| panic!("{e}: {:?}", w.samples()));
    let after = w.wait_for("the second run counted", |m| get(m, RUNS) >= 2.0);
    assert_eq!(get(&after, MOVED), 1.0, "{after:?}");
    assert_eq!(get(&after, RUNS), 2.0, "{after:?}");
    assert_eq!(get(&after, "flipbit_applier_reloads_total"), 2.0, "{after:?}");
}

#[test]
fn check_interval_zero_leaves_one_fetch_per_run_interval() {
    let Some(f) = Fleet::start(212) else { return };
    f.cluster.lb_service("web", "a", &[], &[("TCP", 8080, 30080)]);
    f.render();
    let first = repo::head(&f.repo).expect("a head");
    let w = Watch::start(&f, &["--check-interval", "0"]);
    w.wait_for("the first run", |m| get(m, RUNS) >= 1.0);
    f.cluster.lb_service("web", "b", &[], &[("TCP", 8081, 30080)]);
    f.render();
    // A second during which the default schedule would have checked ten times: with the checks
    // off the server is not asked again, so the new head waits for the next run interval.
    std::thread::sleep(Duration::from_secs(1));
    let samples = w.samples();
    assert_eq!(get(&samples, RUNS), 1.0, "{samples:?}");
    for series in [UNCHANGED, MOVED, FAILED] {
        assert_eq!(get(&samples, series), 0.0, "{series}: {samples:?}");
    }
    assert_eq!(f.journal("lb-a").lb, Some(first));
    assert_eq!(w.get(RUNS), 1.0);
}
