//! Commit messages that make `git log` the fleet's audit trail: the subject says what changed, the
//! body has a line per Service touched and its cause, and trailers name the Services.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use crate::allocate::AddressEvent;
use crate::decide::Decision;
use crate::names::ServiceKey;
use crate::problem::Severity;
use crate::repo_paths;

/// Lines listed in a body and Services in the trailer, at most. A first commit of 50,000 Services
/// would otherwise carry a 5 MB message that nobody reads and that every later history walk parses.
pub const MAX_LISTED: usize = 500;

/// The message for committing `changed` paths (the ones whose content really changed), or `None`
/// when nothing changed.
///
/// `old_upstreams` holds, for Services whose snippets changed, the addresses their snippets sent
/// to before (nodes at node ports, or pods), so an upstream change can name the nodes or pods
/// that came and went and why.
pub fn compose<P: AsRef<str>>(
    decision: &Decision,
    changed: &BTreeSet<P>,
    release_grace_seconds: u64,
    old_upstreams: &BTreeMap<ServiceKey, BTreeSet<SocketAddr>>,
) -> Option<String> {
    if changed.is_empty() {
        return None;
    }
    let mut causes: BTreeSet<String> = BTreeSet::new();
    let mut lines: BTreeMap<ServiceKey, Vec<String>> = BTreeMap::new();
    let mut touched_hosts: BTreeMap<ServiceKey, BTreeSet<String>> = BTreeMap::new();
    let mut touched_dns: BTreeSet<ServiceKey> = BTreeSet::new();
    for path in changed.iter().map(AsRef::as_ref) {
        if let Some((host, key)) = repo_paths::parse_lb_path(path) {
            touched_hosts.entry(key).or_default().insert(host.to_string());
        } else if let Some((_, key)) = repo_paths::parse_dns_path(path) {
            touched_dns.insert(key);
        }
    }
    let mut exposing: BTreeSet<&ServiceKey> = BTreeSet::new();
    let move_reasons = crate::allocate::admitted::MoveReasons::new(&decision.problems);
    for event in &decision.events {
        let (key, line) = match event {
            AddressEvent::Allocated { key, .. } | AddressEvent::Reclaimed { key } => {
                if !exposing.insert(key) {
                    continue;
                }
                let again = matches!(event, AddressEvent::Reclaimed { .. });
                (key, expose_line(decision, key, again))
            }
            AddressEvent::Moved { key, host, from, to } => {
                let why = move_reasons
                    .get(key, host, *from)
                    .unwrap_or_else(|| "the old address left the pools".to_owned());
                (key, format!("move {key} on {host} from {from} to {to} ({why})"))
            }
            AddressEvent::Requested {
                key,
                host,
                from: Some(from),
                to,
            } => (
                key,
                format!("move {key} on {host} from {from} to {to} (requested in flipbit.io/ips)"),
            ),
            AddressEvent::Requested { key, .. } => {
                if !exposing.insert(key) {
                    continue;
                }
                (key, expose_line(decision, key, false))
            }
            AddressEvent::Dropped { key, host, ip } => (key, format!("drop {key} from {host} (releases {ip})")),
            AddressEvent::Withdrawn { key } => (
                key,
                format!("withdraw {key} (no longer exposed; addresses held {release_grace_seconds} s)"),
            ),
            AddressEvent::Freed { key } => (key, format!("release {key} (grace over: its addresses are free again)")),
        };
        causes.insert(match event {
            AddressEvent::Withdrawn { .. } => format!("Service {key} withdrawn"),
            AddressEvent::Freed { .. } => "release grace over".to_owned(),
            AddressEvent::Moved { key, host, from, .. } if move_reasons.get(key, host, *from).is_some() => {
                "pool admission (flipbit.yaml pools or the Service's labels) changed".to_owned()
            }
            AddressEvent::Moved { .. } | AddressEvent::Dropped { .. } => "flipbit.yaml or annotation change".to_owned(),
            _ => format!("Service {key} exposed"),
        });
        lines.entry(key.clone()).or_default().push(line);
    }
    for (key, hold) in &decision.holds.placed {
        let cause = match &hold.commit {
            Some(c) => format!("human change in {}", c.short()),
            None => "hold added by hand".to_owned(),
        };
        causes.insert(cause);
        let by = match &hold.commit {
            Some(c) => format!("commit {} changed its files", c.short()),
            None => "held by hand".to_owned(),
        };
        lines.entry(key.clone()).or_default().push(format!(
            "hold {key}: {by} (they stay as they are; delete its entry in holds.yaml to lift)"
        ));
    }
    for key in &decision.resumed {
        if !lines.contains_key(key) {
            causes.insert(format!("hold on {key} lifted"));
            let line = expose_line(decision, key, false).replacen("expose", "resume", 1);
            lines.insert(key.clone(), vec![format!("{line} (hold lifted)")]);
        }
    }
    for (key, hosts) in &touched_hosts {
        if !lines.contains_key(key) {
            let line = match upstream_line(decision, key, old_upstreams.get(key), &mut causes) {
                Some(line) => line,
                None => {
                    causes.insert(format!("Service {key} changed"));
                    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
                    format!("update {key} on {} (ports or settings)", hosts.join(", "))
                }
            };
            lines.insert(key.clone(), vec![line]);
        }
    }
    let mut host_lines = Vec::new();
    for path in changed.iter().map(AsRef::as_ref) {
        if let Some((host, name)) = repo_paths::parse_lb_host_path(path) {
            let down: Vec<String> = decision
                .node_states
                .values()
                .filter_map(|(node, why)| why.map(|w| format!("{node} {w}")))
                .collect();
            if name == crate::render::map::NODES_FILE && !down.is_empty() {
                causes.insert(format!("nodes without traffic: {}", down.join(", ")));
            }
            host_lines.push(format!("update the shared {name} of {host}"));
        }
    }
    for key in &touched_dns {
        if !lines.contains_key(key) {
            lines.insert(key.clone(), vec![format!("update {key} DNS records (names or TTL)")]);
        }
    }
    let all: Vec<&String> = lines.values().flatten().chain(&host_lines).collect();
    let subject = match all.as_slice() {
        [] => "update the ledger".to_owned(),
        [one] => (*one).clone(),
        many => summary_subject(many),
    };
    let mut msg = format!("{subject}\n");
    if all.len() > 1 {
        msg.push('\n');
        for line in all.iter().take(MAX_LISTED) {
            msg.push_str(&format!("- {line}\n"));
        }
        if all.len() > MAX_LISTED {
            msg.push_str(&format!(
                "- ... and {} more (the diff has them all: git show --stat)\n",
                all.len() - MAX_LISTED
            ));
        }
    }
    let skipped: Vec<String> = decision
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .map(ToString::to_string)
        .collect();
    if !skipped.is_empty() {
        msg.push_str("\nLeft as they were, for errors:\n");
        for p in skipped.iter().take(MAX_LISTED) {
            msg.push_str(&format!("- {p}\n"));
        }
        if skipped.len() > MAX_LISTED {
            msg.push_str(&format!("- ... and {} more errors\n", skipped.len() - MAX_LISTED));
        }
    }
    // Warnings about the Services this commit touches (a port an LB flavour cannot carry, an
    // unknown annotation): the change is made, and the log says what it leaves out.
    let warned: Vec<String> = decision
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Warning)
        .filter(|p| p.object.service().is_some_and(|k| lines.contains_key(k)))
        .map(ToString::to_string)
        .collect();
    if !warned.is_empty() {
        msg.push_str("\nWarnings:\n");
        for p in warned {
            msg.push_str(&format!("- {p}\n"));
        }
    }
    if !lines.is_empty() {
        let mut keys: Vec<String> = lines.keys().take(MAX_LISTED).map(ToString::to_string).collect();
        if lines.len() > MAX_LISTED {
            keys.push(format!("and {} more", lines.len() - MAX_LISTED));
        }
        msg.push_str(&format!("\nFlipbit-Services: {}\n", keys.join(", ")));
        if !causes.is_empty() {
            msg.push_str(&format!(
                "Flipbit-Cause: {}\n",
                causes.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    Some(msg)
}

/// `move upstreams of ns/name: -127.0.0.12 (node-3 NotReady), +127.0.0.15 (node-6)`, when the set of
/// upstream node addresses changed (for a pod-backed Service, the pods' addresses and ports);
/// `None` when it did not (the change is elsewhere).
fn upstream_line(
    decision: &Decision,
    key: &ServiceKey,
    old: Option<&BTreeSet<SocketAddr>>,
    causes: &mut BTreeSet<String>,
) -> Option<String> {
    let old = old?;
    let summary = decision.exposed.get(key)?;
    if let Some(pods) = &summary.pods {
        return pods_line(key, old, pods, causes);
    }
    let old: BTreeSet<IpAddr> = old.iter().map(SocketAddr::ip).collect();
    let old = &old;
    let new: BTreeSet<IpAddr> = summary.nodes.iter().map(|n| n.ip).collect();
    if &new == old {
        return None;
    }
    let mut parts = Vec::new();
    for ip in old.difference(&new) {
        let why = match decision.node_states.get(ip) {
            Some((name, Some(reason))) => format!("{name} {reason}"),
            Some((name, None)) => format!("{name} not chosen"),
            None => "node deleted".to_owned(),
        };
        causes.insert(if why == "node deleted" {
            why.clone()
        } else {
            format!("node {why}")
        });
        parts.push(format!("-{ip} ({why})"));
    }
    for ip in new.difference(old) {
        let name = decision
            .node_states
            .get(ip)
            .map_or("a node", |(n, _)| n.as_str())
            .to_owned();
        causes.insert(format!("node {name} eligible"));
        parts.push(format!("+{ip} ({name})"));
    }
    Some(format!("move upstreams of {key}: {}", parts.join(", ")))
}

/// Endpoints named in one upstream line at most, so a Service of 500 pods that all moved (a new
/// target port) still gets a readable subject; the diff has the rest.
const MAX_PODS_NAMED: usize = 8;

/// `move upstreams of ns/name: -10.1.0.4:8080 (not a ready endpoint now), +10.1.0.9:8080 (ready
/// endpoint)` for a pod-backed Service whose set of endpoints changed.
fn pods_line(
    key: &ServiceKey,
    old: &BTreeSet<SocketAddr>,
    new: &[SocketAddr],
    causes: &mut BTreeSet<String>,
) -> Option<String> {
    let new: BTreeSet<SocketAddr> = new.iter().copied().collect();
    if &new == old {
        return None;
    }
    causes.insert(format!("endpoints of {key} changed"));
    let gone = old.difference(&new).map(|a| format!("-{a} (not a ready endpoint now)"));
    let came = new.difference(old).map(|a| format!("+{a} (ready endpoint)"));
    let parts: Vec<String> = gone.chain(came).collect();
    let mut named = parts
        .iter()
        .take(MAX_PODS_NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if parts.len() > MAX_PODS_NAMED {
        named.push_str(&format!(" and {} more", parts.len() - MAX_PODS_NAMED));
    }
    Some(format!("move upstreams of {key}: {named}"))
}

fn expose_line(decision: &Decision, key: &ServiceKey, again: bool) -> String {
    let addrs = decision
        .exposed
        .get(key)
        .map(|s| {
            s.addresses
                .iter()
                .chain(&s.addresses_v6)
                .map(|(h, ip)| format!("{h} {ip}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let again = if again { " again" } else { "" };
    format!("expose {key}{again} on {addrs}")
}

fn summary_subject(lines: &[&String]) -> String {
    // Group "verb key ..." lines by verb: "expose a/b, c/d; withdraw e/f" when that is short,
    // else counts: "expose 12 Services, withdraw 1 Service".
    let mut by_verb: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for line in lines {
        let mut words = line.split_whitespace();
        let verb = words.next().unwrap_or("update");
        // A Service's key, or for a host-level file the host ("update the shared nodes of lb-1").
        let key = line
            .split_whitespace()
            .find(|w| w.contains('/'))
            .or_else(|| words.last())
            .unwrap_or_default()
            .trim_end_matches(':');
        by_verb.entry(verb).or_default().push(key);
    }
    let named: Vec<String> = by_verb
        .iter()
        .map(|(verb, keys)| format!("{verb} {}", keys.join(", ")))
        .collect();
    let named = named.join("; ");
    if named.len() <= 72 {
        return named;
    }
    let counted: Vec<String> = by_verb
        .iter()
        .map(|(verb, keys)| {
            format!(
                "{verb} {} Service{}",
                keys.len(),
                if keys.len() == 1 { "" } else { "s" }
            )
        })
        .collect();
    counted.join(", ")
}
