//! The grammar of a Service's HAProxy file, `lb/<host>/<ns>/<svc>.cfg`
//! (`templates/haproxy-service.cfg.tera`, rendered by `render::haproxy::service`): per TCP
//! port a `frontend flipbit_<ns>_<svc>_<port>` bound to the Service's addresses and a `backend`
//! of the same name with its nodes. HAProxy sections have no closing brace: a section runs to the
//! next section keyword, so every indented line after a header is read as that section's, and
//! the top level holds only these two headers (no `global`, `defaults`, `listen`, `userlist`,
//! `program`, ...). Names must be this file's Service (HAProxy loads every file into one
//! configuration, and a name defined twice is an error or a hijack); binds must be in the pools.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use super::lines::{Directive, Line, Lines, quote};
use super::values::{alike, in_pools, port, socket};
use super::{Bind, BindAddr, Checked, Refusal, tuning};
use crate::config::LbHost;
use crate::exposure::Protocol;
use crate::names::ServiceKey;

/// Checks a `.cfg` file of Service `key` on HAProxy host `host`: its binds (TCP, in file order).
pub(super) fn check(key: &ServiceKey, text: &str, host: &LbHost, format: u32) -> Result<Checked, Refusal> {
    let mut lines = Lines::new(text)?;
    let mut out = Checked::default();
    let mut ports = BTreeSet::new();
    let (mut addresses, mut balance, mut proxy_protocol) = (None, None, None);
    while let Some(header) = lines.next_after_gaps() {
        let (name, port) = frontend_header(key, header)?;
        if !ports.insert(port) {
            return Err(header.refuse(format!("a second frontend for port {port}")));
        }
        let body = lines.section()?;
        let (binds, idle) = frontend(name, port, &body, header, host, format)?;
        out.binds.extend(binds.iter().map(|ip| Bind {
            protocol: Protocol::Tcp,
            addr: BindAddr::Ip(*ip),
            port,
        }));
        alike(&mut addresses, binds, header, "bind addresses")?;
        let backend = lines
            .next_after_gaps()
            .ok_or_else(|| lines.ended(&format!("`backend {name}`")))?;
        if backend.text.strip_prefix("backend ") != Some(name) {
            return Err(backend.refuse(format!("expected `backend {name}`, found {}", quote(backend.text))));
        }
        let body = lines.section()?;
        // The servers may differ per port (a pod-backed Service's endpoints), the rest not.
        let (mode, servers, pp) = backend_body(&body, backend, format, idle)?;
        out.upstreams.extend(servers);
        alike(&mut balance, mode, backend, "balance")?;
        alike(&mut proxy_protocol, pp, backend, "PROXY protocol")?;
    }
    Ok(out)
}

/// `frontend flipbit_<ns>_<svc>_<port>` of this file's Service: the name and port.
fn frontend_header<'a>(key: &ServiceKey, line: Line<'a>) -> Result<(&'a str, u16), Refusal> {
    let prefix = format!("flipbit_{}_{}_", key.namespace, key.name);
    let words = line.top_words()?;
    let ["frontend", name] = words[..] else {
        return Err(line.refuse(format!("expected `frontend {prefix}<port>`, found {}", quote(words[0]))));
    };
    let port_text = name.strip_prefix(&prefix).ok_or_else(|| {
        line.refuse(format!(
            "frontend {} is not {prefix}<port>, a proxy of Service {key}",
            quote(name)
        ))
    })?;
    Ok((name, port(port_text).map_err(|e| line.refuse(e))?))
}

/// `mode tcp`, one or more `bind <address>:<port>`, (format 2) an `acl flipbit_allowed src
/// <range>...` and its `tcp-request connection reject if !flipbit_allowed`, `timeout client
/// <idle>`, `default_backend <name>`: the addresses bound and the idle timeout (which the backend
/// repeats as `timeout server`).
fn frontend<'a>(
    name: &str,
    port: u16,
    body: &[Directive<'a>],
    header: Line<'_>,
    host: &LbHost,
    format: u32,
) -> Result<(Vec<IpAddr>, &'a str), Refusal> {
    let mut lines = body.iter();
    exactly(lines.next(), "mode tcp", header)?;
    let (mut binds, mut seen) = (Vec::new(), BTreeSet::new());
    let mut next = lines.next();
    while let Some(d) = next.filter(|d| d.words[0] == "bind") {
        let ["bind", addr] = d.words[..] else {
            return Err(d.not("bind <address>:<port>"));
        };
        let addr = socket(addr).map_err(|e| d.line.refuse(e))?;
        if addr.port() != port {
            return Err(d.line.refuse(format!(
                "binds port {}, and its frontend is for port {port}",
                addr.port()
            )));
        }
        in_pools(host, addr.ip(), d.line)?;
        if !seen.insert(addr.ip()) {
            return Err(d.line.refuse(format!("a second `bind` on {addr}")));
        }
        binds.push(addr.ip());
        next = lines.next();
    }
    if binds.is_empty() {
        return Err(next.map_or_else(
            || header.refuse("a frontend without a `bind`"),
            |d| d.not("bind <address>:<port>"),
        ));
    }
    if let Some(d) = next.filter(|d| format >= 2 && d.words[0] == "acl") {
        let ["acl", "flipbit_allowed", "src", ranges @ ..] = &d.words[..] else {
            return Err(d.not("acl flipbit_allowed src <range>..."));
        };
        let mut allowed = BTreeSet::new();
        for r in ranges {
            let net = tuning::range(r).map_err(|e| d.line.refuse(e))?;
            if !allowed.insert(net) {
                return Err(d.line.refuse(format!("{net} twice")));
            }
        }
        if allowed.is_empty() {
            return Err(d.not("acl flipbit_allowed src <range>..."));
        }
        exactly(
            lines.next(),
            "tcp-request connection reject if !flipbit_allowed",
            header,
        )?;
        next = lines.next();
    }
    let d = next.ok_or_else(|| header.refuse("expected `timeout client` before the section ends"))?;
    let ["timeout", "client", idle] = d.words[..] else {
        return Err(d.not("timeout client <idle>"));
    };
    idle_timeout(idle, format).map_err(|e| d.line.refuse(e))?;
    exactly(lines.next(), &format!("default_backend {name}"), header)?;
    nothing_more(lines.next())?;
    Ok((binds, idle))
}

/// An idle timeout: the default `10m`, or (format 2) a Service's own.
fn idle_timeout(token: &str, format: u32) -> Result<(), String> {
    if token == "10m" {
        return Ok(());
    }
    if format < 2 {
        return Err(format!(
            "{} is not `10m` (format 1 has no timeouts of a Service's own)",
            quote(token)
        ));
    }
    tuning::idle_timeout(token)
}

/// `mode tcp`, the balance (`hash-type consistent` with `source` only), the fixed timeouts and
/// retries, then one or more `server <address> <address> check[ send-proxy-v2]`, a server named
/// after the address it sends to (unbracketed): the balance, the nodes and whether PROXY
/// protocol is on.
fn backend_body(
    body: &[Directive<'_>],
    header: Line<'_>,
    format: u32,
    idle: &str,
) -> Result<(&'static str, Vec<SocketAddr>, bool), Refusal> {
    let mut lines = body.iter();
    exactly(lines.next(), "mode tcp", header)?;
    let d = lines
        .next()
        .ok_or_else(|| header.refuse("expected `balance` before the backend ends"))?;
    let mode = match d.words[..] {
        ["balance", "roundrobin"] => "roundrobin",
        ["balance", "leastconn"] => "leastconn",
        ["balance", "source"] => {
            exactly(lines.next(), "hash-type consistent", header)?;
            "source"
        }
        _ => return Err(d.not("balance roundrobin|leastconn|source")),
    };
    let d = lines
        .next()
        .ok_or_else(|| header.refuse("expected `timeout connect` before the backend ends"))?;
    let ["timeout", "connect", connect] = d.words[..] else {
        return Err(d.not("timeout connect <seconds>"));
    };
    tuning::connect_timeout(connect, format).map_err(|e| d.line.refuse(e))?;
    // The server side idles as long as the client side: one timeout of the Service, rendered twice.
    for want in [&format!("timeout server {idle}"), "retries 2", "option redispatch"] {
        exactly(lines.next(), want, header)?;
    }
    let (mut servers, mut seen, mut proxy_protocol) = (Vec::new(), BTreeSet::new(), None);
    for d in lines {
        let (name, addr, pp) = match d.words[..] {
            ["server", name, addr, "check"] => (name, addr, false),
            ["server", name, addr, "check", "send-proxy-v2"] => (name, addr, true),
            _ => return Err(d.not("server <address>:<port> <address>:<port> check[ send-proxy-v2]")),
        };
        let addr = socket(addr).map_err(|e| d.line.refuse(e))?;
        if name != format!("{}:{}", addr.ip(), addr.port()) {
            return Err(d.line.refuse(format!(
                "server {} is not named after its address, {}:{}",
                quote(name),
                addr.ip(),
                addr.port()
            )));
        }
        if !seen.insert(addr) {
            return Err(d.line.refuse(format!("a second server {addr}")));
        }
        if *proxy_protocol.get_or_insert(pp) != pp {
            return Err(d.line.refuse("send-proxy-v2 on some servers and not on others"));
        }
        servers.push(addr);
    }
    let Some(pp) = proxy_protocol else {
        return Err(header.refuse("a backend without a `server`"));
    };
    Ok((mode, servers, pp))
}

/// Checks the next line of a section is exactly `want`.
fn exactly(d: Option<&Directive<'_>>, want: &str, header: Line<'_>) -> Result<(), Refusal> {
    match d {
        Some(d) => d.exactly(want),
        None => Err(header.refuse(format!("expected `{want}` before the section ends"))),
    }
}

fn nothing_more(d: Option<&Directive<'_>>) -> Result<(), Refusal> {
    match d {
        Some(d) => Err(d
            .line
            .refuse(format!("the frontend ends here, found {}", quote(d.words[0])))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
