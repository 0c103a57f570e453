//! What the generator makes of the LB hosts' published states (pure): the counts its fleet
//! gauges show, and which Services to tell that an LB host holding one of their addresses was
//! withdrawn from DNS. A host's state is judged by the same function `flipbit-applier status`
//! uses, so the two never disagree.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use flipbit_applier::status::published::Published;
use flipbit_applier::status::view::{State, judge};
use flipbit_core::config::Config;
use flipbit_core::ledger::Ledger;
use flipbit_core::names::{LbHostName, ServiceKey};

/// One host, as the per-host gauges show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostView {
    pub host: String,
    pub at_head: bool,
    pub serving: bool,
    pub withdrawn: bool,
    pub last_run: Option<u64>,
}

/// The fleet gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub hosts: usize,
    /// Hosts that published a state whose applied commit is not `head`.
    pub behind_head: usize,
    pub withdrawn: usize,
    pub failed: usize,
    pub unknown: usize,
    pub per_host: Vec<HostView>,
}

/// The gauges for the hosts of `config`, given the branch `head` and what each host published.
pub fn counts(config: &Config, head: &str, states: &BTreeMap<LbHostName, Published>) -> Counts {
    let mut out = Counts {
        hosts: config.lb_hosts.len(),
        ..Counts::default()
    };
    for host in &config.lb_hosts {
        let published = states.get(&host.name).unwrap_or(&Published::Missing);
        let (state, _, _) = judge(published);
        let s = published.state();
        let at_head = s.is_some_and(|s| s.commit.as_deref() == Some(head));
        out.behind_head += usize::from(s.is_some() && !at_head);
        out.withdrawn += usize::from(state == State::Withdrawn);
        out.failed += usize::from(state == State::Failed);
        out.unknown += usize::from(state == State::Unknown);
        out.per_host.push(HostView {
            host: host.name.to_string(),
            at_head,
            serving: state == State::Serving,
            withdrawn: state == State::Withdrawn,
            last_run: s.map(|s| s.at),
        });
    }
    out
}

/// A Service to tell: its addresses on `host`, which was withdrawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    pub key: ServiceKey,
    pub host: LbHostName,
    pub addresses: Vec<IpAddr>,
}

/// The Services told about each current withdrawal, so each hears of it once.
#[derive(Debug, Default)]
pub struct Announced {
    told: BTreeMap<LbHostName, BTreeSet<ServiceKey>>,
}

impl Announced {
    /// The Services with an address on a withdrawn host that were not told of this withdrawal yet,
    /// at most `limit` (the rest on the next refresh, so a withdrawn host of 50,000 Services
    /// does not become 50,000 API calls at once). A host that is no longer withdrawn ends its
    /// withdrawal: a later one is told again.
    pub fn due(&mut self, ledger: &Ledger, states: &BTreeMap<LbHostName, Published>, limit: usize) -> Vec<Announce> {
        let withdrawn: BTreeSet<&LbHostName> = states
            .iter()
            .filter(|(_, p)| p.state().is_some_and(|s| s.withdrawn))
            .map(|(h, _)| h)
            .collect();
        self.told.retain(|h, _| withdrawn.contains(h));
        let mut out = Vec::new();
        for host in withdrawn {
            let told = self.told.entry(host.clone()).or_default();
            for (key, entry) in &ledger.services {
                if out.len() >= limit {
                    return out;
                }
                if entry.released_at.is_some() || told.contains(key) {
                    continue;
                }
                let addresses: Vec<IpAddr> = entry
                    .addresses
                    .get(host)
                    .into_iter()
                    .chain(entry.addresses_v6.get(host))
                    .copied()
                    .collect();
                if addresses.is_empty() {
                    continue;
                }
                told.insert(key.clone());
                out.push(Announce {
                    key: key.clone(),
                    host: host.clone(),
                    addresses,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
