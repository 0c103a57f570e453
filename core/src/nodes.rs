//! Which nodes carry a Service's traffic: eligibility (selector, Ready, not cordoned, not excluded),
//! the Local-policy filter, and the `max-nodes` subset by rendezvous hashing, so that a node coming
//! or going moves only the Services that had it (or now get it) in their subset.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::config::Config;
use crate::model::{EndpointSliceInput, NodeInput};
use crate::names::ServiceKey;
use crate::problem::{Problem, Severity, Subject};

/// The standard label that keeps a node out of external load balancers.
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// An eligible node: its name (for hashing and endpoint matching only, never rendered) and the
/// InternalIP the LB hosts send to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Node {
    /// Shared: every Service's chosen nodes are clones (25 per Service, 1.25 million at 50k).
    pub name: std::sync::Arc<str>,
    pub ip: IpAddr,
}

/// The nodes that may carry traffic, sorted by name, and warnings for nodes that would be eligible
/// but have no usable InternalIP.
pub fn eligible(nodes: &[NodeInput], config: &Config) -> (Vec<Node>, Vec<Problem>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for node in nodes {
        if ineligible_because(node, config).is_some() {
            continue;
        }
        match internal_ip(node) {
            Some(ip) => out.push(Node {
                name: node.name.as_str().into(),
                ip,
            }),
            None => problems.push(Problem {
                severity: Severity::Warning,
                object: Subject::Node(node.name.clone()),
                field: "status.addresses".into(),
                message: "no InternalIP address; the node gets no traffic".into(),
            }),
        }
    }
    out.sort();
    out.dedup_by(|a, b| a.name == b.name);
    (out, problems)
}

/// Each node's name and why it carries no traffic, by address: what every decision, full, fast or
/// read back from the render cache, reports for commit messages.
pub fn states(nodes: &[NodeInput], config: &Config) -> BTreeMap<IpAddr, (String, Option<&'static str>)> {
    let states = nodes.iter().filter_map(|n| {
        let state = (n.name.clone(), ineligible_because(n, config));
        Some((internal_ip(n)?, state))
    });
    states.collect()
}

/// Why a node carries no traffic, or `None` when it may.
pub fn ineligible_because(node: &NodeInput, config: &Config) -> Option<&'static str> {
    if !config.node_selector.iter().all(|(k, v)| node.labels.get(k) == Some(v)) {
        Some("not selected by nodeSelector")
    } else if !node.ready {
        Some("NotReady")
    } else if node.unschedulable {
        Some("cordoned")
    } else if node.labels.contains_key(EXCLUDE_LABEL) {
        Some("excluded from external load balancers")
    } else {
        None
    }
}

/// The address LB hosts send to: the first IPv4 InternalIP (every LB host can reach it in a
/// v4-only fleet), else the first InternalIP.
pub fn internal_ip(node: &NodeInput) -> Option<IpAddr> {
    let ips: Vec<IpAddr> = node.internal_ips.iter().filter_map(|s| s.trim().parse().ok()).collect();
    ips.iter().find(|ip| ip.is_ipv4()).or(ips.first()).copied()
}

/// Node names holding a ready endpoint, per Service, from EndpointSlices.
pub fn ready_nodes_by_service<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSliceInput>,
) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut out: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for slice in slices {
        out.entry((slice.namespace.clone(), slice.service_name.clone()))
            .or_default()
            .extend(slice.ready_nodes.iter().cloned());
    }
    out
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The FNV-1a state after `<namespace>/<name>\0`, so scoring a Service against each node hashes
/// only the node's name.
fn score_prefix(key: &ServiceKey) -> u64 {
    let h = fnv(FNV_OFFSET, key.namespace.as_str().as_bytes());
    let h = fnv(h, b"/");
    let h = fnv(h, key.name.as_str().as_bytes());
    fnv(h, &[0])
}

/// Stable 64-bit hash of (Service, node): FNV-1a then a splitmix64 finaliser. Stable across Rust
/// versions and machines, unlike `DefaultHasher`, because subsets must not move when the generator
/// is rebuilt.
fn score(prefix: u64, node: &str) -> u64 {
    let mut h = fnv(prefix, node.as_bytes());
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Nodes picked out of one decision's eligible nodes, kept as positions in that shared list: a
/// Service's 25 nodes cost 100 bytes rather than a kilobyte (50 MB at 50,000 Services).
#[derive(Clone)]
pub struct NodeSet {
    all: std::sync::Arc<[Node]>,
    picked: std::sync::Arc<[u32]>,
}

impl NodeSet {
    /// `picked`, which are nodes of `all` (sorted by name, as [`eligible`] returns them), in order.
    pub fn new(all: &std::sync::Arc<[Node]>, picked: &[&Node]) -> Self {
        let position = |node: &Node| {
            all.binary_search_by(|n| n.name.cmp(&node.name))
                .ok()
                .filter(|i| all[*i] == *node)
                .or_else(|| all.iter().position(|n| n == node))
        };
        let picked: Vec<u32> = picked
            .iter()
            .filter_map(|n| position(n).and_then(|i| u32::try_from(i).ok()))
            .collect();
        Self {
            all: all.clone(),
            picked: picked.into(),
        }
    }

    /// The positions of the picked nodes in the decision's eligible nodes (what a choice kept
    /// between processes holds, with a fingerprint of those nodes).
    pub fn positions(&self) -> &[u32] {
        &self.picked
    }

    /// The nodes at `positions` of `all`; `None` when one is out of range.
    pub fn at_positions(all: &std::sync::Arc<[Node]>, positions: &[u32]) -> Option<Self> {
        positions.iter().all(|p| (*p as usize) < all.len()).then(|| Self {
            all: all.clone(),
            picked: positions.into(),
        })
    }

    /// The decision's eligible nodes these were picked from.
    pub fn all(&self) -> &std::sync::Arc<[Node]> {
        &self.all
    }

    pub fn iter(&self) -> impl Iterator<Item = &Node> {
        self.picked.iter().filter_map(|i| self.all.get(*i as usize))
    }

    pub fn len(&self) -> usize {
        self.picked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.picked.is_empty()
    }
}

impl PartialEq for NodeSet {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for NodeSet {}

impl std::hash::Hash for NodeSet {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for node in self.iter() {
            node.hash(state);
        }
    }
}

impl std::fmt::Debug for NodeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The nodes for one Service: `candidates` narrowed to `max` by highest rendezvous score, returned
/// sorted by address so the rendered text is stable.
pub fn choose<'a>(key: &ServiceKey, candidates: &[&'a Node], max: Option<usize>) -> Vec<&'a Node> {
    let mut picked: Vec<&Node> = candidates.to_vec();
    if let Some(max) = max
        && picked.len() > max
    {
        let prefix = score_prefix(key);
        let mut scored: Vec<(u64, &Node)> = picked.iter().map(|n| (score(prefix, &n.name), *n)).collect();
        // Highest score first, name breaking ties; only the first `max` need ordering.
        let by_rank = |a: &(u64, &Node), b: &(u64, &Node)| b.0.cmp(&a.0).then(a.1.name.cmp(&b.1.name));
        scored.select_nth_unstable_by(max - 1, by_rank);
        scored.truncate(max);
        picked = scored.into_iter().map(|(_, n)| n).collect();
    }
    picked.sort_by(|a, b| a.ip.cmp(&b.ip).then(a.name.cmp(&b.name)));
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse("zone: k.test\nlbHosts: [{name: lb-1, pools: [127.1.1.0/24]}]\n").unwrap()
    }

    fn node(name: &str, ip: &str) -> NodeInput {
        NodeInput {
            name: name.into(),
            labels: BTreeMap::from([("flipbit.io/lb-backend".into(), "true".into())]),
            ready: true,
            unschedulable: false,
            internal_ips: vec![ip.into()],
        }
    }

    #[test]
    fn eligibility_follows_selector_readiness_cordon_and_exclusion() {
        let mut not_ready = node("b", "127.0.0.11");
        not_ready.ready = false;
        let mut cordoned = node("c", "127.0.0.12");
        cordoned.unschedulable = true;
        let mut excluded = node("d", "127.0.0.13");
        excluded.labels.insert(EXCLUDE_LABEL.into(), "".into());
        let mut unlabelled = node("e", "127.0.0.14");
        unlabelled.labels.clear();
        let no_ip = node("f", "not-an-ip");
        let (nodes, problems) = eligible(
            &[
                node("a", "127.0.0.10"),
                not_ready,
                cordoned,
                excluded,
                unlabelled,
                no_ip,
            ],
            &config(),
        );
        assert_eq!(nodes.iter().map(|n| &*n.name).collect::<Vec<_>>(), ["a"]);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].to_string().contains("Node \"f\""));
    }

    #[test]
    fn rendezvous_moves_little_when_a_node_leaves() {
        let all: Vec<Node> = (0..10)
            .map(|i| Node {
                name: format!("n{i}").into(),
                ip: format!("127.0.0.{}", 10 + i).parse().unwrap(),
            })
            .collect();
        let fewer: Vec<Node> = all.iter().filter(|n| &*n.name != "n3").cloned().collect();
        let mut moved = 0;
        for s in 0..200 {
            let key = ServiceKey::new("ns", &format!("svc{s}")).unwrap();
            let before: BTreeSet<_> = choose(&key, &all.iter().collect::<Vec<_>>(), Some(3))
                .into_iter()
                .map(|n| n.name.clone())
                .collect();
            let after: BTreeSet<_> = choose(&key, &fewer.iter().collect::<Vec<_>>(), Some(3))
                .into_iter()
                .map(|n| n.name.clone())
                .collect();
            assert_eq!(after.len(), 3);
            if !before.contains("n3") {
                assert_eq!(before, after, "{key} lost no node yet its subset moved");
            } else {
                moved += 1;
                assert_eq!(before.intersection(&after).count(), 2);
            }
        }
        // About 3/10 of the Services had n3; far fewer than all of them moved.
        assert!(moved > 20 && moved < 110, "{moved}");
    }

    #[test]
    fn choose_without_max_keeps_all_sorted_by_address() {
        let a = Node {
            name: "a".into(),
            ip: "127.0.0.12".parse().unwrap(),
        };
        let b = Node {
            name: "b".into(),
            ip: "127.0.0.10".parse().unwrap(),
        };
        let key = ServiceKey::new("ns", "s").unwrap();
        let got = choose(&key, &[&a, &b], None);
        assert_eq!(got, vec![&b, &a]);
    }
}
