//! The shared-listeners layout (`lbHosts[].layout: shared-listeners` in `flipbit.yaml`), for LB
//! hosts with thousands of Services. The per-service layout gives every Service port its own
//! `listen <address>:<port>` and named `upstream`, and nginx checks each against all the others
//! (its per-port address list and its upstream-name lookup are linear scans): `nginx -t` and every
//! reload grow quadratically, seconds at 10k Services, minutes at 50k. Here a host has:
//!
//! - `_flipbit/listeners.conf`: one wildcard `listen <port>` (and `[::]:<port>`) per port that any
//!   Service on the host uses, all proxying to `$flipbit_upstream`, and the one `map` that sets it
//!   from `$protocol/$server_addr:$server_port`, including every `<namespace>/<service>.map`;
//! - `_flipbit/nodes.conf`: the eligible nodes, as `split_clients` that pick one per connection;
//! - `<namespace>/<service>.map`: one Service's map entries, e.g.
//!   `TCP/127.1.1.5:80 $flipbit_node_rr:30080;`, still one reviewable file per Service.
//!
//! nginx does a constant amount of work per entry, so validation stays linear; a node coming or
//! going rewrites `nodes.conf` alone, and a Service's file depends only on that Service.
//!
//! What the layout gives up, and why those Services are rendered the per-service way on the same
//! host instead ([`per_service_reason`]; a specific `listen <address>:<port>` wins over the
//! wildcard on the same port, TCP and UDP alike):
//! - per-Service node subsets (`externalTrafficPolicy: Local`, `flipbit.io/max-nodes`): the node
//!   variables are per host; one per Service would bring back a linear lookup per Service;
//! - `least-conn`, PROXY protocol: they need an `upstream` group or a per-`server` directive;
//! - passive health checks: with a variable `proxy_pass` nginx has no upstream group, so no
//!   `max_fails` and no retry of another node (`proxy_next_upstream`); a connection sent to a dead
//!   node fails until the generator drops the node (NotReady, cordoned).
//!
//! Also: the wildcard takes each port on every address of the host, including addresses Flipbit
//! does not own (a connection there is accepted and closed, with an error logged), and no other
//! program on the host can bind that port on any address.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use serde::Serialize;

use crate::annotations::Balance;
use crate::exposure::{ExposedService, Protocol};
use crate::names::LbHostName;
use crate::render::{self, RenderError, SHARED_ENTRIES};

mod host;
pub use host::{host_files, without_listeners};

/// `_flipbit/listeners.conf` and `_flipbit/nodes.conf`.
pub const LISTENERS_FILE: &str = "listeners";
pub const NODES_FILE: &str = "nodes";
/// Stands for the release's own `.map` files in `listeners.conf`; the applier replaces it with the
/// absolute glob of the release it stages ([`bind_release`]). Left in place, nginx cannot open it,
/// so a file that was not bound fails `nginx -t` instead of routing nothing.
pub const SERVICE_MAPS_TOKEN: &str = "@flipbit-service-maps@";
/// Node per connection (round robin) and node per client address (hash), set in `nodes.conf`.
const RR_VAR: &str = "$flipbit_node_rr";
const HASH_VAR: &str = "$flipbit_node_hash";

/// One wildcard listener of a shared-listeners host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Listener {
    pub protocol: Protocol,
    pub port: u16,
    /// `[::]:<port>` rather than `<port>` (IPv4).
    pub ipv6: bool,
}

/// Why `svc` cannot be served through the shared listeners (it then keeps the per-service
/// rendering on that host), or `None`. Depends on the Service's spec alone, not on nodes, so a
/// Service does not move between the two renderings as nodes come and go.
pub fn per_service_reason(svc: &ExposedService) -> Option<&'static str> {
    if svc.local_traffic {
        Some("externalTrafficPolicy: Local needs its own node set")
    } else if svc.settings.max_nodes.is_some() {
        Some("flipbit.io/max-nodes needs its own node subset")
    } else if svc.settings.balance == Balance::LeastConn {
        Some("least-conn needs an upstream group")
    } else if svc.settings.proxy_protocol {
        Some("PROXY protocol is set per listener")
    } else if !svc.settings.traffic.source_ranges.is_empty() {
        Some("loadBalancerSourceRanges are enforced per listener")
    } else if svc.settings.traffic.is_tuned() {
        Some("its timeouts and UDP sessions are set per listener")
    } else if svc.settings.traffic.backends == crate::traffic::Backends::Pods {
        Some("flipbit.io/backends: pods needs its own upstreams")
    } else {
        None
    }
}

/// The wildcard listeners `svc` needs on a host where it has `ips`. Every Service on a
/// shared-listeners host counts, per-service ones too: nginx then never binds a specific
/// `<address>:<port>` socket there (the wildcard covers it), because a reload that must swap a
/// specific socket for a wildcard one on the same port, or back, fails with "Address in use".
pub fn listeners_of(svc: &ExposedService, ips: &[IpAddr]) -> BTreeSet<Listener> {
    svc.ports
        .iter()
        .flat_map(|p| {
            ips.iter().map(|ip| Listener {
                protocol: p.protocol,
                port: p.port,
                ipv6: ip.is_ipv6(),
            })
        })
        .collect()
}

/// The listeners a committed per-Service file (`.conf` or `.map`) uses, read from its text: for
/// Services whose files are kept as they are (on hold, invalid), so their ports keep a wildcard.
/// Lines that do not parse are ignored.
pub fn listeners_in(text: &str) -> BTreeSet<Listener> {
    let mut out = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        let listener = if let Some(rest) = line.strip_prefix("listen ") {
            let mut words = rest.trim_end_matches(';').split_whitespace();
            let addr: Option<SocketAddr> = words.next().and_then(|a| a.parse().ok());
            let udp = words.any(|w| w == "udp");
            addr.map(|a| Listener {
                protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
                port: a.port(),
                ipv6: a.is_ipv6(),
            })
        } else {
            entry_listener(line.split_whitespace().next().unwrap_or_default())
        };
        out.extend(listener);
    }
    out
}

/// The listener of a map key `<PROTOCOL>/<address>:<port>`.
fn entry_listener(key: &str) -> Option<Listener> {
    let (protocol, rest) = key.split_once('/')?;
    let protocol = match protocol {
        "TCP" => Protocol::Tcp,
        "UDP" => Protocol::Udp,
        _ => return None,
    };
    let (addr, port) = rest.rsplit_once(':')?;
    Some(Listener {
        protocol,
        port: port.parse().ok()?,
        ipv6: addr.parse::<IpAddr>().ok()?.is_ipv6(),
    })
}

#[derive(Serialize)]
struct EntriesView {
    service: String,
    lb_host: String,
    entries: Vec<EntryView>,
}

#[derive(Serialize)]
struct EntryView {
    key: String,
    value: String,
}

/// The map entries of `svc` on `host`, where it has `ips`: one per port per address, sorted. The
/// text depends on the Service and its addresses only (nodes are chosen in `nodes.conf`). Refuses a
/// Service that [`per_service_reason`] sends to the per-service rendering, and IPv4-compatible
/// IPv6 addresses (`::a.b.c.d`), which nginx spells differently in `$server_addr`.
pub fn service_entries(svc: &ExposedService, host: &LbHostName, ips: &[IpAddr]) -> Result<String, RenderError> {
    if let Some(why) = per_service_reason(svc) {
        return Err(RenderError::new(
            SHARED_ENTRIES,
            format!("{} needs the per-service rendering: {why}", svc.key),
        ));
    }
    let mut ips = ips.to_vec();
    ips.sort();
    ips.dedup();
    if let Some(ip) = ips.iter().find(|ip| is_v4_compatible(ip)) {
        return Err(RenderError::new(
            SHARED_ENTRIES,
            format!("{ip}: IPv4-compatible IPv6 addresses cannot be matched in $server_addr"),
        ));
    }
    let var = match svc.settings.balance {
        Balance::Hash => HASH_VAR,
        _ => RR_VAR,
    };
    let mut entries = Vec::new();
    for p in &svc.ports {
        for ip in &ips {
            entries.push(EntryView {
                key: format!("{}/{ip}:{}", p.protocol, p.port),
                value: format!("{var}:{}", p.node_port),
            });
        }
    }
    let view = EntriesView {
        service: svc.key.to_string(),
        lb_host: host.to_string(),
        entries,
    };
    render::render(SHARED_ENTRIES, &view)
}

/// `::a.b.c.d` (not `::` or `::1`): nginx prints it dotted, Rust in hex.
fn is_v4_compatible(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            s[..6].iter().all(|x| *x == 0) && (s[6] != 0 || s[7] > 1)
        }
        IpAddr::V4(_) => false,
    }
}

/// `text` (a host-level file) with [`SERVICE_MAPS_TOKEN`] replaced by the quoted glob of the
/// `.map` files of `release_dir`, the absolute directory it is staged in. nginx resolves a relative
/// `include` against its own config directory, not the including file's, so only the applier,
/// which knows where the release is, can say where its `.map` files are; naming the release itself
/// (not the `current` link) makes `nginx -t` of a candidate read the candidate's entries. Refuses a
/// directory that is not absolute or holds characters that nginx quoting or globbing would change.
pub fn bind_release(text: &str, release_dir: &Path) -> Result<String, String> {
    if !text.contains(SERVICE_MAPS_TOKEN) {
        return Ok(text.to_owned());
    }
    let dir = release_dir
        .to_str()
        .filter(|d| release_dir.is_absolute() && d.chars().all(safe_path_char))
        .ok_or_else(|| {
            format!(
                "{}: the release directory must be an absolute path of letters, digits, spaces and /._-+@:,=~%",
                release_dir.display()
            )
        })?;
    Ok(text.replace(
        SERVICE_MAPS_TOKEN,
        &format!("\"{}/*/*.map\"", dir.trim_end_matches('/')),
    ))
}

fn safe_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || " /._-+@:,=~%".contains(c)
}

#[cfg(test)]
mod tests;
