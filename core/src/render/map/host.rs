//! The host-level files of a shared-listeners host: `listeners.conf` (the wildcard listeners and
//! the map) and `nodes.conf` (the `split_clients` that pick a node per connection).

use std::collections::BTreeSet;

use serde::Serialize;

use super::{HASH_VAR, LISTENERS_FILE, Listener, NODES_FILE, RR_VAR, SERVICE_MAPS_TOKEN};
use crate::exposure::Protocol;
use crate::names::LbHostName;
use crate::nodes::Node;
use crate::render::{self, RenderError, SHARED_LISTENERS, SHARED_NODES};
use crate::repo_paths;

/// `split_clients` shares are in hundredths of a percent: at most this many nodes get a share.
const SHARE_UNITS: usize = 10_000;
/// Points per node on the hash ring: nginx's `hash ... consistent` uses 160 too (each node's share
/// within about 8% of even).
const RING_POINTS: usize = 160;

#[derive(Serialize)]
struct ListenersView {
    lb_host: String,
    token: &'static str,
    serving: bool,
    tcp: Vec<String>,
    udp: Vec<String>,
}

#[derive(Serialize)]
struct NodesView {
    lb_host: String,
    rr_var: &'static str,
    hash_var: &'static str,
    rr: Vec<ShareView>,
    hash: Vec<ShareView>,
}

#[derive(Serialize)]
struct ShareView {
    share: String,
    node: String,
}

/// The host-level files of a shared-listeners host, as (repo path, text): `listeners.conf` with a
/// wildcard listener for each of `listeners` (the union of [`listeners_of`] over every Service on
/// the host, per-service ones included, and [`listeners_in`] of kept files), and `nodes.conf` over
/// `nodes` (every eligible node). With no node nothing listens, as in the per-service layout.
pub fn host_files(
    host: &LbHostName,
    listeners: &BTreeSet<Listener>,
    nodes: &[&Node],
) -> Result<Vec<(String, String)>, RenderError> {
    let mut nodes: Vec<&Node> = nodes.to_vec();
    nodes.sort_by(|a, b| a.ip.cmp(&b.ip).then(a.name.cmp(&b.name)));
    nodes.dedup_by(|a, b| a.ip == b.ip);
    if nodes.len() > SHARE_UNITS {
        return Err(RenderError::new(
            SHARED_NODES,
            format!(
                "{} eligible nodes: split_clients shares are 0.01%, so at most {SHARE_UNITS}",
                nodes.len()
            ),
        ));
    }
    let serving = !nodes.is_empty();
    let listen = |protocol: Protocol| -> Vec<String> {
        listeners
            .iter()
            .filter(|l| serving && l.protocol == protocol)
            .map(|l| {
                if l.ipv6 {
                    format!("[::]:{}", l.port)
                } else {
                    l.port.to_string()
                }
            })
            .collect()
    };
    let listeners_text = render::render(
        SHARED_LISTENERS,
        &ListenersView {
            lb_host: host.to_string(),
            token: SERVICE_MAPS_TOKEN,
            serving,
            tcp: listen(Protocol::Tcp),
            udp: listen(Protocol::Udp),
        },
    )?;
    let nodes_text = render::render(
        SHARED_NODES,
        &NodesView {
            lb_host: host.to_string(),
            rr_var: RR_VAR,
            hash_var: HASH_VAR,
            rr: shares(&even_owners(nodes.len()), &nodes),
            hash: shares(&ring_owners(&nodes), &nodes),
        },
    )?;
    Ok(vec![
        (repo_paths::lb_host_file_path(host, LISTENERS_FILE), listeners_text),
        (repo_paths::lb_host_file_path(host, NODES_FILE), nodes_text),
    ])
}

/// The owner (index into the nodes) of each 0.01% unit, in even consecutive shares.
pub(super) fn even_owners(n: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    (0..SHARE_UNITS).map(|u| u * n / SHARE_UNITS).collect()
}

/// The owner of each 0.01% unit on a hash ring, as nginx's `hash ... consistent` does: every node
/// has [`RING_POINTS`] points at stable positions, and a unit belongs to the node of the next
/// point. A node leaving hands on only its own units, a node joining takes about 1/n of the
/// others', and a few nodes give a few hundred runs (lines), not one per unit.
pub(super) fn ring_owners(nodes: &[&Node]) -> Vec<usize> {
    let mut points: Vec<(usize, &str, usize)> = Vec::with_capacity(nodes.len() * RING_POINTS);
    for (i, node) in nodes.iter().enumerate() {
        let seed = fnv1a(node.name.as_bytes());
        for v in 0..RING_POINTS as u64 {
            let at = mix(seed ^ mix(v ^ 0x9e37_79b9_7f4a_7c15)) % SHARE_UNITS as u64;
            points.push((at as usize, &*node.name, i));
        }
    }
    points.sort_unstable();
    let Some(first) = points.first().map(|p| p.2) else {
        return Vec::new();
    };
    let mut next = points.iter().peekable();
    (0..SHARE_UNITS)
        .map(|unit| {
            while next.peek().is_some_and(|p| p.0 < unit) {
                next.next();
            }
            next.peek().map_or(first, |p| p.2)
        })
        .collect()
}

/// Runs of equal owners as `split_clients` lines; the last run takes the rest (`*`), so the
/// shares always add up to 100%.
fn shares(owners: &[usize], nodes: &[&Node]) -> Vec<ShareView> {
    let mut out: Vec<ShareView> = Vec::new();
    let mut start = 0;
    for end in 1..=owners.len() {
        if end < owners.len() && owners[end] == owners[start] {
            continue;
        }
        let node = nodes[owners[start]].ip;
        out.push(ShareView {
            share: if end == owners.len() {
                "*".to_owned()
            } else {
                percent(end - start)
            },
            node: if node.is_ipv6() {
                format!("[{node}]")
            } else {
                node.to_string()
            },
        });
        start = end;
    }
    out
}

/// `units` hundredths of a percent as nginx reads them: `0.2%`, `33.33%`, `1%`.
pub(super) fn percent(units: usize) -> String {
    let text = format!("{}.{:02}", units / 100, units % 100);
    format!("{}%", text.trim_end_matches('0').trim_end_matches('.'))
}

/// FNV-1a, then [`mix`] on use: stable across Rust versions and machines (unlike
/// `DefaultHasher`), so hash slots do not move when the generator is rebuilt.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The splitmix64 finaliser.
fn mix(mut h: u64) -> u64 {
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// `text`, a `listeners.conf` as [`host_files`] renders it, without the wildcard listeners in
/// `drop`, and without a `server` block left with none: what an LB host serves when another
/// process holds one of those ports (the Services on them are withheld there). Lines are removed,
/// never written, so the result holds nothing the generator did not render.
pub fn without_listeners(text: &str, drop: &BTreeSet<Listener>) -> String {
    let dropped = |line: &str| {
        let Some(rest) = line.strip_prefix("    listen ").and_then(|r| r.strip_suffix(';')) else {
            return false;
        };
        let (socket, protocol) = match rest.strip_suffix(" udp") {
            Some(socket) => (socket, Protocol::Udp),
            None => (rest, Protocol::Tcp),
        };
        let (port, ipv6) = match socket.strip_prefix("[::]:") {
            Some(port) => (port, true),
            None => (socket, false),
        };
        port.parse()
            .is_ok_and(|port| drop.contains(&Listener { protocol, port, ipv6 }))
    };
    let mut out: Vec<&str> = Vec::new();
    let mut block: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line == "server {" || !block.is_empty() {
            if !dropped(line) {
                block.push(line);
            }
            if line == "}" {
                if block.iter().any(|l| l.starts_with("    listen ")) {
                    out.append(&mut block);
                } else {
                    block.clear();
                    // The blank line that led into the dropped block.
                    if out.last() == Some(&"") {
                        out.pop();
                    }
                }
            }
            continue;
        }
        out.push(line);
    }
    out.extend(block);
    let mut joined = out.join("\n");
    joined.push('\n');
    joined
}
