//! The fleet view of `flipbit-generator run --dns-server` (docs/design.md §5.6): every
//! `--fleet-refresh` seconds, apart from the decision cycles (a cycle at 50,000 Services must not
//! wait on DNS), it reads the state each LB host publishes and sets the `flipbit_fleet_*` gauges;
//! on the lease holder, a Service whose address is on a host its peers withdrew from DNS gets a
//! `HostWithdrawn` Warning Event naming the host, once per withdrawal. The queries are the
//! appliers' own (`flipbit_applier::status::published`) and need no key.

mod view;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource};
use tokio::sync::watch;

use flipbit_applier::dns::lookup::Lookup;
use flipbit_applier::status::published;
use flipbit_core::config::Config;
use flipbit_core::ledger::Ledger;
use flipbit_core::text::escaped;

use super::metrics::{HostLabel, Metrics};
use view::{Announce, Announced, Counts};

/// Events sent per refresh at most; the rest follow on the next refreshes.
const EVENTS_PER_REFRESH: usize = 200;

#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// The DNS server to query.
    pub server: SocketAddr,
    /// The zone of the state records; `None`: flipbit.yaml's.
    pub zone: Option<String>,
    /// Time between two reads.
    pub every: Duration,
    /// Time to wait for each answer.
    pub timeout: Duration,
}

/// What the last committed cycle decided, as the fleet view needs it (the ledger is a persistent
/// map: handing it over copies nothing).
#[derive(Debug, Clone)]
pub struct Latest {
    /// The head of the branch the LB hosts follow.
    pub head: String,
    pub config: Config,
    pub ledger: Ledger,
}

/// The latest decision, set by each cycle, read by each refresh.
pub type LatestSlot = Arc<Mutex<Option<Arc<Latest>>>>;

/// Everything the refresh loop needs from the live loop.
pub struct Wiring {
    pub latest: LatestSlot,
    pub leading: watch::Receiver<bool>,
    pub client: Client,
    pub identity: String,
    pub services: Store<Service>,
    pub metrics: Arc<Metrics>,
}

/// Starts the refresh loop.
pub fn spawn(settings: FleetSettings, wiring: Wiring) {
    tokio::spawn(async move {
        let reporter = Reporter {
            controller: "flipbit-generator".into(),
            instance: Some(wiring.identity.clone()),
        };
        let recorder = Recorder::new(wiring.client.clone(), reporter);
        let mut announced = Announced::default();
        let mut labelled: BTreeSet<String> = BTreeSet::new();
        let mut ticks = tokio::time::interval(settings.every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let latest = wiring.latest.lock().ok().and_then(|l| l.clone());
            let Some(latest) = latest else { continue };
            let Some(states) = read(&settings, &latest, &wiring.metrics).await else {
                continue;
            };
            let counts = view::counts(&latest.config, &latest.head, &states);
            set_gauges(&wiring.metrics, &counts, &mut labelled);
            if *wiring.leading.borrow() {
                for announce in announced.due(&latest.ledger, &states, EVENTS_PER_REFRESH) {
                    tell(&recorder, &wiring.services, &announce).await;
                }
            }
        }
    });
}

/// The hosts' published states, or `None` (counted and logged) when DNS could not be read.
async fn read(
    settings: &FleetSettings,
    latest: &Latest,
    metrics: &Metrics,
) -> Option<std::collections::BTreeMap<flipbit_core::names::LbHostName, published::Published>> {
    let lookup = Lookup {
        server: settings.server,
        timeout: settings.timeout,
    };
    let zone = settings.zone.clone().unwrap_or_else(|| latest.config.zone.clone());
    let hosts: Vec<_> = latest.config.lb_hosts.iter().map(|h| h.name.clone()).collect();
    let read = tokio::task::spawn_blocking(move || published::read(&lookup, &zone, &hosts)).await;
    match read {
        Ok(Ok(states)) => {
            metrics
                .fleet
                .last_refresh_seconds
                .set(jiff::Timestamp::now().as_millisecond() as f64 / 1000.0);
            Some(states)
        }
        Ok(Err(e)) => {
            metrics.fleet.refresh_failures.inc();
            tracing::warn!(error = %escaped(&format!("{e:#}")), "reading the fleet's published state failed; retrying");
            None
        }
        Err(e) => {
            metrics.fleet.refresh_failures.inc();
            tracing::error!(error = %e, "reading the fleet's published state panicked");
            None
        }
    }
}

fn set_gauges(metrics: &Metrics, counts: &Counts, labelled: &mut BTreeSet<String>) {
    let fleet = &metrics.fleet;
    let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
    fleet.hosts.set(n(counts.hosts));
    fleet.behind_head.set(n(counts.behind_head));
    fleet.withdrawn.set(n(counts.withdrawn));
    fleet.failed.set(n(counts.failed));
    fleet.unknown.set(n(counts.unknown));
    let families = [
        &fleet.host_at_head,
        &fleet.host_serving,
        &fleet.host_withdrawn,
        &fleet.host_last_run,
    ];
    // Hosts that left flipbit.yaml leave the per-host gauges.
    let now: BTreeSet<String> = counts.per_host.iter().map(|h| h.host.clone()).collect();
    for gone in labelled.difference(&now) {
        let label = HostLabel { lb_host: gone.clone() };
        for family in families {
            family.remove(&label);
        }
    }
    *labelled = now;
    for h in &counts.per_host {
        let label = HostLabel {
            lb_host: h.host.clone(),
        };
        fleet.host_at_head.get_or_create(&label).set(h.at_head.into());
        fleet.host_serving.get_or_create(&label).set(h.serving.into());
        fleet.host_withdrawn.get_or_create(&label).set(h.withdrawn.into());
        match h.last_run {
            Some(at) => {
                fleet
                    .host_last_run
                    .get_or_create(&label)
                    .set(i64::try_from(at).unwrap_or(i64::MAX));
            }
            None => {
                fleet.host_last_run.remove(&label);
            }
        }
    }
}

/// The `HostWithdrawn` Event on one Service, if it still exists.
async fn tell(recorder: &Recorder, services: &Store<Service>, announce: &Announce) {
    let reference = ObjectRef::new(announce.key.name.as_str()).within(announce.key.namespace.as_str());
    let Some(svc) = services.get(&reference) else { return };
    let addresses: Vec<String> = announce.addresses.iter().map(ToString::to_string).collect();
    let event = Event {
        type_: EventType::Warning,
        reason: "HostWithdrawn".into(),
        note: Some(format!(
            "LB host {} looked down to its peers, which took its records out of DNS: {} no longer answers for this Service until {} serves again; its other LB hosts still do",
            announce.host,
            addresses.join(", "),
            announce.host
        )),
        action: "Withdraw".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &svc.object_ref(&())).await {
        tracing::warn!(service = %announce.key, error = %escaped(&e.to_string()), "publishing an Event failed");
    }
}
