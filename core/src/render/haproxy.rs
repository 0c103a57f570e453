//! The HAProxy rendering of one Service on one LB host: per TCP port a `frontend` bound to the
//! Service's addresses and a `backend` with its nodes, from `templates/haproxy-service.cfg.tera`.
//! Like the nginx snippets, the template sees only strings built here from typed values.
//!
//! Every file a host gets is loaded into one HAProxy configuration, so proxy names must be unique
//! across files: `flipbit_<namespace>_<service>_<port>`, where namespace and name are DNS labels
//! (no `_`), so no two Services or ports can produce the same name. A frontend and its backend
//! share the name (HAProxy keeps the two kinds apart). A server is named after the address it
//! sends to (`127.0.0.10:30080`; an IPv6 one without brackets, which names may not hold), never
//! after the node's name, which is not validated for HAProxy's syntax; so the generator reads the
//! node set back from a `.cfg` as from an nginx snippet, and the names are unique once duplicate
//! addresses are dropped.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use crate::annotations::Balance;
use crate::config::Flavor;
use crate::exposure::ExposedService;
use crate::flavor;
use crate::names::LbHostName;
use crate::render::{RenderError, ServiceView, Upstreams, render, socket_addresses};

#[derive(Serialize)]
struct RouteView {
    name: String,
    bind: Vec<String>,
    balance: &'static str,
    consistent: bool,
    proxy_protocol: bool,
    servers: Vec<ServerView>,
    /// Client ranges allowed (`loadBalancerSourceRanges`); empty: every client.
    allow: Vec<String>,
    connect_timeout: String,
    /// Idle timeout on both sides.
    idle_timeout: String,
}

/// The idle timeout of a Service that sets none, on either side of a HAProxy proxy.
const DEFAULT_IDLE_TIMEOUT: &str = "10m";

#[derive(Serialize)]
struct ServerView {
    name: String,
    address: String,
}

/// The HAProxy configuration for `svc` on `host`, listening on `addresses` (its primary and, for
/// dual-stack, its IPv6 address) and sending to the `upstreams` of each port. UDP ports are left
/// out (named in a comment; the decision warns about them). A port with no upstream gets no
/// frontend, as on nginx hosts: clients get a refusal rather than a connection that goes nowhere.
pub fn service(
    svc: &ExposedService,
    host: &LbHostName,
    addresses: &[IpAddr],
    upstreams: &Upstreams,
) -> Result<String, RenderError> {
    let (_, skipped) = flavor::split_ports(svc, Flavor::Haproxy);
    let traffic = &svc.settings.traffic;
    let (balance, consistent) = match svc.settings.balance {
        Balance::RoundRobin => ("roundrobin", false),
        Balance::LeastConn => ("leastconn", false),
        // nginx's `hash $remote_addr consistent`: the client address, on a consistent ring.
        Balance::Hash => ("source", true),
    };
    let routes = svc
        .ports
        .iter()
        .enumerate()
        .filter(|(i, p)| Flavor::Haproxy.serves(p.protocol) && !upstreams.of_port(*i).is_empty())
        .map(|(i, p)| RouteView {
            name: format!("flipbit_{}_{}_{}", svc.key.namespace, svc.key.name, p.port),
            bind: socket_addresses(addresses, p.port),
            balance,
            consistent,
            proxy_protocol: svc.settings.proxy_protocol,
            servers: servers(upstreams.of_port(i)),
            allow: traffic.source_ranges.iter().map(ToString::to_string).collect(),
            connect_timeout: traffic
                .connect_timeout
                .unwrap_or(super::DEFAULT_CONNECT_TIMEOUT)
                .to_string(),
            idle_timeout: traffic
                .idle_timeout
                .map_or_else(|| DEFAULT_IDLE_TIMEOUT.to_owned(), |t| t.to_string()),
        })
        .collect();
    render(
        super::HAPROXY_SERVICE,
        &ServiceView::new(svc, host, addresses, skipped, routes),
    )
}

/// One server per distinct address (two Node objects may report one InternalIP), in the given
/// order.
fn servers(addrs: &[SocketAddr]) -> Vec<ServerView> {
    let mut seen = std::collections::BTreeSet::new();
    addrs
        .iter()
        .filter(|addr| seen.insert(**addr))
        .map(|addr| ServerView {
            name: format!("{}:{}", addr.ip(), addr.port()),
            address: addr.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotations::Settings;
    use crate::exposure::{Protocol, ServicePort};
    use crate::nodes::Node;

    fn svc(balance: Balance, proxy_protocol: bool) -> ExposedService {
        ExposedService {
            key: "apps/game".parse().unwrap(),
            ports: vec![
                ServicePort {
                    protocol: Protocol::Tcp,
                    port: 27015,
                    node_port: 31003,
                },
                ServicePort {
                    protocol: Protocol::Udp,
                    port: 27015,
                    node_port: 31002,
                },
            ],
            settings: Settings {
                balance,
                proxy_protocol,
                ..Settings::default()
            },
            local_traffic: false,
            created: None,
            ipv4: true,
            ipv6: true,
            labels: Default::default(),
        }
    }

    fn node(name: &str, ip: &str) -> Node {
        Node {
            name: name.into(),
            ip: ip.parse().unwrap(),
        }
    }

    #[test]
    fn tcp_ports_get_a_frontend_and_a_backend_udp_ports_a_comment() {
        let nodes = [node("w1", "127.2.0.10"), node("w2", "127.2.0.11")];
        let refs: Vec<&Node> = nodes.iter().collect();
        let addrs: Vec<IpAddr> = vec!["127.2.1.5".parse().unwrap(), "fd00:2::5".parse().unwrap()];
        let text = crate::render::service_to_nodes(
            Flavor::Haproxy,
            &svc(Balance::Hash, true),
            &"lb-1".parse().unwrap(),
            &addrs,
            &refs,
        )
        .unwrap();
        for want in [
            "# UDP/27015 is not served on this host: HAProxy carries TCP only.",
            "frontend flipbit_apps_game_27015\n    mode tcp\n    bind 127.2.1.5:27015\n    bind [fd00:2::5]:27015\n",
            "default_backend flipbit_apps_game_27015\n",
            "backend flipbit_apps_game_27015\n    mode tcp\n    balance source\n    hash-type consistent\n",
            "    server 127.2.0.10:31003 127.2.0.10:31003 check send-proxy-v2\n    server 127.2.0.11:31003 127.2.0.11:31003 check send-proxy-v2\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert!(!text.contains("31002"), "a UDP node port was rendered:\n{text}");
        assert_eq!(text.matches("frontend ").count(), 1);
    }

    #[test]
    fn balance_modes_map_to_haproxy() {
        let nodes = [node("w1", "127.2.0.10")];
        let refs: Vec<&Node> = nodes.iter().collect();
        let addrs: Vec<IpAddr> = vec!["127.2.1.5".parse().unwrap()];
        let host: LbHostName = "lb-1".parse().unwrap();
        let rr =
            crate::render::service_to_nodes(Flavor::Haproxy, &svc(Balance::RoundRobin, false), &host, &addrs, &refs)
                .unwrap();
        assert!(rr.contains("balance roundrobin\n") && !rr.contains("hash-type"), "{rr}");
        assert!(!rr.contains("send-proxy"), "{rr}");
        let lc =
            crate::render::service_to_nodes(Flavor::Haproxy, &svc(Balance::LeastConn, false), &host, &addrs, &refs)
                .unwrap();
        assert!(lc.contains("balance leastconn\n"), "{lc}");
    }

    #[test]
    fn servers_are_named_by_address_and_never_twice() {
        let nodes = [node("a", "fd00::10"), node("b", "127.2.0.10"), node("c", "127.2.0.10")];
        let refs: Vec<&Node> = nodes.iter().collect();
        let addrs = Upstreams::of_nodes(&svc(Balance::RoundRobin, false), &refs);
        let names: Vec<(String, String)> = servers(addrs.of_port(0))
            .into_iter()
            .map(|s| (s.name, s.address))
            .collect();
        assert_eq!(
            names,
            [
                ("fd00::10:31003".to_owned(), "[fd00::10]:31003".to_owned()),
                ("127.2.0.10:31003".to_owned(), "127.2.0.10:31003".to_owned())
            ]
        );
    }

    #[test]
    fn no_nodes_means_nothing_listens() {
        let addrs: Vec<IpAddr> = vec!["127.2.1.5".parse().unwrap()];
        let text = crate::render::service_to_nodes(
            Flavor::Haproxy,
            &svc(Balance::RoundRobin, false),
            &"lb-1".parse().unwrap(),
            &addrs,
            &[],
        )
        .unwrap();
        assert!(!text.contains("frontend") && !text.contains("bind"), "{text}");
        assert!(text.contains("nothing listens on 127.2.1.5"), "{text}");
    }
}
