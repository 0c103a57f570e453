//! The applier's Prometheus metrics (text format 0.0.4), from each [`Run`]: what it did, how long
//! its steps took, how old the commit it serves is, and what it saw of its peers. Written after
//! every run to `--metrics-file` (node_exporter's textfile collector, `textfile`) and served by
//! `watch --metrics-listen` (`http`).
//!
//! Counters count across runs: in `watch` they live in the process; a one-shot `apply` is a new
//! process each time, so it starts from the counters of the textfile it wrote last ([`Metrics::
//! resume`], `watch` does the same at its start). A textfile that is missing or was not written by
//! this code starts them at 0, which Prometheus reads as a counter reset. Gauges describe the
//! last run only.

pub mod http;
pub mod observer;
pub mod textfile;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flipbit_core::fleet::Cause;
use flipbit_store::CommitId;

use crate::apply::{Applied, Run};
use crate::dns_step::DnsOutcome;

const PREFIX: &str = "flipbit_applier";

/// The steps a failure is counted against.
const STEPS: [&str; 2] = ["lb", "dns"];

/// What a `watch` head check found (`crate::watch::Checked`).
const CHECK_RESULTS: [&str; 3] = ["unchanged", "moved", "failed"];

/// What the metrics take from one run (a [`Run`], or a run that could not start).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// The step that failed and why (`lb` covers the fetch and the rollout gate too).
    pub failure: Option<(&'static str, Cause)>,
    /// The load balancer was reloaded onto a new release.
    pub reloaded: bool,
    /// The rollout held the head back.
    pub held: bool,
    /// Services withheld from this host (their sockets are taken).
    pub withheld: usize,
    pub lb_time: Duration,
    /// The DNS step's time, when it ran.
    pub dns_time: Option<Duration>,
    pub dns_added: usize,
    pub dns_deleted: usize,
    /// The commit this host has applied (the journal's).
    pub applied: Option<CommitId>,
}

impl Observed {
    pub fn of(run: &Run) -> Self {
        let failure = crate::status::local::failure_of(run).map(|(step, f)| (step, f.cause));
        let (reloaded, held, withheld) = match &run.lb {
            Ok((applied, withheld)) => (
                matches!(applied, Applied::Reloaded { .. }),
                matches!(applied, Applied::Held { .. }),
                withheld.len(),
            ),
            Err(_) => (false, false, 0),
        };
        let (dns_added, dns_deleted) = match &run.dns {
            Some(Ok(DnsOutcome::Applied { adds, deletes, .. })) => (*adds, *deletes),
            _ => (0, 0),
        };
        Observed {
            failure,
            reloaded,
            held,
            withheld,
            lb_time: run.lb_time,
            dns_time: run.dns.is_some().then_some(run.dns_time),
            dns_added,
            dns_deleted,
            applied: run.journal.lb,
        }
    }

    /// A run that ended before its steps (the state dir, the lock).
    pub fn not_started() -> Self {
        Observed {
            failure: Some(("lb", Cause::Other)),
            ..Observed::default()
        }
    }
}

/// The gauges of the last run.
#[derive(Debug, Clone, Default)]
struct Last {
    at: f64,
    ok: bool,
    lb_seconds: f64,
    dns_seconds: Option<f64>,
    withheld: usize,
    held: bool,
}

#[derive(Debug, Clone)]
pub struct Metrics {
    runs: u64,
    failures: BTreeMap<(&'static str, Cause), u64>,
    reloads: u64,
    dns_added: u64,
    dns_deleted: u64,
    withdrawals: u64,
    /// `watch`'s checks of the advertised branch head, by result.
    head_checks: BTreeMap<&'static str, u64>,
    last: Option<Last>,
    peers_down: Option<usize>,
    /// The applied commit and its commit time (read again only when the commit changes).
    applied: Option<(CommitId, i64)>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            runs: 0,
            failures: STEPS
                .iter()
                .flat_map(|step| Cause::ALL.map(|cause| ((*step, cause), 0)))
                .collect(),
            reloads: 0,
            dns_added: 0,
            dns_deleted: 0,
            withdrawals: 0,
            head_checks: CHECK_RESULTS.iter().map(|r| (*r, 0)).collect(),
            last: None,
            peers_down: None,
            applied: None,
        }
    }
}

fn name(metric: &str) -> String {
    format!("{PREFIX}_{metric}")
}

fn failure_series(step: &str, cause: Cause) -> String {
    format!(
        "{}{{step=\"{step}\",cause=\"{}\"}}",
        name("failures_total"),
        cause.code()
    )
}

impl Metrics {
    /// Counters carried over from `previous`, the text an earlier run wrote: each series this
    /// code writes is read back by its exact name and labels; anything else is ignored.
    pub fn resume(previous: Option<&str>) -> Self {
        let mut metrics = Metrics::default();
        let Some(text) = previous else { return metrics };
        let values: BTreeMap<&str, u64> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series, value.parse().ok()?))
            })
            .collect();
        for (series, counter) in metrics.counters_mut() {
            if let Some(v) = values.get(series.as_str()) {
                *counter = *v;
            }
        }
        metrics
    }

    fn counters_mut(&mut self) -> Vec<(String, &mut u64)> {
        let mut out = vec![
            (name("runs_total"), &mut self.runs),
            (name("reloads_total"), &mut self.reloads),
            (name("dns_records_added_total"), &mut self.dns_added),
            (name("dns_records_deleted_total"), &mut self.dns_deleted),
            (name("withdrawals_total"), &mut self.withdrawals),
        ];
        for ((step, cause), n) in &mut self.failures {
            out.push((failure_series(step, *cause), n));
        }
        for (result, n) in &mut self.head_checks {
            out.push((format!("{}{{result=\"{result}\"}}", name("head_checks_total")), n));
        }
        out
    }

    /// Counts one run that ended at `at`.
    pub fn record_run(&mut self, run: &Observed, at: SystemTime) {
        self.runs += 1;
        if let Some(key) = run.failure {
            *self.failures.entry(key).or_default() += 1;
        }
        self.reloads += u64::from(run.reloaded);
        self.dns_added += run.dns_added as u64;
        self.dns_deleted += run.dns_deleted as u64;
        self.last = Some(Last {
            at: at.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()),
            ok: run.failure.is_none(),
            lb_seconds: run.lb_time.as_secs_f64(),
            dns_seconds: run.dns_time.map(|d| d.as_secs_f64()),
            withheld: run.withheld,
            held: run.held,
        });
    }

    /// The commit this host applied, and its commit time through `time` when it is a commit not
    /// seen before (a store read: once per new commit, not once per watch poll).
    pub fn record_applied(&mut self, commit: Option<CommitId>, time: impl FnOnce(CommitId) -> Option<i64>) {
        self.applied = match (commit, self.applied) {
            (Some(c), Some((known, t))) if c == known => Some((known, t)),
            (Some(c), _) => time(c).map(|t| (c, t)),
            (None, _) => None,
        };
    }

    /// Peers this host saw down in its last run (the fleet's peer watch).
    pub fn record_peers_down(&mut self, n: usize) {
        self.peers_down = Some(n);
    }

    /// One check of the advertised branch head between two `watch` runs, by its result (one of
    /// `unchanged`, `moved`, `failed`).
    pub fn record_head_check(&mut self, result: &'static str) {
        *self.head_checks.entry(result).or_default() += 1;
    }

    /// Peers this host withdrew from DNS in its last run.
    pub fn record_withdrawals(&mut self, n: usize) {
        self.withdrawals += n as u64;
    }

    /// The text format, every metric with its HELP and TYPE.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut metric = |metric: &str, kind: &str, help: &str, samples: &[(String, String)]| {
            let full = name(metric);
            let _ = writeln!(out, "# HELP {full} {help}\n# TYPE {full} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{full}{labels} {value}");
            }
        };
        let one = |v: String| vec![(String::new(), v)];
        metric(
            "runs_total",
            "counter",
            "Runs of the applier (an apply, or a watch poll).",
            &one(self.runs.to_string()),
        );
        let failures: Vec<(String, String)> = self
            .failures
            .iter()
            .map(|((step, cause), n)| (format!("{{step=\"{step}\",cause=\"{}\"}}", cause.code()), n.to_string()))
            .collect();
        metric(
            "failures_total",
            "counter",
            "Runs that failed, by step (lb: fetch, checks, load balancer; dns) and cause code.",
            &failures,
        );
        metric(
            "reloads_total",
            "counter",
            "Reloads of the load balancer onto a new release.",
            &one(self.reloads.to_string()),
        );
        metric(
            "dns_records_added_total",
            "counter",
            "Address records this host added by DNS UPDATE.",
            &one(self.dns_added.to_string()),
        );
        metric(
            "dns_records_deleted_total",
            "counter",
            "Address records this host deleted by DNS UPDATE.",
            &one(self.dns_deleted.to_string()),
        );
        metric(
            "withdrawals_total",
            "counter",
            "Peers this host withdrew from DNS (they looked down).",
            &one(self.withdrawals.to_string()),
        );
        let checks: Vec<(String, String)> = self
            .head_checks
            .iter()
            .map(|(result, n)| (format!("{{result=\"{result}\"}}"), n.to_string()))
            .collect();
        metric(
            "head_checks_total",
            "counter",
            "watch: checks of the branch head the Git server advertises (no fetch), by result; moved starts a run.",
            &checks,
        );
        if let Some(peers) = self.peers_down {
            metric(
                "peers_down",
                "gauge",
                "Peers seen down in the last run.",
                &one(peers.to_string()),
            );
        }
        if let Some(last) = &self.last {
            metric(
                "last_run_timestamp_seconds",
                "gauge",
                "Unix time the last run ended.",
                &one(format!("{:.3}", last.at)),
            );
            metric(
                "last_run_success",
                "gauge",
                "1 when the last run failed in no step, else 0.",
                &one(u8::from(last.ok).to_string()),
            );
            metric(
                "lb_step_duration_seconds",
                "gauge",
                "Seconds the last run's fetch and load-balancer step took.",
                &one(format!("{:.6}", last.lb_seconds)),
            );
            if let Some(dns) = last.dns_seconds {
                metric(
                    "dns_step_duration_seconds",
                    "gauge",
                    "Seconds the last run's DNS step took.",
                    &one(format!("{dns:.6}")),
                );
            }
            metric(
                "withheld_services",
                "gauge",
                "Services withheld from this host in the last run (another process holds their socket).",
                &one(last.withheld.to_string()),
            );
            metric(
                "rollout_held",
                "gauge",
                "1 when the last run's head waits for an earlier rollout wave.",
                &one(u8::from(last.held).to_string()),
            );
        }
        if let Some((_, time)) = self.applied {
            metric(
                "applied_commit_timestamp_seconds",
                "gauge",
                "Commit time (Unix seconds) of the commit this host has applied.",
                &one(time.to_string()),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests;
