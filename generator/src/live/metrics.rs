//! Prometheus metrics, with units in their names: the generator's own
//! (`flipbit_generator_*`) and, with `--dns-server`, the fleet as its LB hosts published it
//! (`flipbit_fleet_*`, see `fleet`), which describes the LB hosts rather than this process.

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

/// Which kind of write to the cluster failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteKind {
    pub kind: &'static str,
}

impl WriteKind {
    pub fn status() -> Self {
        Self { kind: "status" }
    }

    pub fn event() -> Self {
        Self { kind: "event" }
    }
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: Counter,
    /// Cycles started at once by a change after a quiet spell (the quiet period's leading edge).
    pub leading_edge_cycles: Counter,
    pub commits: Counter,
    pub push_failures: Counter,
    pub allocations: Family<HostLabel, Gauge>,
    pub last_commit_seconds: Gauge<f64, AtomicU64>,
    pub leader: Gauge,
    /// Status patches and Events waiting or in flight (see `outbox`).
    pub status_writes_pending: Gauge,
    pub status_write_failures: Family<WriteKind, Counter>,
    pub events_dropped: Counter,
    pub fleet: FleetMetrics,
}

/// The fleet view: what the LB hosts published, read every `--fleet-refresh` seconds.
#[derive(Default)]
pub struct FleetMetrics {
    pub hosts: Gauge,
    pub behind_head: Gauge,
    pub withdrawn: Gauge,
    pub failed: Gauge,
    pub unknown: Gauge,
    pub host_at_head: Family<HostLabel, Gauge>,
    pub host_serving: Family<HostLabel, Gauge>,
    pub host_withdrawn: Family<HostLabel, Gauge>,
    pub host_last_run: Family<HostLabel, Gauge>,
    pub refresh_failures: Counter,
    pub last_refresh_seconds: Gauge<f64, AtomicU64>,
}

impl FleetMetrics {
    fn register(&self, registry: &mut Registry) {
        let mut gauge = |name: &str, help: &str, g: &Gauge| registry.register(name, help, g.clone());
        gauge("flipbit_fleet_hosts", "LB hosts in flipbit.yaml", &self.hosts);
        gauge(
            "flipbit_fleet_hosts_behind_head",
            "LB hosts whose published applied commit is not the branch head",
            &self.behind_head,
        );
        gauge(
            "flipbit_fleet_hosts_withdrawn",
            "LB hosts whose records their peers withdrew from DNS",
            &self.withdrawn,
        );
        gauge(
            "flipbit_fleet_hosts_failed",
            "LB hosts whose last run failed",
            &self.failed,
        );
        gauge(
            "flipbit_fleet_hosts_unknown",
            "LB hosts with no readable published state",
            &self.unknown,
        );
        registry.register(
            "flipbit_fleet_host_at_head",
            "1 when the LB host's applied commit is the branch head",
            self.host_at_head.clone(),
        );
        registry.register(
            "flipbit_fleet_host_serving",
            "1 when the LB host's last run served its commit without a failure",
            self.host_serving.clone(),
        );
        registry.register(
            "flipbit_fleet_host_withdrawn",
            "1 when the LB host's records are withdrawn from DNS",
            self.host_withdrawn.clone(),
        );
        registry.register(
            "flipbit_fleet_host_last_run_timestamp_seconds",
            "Unix time of the LB host's last published run",
            self.host_last_run.clone(),
        );
        registry.register(
            "flipbit_fleet_refresh_failures",
            "Reads of the fleet's state that failed (DNS server unreachable or refusing)",
            self.refresh_failures.clone(),
        );
        registry.register(
            "flipbit_fleet_last_refresh_timestamp_seconds",
            "Unix time of the last successful read of the fleet's state",
            self.last_refresh_seconds.clone(),
        );
    }
}

impl Metrics {
    /// The generator's metrics; with `fleet`, the fleet view's too (registered only when it is
    /// on, so no zero claims that no host is withdrawn while nothing is read).
    pub fn new(fleet_view: bool) -> Self {
        // No registry prefix: the fleet's metrics are not the generator's.
        let mut registry = Registry::default();
        let reconciles = Counter::default();
        let leading_edge_cycles = Counter::default();
        let commits = Counter::default();
        let push_failures = Counter::default();
        let allocations = Family::<HostLabel, Gauge>::default();
        let last_commit_seconds = Gauge::<f64, AtomicU64>::default();
        let leader = Gauge::default();
        registry.register(
            "flipbit_generator_reconciles",
            "Decision cycles run",
            reconciles.clone(),
        );
        registry.register(
            "flipbit_generator_leading_edge_cycles",
            "Decision cycles started at once by a change after a quiet spell (no debounce wait)",
            leading_edge_cycles.clone(),
        );
        registry.register(
            "flipbit_generator_commits",
            "Commits pushed to the state repo",
            commits.clone(),
        );
        registry.register(
            "flipbit_generator_push_failures",
            "Cycles whose commit or push failed",
            push_failures.clone(),
        );
        registry.register(
            "flipbit_generator_allocations_in_use",
            "Addresses held in the ledger, per LB host",
            allocations.clone(),
        );
        registry.register(
            "flipbit_generator_last_commit_timestamp_seconds",
            "Unix time of the last pushed commit",
            last_commit_seconds.clone(),
        );
        registry.register(
            "flipbit_generator_leader",
            "1 while this process holds the lease",
            leader.clone(),
        );
        let status_writes_pending = Gauge::default();
        let status_write_failures = Family::<WriteKind, Counter>::default();
        let events_dropped = Counter::default();
        registry.register(
            "flipbit_generator_status_writes_pending",
            "Status patches and Events waiting or in flight; they never hold back a commit",
            status_writes_pending.clone(),
        );
        registry.register(
            "flipbit_generator_status_write_failures",
            "Failed status patches (kind=status) and Event creates (kind=event); retried with backoff",
            status_write_failures.clone(),
        );
        registry.register(
            "flipbit_generator_events_dropped",
            "Events not sent: over the per-Service rate limit, or failed too often",
            events_dropped.clone(),
        );
        let fleet = FleetMetrics::default();
        if fleet_view {
            fleet.register(&mut registry);
        }
        Self {
            registry,
            reconciles,
            leading_edge_cycles,
            commits,
            push_failures,
            allocations,
            last_commit_seconds,
            leader,
            status_writes_pending,
            status_write_failures,
            events_dropped,
            fleet,
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
        Self::new(false)
    }
}
