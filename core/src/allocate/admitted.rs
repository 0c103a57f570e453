//! Which of an LB host's pools admit one Service (tenant pools, see [`crate::pool::admission`]),
//! and what the allocator says when a requested address lies in a pool that does not admit the
//! Service, when none of a host's pools does, or when a pool stopped admitting a Service and its
//! address had to move.

use std::net::IpAddr;

use crate::config::{Config, LbHost};
use crate::exposure::ExposedService;
use crate::names::{LbHostName, ServiceKey};
use crate::problem::{Problem, Severity};

/// The pools of one host that admit one Service, by index in `pools`: `All` on a host without
/// tenant pools (the usual case: no list is built) or when every pool admits it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Admitted {
    All,
    Only(Vec<usize>),
}

impl Admitted {
    pub(crate) fn of(host: &LbHost, svc: &ExposedService) -> Self {
        if host.pools.iter().all(|p| p.admission().is_open()) {
            return Admitted::All;
        }
        let namespace = svc.key.namespace.as_str();
        let only: Vec<usize> = (0..host.pools.len())
            .filter(|j| host.pools[*j].admits(namespace, &svc.labels))
            .collect();
        if only.len() == host.pools.len() {
            Admitted::All
        } else {
            Admitted::Only(only)
        }
    }

    /// True when pool `j` admits the Service.
    pub(crate) fn contains(&self, j: usize) -> bool {
        match self {
            Admitted::All => true,
            Admitted::Only(only) => only.binary_search(&j).is_ok(),
        }
    }

    /// True when `ip` lies in a pool of `host` that admits the Service.
    pub(crate) fn holds(&self, host: &LbHost, ip: IpAddr) -> bool {
        host.pool_of(ip).is_some_and(|(j, _)| self.contains(j))
    }

    /// True when some pool of the family (IPv6 or not) admits the Service.
    pub(crate) fn any(&self, host: &LbHost, v6: bool) -> bool {
        host.pools
            .iter()
            .enumerate()
            .any(|(j, p)| p.is_v6() == v6 && self.contains(j))
    }

    /// The admitted pools of the family, for "are exhausted" messages.
    pub(crate) fn listed(&self, host: &LbHost, v6: bool) -> String {
        let pools: Vec<String> = host
            .pools
            .iter()
            .enumerate()
            .filter(|(j, p)| p.is_v6() == v6 && self.contains(*j))
            .map(|(_, p)| p.to_string())
            .collect();
        pools.join(", ")
    }
}

/// True when `ip` lies in a pool of `host` that admits `svc`.
pub(crate) fn admitted_at(host: &LbHost, svc: &ExposedService, ip: IpAddr) -> bool {
    host.pool_of(ip)
        .is_some_and(|(_, p)| p.admits(svc.key.namespace.as_str(), &svc.labels))
}

/// `<ip> on LB host lb-a: lbHosts[0] (lb-a).pools[1] 127.1.2.0/24 admits only namespaces team-a`:
/// why the Service may not have `ip` there.
pub(crate) fn refusal(config: &Config, host: &LbHost, ip: IpAddr) -> String {
    match host.pool_of(ip) {
        Some((j, pool)) => format!(
            "{ip} on LB host {}: {} {}",
            host.name,
            config.pool_path(&host.name, j),
            pool.admission().describe()
        ),
        None => format!("{ip} is not in the pools of LB host {}", host.name),
    }
}

/// The warning for a host none of whose pools of the family admits the Service: it gets no
/// address there. A warning, not an error: it is the tenant boundary the operator drew, and the
/// Service is served wherever a pool admits it.
pub(crate) fn none_admits(config: &Config, host: &LbHost, key: &ServiceKey, v6: bool) -> Problem {
    let family = if v6 { "IPv6 " } else { "" };
    let rules: Vec<String> = host
        .pools
        .iter()
        .enumerate()
        .filter(|(_, p)| p.is_v6() == v6)
        .map(|(j, p)| format!("{} {}", config.pool_path(&host.name, j), p.admission().describe()))
        .collect();
    let outcome = if v6 {
        "served over IPv4 only there"
    } else {
        "not exposed there"
    };
    Problem::service_warning(
        key,
        "",
        format!(
            "no {family}pool of LB host {} admits it ({}); {outcome}",
            host.name,
            rules.join("; ")
        ),
    )
}

/// The start of the warning [`no_longer_admits`] writes, up to the pool's text.
fn moved_prefix(from: IpAddr, host: &LbHostName) -> String {
    format!("{from} on LB host {host}: pool ")
}

const NO_LONGER: &str = " no longer admits it";

/// The warning for an address that left the Service because the pool holding it no longer admits
/// it (a pool edit, or the Service's labels changed): `to` is the new address, if there was one.
/// Its first words are what [`moved_because`] reads back for the commit message.
pub(crate) fn no_longer_admits(
    config: &Config,
    host: &LbHost,
    key: &ServiceKey,
    from: IpAddr,
    to: Option<IpAddr>,
) -> Problem {
    let Some((j, pool)) = host.pool_of(from) else {
        return Problem::service_warning(key, "", format!("{from} left the pools of LB host {}", host.name));
    };
    let outcome = to.map_or("released; no other address there".to_owned(), |to| {
        format!("moved to {to}")
    });
    Problem::service_warning(
        key,
        "",
        format!(
            "{}{pool}{NO_LONGER} ({} {}); {outcome}",
            moved_prefix(from, &host.name),
            config.pool_path(&host.name, j),
            pool.admission().describe()
        ),
    )
}

/// Why addresses moved in one decision, read back from its [`no_longer_admits`] warnings, for
/// commit messages (which give the reason on the move's line). Indexed once: a pool edit may move
/// thousands of Services in one decision.
pub(crate) struct MoveReasons<'a> {
    /// (Service, `<from> on LB host <host>: pool `) → the pool's text.
    by_move: std::collections::BTreeMap<(&'a ServiceKey, &'a str), &'a str>,
}

impl<'a> MoveReasons<'a> {
    pub(crate) fn new(problems: &'a [Problem]) -> Self {
        let by_move = problems
            .iter()
            .filter(|p| p.severity == Severity::Warning)
            .filter_map(|p| {
                let (head, rest) = p.message.split_once(": pool ")?;
                let (pool, _) = rest.split_once(NO_LONGER)?;
                // `head` and the separator, as [`moved_prefix`] writes them.
                let prefix = &p.message[..head.len() + ": pool ".len()];
                Some(((p.object.service()?, prefix), pool))
            })
            .collect();
        Self { by_move }
    }

    /// `pool 127.1.2.0/24 no longer admits it`, when that is why `key`'s address `from` on `host`
    /// moved.
    pub(crate) fn get(&self, key: &ServiceKey, host: &LbHostName, from: IpAddr) -> Option<String> {
        let prefix = moved_prefix(from, host);
        let pool = self.by_move.get(&(key, prefix.as_str()))?;
        Some(format!("pool {pool}{NO_LONGER}"))
    }
}
