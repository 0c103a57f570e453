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

/// The connect timeout of a Service that sets none, on either flavour.
pub const DEFAULT_CONNECT_TIMEOUT: crate::traffic::Seconds = crate::traffic::Seconds(5);

/// `svc`'s file for a host of `flavor`, sending each port to `nodes` (the decision passes each
/// port's upstreams to [`nginx::service`] or [`haproxy::service`]; tests and benches start from
/// nodes).
pub fn service_to_nodes(
    flavor: Flavor,
    svc: &ExposedService,
    host: &LbHostName,
    addresses: &[IpAddr],
    nodes: &[&Node],
) -> Result<String, RenderError> {
    let upstreams = Upstreams::of_nodes(svc, nodes);
    match flavor {
        Flavor::Nginx => nginx::service(svc, host, addresses, &upstreams),
        Flavor::Haproxy => haproxy::service(svc, host, addresses, &upstreams),
    }
}

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use serde::Serialize;

use crate::config::Flavor;
use crate::exposure::ExposedService;
use crate::names::LbHostName;
use crate::nodes::Node;

/// The per-Service templates: one file per Service per host, and its zone fragment.
pub(crate) const NGINX_SERVICE: &str = "nginx-service.conf";
pub(crate) const HAPROXY_SERVICE: &str = "haproxy-service.cfg";
pub(crate) const DNS_SERVICE: &str = "dns-service.zone";
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
            (
                NGINX_SERVICE,
                include_str!("../../../templates/nginx-service.conf.tera"),
            ),
            (DNS_SERVICE, include_str!("../../../templates/dns-service.zone.tera")),
            (
                SHARED_ENTRIES,
                include_str!("../../../templates/nginx-service.map.tera"),
            ),
            (
                SHARED_LISTENERS,
                include_str!("../../../templates/nginx-listeners.conf.tera"),
            ),
            (SHARED_NODES, include_str!("../../../templates/nginx-nodes.conf.tera")),
            (
                HAPROXY_SERVICE,
                include_str!("../../../templates/haproxy-service.cfg.tera"),
            ),
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

/// What a per-Service file's template sees, whatever the flavour: the Service, the host, its
/// addresses, what carries its traffic, the ports skipped and a route (`R`, the flavour's own) per
/// port served.
#[derive(Serialize)]
pub(crate) struct ServiceView<R> {
    service: String,
    lb_host: String,
    address: String,
    /// What carries the Service's traffic, for the note when nothing does: `eligible node`, or
    /// `ready endpoint` for pod backends.
    carriers: &'static str,
    /// Ports this host does not serve (`UDP/53` on a HAProxy host), said in the file too.
    skipped: Vec<String>,
    routes: Vec<R>,
}

impl<R> ServiceView<R> {
    pub(crate) fn new(
        svc: &ExposedService,
        host: &LbHostName,
        addresses: &[IpAddr],
        skipped: Vec<String>,
        routes: Vec<R>,
    ) -> Self {
        ServiceView {
            service: svc.key.to_string(),
            lb_host: host.to_string(),
            address: addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            carriers: match svc.settings.traffic.backends {
                crate::traffic::Backends::Nodes => "eligible node",
                crate::traffic::Backends::Pods => "ready endpoint",
            },
            skipped,
            routes,
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
