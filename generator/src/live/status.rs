//! What the cluster is told after a cycle: `status.loadBalancer.ingress` of our LoadBalancer
//! Services (so `kubectl get svc` shows EXTERNAL-IP), and Events on Services for allocations,
//! withdrawals and problems. Only the leader calls this, and only with a decision that is
//! committed, so the status never shows an address that is not in Git. Nothing here talks to
//! the API server: the wishes go to the [`Outbox`], whose own task writes them, so a slow API
//! server never holds back the next decision.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use kube::Resource;
use tokio::time::Instant;

use flipbit_core::allocate::AddressEvent;
use flipbit_core::names::ServiceKey;
use flipbit_core::problem::Problem;

use super::outbox::{EventWish, Ingress, Outbox, Queue, StatusWish};
use crate::cycle::Outcome;

pub struct StatusReporter {
    outbox: Arc<Outbox>,
    /// Problems already reported per Service, so a resync does not repeat an Event.
    reported: BTreeMap<ServiceKey, BTreeSet<String>>,
    /// The outbox's epoch `reported` belongs to: a change of leadership dropped what was pending,
    /// so a new term reports every problem again.
    epoch: u64,
}

impl StatusReporter {
    pub fn new(outbox: Arc<Outbox>) -> Self {
        Self {
            outbox,
            reported: BTreeMap::new(),
            epoch: 0,
        }
    }

    /// Hands the cycle's status and Events to the outbox: map updates under one lock, no I/O.
    pub fn report(&mut self, services: &[Arc<Service>], outcome: &Outcome) {
        let by_key: BTreeMap<ServiceKey, &Service> = services
            .iter()
            .filter_map(|s| {
                let key = ServiceKey::new(s.metadata.namespace.as_deref()?, s.metadata.name.as_deref()?).ok()?;
                Some((key, s.as_ref()))
            })
            .collect();
        let mut events = Vec::new();
        if outcome.committed.is_some() {
            address_events(&by_key, &outcome.decision.events, &mut events);
        }
        let wishes: Vec<(&ServiceKey, StatusWish)> = by_key
            .iter()
            .filter_map(|(key, svc)| Some((key, status(key, svc, outcome)?)))
            .collect();
        let reported = &mut self.reported;
        let epoch = &mut self.epoch;
        self.outbox.submit(|queue: &mut Queue| {
            if queue.epoch() != *epoch {
                reported.clear();
                *epoch = queue.epoch();
            }
            problems(reported, &by_key, &outcome.problems, &mut events);
            let now = Instant::now();
            for event in events {
                queue.event(event, now);
            }
            for (key, wish) in wishes {
                queue.status(key, wish);
            }
            queue.retain_services(|k| by_key.contains_key(k));
        });
    }
}

fn wish(svc: &Service, key: &ServiceKey, warning: bool, reason: &'static str, parts: Vec<String>) -> EventWish {
    EventWish {
        key: key.clone(),
        regarding: svc.object_ref(&()),
        warning,
        reason,
        parts,
    }
}

/// One Event per Service per reason, naming all its hosts (a Service on three LB hosts gets one
/// `AddressAllocated`, not three).
fn address_events(by_key: &BTreeMap<ServiceKey, &Service>, decided: &[AddressEvent], out: &mut Vec<EventWish>) {
    let mut grouped: BTreeMap<(&ServiceKey, &'static str), Vec<String>> = BTreeMap::new();
    for event in decided {
        let (key, reason, part) = match event {
            AddressEvent::Allocated { key, host, ip } => (key, "AddressAllocated", format!("{ip} on LB host {host}")),
            AddressEvent::Moved { key, host, from, to } => (
                key,
                "AddressMoved",
                format!("{from} is no longer in a pool of {host} that admits this Service; now {to}"),
            ),
            AddressEvent::Requested { key, host, to, .. } => {
                (key, "AddressAllocated", format!("{to} on LB host {host}, as requested"))
            }
            AddressEvent::Dropped { key, host, ip } => {
                (key, "AddressReleased", format!("{ip} on {host} is no longer used"))
            }
            AddressEvent::Reclaimed { key } => {
                (key, "AddressesReclaimed", "exposed again on its held addresses".into())
            }
            AddressEvent::Withdrawn { key } | AddressEvent::Freed { key } => {
                // The Service is gone or no longer ours; a log line is all that is left to say.
                tracing::info!(service = %key, ?event, "addresses withdrawn or freed");
                continue;
            }
        };
        grouped.entry((key, reason)).or_default().push(part);
    }
    for ((key, reason), parts) in grouped {
        if let Some(svc) = by_key.get(key) {
            out.push(wish(svc, key, false, reason, parts));
        }
    }
}

/// New problem lines as Events, one per Service per reason; remembers what was reported.
fn problems(
    reported: &mut BTreeMap<ServiceKey, BTreeSet<String>>,
    by_key: &BTreeMap<ServiceKey, &Service>,
    problems: &[Problem],
    out: &mut Vec<EventWish>,
) {
    let mut now: BTreeMap<ServiceKey, BTreeSet<String>> = BTreeMap::new();
    for p in problems {
        let Some(key) = p.object.service() else {
            continue;
        };
        now.entry(key.clone()).or_default().insert(p.to_string());
    }
    for (key, lines) in &now {
        let Some(svc) = by_key.get(key) else { continue };
        let known = reported.get(key);
        let mut grouped: BTreeMap<&'static str, (bool, Vec<String>)> = BTreeMap::new();
        for line in lines.iter().filter(|l| known.is_none_or(|k| !k.contains(*l))) {
            let (warning, reason) = reason(line);
            // Only an error leaves the Service as it was; a warning comes with the change.
            let note = if line.starts_with("error") {
                format!("{line}; the Service keeps its last committed state")
            } else {
                line.clone()
            };
            let entry = grouped.entry(reason).or_default();
            entry.0 |= warning;
            entry.1.push(note);
        }
        for (reason, (warning, parts)) in grouped {
            out.push(wish(svc, key, warning, reason, parts));
        }
    }
    *reported = now;
}

/// What `status.loadBalancer.ingress` of a LoadBalancer Service of ours should hold (the
/// committed addresses, or nothing when it is not exposed), or None when it is not ours to
/// write (not a LoadBalancer, or held for an error).
fn status(key: &ServiceKey, svc: &Service, outcome: &Outcome) -> Option<StatusWish> {
    let spec = svc.spec.as_ref();
    if spec.and_then(|s| s.type_.as_deref()) != Some("LoadBalancer") || outcome.decision.kept.contains(key) {
        return None;
    }
    let class = spec.and_then(|s| s.load_balancer_class.as_deref());
    let ours = match class {
        Some(c) => c == outcome.config.load_balancer_class,
        None => outcome.config.manage_classless_load_balancers,
    };
    let have: Vec<IpAddr> = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ing| ing.iter().filter_map(|i| i.ip.as_deref()?.parse().ok()).collect())
        .unwrap_or_default();
    let in_our_pools = |ip: &IpAddr| outcome.config.lb_hosts.iter().any(|h| h.in_pools(*ip));
    let want: Ingress = if ours {
        outcome
            .decision
            .exposed
            .get(key)
            .map(|s| s.addresses.values().chain(s.addresses_v6.values()).copied().collect())
            .unwrap_or_default()
    } else {
        // A Service that left us (another class now): take back only the addresses that are
        // ours, and leave whatever its new controller wrote.
        have.iter().filter(|ip| !in_our_pools(ip)).copied().collect()
    };
    if want == have.iter().copied().collect::<Ingress>() {
        return Some(StatusWish::Shown);
    }
    Some(StatusWish::Show {
        ingress: want,
        seen: svc.metadata.resource_version.clone(),
    })
}

/// The Event reason for a problem line, so `kubectl get events` can be filtered by cause.
/// True for a Warning.
fn reason(line: &str) -> (bool, &'static str) {
    if line.contains(": on hold: ") {
        (true, "OnHold")
    } else if line.contains("carries TCP only") {
        (true, "PortNotServed")
    } else if !line.starts_with("error") {
        (false, "ServiceWarning")
    } else if line.contains("no free address") {
        (true, "PoolExhausted")
    } else if line.contains("metadata.annotations") {
        (true, "InvalidAnnotation")
    } else if line.contains(": spec.") {
        (true, "InvalidSpec")
    } else {
        (true, "Skipped")
    }
}
