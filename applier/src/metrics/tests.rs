use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, UNIX_EPOCH};

use prometheus_parse::{Scrape, Value};

use super::*;

/// `text` read by a Prometheus text-format parser that is not ours, with what it leaves unsaid
/// checked too (it skips lines it cannot read): every sample line became a sample, every sample
/// has a TYPE and a HELP, no series is given twice. Returns the samples by series.
pub fn parse_strictly(text: &str) -> BTreeMap<String, Value> {
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
    let sample_lines = text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count();
    assert_eq!(
        scrape.samples.len(),
        sample_lines,
        "a line was not read as a sample:\n{text}"
    );
    let mut out = BTreeMap::new();
    for sample in scrape.samples {
        assert!(
            matches!(sample.value, Value::Counter(_) | Value::Gauge(_)),
            "{} has no TYPE",
            sample.metric
        );
        assert!(
            scrape.docs.contains_key(&sample.metric),
            "{} has no HELP",
            sample.metric
        );
        assert!(
            sample.metric.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "{}",
            sample.metric
        );
        let labels: BTreeMap<_, _> = sample.labels.iter().collect();
        let series = format!("{}{labels:?}", sample.metric);
        assert!(out.insert(series.clone(), sample.value).is_none(), "{series} twice");
    }
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).unwrap_or_default();
        assert!(
            !line.ends_with(" counter") || name.ends_with("_total"),
            "counter {name} lacks _total"
        );
    }
    out
}

fn value(samples: &BTreeMap<String, Value>, series: &str) -> f64 {
    match samples.get(series) {
        Some(Value::Counter(v) | Value::Gauge(v)) => *v,
        other => panic!("{series}: {other:?} in {:?}", samples.keys().collect::<Vec<_>>()),
    }
}

/// Asserts each (series, value) of `want` in `samples`.
fn assert_values(samples: &BTreeMap<String, Value>, want: &[(&str, f64)]) {
    for &(series, v) in want {
        assert_eq!(value(samples, series), v, "{series}");
    }
}

fn reloaded() -> Observed {
    Observed {
        reloaded: true,
        withheld: 1,
        lb_time: Duration::from_millis(250),
        dns_time: Some(Duration::from_millis(40)),
        dns_added: 3,
        dns_deleted: 1,
        applied: CommitId::from_str("0123456789abcdef0123456789abcdef01234567").ok(),
        ..Observed::default()
    }
}

#[test]
fn the_text_parses_and_says_what_the_runs_did() {
    let mut m = Metrics::default();
    let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    m.record_run(&reloaded(), at);
    m.record_applied(reloaded().applied, |_| Some(1_699_999_000));
    m.record_run(
        &Observed {
            failure: Some(("lb", Cause::Reload)),
            ..Observed::default()
        },
        at + Duration::from_secs(15),
    );
    m.record_peers_down(1);
    m.record_withdrawals(1);
    let samples = parse_strictly(&m.render());
    assert_values(
        &samples,
        &[
            ("flipbit_applier_runs_total{}", 2.0),
            ("flipbit_applier_reloads_total{}", 1.0),
            (
                r#"flipbit_applier_failures_total{"cause": "reload", "step": "lb"}"#,
                1.0,
            ),
            (r#"flipbit_applier_failures_total{"cause": "dns", "step": "dns"}"#, 0.0),
            ("flipbit_applier_last_run_success{}", 0.0),
            ("flipbit_applier_last_run_timestamp_seconds{}", 1_700_000_015.0),
            ("flipbit_applier_applied_commit_timestamp_seconds{}", 1_699_999_000.0),
            ("flipbit_applier_dns_records_added_total{}", 3.0),
            ("flipbit_applier_peers_down{}", 1.0),
            ("flipbit_applier_withdrawals_total{}", 1.0),
        ],
    );
    // The failed run did not reach DNS: no DNS duration is claimed for it.
    assert!(!samples.contains_key("flipbit_applier_dns_step_duration_seconds{}"));
}

#[test]
fn counters_resume_from_the_last_textfile_and_gauges_do_not() {
    let mut first = Metrics::default();
    first.record_run(&reloaded(), UNIX_EPOCH);
    first.record_run(&Observed::not_started(), UNIX_EPOCH);
    first.record_withdrawals(2);
    let mut next = Metrics::resume(Some(&first.render()));
    assert!(
        !next.render().contains("last_run_success"),
        "gauges are the last run's alone"
    );
    next.record_run(&Observed::default(), UNIX_EPOCH);
    let samples = parse_strictly(&next.render());
    assert_values(
        &samples,
        &[
            ("flipbit_applier_runs_total{}", 3.0),
            ("flipbit_applier_reloads_total{}", 1.0),
            ("flipbit_applier_withdrawals_total{}", 2.0),
            (r#"flipbit_applier_failures_total{"cause": "other", "step": "lb"}"#, 1.0),
        ],
    );
    // A file this code did not write starts the counters afresh.
    let fresh = Metrics::resume(Some("flipbit_applier_runs_total{x=\"1\"} 9\ngarbage\n"));
    assert_eq!(fresh.runs, 0);
}

#[test]
fn the_commit_time_is_read_once_per_commit() {
    let mut m = Metrics::default();
    let commit = reloaded().applied;
    let mut reads = BTreeSet::new();
    for i in 0..3 {
        m.record_applied(commit, |c| {
            reads.insert(i);
            Some(c.as_bytes()[0].into())
        });
    }
    assert_eq!(reads.len(), 1);
    m.record_applied(None, |_| Some(1));
    assert!(!m.render().contains("applied_commit"));
}
