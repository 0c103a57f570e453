//! Direct-to-pod upstreams (`flipbit.io/backends: pods`). Where the LB hosts can route to the pod
//! network (a BGP-routed CNI), a Service's upstreams are its ready endpoints at their own ports,
//! read from its EndpointSlices: no node port (so `allocateLoadBalancerNodePorts: false` works)
//! and no kube-proxy hop.
//!
//! Which endpoint port serves which Service port: the endpoint controller names every slice port
//! after the Service port it serves and has already resolved a named `targetPort` to each pod's
//! number, so a Service port takes the slice port of the same name and protocol (a Service's one
//! unnamed port, the slice's unnamed port). Slices of both address families count; FQDN slices
//! give a load balancer nothing to dial and are skipped. An endpoint counts while its `ready`
//! condition is not false, at its first address (the API calls an endpoint's addresses fungible,
//! and kube-proxy uses the first too).
//!
//! Every ready endpoint carries traffic: `maxNodesPerService` and `flipbit.io/max-nodes` bound how
//! many nodes a Service fans out to, each of which reaches every pod through kube-proxy; a bound
//! on pods would leave pods without any traffic, so it does not apply (a Service that sets
//! `flipbit.io/max-nodes` is told so). A port with no ready endpoint is not served, as a port
//! without nodes is not.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::annotations;
use crate::exposure::{ExposedService, Protocol};
use crate::model::{EndpointSliceInput, ServiceInput};
use crate::names::ServiceKey;
use crate::problem::Problem;
use crate::render::Upstreams;
use crate::traffic::Backends;

/// The EndpointSlices of each Service, by the namespace and Service name they carry.
#[derive(Debug, Default)]
pub struct SlicesByService<'a> {
    /// Namespace → Service name → slices (nested, so a lookup borrows nothing for `'a`).
    slices: BTreeMap<&'a str, BTreeMap<&'a str, Vec<&'a EndpointSliceInput>>>,
}

impl<'a> SlicesByService<'a> {
    /// Every slice, grouped.
    pub fn new(slices: &'a [EndpointSliceInput]) -> Self {
        Self::of(slices, |_, _| true)
    }

    /// Only the slices of Services (namespace, name) `wanted` accepts: a decision that renders a
    /// few Services groups only theirs.
    pub fn of(slices: &'a [EndpointSliceInput], wanted: impl Fn(&str, &str) -> bool) -> Self {
        let mut out: BTreeMap<&str, BTreeMap<&str, Vec<&EndpointSliceInput>>> = BTreeMap::new();
        for slice in slices {
            if wanted(&slice.namespace, &slice.service_name) {
                out.entry(&slice.namespace)
                    .or_default()
                    .entry(&slice.service_name)
                    .or_default()
                    .push(slice);
            }
        }
        Self { slices: out }
    }

    /// Only the slices of the Services `keys` (the pod-backed ones a decision renders).
    pub fn of_services<'k>(slices: &'a [EndpointSliceInput], keys: impl IntoIterator<Item = &'k ServiceKey>) -> Self {
        let wanted: BTreeSet<(&str, &str)> = keys
            .into_iter()
            .map(|k| (k.namespace.as_str(), k.name.as_str()))
            .collect();
        match wanted.is_empty() {
            true => Self::default(),
            false => Self::of(slices, |ns, name| wanted.contains(&(ns, name))),
        }
    }

    /// The slices of `key` (none when it has none, or was not wanted).
    pub fn get(&self, key: &ServiceKey) -> &[&'a EndpointSliceInput] {
        self.slices
            .get(key.namespace.as_str())
            .and_then(|names| names.get(key.name.as_str()))
            .map_or(&[], Vec::as_slice)
    }
}

/// True when `svc` sends to its pods rather than to nodes.
pub fn pod_backed(svc: &ExposedService) -> bool {
    svc.settings.traffic.backends == Backends::Pods
}

/// The names of `svc`'s ports, in the order of `svc.ports`, read from its input (the validated
/// ports keep only what an LB needs, and a name is only needed to find a port's endpoints).
/// An empty name is no name.
pub fn port_names(svc: &ExposedService, input: &ServiceInput) -> Vec<Option<String>> {
    svc.ports
        .iter()
        .map(|p| {
            input
                .ports
                .iter()
                .find(|i| i.port == i32::from(p.port) && protocol(i.protocol.as_deref()) == Some(p.protocol))
                .and_then(|i| i.name.clone())
                .filter(|n| !n.is_empty())
        })
        .collect()
}

/// The upstreams of each of `svc`'s ports (named `port_names`): the ready endpoints of `slices`
/// at the slice port of the same name and protocol, sorted, each once.
pub fn upstreams(svc: &ExposedService, port_names: &[Option<String>], slices: &[&EndpointSliceInput]) -> Upstreams {
    Upstreams(
        svc.ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let name = port_names.get(i).and_then(|n| n.as_deref()).unwrap_or("");
                let mut out = BTreeSet::new();
                for slice in slices {
                    out.extend(ready_at(slice, name, p.protocol));
                }
                out.into_iter().collect()
            })
            .collect(),
    )
}

/// Every address a Service's ports send to, once, sorted: what its summary and commit messages
/// name.
pub fn addresses(upstreams: &Upstreams) -> Arc<[SocketAddr]> {
    let all: BTreeSet<SocketAddr> = upstreams.0.iter().flatten().copied().collect();
    all.into_iter().collect()
}

/// The first output format whose grammar lets a Service's ports send to different hosts
/// (`crate::format`): format 1 appliers refuse a file whose ports' server lists differ.
pub const PER_PORT_UPSTREAMS_FORMAT: u32 = 2;

/// True when every port that has upstreams sends to the same hosts, in the same order, as a
/// format-1 applier requires: the usual case, where every pod serves every port. Pods that
/// serve different ports (during a rollout that adds a named port) need
/// [`PER_PORT_UPSTREAMS_FORMAT`].
pub fn alike_per_port(upstreams: &Upstreams) -> bool {
    let mut served = upstreams.0.iter().filter(|port| !port.is_empty());
    let Some(first) = served.next() else {
        return true;
    };
    served.all(|port| port.iter().map(SocketAddr::ip).eq(first.iter().map(SocketAddr::ip)))
}

/// A warning for settings that mean nothing to a pod-backed Service.
pub fn warnings(svc: &ExposedService) -> Option<Problem> {
    (pod_backed(svc) && svc.settings.max_nodes.is_some()).then(|| {
        Problem::service_warning(
            &svc.key,
            annotations::field(annotations::MAX_NODES),
            "has no effect with flipbit.io/backends: pods: every ready endpoint carries traffic",
        )
    })
}

/// The ready endpoints of `slice` at its port named `name` for `protocol`; none when the slice
/// has no such port, or its family is not an IP family.
fn ready_at<'s>(
    slice: &'s EndpointSliceInput,
    name: &str,
    protocol: Protocol,
) -> impl Iterator<Item = SocketAddr> + 's {
    let v4 = match slice.address_type.as_str() {
        "IPv4" => Some(true),
        "IPv6" => Some(false),
        _ => None,
    };
    let port = slice
        .ports
        .iter()
        .find(|sp| sp.name.as_deref().unwrap_or("") == name && self::protocol(sp.protocol.as_deref()) == Some(protocol))
        .and_then(|sp| sp.port)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n != 0);
    let usable = v4.zip(port);
    slice
        .endpoints
        .iter()
        .filter(move |_| usable.is_some())
        .filter(|e| e.ready != Some(false))
        .filter_map(move |e| {
            let (v4, port) = usable?;
            let ip: IpAddr = e.addresses.first()?.trim().parse().ok()?;
            (ip.is_ipv4() == v4 && dialable(&ip)).then_some(SocketAddr::new(ip, port))
        })
}

/// An address an LB host may send to: not unspecified, multicast, broadcast or link-local (the
/// API server already refuses these in endpoints; not trusting that keeps a cloud's metadata
/// address, 169.254.169.254, out of the LB's upstreams). Loopback is allowed: the API server
/// refuses it for endpoints too, and the tests' stand-in pods live there.
fn dialable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast() || v4.is_link_local()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast() || v6.is_unicast_link_local()),
    }
}

/// A port's protocol as written (`TCP` when absent); `None` for one an LB does not carry.
fn protocol(written: Option<&str>) -> Option<Protocol> {
    match written.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
