//! The grammar of a Service's nginx snippet, `lb/<host>/<ns>/<svc>.conf`
//! (`templates/nginx-service.conf.tera`, rendered by `render::nginx::service`): per Service port an
//! `upstream flipbit_<ns>_<svc>_<tcp|udp>_<port>` of the nodes and a `server` that listens on the
//! Service's addresses and proxies to it. The upstream name must be this file's Service, so one
//! file cannot define or shadow another Service's upstream; every `listen` must be inside the
//! host's pools, on the port and protocol its upstream's name says.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use super::lines::{Directive, Line, Lines, expect, quote};
use super::values::{alike, in_pools, port, socket};
use super::{Bind, BindAddr, Checked, Refusal, tuning};
use crate::config::LbHost;
use crate::exposure::Protocol;
use crate::names::ServiceKey;

/// One Service port's route, named by its upstream's header line.
struct Route<'a> {
    name: &'a str,
    protocol: Protocol,
    port: u16,
}

/// Checks a `.conf` file of Service `key` on nginx host `host`: its `listen` sockets, in file order.
pub(super) fn check(key: &ServiceKey, text: &str, host: &LbHost, format: u32) -> Result<Checked, Refusal> {
    let mut lines = Lines::new(text)?;
    let mut out = Checked::default();
    let mut routes = BTreeSet::new();
    let (mut balance, mut proxy_protocol, mut addresses) = (None, None, None);
    while let Some(header) = lines.next_after_gaps() {
        let route = upstream_header(key, header)?;
        if !routes.insert((route.protocol, route.port)) {
            return Err(header.refuse(format!("a second upstream for {}/{}", route.protocol, route.port)));
        }
        let (body, close) = lines.block("upstream")?;
        // The servers may differ per port (a pod-backed Service's endpoints), the balance not.
        let (mode, servers) = upstream_body(&body, close)?;
        out.upstreams.extend(servers);
        alike(&mut balance, mode, header, "balance")?;
        lines.expect_top("server {")?;
        let (body, close) = lines.block("server")?;
        let (listens, pp) = server_body(&route, &body, close, host, format)?;
        alike(&mut proxy_protocol, pp, header, "PROXY protocol")?;
        out.binds.extend(listens.iter().map(|ip| Bind {
            protocol: route.protocol,
            addr: BindAddr::Ip(*ip),
            port: route.port,
        }));
        alike(&mut addresses, listens, header, "listen addresses")?;
    }
    Ok(out)
}

/// `upstream flipbit_<ns>_<svc>_<tcp|udp>_<port> {`, of this file's Service. Namespace and name
/// are DNS labels (no `_`), so the prefix leaves exactly the protocol and port.
fn upstream_header<'a>(key: &ServiceKey, line: Line<'a>) -> Result<Route<'a>, Refusal> {
    let want = "`upstream flipbit_<namespace>_<service>_<tcp|udp>_<port> {`";
    let ["upstream", name, "{"] = line.top_words()?[..] else {
        return Err(line.refuse(format!("expected {want}")));
    };
    let prefix = format!("flipbit_{}_{}_", key.namespace, key.name);
    let (protocol, port_text) = match name.strip_prefix(&prefix).and_then(|r| r.split_once('_')) {
        Some(("tcp", p)) => (Protocol::Tcp, p),
        Some(("udp", p)) => (Protocol::Udp, p),
        _ => {
            return Err(line.refuse(format!(
                "upstream {} is not flipbit_{}_{}_<tcp|udp>_<port>, an upstream of Service {key}",
                quote(name),
                key.namespace,
                key.name
            )));
        }
    };
    let port = port(port_text).map_err(|e| line.refuse(e))?;
    Ok(Route { name, protocol, port })
}

/// `[least_conn; | hash $remote_addr consistent;]` then one or more `server <address>:<port>;`:
/// the balance mode and the nodes' addresses (in order, as alike in every port of a Service).
fn upstream_body(body: &[Directive<'_>], close: Line<'_>) -> Result<(&'static str, Vec<SocketAddr>), Refusal> {
    let (mode, skip) = match body.first().map(|d| &d.words[..]) {
        Some(["least_conn"]) => ("least_conn", 1),
        Some(["hash", "$remote_addr", "consistent"]) => ("hash", 1),
        _ => ("round-robin", 0),
    };
    let mut nodes = Vec::new();
    for d in &body[skip..] {
        let ["server", addr] = d.words[..] else {
            return Err(d.not("server <address>:<port>"));
        };
        nodes.push(socket(addr).map_err(|e| d.line.refuse(e))?);
    }
    if nodes.is_empty() {
        return Err(close.refuse("an upstream without a `server`"));
    }
    Ok((mode, nodes))
}

/// One or more `listen <address>:<port>[ udp];`, (format 2) `allow <range>;` lines and `deny
/// all;`, `proxy_pass <upstream>;`, the protocol's timeout (and, format 2, its own idle timeout or
/// UDP answers) and `[proxy_protocol on;]`: the addresses listened on and whether PROXY protocol
/// is on.
fn server_body(
    route: &Route<'_>,
    body: &[Directive<'_>],
    close: Line<'_>,
    host: &LbHost,
    format: u32,
) -> Result<(Vec<IpAddr>, bool), Refusal> {
    let udp = route.protocol == Protocol::Udp;
    let (mut listens, mut seen) = (Vec::new(), BTreeSet::new());
    for d in body.iter().take_while(|d| d.words[0] == "listen") {
        let addr = match (&d.words[..], udp) {
            (["listen", addr], false) | (["listen", addr, "udp"], true) => *addr,
            _ => {
                return Err(d.line.refuse(format!(
                    "expected `listen <address>:{}{}` for upstream {}",
                    route.port,
                    if udp { " udp" } else { "" },
                    route.name
                )));
            }
        };
        let addr = socket(addr).map_err(|e| d.line.refuse(e))?;
        if addr.port() != route.port {
            return Err(d.line.refuse(format!(
                "listens on port {}, and its upstream is for port {}",
                addr.port(),
                route.port
            )));
        }
        in_pools(host, addr.ip(), d.line)?;
        if !seen.insert(addr.ip()) {
            return Err(d.line.refuse(format!("a second `listen` on {addr}")));
        }
        listens.push(addr.ip());
    }
    if listens.is_empty() {
        return Err(body.first().map_or_else(
            || close.refuse("a server without a `listen`"),
            |d| d.not("listen <address>:<port>"),
        ));
    }
    let mut at = listens.len();
    at = access(body, at, close, format)?;
    expect(body, at, &format!("proxy_pass {}", route.name), close)?;
    at += 1;
    if udp {
        expect(body, at, "proxy_timeout 20s", close)?;
        at += 1;
        if let Some(d) = tuned(body, at, "proxy_responses", format) {
            let ["proxy_responses", n] = d.words[..] else {
                return Err(d.not("proxy_responses <answers>"));
            };
            tuning::responses(n).map_err(|e| d.line.refuse(e))?;
            at += 1;
        }
    } else {
        let d = body
            .get(at)
            .ok_or_else(|| close.refuse("expected `proxy_connect_timeout` before the server ends"))?;
        let ["proxy_connect_timeout", t] = d.words[..] else {
            return Err(d.not("proxy_connect_timeout <seconds>"));
        };
        tuning::connect_timeout(t, format).map_err(|e| d.line.refuse(e))?;
        at += 1;
        if let Some(d) = tuned(body, at, "proxy_timeout", format) {
            let ["proxy_timeout", t] = d.words[..] else {
                return Err(d.not("proxy_timeout <seconds>"));
            };
            tuning::idle_timeout(t).map_err(|e| d.line.refuse(e))?;
            at += 1;
        }
    }
    let proxy_protocol = body.get(at).is_some_and(|d| d.words[0] == "proxy_protocol");
    if proxy_protocol {
        expect(body, at, "proxy_protocol on", close)?;
        at += 1;
    }
    match body.get(at) {
        Some(d) => Err(d.line.refuse(format!(
            "expected the `}}` closing the server, found {}",
            quote(d.words[0])
        ))),
        None => Ok((listens, proxy_protocol)),
    }
}

/// The directive at `at` when it is `name`, a line only format 2 has (in format 1, `None`: the
/// caller then finds it where nothing more may be).
fn tuned<'a, 'b>(body: &'a [Directive<'b>], at: usize, name: &str, format: u32) -> Option<&'a Directive<'b>> {
    body.get(at).filter(|d| format >= 2 && d.words[0] == name)
}

/// Format 2's `allow <range>;` lines from `at` on, closed by `deny all;`; where the next line is.
fn access(body: &[Directive<'_>], mut at: usize, close: Line<'_>, format: u32) -> Result<usize, Refusal> {
    let mut allowed = BTreeSet::new();
    while let Some(d) = tuned(body, at, "allow", format) {
        let ["allow", r] = d.words[..] else {
            return Err(d.not("allow <range>"));
        };
        let net = tuning::range(r).map_err(|e| d.line.refuse(e))?;
        if !allowed.insert(net) {
            return Err(d.line.refuse(format!("a second `allow {net}`")));
        }
        at += 1;
    }
    if !allowed.is_empty() {
        expect(body, at, "deny all", close)?;
        at += 1;
    }
    Ok(at)
}

#[cfg(test)]
mod tests;
