//! Every generated file's text, rendered with tera from `templates/`: a Service's nginx `stream`
//! snippet (`nginx`), its shared-listeners map entries and a host's listeners and nodes files
//! (`map`), its HAProxy file (`haproxy`), its zone fragment (`zone`); `files` decides which files
//! a decision writes. A template sees only strings built from typed values (addresses, port
//! numbers, validated names), so nothing a Service author writes can reach a file as text. The
//! grammar that reads these files back is `crate::grammar` (and `crate::dns::fragment`).

pub mod files;
pub mod haproxy;
pub mod map;
pub mod nginx;
pub mod zone;

pub use nginx::{DEFAULT_CONNECT_TIMEOUT, nginx_service, nginx_service_to};
pub use zone::zone_fragment;

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use serde::Serialize;

use crate::exposure::ExposedService;
use crate::names::LbHostName;
use crate::nodes::Node;

/// The shared-listeners layout's templates (see `render::map`).
pub(crate) const SHARED_ENTRIES: &str = "nginx-service.map";
pub(crate) const SHARED_LISTENERS: &str = "nginx-listeners.conf";
pub(crate) const SHARED_NODES: &str = "nginx-nodes.conf";

#[derive(Debug, thiserror::Error)]
#[error("rendering {template}: {message}")]
pub struct RenderError {
    template: &'static str,
    message: String,
}

impl RenderError {
    pub(crate) fn new(template: &'static str, message: impl Into<String>) -> Self {
        Self {
            template,
            message: message.into(),
        }
    }
}

fn templates() -> Result<&'static tera::Tera, RenderError> {
    static TERA: OnceLock<Result<tera::Tera, String>> = OnceLock::new();
    TERA.get_or_init(|| {
        let mut t = tera::Tera::default();
        t.autoescape_on(vec![]);
        t.add_raw_templates(vec![
            (nginx::NGINX_SERVICE, nginx::NGINX_SERVICE_TEMPLATE),
            (zone::DNS_SERVICE, zone::DNS_SERVICE_TEMPLATE),
            (
                SHARED_ENTRIES,
                include_str!("../../../templates/nginx-service.map.tera"),
            ),
            (
                SHARED_LISTENERS,
                include_str!("../../../templates/nginx-listeners.conf.tera"),
            ),
            (SHARED_NODES, include_str!("../../../templates/nginx-nodes.conf.tera")),
            (haproxy::HAPROXY_SERVICE, haproxy::HAPROXY_SERVICE_TEMPLATE),
        ])
        .map_err(|e| format!("{e:?}"))?;
        Ok(t)
    })
    .as_ref()
    .map_err(|e| RenderError {
        template: "templates/",
        message: e.clone(),
    })
}

pub(crate) fn render(template: &'static str, view: &impl Serialize) -> Result<String, RenderError> {
    let ctx = tera::Context::from_serialize(view).map_err(|e| RenderError {
        template,
        message: e.to_string(),
    })?;
    let mut text = templates()?.render(template, &ctx).map_err(|e| RenderError {
        template,
        message: format!("{e:?}"),
    })?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// The upstream servers of each of a Service's ports, in the order of `svc.ports`: the nodes at
/// the port's node port, or (for `flipbit.io/backends: pods`) the Service's ready endpoints. A
/// port with none is not served: clients get a refusal rather than a connection that goes nowhere.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Upstreams(pub Vec<Vec<SocketAddr>>);

impl Upstreams {
    /// Every port to `nodes` at its node port.
    pub fn of_nodes(svc: &ExposedService, nodes: &[&Node]) -> Self {
        Self(
            svc.ports
                .iter()
                .map(|p| nodes.iter().map(|n| SocketAddr::new(n.ip, p.node_port)).collect())
                .collect(),
        )
    }

    /// The servers of the `i`-th port (none past the end).
    pub fn of_port(&self, i: usize) -> &[SocketAddr] {
        self.0.get(i).map_or(&[], Vec::as_slice)
    }
}

/// What a per-Service file's opening note says of the Service, the same for every flavour.
#[derive(Serialize)]
pub(crate) struct ServiceHeader {
    service: String,
    lb_host: String,
    address: String,
    /// What carries the Service's traffic, for the note when nothing does: `eligible node`, or
    /// `ready endpoint` for pod backends.
    carriers: &'static str,
}

impl ServiceHeader {
    pub(crate) fn of(svc: &ExposedService, host: &LbHostName, addresses: &[IpAddr]) -> Self {
        ServiceHeader {
            service: svc.key.to_string(),
            lb_host: host.to_string(),
            address: addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            carriers: match svc.settings.traffic.backends {
                crate::traffic::Backends::Nodes => "eligible node",
                crate::traffic::Backends::Pods => "ready endpoint",
            },
        }
    }
}

/// `address:port` for each of `addresses` (an IPv6 one in brackets): what a listen or bind line
/// takes.
pub(crate) fn socket_addresses(addresses: &[IpAddr], port: u16) -> Vec<String> {
    addresses
        .iter()
        .map(|a| SocketAddr::new(*a, port).to_string())
        .collect()
}
