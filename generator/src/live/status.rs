//! What the cluster is told after a cycle: `status.loadBalancer.ingress` of our LoadBalancer
//! Services (so `kubectl get svc` shows EXTERNAL-IP), and Events on Services for allocations,
//! withdrawals and problems. Only the leader calls this, and only with a decision that is
//! committed, so the status never shows an address that is not in Git.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};
use serde_json::json;

use flipbit_core::allocate::AddressEvent;
use flipbit_core::names::ServiceKey;
use flipbit_core::problem::Problem;

use crate::cycle::Outcome;
use flipbit_core::text::escaped;

pub struct StatusWriter {
    client: Client,
    recorder: Recorder,
    /// Problems already reported per Service, so a resync does not repeat an Event.
    reported: BTreeMap<ServiceKey, BTreeSet<String>>,
}

impl StatusWriter {
    pub fn new(client: Client, identity: &str) -> Self {
        let reporter = Reporter {
            controller: "flipbit-generator".into(),
            instance: Some(identity.to_owned()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            reported: BTreeMap::new(),
        }
    }

    pub async fn report(&mut self, services: &[std::sync::Arc<Service>], outcome: &Outcome) {
        let by_key: BTreeMap<ServiceKey, &Service> = services
            .iter()
            .filter_map(|s| {
                let key = ServiceKey::new(s.metadata.namespace.as_deref()?, s.metadata.name.as_deref()?).ok()?;
                Some((key, s.as_ref()))
            })
            .collect();
        if outcome.committed.is_some() {
            for event in &outcome.decision.events {
                self.address_event(&by_key, event).await;
            }
        }
        self.problems(&by_key, &outcome.problems).await;
        for (key, svc) in &by_key {
            self.status(key, svc, outcome).await;
        }
    }

    async fn publish(&self, svc: &Service, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &svc.object_ref(&())).await {
            tracing::warn!(error = %escaped(&e.to_string()), "publishing an Event failed");
        }
    }

    async fn address_event(&self, by_key: &BTreeMap<ServiceKey, &Service>, event: &AddressEvent) {
        let (key, reason, note) = match event {
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
                return;
            }
        };
        if let Some(svc) = by_key.get(key) {
            self.publish(svc, EventType::Normal, reason, note).await;
        }
    }

    async fn problems(&mut self, by_key: &BTreeMap<ServiceKey, &Service>, problems: &[Problem]) {
        let mut now: BTreeMap<ServiceKey, BTreeSet<String>> = BTreeMap::new();
        for p in problems {
            let Some(key) = p
                .object
                .strip_prefix("Service ")
                .and_then(|k| k.parse::<ServiceKey>().ok())
            else {
                continue;
            };
            now.entry(key).or_default().insert(p.to_string());
        }
        for (key, lines) in &now {
            let Some(svc) = by_key.get(key) else { continue };
            let known = self.reported.get(key);
            for line in lines.iter().filter(|l| known.is_none_or(|k| !k.contains(*l))) {
                let (type_, reason) = reason(line);
                // Only an error leaves the Service as it was; a warning comes with the change.
                let note = if line.starts_with("error") {
                    format!("{line}; the Service keeps its last committed state")
                } else {
                    line.clone()
                };
                self.publish(svc, type_, reason, note).await;
            }
        }
        self.reported = now;
    }

    /// Patches `status.loadBalancer.ingress` to the committed addresses of a LoadBalancer Service
    /// of ours, or clears it when the Service is not exposed (and not held for an error).
    async fn status(&self, key: &ServiceKey, svc: &Service, outcome: &Outcome) {
        let spec = svc.spec.as_ref();
        if spec.and_then(|s| s.type_.as_deref()) != Some("LoadBalancer") || outcome.decision.kept.contains(key) {
            return;
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
        let want: BTreeSet<IpAddr> = if ours {
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
        if want == have.iter().copied().collect::<BTreeSet<_>>() {
            return;
        }
        let ingress = if want.is_empty() {
            serde_json::Value::Null
        } else {
            json!(
                want.iter()
                    .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
                    .collect::<Vec<_>>()
            )
        };
        let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
        let api: Api<Service> = Api::namespaced(self.client.clone(), key.namespace.as_str());
        match api
            .patch_status(key.name.as_str(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => tracing::info!(service = %key, addresses = ?want, "status updated"),
            Err(e) => {
                tracing::warn!(service = %key, error = %escaped(&e.to_string()), "status patch failed; retried on the next cycle")
            }
        }
    }
}

/// The Event reason for a problem line, so `kubectl get events` can be filtered by cause.
fn reason(line: &str) -> (EventType, &'static str) {
    if line.contains(": on hold: ") {
        (EventType::Warning, "OnHold")
    } else if line.contains("carries TCP only") {
        (EventType::Warning, "PortNotServed")
    } else if !line.starts_with("error") {
        (EventType::Normal, "ServiceWarning")
    } else if line.contains("no free address") {
        (EventType::Warning, "PoolExhausted")
    } else if line.contains("metadata.annotations") {
        (EventType::Warning, "InvalidAnnotation")
    } else if line.contains(": spec.") {
        (EventType::Warning, "InvalidSpec")
    } else {
        (EventType::Warning, "Skipped")
    }
}
