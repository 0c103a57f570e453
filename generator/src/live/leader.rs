//! Leader election on a coordination.k8s.io/v1 Lease, so only one generator commits, pushes and
//! patches status. The holder renews every `renew`; a standby takes over once `renewTime +
//! leaseDurationSeconds` has passed. Every write carries the resourceVersion it read, so of two
//! candidates racing for an expired lease exactly one wins (the other gets 409 Conflict).

use std::time::Duration;

use flipbit_core::text::escaped;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
    pub renew: Duration,
}

/// Runs the election in the background; the receiver says whether this process leads now.
pub fn spawn(client: Client, settings: LeaseSettings) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
        loop {
            let leading = match attempt(&api, &settings).await {
                Ok(leading) => leading,
                Err(e) => {
                    tracing::warn!(error = %escaped(&e.to_string()), lease = %settings.name, "lease update failed");
                    false
                }
            };
            if *tx.borrow() != leading {
                tracing::info!(identity = %settings.identity, leading, "leadership changed");
            }
            tx.send_replace(leading);
            // A leader renews on schedule; a standby checks as often, to take over promptly.
            tokio::time::sleep(settings.renew).await;
        }
    });
    rx
}

async fn attempt(api: &Api<Lease>, s: &LeaseSettings) -> Result<bool, kube::Error> {
    let now = jiff::Timestamp::now();
    let duration_secs = i32::try_from(s.duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&s.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(s.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(s.identity.clone()),
                lease_duration_seconds: Some(duration_secs),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let held_for = spec
        .lease_duration_seconds
        .map_or(s.duration, |d| Duration::from_secs(d.max(0) as u64));
    let expired = match &spec.renew_time {
        Some(MicroTime(t)) => now.duration_since(*t).unsigned_abs() > held_for && now > *t,
        None => true,
    };
    if holder != s.identity && !holder.is_empty() && !expired {
        return Ok(false);
    }
    if holder != s.identity {
        spec.holder_identity = Some(s.identity.clone());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(duration_secs);
    // `lease` still carries the resourceVersion we read: a concurrent writer makes this a 409.
    match api.replace(&s.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
