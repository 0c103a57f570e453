//! nginx `stream {}` snippets (and, through `render_haproxy`, HAProxy files), rendered with tera
//! from `templates/`. The template sees only strings built here from typed values (addresses,
//! port numbers, validated names), so nothing a Service author writes can reach the file as text.

pub mod files;

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use serde::Serialize;

use crate::annotations::Balance;
use crate::exposure::{ExposedService, Protocol};
use crate::names::LbHostName;
use crate::nodes::Node;

const NGINX_SERVICE: &str = "nginx-service.conf";
const NGINX_SERVICE_TEMPLATE: &str = include_str!("../../templates/nginx-service.conf.tera");
const DNS_SERVICE: &str = "dns-service.zone";
const DNS_SERVICE_TEMPLATE: &str = include_str!("../../templates/dns-service.zone.tera");
/// The shared-listeners layout's templates (see `render_map`).
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

#[derive(Serialize)]
struct ServiceView {
    service: String,
    lb_host: String,
    address: String,
    /// What carries the Service's traffic, for the note when nothing does: `eligible node`, or
    /// `ready endpoint` for pod backends.
    carriers: &'static str,
    routes: Vec<RouteView>,
}

#[derive(Serialize)]
struct RouteView {
    upstream: String,
    listen: Vec<String>,
    udp: bool,
    balance: &'static str,
    proxy_protocol: bool,
    servers: Vec<String>,
    /// Client ranges allowed (`loadBalancerSourceRanges`); empty: every client.
    allow: Vec<String>,
    connect_timeout: String,
    /// TCP idle timeout; nginx's default (10m) when unset.
    idle_timeout: Option<String>,
    /// UDP: answers after which a session ends.
    responses: Option<u32>,
}

/// The connect timeout of a Service that sets none.
pub const DEFAULT_CONNECT_TIMEOUT: crate::traffic::Seconds = crate::traffic::Seconds(5);

fn templates() -> Result<&'static tera::Tera, RenderError> {
    static TERA: OnceLock<Result<tera::Tera, String>> = OnceLock::new();
    TERA.get_or_init(|| {
        let mut t = tera::Tera::default();
        t.autoescape_on(vec![]);
        t.add_raw_templates(vec![
            (NGINX_SERVICE, NGINX_SERVICE_TEMPLATE),
            (DNS_SERVICE, DNS_SERVICE_TEMPLATE),
            (SHARED_ENTRIES, include_str!("../../templates/nginx-service.map.tera")),
            (
                SHARED_LISTENERS,
                include_str!("../../templates/nginx-listeners.conf.tera"),
            ),
            (SHARED_NODES, include_str!("../../templates/nginx-nodes.conf.tera")),
            (
                crate::render_haproxy::HAPROXY_SERVICE,
                crate::render_haproxy::HAPROXY_SERVICE_TEMPLATE,
            ),
        ])
        .map_err(|e| format!("{e:?}"))?;
        Ok(t)
    })
    .as_ref()
    .map_err(|e| RenderError {
        template: NGINX_SERVICE,
        message: e.clone(),
    })
}

#[derive(Serialize)]
struct ZoneView {
    service: String,
    zone: String,
    records: Vec<RecordView>,
}

#[derive(Serialize)]
struct RecordView {
    name: String,
    ttl: u32,
    rtype: &'static str,
    address: String,
}

/// The zone fragment of one Service: an A or AAAA record per name per LB address. `names` were
/// validated as DNS names inside `zone`.
pub fn zone_fragment(
    svc: &ExposedService,
    zone: &str,
    names: &std::collections::BTreeSet<String>,
    ttl: u32,
    addresses: &[IpAddr],
) -> Result<String, RenderError> {
    let mut ips: Vec<IpAddr> = addresses.to_vec();
    ips.sort();
    let records = names
        .iter()
        .flat_map(|name| {
            ips.iter().map(move |ip| RecordView {
                name: name.clone(),
                ttl,
                rtype: if ip.is_ipv4() { "A" } else { "AAAA" },
                address: ip.to_string(),
            })
        })
        .collect();
    let view = ZoneView {
        service: svc.key.to_string(),
        zone: zone.to_owned(),
        records,
    };
    render(DNS_SERVICE, &view)
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

/// The nginx snippet for one Service on one LB host, listening on `addresses` (its primary and, for
/// dual-stack, its IPv6 address) and sending to `nodes`.
/// With no nodes nothing listens: clients get a refusal rather than a connection that goes nowhere.
pub fn nginx_service(
    svc: &ExposedService,
    host: &LbHostName,
    addresses: &[IpAddr],
    nodes: &[&Node],
) -> Result<String, RenderError> {
    nginx_service_to(svc, host, addresses, &Upstreams::of_nodes(svc, nodes))
}

/// [`nginx_service`] with the upstreams of each port given.
pub fn nginx_service_to(
    svc: &ExposedService,
    host: &LbHostName,
    addresses: &[IpAddr],
    upstreams: &Upstreams,
) -> Result<String, RenderError> {
    let traffic = &svc.settings.traffic;
    let routes = svc
        .ports
        .iter()
        .enumerate()
        .filter(|(i, _)| !upstreams.of_port(*i).is_empty())
        .map(|(i, p)| RouteView {
            upstream: format!(
                "flipbit_{}_{}_{}_{}",
                svc.key.namespace,
                svc.key.name,
                match p.protocol {
                    Protocol::Tcp => "tcp",
                    Protocol::Udp => "udp",
                },
                p.port
            ),
            listen: addresses
                .iter()
                .map(|a| SocketAddr::new(*a, p.port).to_string())
                .collect(),
            udp: p.protocol == Protocol::Udp,
            balance: match svc.settings.balance {
                Balance::RoundRobin => "",
                Balance::LeastConn => "least_conn",
                Balance::Hash => "hash $remote_addr consistent",
            },
            proxy_protocol: svc.settings.proxy_protocol,
            servers: upstreams.of_port(i).iter().map(ToString::to_string).collect(),
            allow: traffic.source_ranges.iter().map(ToString::to_string).collect(),
            connect_timeout: traffic.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT).to_string(),
            idle_timeout: traffic.idle_timeout.map(|t| t.to_string()),
            responses: traffic.udp_responses,
        })
        .collect();
    let view = ServiceView {
        service: svc.key.to_string(),
        lb_host: host.to_string(),
        address: addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        carriers: carriers(svc),
        routes,
    };
    render(NGINX_SERVICE, &view)
}

/// What carries `svc`'s traffic, as the files' note names it when nothing does.
pub(crate) fn carriers(svc: &ExposedService) -> &'static str {
    match svc.settings.traffic.backends {
        crate::traffic::Backends::Nodes => "eligible node",
        crate::traffic::Backends::Pods => "ready endpoint",
    }
}
