//! Synthetic clusters for the scale figures: N Services (1–3 ports each, every fourth with a UDP
//! port) spread over 100 namespaces, and M Ready nodes. Deterministic, so every run measures the
//! same cluster. `flipbit-bench synth` writes one as manifests for `flipbit-generator render`.

use std::collections::BTreeMap;

use flipbit_core::model::{NodeInput, PortInput, ServiceInput, Snapshot};

/// Node `i`'s InternalIP: 127.120.0.10 onwards, 200 per /24 (.10 to .209), so every one is a valid
/// address (250 per /24 gave nodes 246-249 of each 250 a last octet past 255).
pub fn node_ip(i: usize) -> String {
    format!("127.120.{}.{}", i / 200, 10 + i % 200)
}

pub fn node(i: usize, ready: bool) -> NodeInput {
    NodeInput {
        name: format!("node-{i:03}"),
        labels: BTreeMap::from([("flipbit.io/lb-backend".into(), "true".into())]),
        ready,
        unschedulable: false,
        internal_ips: vec![node_ip(i)],
    }
}

/// Service `i`: `ns-<i % 100>/svc-<i>`, ports 80 (+443) (+53/UDP every fourth), node ports from
/// 30000 up, unique per Service.
pub fn service(i: usize) -> ServiceInput {
    let node_port = |k: usize| Some(30000 + ((i * 3 + k) % 2768) as i32);
    let mut ports = vec![PortInput {
        name: Some("http".into()),
        protocol: None,
        port: 80,
        node_port: node_port(0),
    }];
    if !i.is_multiple_of(3) {
        ports.push(PortInput {
            name: Some("https".into()),
            protocol: Some("TCP".into()),
            port: 443,
            node_port: node_port(1),
        });
    }
    if i.is_multiple_of(4) {
        ports.push(PortInput {
            name: Some("dns".into()),
            protocol: Some("UDP".into()),
            port: 53,
            node_port: node_port(2),
        });
    }
    ServiceInput {
        namespace: format!("ns-{:02}", i % 100),
        name: format!("svc-{i:05}"),
        service_type: "LoadBalancer".into(),
        load_balancer_class: Some("flipbit.io/nginx".into()),
        ports,
        ..ServiceInput::default()
    }
}

pub fn snapshot(services: usize, nodes: usize) -> Snapshot {
    Snapshot {
        services: (0..services).map(service).collect(),
        nodes: (0..nodes).map(|i| node(i, true)).collect(),
        ..Snapshot::default()
    }
}

/// `flipbit.yaml` for three LB hosts with a /16 pool each (room for 65,534 Services), in the
/// per-service layout or, with `shared`, the shared-listeners one.
pub fn flipbit_yaml(shared: bool) -> String {
    let text = crate::cluster::flipbit_yaml(&[
        ("lb-1", "127.201.0.0/16"),
        ("lb-2", "127.202.0.0/16"),
        ("lb-3", "127.203.0.0/16"),
    ]);
    if shared {
        text.replace("    pools:", "    layout: shared-listeners\n    pools:")
    } else {
        text
    }
}

/// Writes `snapshot` as Kubernetes manifests (one List per kind) into `dir`.
pub fn write_manifests(snapshot: &Snapshot, dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut services = String::from("apiVersion: v1\nkind: List\nitems:\n");
    for s in &snapshot.services {
        services.push_str(&format!(
            "- apiVersion: v1\n  kind: Service\n  metadata: {{name: {}, namespace: {}}}\n  spec:\n    type: LoadBalancer\n    loadBalancerClass: flipbit.io/nginx\n    ports:\n",
            s.name, s.namespace
        ));
        for p in &s.ports {
            services.push_str(&format!(
                "    - {{port: {}, protocol: {}, nodePort: {}}}\n",
                p.port,
                p.protocol.as_deref().unwrap_or("TCP"),
                p.node_port.unwrap_or_default()
            ));
        }
    }
    std::fs::write(dir.join("services.yaml"), services)?;
    let mut nodes = String::from("apiVersion: v1\nkind: List\nitems:\n");
    for n in &snapshot.nodes {
        nodes.push_str(&format!(
            "- apiVersion: v1\n  kind: Node\n  metadata: {{name: {}, labels: {{flipbit.io/lb-backend: \"true\"}}}}\n  status:\n    conditions: [{{type: Ready, status: \"{}\"}}]\n    addresses: [{{type: InternalIP, address: {}}}]\n",
            n.name,
            if n.ready { "True" } else { "False" },
            n.internal_ips.first().map(String::as_str).unwrap_or_default()
        ));
    }
    std::fs::write(dir.join("nodes.yaml"), nodes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_node_ip_is_an_address() {
        for i in 0..2000 {
            let ip = super::node_ip(i);
            assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "node {i}: {ip}");
        }
    }
}
