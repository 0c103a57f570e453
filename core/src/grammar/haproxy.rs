//! The grammar of a Service's HAProxy file, `lb/<host>/<ns>/<svc>.cfg`
//! (`templates/haproxy-service.cfg.tera`, rendered by `render_haproxy::haproxy_service`): per TCP
//! port a `frontend flipbit_<ns>_<svc>_<port>` bound to the Service's addresses and a `backend`
//! of the same name with its nodes. HAProxy sections have no closing brace: a section runs to the
//! next section keyword, so every indented line after a header is read as that section's, and
//! the top level holds only these two headers (no `global`, `defaults`, `listen`, `userlist`,
//! `program`, ...). Names must be this file's Service (HAProxy loads every file into one
//! configuration, and a name defined twice is an error or a hijack); binds must be in the pools.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::lines::{Directive, Line, Lines, quote};
use super::values::{alike, in_pools, port, socket};
use super::{Bind, BindAddr, Checked, Refusal};
use crate::config::LbHost;
use crate::exposure::Protocol;
use crate::names::ServiceKey;

/// Checks a `.cfg` file of Service `key` on HAProxy host `host`: its binds (TCP, in file order).
pub(super) fn check(key: &ServiceKey, text: &str, host: &LbHost) -> Result<Checked, Refusal> {
    let mut lines = Lines::new(text)?;
    let mut out = Checked::default();
    let mut ports = BTreeSet::new();
    let (mut addresses, mut balance, mut nodes, mut proxy_protocol) = (None, None, None, None);
    while let Some(header) = lines.next_after_gaps() {
        let (name, port) = frontend_header(key, header)?;
        if !ports.insert(port) {
            return Err(header.refuse(format!("a second frontend for port {port}")));
        }
        let body = lines.section()?;
        let binds = frontend(name, port, &body, header, host)?;
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
        let (mode, servers, pp) = backend_body(&body, backend)?;
        alike(&mut balance, mode, backend, "balance")?;
        alike(&mut nodes, servers, backend, "nodes")?;
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

/// `mode tcp`, one or more `bind <address>:<port>`, `timeout client 10m`, `default_backend
/// <name>`: the addresses bound.
fn frontend(
    name: &str,
    port: u16,
    body: &[Directive<'_>],
    header: Line<'_>,
    host: &LbHost,
) -> Result<Vec<IpAddr>, Refusal> {
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
    exactly(next, "timeout client 10m", header)?;
    exactly(lines.next(), &format!("default_backend {name}"), header)?;
    nothing_more(lines.next())?;
    Ok(binds)
}

/// `mode tcp`, the balance (`hash-type consistent` with `source` only), the fixed timeouts and
/// retries, then one or more `server <address> <address> check[ send-proxy-v2]`, a server named
/// after the address it sends to (unbracketed): the balance, the nodes and whether PROXY
/// protocol is on.
fn backend_body(body: &[Directive<'_>], header: Line<'_>) -> Result<(&'static str, Vec<IpAddr>, bool), Refusal> {
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
    for want in [
        "timeout connect 5s",
        "timeout server 10m",
        "retries 2",
        "option redispatch",
    ] {
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
        servers.push(addr.ip());
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
