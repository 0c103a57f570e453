//! The grammar of exactly what the generator writes under `lb/<host>/`, next to the renderers:
//! the applier checks every file it stages against it and refuses a commit holding anything else,
//! because the state repo is untrusted input to an LB host whose load balancer runs as root (a
//! hand-pushed `log_format` + `access_log`, `include`, or a `listen` on the host's own port 22
//! passes `nginx -t`). `core/tests/grammar.rs` proves that whatever the renderers can produce
//! passes.
//!
//! Each file kind has its own small parser, read line by line against its template: fixed
//! directives in the template's order, four-space indentation, one space between words, values
//! typed and written exactly as the renderer writes them, every address the load balancer would
//! bind inside the host's pools. Nothing is skipped as "unknown", so a directive nginx or HAProxy
//! would act on can only be one the generator writes. Besides yes or no, a check returns the
//! sockets a file binds and the routes a `.map` file adds ([`Checked`]), so the applier can hold
//! files against each other (two Services on one socket, a wildcard port no Service uses).
//!
//! - `nginx`: a Service's `stream` snippet, `<ns>/<svc>.conf`;
//! - `map`, `listeners`, `nodes`: the shared-listeners layout's `<ns>/<svc>.map` and
//!   `_flipbit/{listeners,nodes}.conf`;
//! - `haproxy`: a Service's HAProxy `frontend`s and `backend`s, `<ns>/<svc>.cfg`.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use crate::config::{Flavor, Layout, LbHost};
use crate::exposure::Protocol;
use crate::names::{LbHostName, ServiceKey};
use crate::render;
use crate::repo_paths;

pub use crate::format::OUTPUT_FORMAT;

mod haproxy;
mod lines;
mod listeners;
mod map;
mod nginx;
mod nodes;
mod tuning;
mod values;

// A new output format needs its grammar here before the generator may write it. Format 2 adds,
// in a Service's nginx snippet and HAProxy file, source ranges (`allow`/`deny all`, an `acl` and
// `tcp-request connection reject`), connect and idle timeouts of the Service's own, and
// `proxy_responses` for UDP (`traffic`); everything format 1 says reads the same in format 2.
const _: () = assert!(OUTPUT_FORMAT == 2, "teach grammar::check the new output format");

/// Why a file was refused: 1-based line (0 = the file as a whole) and a reason. The reason never
/// holds raw file text: it quotes at most 60 characters of an offending token with `{:?}` (which
/// escapes control characters and newlines), so a refusal can't forge log lines or leak content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct Refusal {
    pub line: usize,
    pub reason: String,
}

impl Refusal {
    fn file(reason: impl Into<String>) -> Self {
        Self {
            line: 0,
            reason: reason.into(),
        }
    }
}

/// Which generated file a path under `lb/<host>/` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbFile {
    /// `<ns>/<svc>.conf`: a Service's nginx `stream` snippet.
    NginxService(ServiceKey),
    /// `<ns>/<svc>.map`: a Service's map entries on a shared-listeners host.
    ServiceMap(ServiceKey),
    /// `_flipbit/listeners.conf`: a shared-listeners host's wildcard listeners and map.
    HostListeners,
    /// `_flipbit/nodes.conf`: a shared-listeners host's node choice.
    HostNodes,
    /// `<ns>/<svc>.cfg`: a Service's HAProxy file.
    Haproxy(ServiceKey),
}

impl LbFile {
    /// The kind of the file at repo path `path` (`lb/<host>/...`) of LB host `host`; `None` for a
    /// path of another host or one the generator never writes (`_flipbit/other.conf`, a name
    /// that is not a DNS label, another extension).
    pub fn of_path(path: &str, host: &LbHostName) -> Option<LbFile> {
        if let Some((h, name)) = repo_paths::parse_lb_host_path(path) {
            return match name.as_str() {
                _ if &h != host => None,
                render::map::LISTENERS_FILE => Some(LbFile::HostListeners),
                render::map::NODES_FILE => Some(LbFile::HostNodes),
                _ => None,
            };
        }
        let (_, key) = repo_paths::parse_lb_path(path).filter(|(h, _)| h == host)?;
        match path.rsplit_once('.').map(|(_, ext)| ext) {
            Some("conf") => Some(LbFile::NginxService(key)),
            Some("map") => Some(LbFile::ServiceMap(key)),
            Some("cfg") => Some(LbFile::Haproxy(key)),
            _ => None,
        }
    }
}

/// Where a load balancer binds a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BindAddr {
    /// One address (`listen <address>:<port>`, HAProxy's `bind`): always inside the host's pools.
    Ip(IpAddr),
    /// Every IPv4 address of the host (`listen <port>`).
    AnyV4,
    /// Every IPv6 address of the host (`listen [::]:<port>`).
    AnyV6,
}

/// A socket the load balancer binds for a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bind {
    pub protocol: Protocol,
    pub addr: BindAddr,
    pub port: u16,
}

/// What a checked file holds that the applier acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    /// Sockets the file asks the load balancer to listen on, in file order: per-service `listen`
    /// and HAProxy `bind` (Ip), shared-listeners `listen <port>` (AnyV4) / `listen [::]:<port>`
    /// (AnyV6).
    pub binds: Vec<Bind>,
    /// The map keys of a `.map` file, in file order: the (protocol, address:port) a client reaches
    /// through a wildcard listener.
    pub routes: Vec<(Protocol, SocketAddr)>,
    /// The addresses its `server` lines send to, nodes at node ports or pods (a per-service nginx
    /// snippet, a HAProxy file): what the generator's commit messages compare to say which
    /// upstreams came and went. Empty for a `.map` file, whose nodes are the host's `nodes.conf`.
    pub upstreams: BTreeSet<SocketAddr>,
}

/// Checks `text`, the file `file` of LB host `host` (its pools, flavor and layout from
/// `flipbit.yaml`), written in output format `format`: `Ok` only for text the generator of that
/// format could have rendered for this host.
pub fn check(file: &LbFile, text: &str, host: &LbHost, format: u32) -> Result<Checked, Refusal> {
    if !(1..=OUTPUT_FORMAT).contains(&format) {
        return Err(Refusal::file(format!(
            "output format {format} is not known to this version"
        )));
    }
    placement(file, host)?;
    match file {
        LbFile::NginxService(key) => nginx::check(key, text, host, format),
        LbFile::ServiceMap(_) => map::check(text, host),
        LbFile::HostListeners => listeners::check(text),
        LbFile::HostNodes => nodes::check(text),
        LbFile::Haproxy(key) => haproxy::check(key, text, host, format),
    }
}

/// Refuses a file the generator never writes for a host of this flavor and layout: `.cfg` only
/// on HAProxy hosts, everything else only on nginx hosts, and the shared-listeners files only on
/// shared-listeners hosts.
fn placement(file: &LbFile, host: &LbHost) -> Result<(), Refusal> {
    let (flavor, shared) = match file {
        LbFile::Haproxy(_) => (Flavor::Haproxy, false),
        LbFile::NginxService(_) => (Flavor::Nginx, false),
        LbFile::ServiceMap(_) | LbFile::HostListeners | LbFile::HostNodes => (Flavor::Nginx, true),
    };
    if host.flavor != flavor {
        return Err(Refusal::file(format!(
            "LB host {} runs {}, and this file is {flavor}'s",
            host.name, host.flavor
        )));
    }
    if shared && host.layout != Layout::SharedListeners {
        return Err(Refusal::file(format!(
            "this file belongs to the shared-listeners layout, and LB host {} is per-service",
            host.name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
