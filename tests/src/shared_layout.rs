//! The files one LB host gets in either nginx layout, built straight from the pure renderers the
//! way the decision engine calls them (`render::map`'s contract), for tests and benches that need
//! a host's tree without a cluster: Services given as typed values, nodes as a list.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use flipbit_core::annotations::Settings;
use flipbit_core::config::{Flavor, Layout};
use flipbit_core::exposure::{ExposedService, Protocol, ServicePort};
use flipbit_core::names::LbHostName;
use flipbit_core::nodes::Node;
use flipbit_core::render::map::Listener;
use flipbit_core::render::{self, RenderError};
use flipbit_core::repo_paths;

/// One Service on the host: its addresses there and, for a per-Service node set (Local traffic
/// policy, max-nodes), the nodes it was given; `None` means every node.
#[derive(Debug, Clone)]
pub struct Placed {
    pub svc: ExposedService,
    pub ips: Vec<IpAddr>,
    pub nodes: Option<Vec<Node>>,
}

/// A Service with default settings and `(protocol, port, node port)` ports.
pub fn service(key: &str, ports: &[(Protocol, u16, u16)]) -> ExposedService {
    let mut ports: Vec<ServicePort> = ports
        .iter()
        .map(|(protocol, port, node_port)| ServicePort {
            protocol: *protocol,
            port: *port,
            node_port: *node_port,
        })
        .collect();
    ports.sort();
    ExposedService {
        key: key.parse().unwrap_or_else(|e| panic!("{key}: {e}")),
        ports,
        settings: Settings::default(),
        local_traffic: false,
        created: None,
        ipv4: true,
        ipv6: false,
        labels: Default::default(),
    }
}

/// Nodes `node-<i>` at the given addresses.
pub fn nodes(ips: &[IpAddr]) -> Vec<Node> {
    ips.iter()
        .enumerate()
        .map(|(i, ip)| Node {
            name: format!("node-{i}").into(),
            ip: *ip,
        })
        .collect()
}

/// Every generated file of `host` (repo path → text) in `layout`. On a shared-listeners host a
/// Service goes through the map unless `render::map::per_service_reason` keeps it per-service;
/// every Service's ports count towards the wildcard listeners either way.
pub fn host_tree(
    host: &LbHostName,
    layout: Layout,
    placed: &[Placed],
    all_nodes: &[Node],
) -> Result<BTreeMap<String, String>, RenderError> {
    let mut files = BTreeMap::new();
    let mut listeners: BTreeSet<Listener> = BTreeSet::new();
    let every: Vec<&Node> = all_nodes.iter().collect();
    for p in placed {
        let chosen: Vec<&Node> = match &p.nodes {
            Some(subset) => subset.iter().collect(),
            None => every.clone(),
        };
        if layout == Layout::PerService || render::map::per_service_reason(&p.svc).is_some() {
            let text = render::service_to_nodes(Flavor::Nginx, &p.svc, host, &p.ips, &chosen)?;
            files.insert(repo_paths::lb_service_path(host, &p.svc.key), text);
        } else {
            let text = render::map::service_entries(&p.svc, host, &p.ips)?;
            files.insert(repo_paths::lb_service_map_path(host, &p.svc.key), text);
        }
        listeners.extend(render::map::listeners_of(&p.svc, &p.ips));
    }
    if layout == Layout::SharedListeners {
        files.extend(render::map::host_files(host, &listeners, &every)?);
    }
    Ok(files)
}

/// `flipbit.yaml` with one LB host of `layout` drawing from `pool`.
pub fn flipbit_yaml(host: &str, pool: &str, layout: Layout) -> String {
    let name = match layout {
        Layout::PerService => "per-service",
        Layout::SharedListeners => "shared-listeners",
    };
    format!("zone: k8s.example.test\nlbHosts:\n  - name: {host}\n    pools: [\"{pool}\"]\n    layout: {name}\n")
}

/// Writes `files` (repo paths under `lb/<host>/`) into `release` as the applier stages them:
/// paths relative to the host directory, host-level files bound to `release`.
pub fn write_release(host: &LbHostName, files: &BTreeMap<String, String>, release: &Path) -> Result<(), String> {
    let prefix = format!("{}/", repo_paths::lb_host_dir(host));
    for (path, text) in files {
        let rel = path
            .strip_prefix(&prefix)
            .ok_or_else(|| format!("{path} is not under {prefix}"))?;
        let text = if repo_paths::binds_release(rel) {
            render::map::bind_release(text, release)?
        } else {
            text.clone()
        };
        let target = release.join(rel);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(&target, text).map_err(|e| format!("{}: {e}", target.display()))?;
    }
    Ok(())
}
