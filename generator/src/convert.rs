//! Kubernetes objects → the plain model the decisions read. Only shape changes here; validation is
//! the core's job, so the same rules hold for manifests and for a live cluster.

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use flipbit_core::model::{EndpointInput, EndpointPortInput, EndpointSliceInput, NodeInput, PortInput, ServiceInput};

pub fn service(svc: &Service) -> ServiceInput {
    let meta = &svc.metadata;
    let spec = svc.spec.as_ref();
    ServiceInput {
        namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
        name: meta.name.clone().unwrap_or_default(),
        service_type: spec.and_then(|s| s.type_.clone()).unwrap_or_else(|| "ClusterIP".into()),
        load_balancer_class: spec.and_then(|s| s.load_balancer_class.clone()),
        annotations: meta.annotations.clone().unwrap_or_default(),
        ports: spec
            .and_then(|s| s.ports.as_ref())
            .map(|ports| {
                ports
                    .iter()
                    .map(|p| PortInput {
                        name: p.name.clone(),
                        protocol: p.protocol.clone(),
                        port: p.port,
                        node_port: p.node_port,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        external_traffic_policy: spec.and_then(|s| s.external_traffic_policy.clone()),
        created: meta.creation_timestamp.as_ref().map(|t| t.0),
        ip_families: spec.and_then(|s| s.ip_families.clone()).unwrap_or_default(),
        external_ips: spec.and_then(|s| s.external_ips.clone()).unwrap_or_default(),
        load_balancer_source_ranges: spec
            .and_then(|s| s.load_balancer_source_ranges.clone())
            .unwrap_or_default(),
        session_affinity: spec.and_then(|s| s.session_affinity.clone()),
        labels: meta.labels.clone().unwrap_or_default(),
    }
}

pub fn node(node: &Node) -> NodeInput {
    let status = node.status.as_ref();
    NodeInput {
        name: node.metadata.name.clone().unwrap_or_default(),
        labels: node.metadata.labels.clone().unwrap_or_default(),
        ready: status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        unschedulable: node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false),
        internal_ips: status
            .and_then(|s| s.addresses.as_ref())
            .map(|a| {
                a.iter()
                    .filter(|a| a.type_ == "InternalIP")
                    .map(|a| a.address.clone())
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// `None` for a slice that belongs to no Service.
pub fn endpoint_slice(slice: &EndpointSlice) -> Option<EndpointSliceInput> {
    let service_name = slice
        .metadata
        .labels
        .as_ref()?
        .get("kubernetes.io/service-name")?
        .clone();
    let endpoints = slice.endpoints.as_deref().unwrap_or_default();
    Some(EndpointSliceInput {
        namespace: slice.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        service_name,
        ready_nodes: endpoints
            .iter()
            // The API says an unknown readiness is to be taken as ready.
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .filter_map(|e| e.node_name.clone())
            .collect(),
        address_type: slice.address_type.clone(),
        ports: slice
            .ports
            .iter()
            .flatten()
            .map(|p| EndpointPortInput {
                name: p.name.clone(),
                protocol: p.protocol.clone(),
                port: p.port,
            })
            .collect(),
        endpoints: endpoints
            .iter()
            .map(|e| EndpointInput {
                addresses: e.addresses.clone(),
                ready: e.conditions.as_ref().and_then(|c| c.ready),
            })
            .collect(),
    })
}
