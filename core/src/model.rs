//! The cluster as the decisions see it: plain data, already lifted out of the Kubernetes types by
//! the generator's edge. Strings here are still untrusted; `exposure` and `nodes` validate them.
//! Serializable so `flipbit-generator render` can keep what it read from unchanged manifests in
//! its cache dir.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::names::ServiceKey;

/// One Service as read from the cluster or a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash, Serialize, Deserialize)]
pub struct ServiceInput {
    pub namespace: String,
    pub name: String,
    /// `spec.type`: `ClusterIP`, `NodePort`, `LoadBalancer`, `ExternalName`.
    pub service_type: String,
    pub load_balancer_class: Option<String>,
    pub annotations: BTreeMap<String, String>,
    pub ports: Vec<PortInput>,
    /// `spec.externalTrafficPolicy`: `Cluster` (default) or `Local`.
    pub external_traffic_policy: Option<String>,
    /// `metadata.creationTimestamp`: the older of two Services sharing an address keeps its ports.
    pub created: Option<jiff::Timestamp>,
    /// `spec.ipFamilies` (`IPv4`, `IPv6`); empty means IPv4.
    pub ip_families: Vec<String>,
    /// `spec.externalIPs`, as written: addresses kube-proxy routes to the Service. Flipbit never
    /// serves them (they are not in its pools); read only so a managed Service that lists any is
    /// told so instead of being ignored without a word.
    pub external_ips: Vec<String>,
    /// `spec.loadBalancerSourceRanges`, as written: the client ranges allowed to connect.
    pub load_balancer_source_ranges: Vec<String>,
    /// `spec.sessionAffinity`: `None` (default) or `ClientIP`.
    pub session_affinity: Option<String>,
    /// `metadata.labels`, for pools that admit Services by label.
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Hash, Serialize, Deserialize)]
pub struct PortInput {
    pub name: Option<String>,
    /// `TCP` (the default when absent), `UDP` or `SCTP`.
    pub protocol: Option<String>,
    pub port: i32,
    pub node_port: Option<i32>,
}

/// One Node as read from the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash, Serialize, Deserialize)]
pub struct NodeInput {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The `Ready` condition's status is `True`.
    pub ready: bool,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// `status.addresses` of type `InternalIP`, as written.
    pub internal_ips: Vec<String>,
}

/// One EndpointSlice, as much of it as matters here: which nodes hold a ready endpoint (for
/// `externalTrafficPolicy: Local`) and, for `flipbit.io/backends: pods`, the endpoints themselves
/// with the slice's ports.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash, Serialize, Deserialize)]
pub struct EndpointSliceInput {
    pub namespace: String,
    /// The `kubernetes.io/service-name` label.
    pub service_name: String,
    /// Node names of endpoints whose `conditions.ready` is not false.
    pub ready_nodes: Vec<String>,
    /// `addressType`, as written: `IPv4`, `IPv6` or `FQDN`.
    pub address_type: String,
    /// `ports`: the port every endpoint of the slice serves, per Service port name.
    pub ports: Vec<EndpointPortInput>,
    pub endpoints: Vec<EndpointInput>,
}

/// One of a slice's `ports`. The endpoint controller names it after the Service port it serves
/// and has already resolved a named `targetPort` to the pods' number.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash, Serialize, Deserialize)]
pub struct EndpointPortInput {
    /// The Service port's name; absent or empty for a Service's one unnamed port.
    pub name: Option<String>,
    /// `TCP` (the default when absent), `UDP` or `SCTP`.
    pub protocol: Option<String>,
    /// Absent means "every port" to the API, which gives a load balancer nothing to send to.
    pub port: Option<i32>,
}

/// One endpoint (a pod) of a slice.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash, Serialize, Deserialize)]
pub struct EndpointInput {
    /// `addresses`, as written, of the slice's address type.
    pub addresses: Vec<String>,
    /// `conditions.ready`; absent means unknown, which the API says to take as ready.
    pub ready: Option<bool>,
}

/// A Service whose object could be identified but not read (a malformed manifest). It keeps its
/// last committed state; the message says what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnreadableService {
    pub key: ServiceKey,
    pub message: String,
}

/// Everything the decisions need from the cluster at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub services: Vec<ServiceInput>,
    pub unreadable_services: Vec<UnreadableService>,
    pub nodes: Vec<NodeInput>,
    pub endpoint_slices: Vec<EndpointSliceInput>,
}
