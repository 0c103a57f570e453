//! The cluster as the generator sees it: reflector stores of Services, Nodes and EndpointSlices,
//! fed by kube's watchers (which list, watch from a resourceVersion, and relist after a 410 or an
//! outage, keeping the last full state meanwhile). Every event that can change a decision bumps a
//! counter the main loop watches, so bursts coalesce. A Service event that changes nothing the
//! decisions read (its status, most often our own status patch coming back) bumps nothing: 10,000
//! status patches would otherwise keep the quiet period from ever settling, and each new Service
//! would wait out the longest delay.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use flipbit_core::model::Snapshot;

use crate::convert;
use flipbit_core::text::escaped;

pub struct Stores {
    pub services: Store<Service>,
    pub nodes: Store<Node>,
    pub slices: Store<EndpointSlice>,
}

/// Starts the three reflectors; `changes` is bumped on every event.
pub fn start(client: &Client, changes: watch::Sender<u64>) -> Stores {
    let changes = Arc::new(changes);
    Stores {
        services: spawn(Api::all(client.clone()), changes.clone(), Some(service_fingerprint)),
        nodes: spawn(Api::all(client.clone()), changes.clone(), None),
        slices: spawn(Api::all(client.clone()), changes, None),
    }
}

/// What the decisions read of a Service (`convert::service`), hashed: its status is not in it.
fn service_fingerprint(svc: &Service) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    convert::service(svc).hash(&mut h);
    h.finish()
}

/// With a `fingerprint`, an applied object whose fingerprint is unchanged is no change.
fn spawn<K>(api: Api<K>, changes: Arc<watch::Sender<u64>>, fingerprint: Option<fn(&K) -> u64>) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    tokio::spawn(async move {
        let mut seen: HashMap<(Option<String>, Option<String>), u64> = HashMap::new();
        stream
            .for_each(|event| {
                let changed = match (&event, fingerprint) {
                    (Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)), Some(fingerprint)) => {
                        let meta = obj.meta();
                        let key = (meta.namespace.clone(), meta.name.clone());
                        let print = fingerprint(obj);
                        seen.insert(key, print) != Some(print)
                    }
                    (Ok(watcher::Event::Delete(obj)), Some(_)) => {
                        let meta = obj.meta();
                        seen.remove(&(meta.namespace.clone(), meta.name.clone()));
                        true
                    }
                    _ => true,
                };
                match event {
                    Ok(_) if !changed => {}
                    Ok(_) => changes.send_modify(|n| *n = n.wrapping_add(1)),
                    // The watcher retries with backoff; the store keeps its last full state.
                    Err(e) => tracing::warn!(%kind, error = %escaped(&e.to_string()), "watch failed; retrying"),
                }
                futures::future::ready(())
            })
            .await;
    });
    reader
}

impl Stores {
    /// Waits until each store has completed its first full list.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        self.services.wait_until_ready().await?;
        self.nodes.wait_until_ready().await?;
        self.slices.wait_until_ready().await?;
        Ok(())
    }

    /// The cluster now, in the shape the decisions read.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            services: self.services.state().iter().map(|s| convert::service(s)).collect(),
            unreadable_services: Vec::new(),
            nodes: self.nodes.state().iter().map(|n| convert::node(n)).collect(),
            endpoint_slices: self
                .slices
                .state()
                .iter()
                .filter_map(|s| convert::endpoint_slice(s))
                .collect(),
        }
    }
}
