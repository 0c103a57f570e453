//! A Service's nginx `stream` snippet on one LB host (`templates/nginx-service.conf.tera`): per
//! port, an `upstream` of its servers and a `server` listening on its addresses.

use std::net::IpAddr;

use serde::Serialize;

use super::{RenderError, ServiceView, Upstreams, render, socket_addresses};
use crate::annotations::Balance;
use crate::exposure::{ExposedService, Protocol};
use crate::names::LbHostName;

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

/// The nginx snippet for one Service on one LB host, listening on `addresses` (its primary and, for
/// dual-stack, its IPv6 address) and sending to the `upstreams` of each port. A port with no
/// upstream gets no listener: clients get a refusal rather than a connection that goes nowhere.
pub fn service(
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
            listen: socket_addresses(addresses, p.port),
            udp: p.protocol == Protocol::Udp,
            balance: match svc.settings.balance {
                Balance::RoundRobin => "",
                Balance::LeastConn => "least_conn",
                Balance::Hash => "hash $remote_addr consistent",
            },
            proxy_protocol: svc.settings.proxy_protocol,
            servers: upstreams.of_port(i).iter().map(ToString::to_string).collect(),
            allow: traffic.source_ranges.iter().map(ToString::to_string).collect(),
            connect_timeout: traffic
                .connect_timeout
                .unwrap_or(super::DEFAULT_CONNECT_TIMEOUT)
                .to_string(),
            idle_timeout: traffic.idle_timeout.map(|t| t.to_string()),
            responses: traffic.udp_responses,
        })
        .collect();
    render(
        super::NGINX_SERVICE,
        &ServiceView::new(svc, host, addresses, Vec::new(), routes),
    )
}
