//! Prometheus metrics, with units in their names.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostLabel {
    pub lb_host: String,
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: Counter,
    pub commits: Counter,
    pub push_failures: Counter,
    pub allocations: Family<HostLabel, Gauge>,
    pub last_commit_seconds: Gauge<f64, AtomicU64>,
    pub leader: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("flipbit_generator");
        let reconciles = Counter::default();
        let commits = Counter::default();
        let push_failures = Counter::default();
        let allocations = Family::<HostLabel, Gauge>::default();
        let last_commit_seconds = Gauge::<f64, AtomicU64>::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Decision cycles run", reconciles.clone());
        registry.register("commits", "Commits pushed to the state repo", commits.clone());
        registry.register(
            "push_failures",
            "Cycles whose commit or push failed",
            push_failures.clone(),
        );
        registry.register(
            "allocations_in_use",
            "Addresses held in the ledger, per LB host",
            allocations.clone(),
        );
        registry.register(
            "last_commit_timestamp_seconds",
            "Unix time of the last pushed commit",
            last_commit_seconds.clone(),
        );
        registry.register("leader", "1 while this process holds the lease", leader.clone());
        Self {
            registry,
            reconciles,
            commits,
            push_failures,
            allocations,
            last_commit_seconds,
            leader,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
