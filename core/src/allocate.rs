//! Address allocation against the ledger. An address never moves while its Service is exposed and
//! the address is still inside its LB host's pools; new addresses are the lowest free ones; a
//! withdrawn Service's addresses are held for the release grace. Time is a parameter.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use jiff::{SignedDuration, Timestamp};

use crate::config::{Config, LbHost};
use crate::exposure::ExposedService;
use crate::host_addresses::HostAddresses;
use crate::ledger::{Ledger, PortSpec};
use crate::names::{LbHostName, ServiceKey};
use crate::problem::Problem;

/// What happened to addresses in one decision, for commit messages and Events.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum AddressEvent {
    Allocated {
        key: ServiceKey,
        host: LbHostName,
        ip: IpAddr,
    },
    /// The old address left every pool of its host (a pool edit), so the Service got a new one.
    Moved {
        key: ServiceKey,
        host: LbHostName,
        from: IpAddr,
        to: IpAddr,
    },
    /// The Service asked for this address in `flipbit.io/ips` and got it (replacing `from`).
    Requested {
        key: ServiceKey,
        host: LbHostName,
        from: Option<IpAddr>,
        to: IpAddr,
    },
    /// The Service no longer uses this host (annotation or `flipbit.yaml` change).
    Dropped {
        key: ServiceKey,
        host: LbHostName,
        ip: IpAddr,
    },
    /// The Service stopped being exposed; its addresses are held for the grace period.
    Withdrawn { key: ServiceKey },
    /// The Service came back within the grace and got its addresses back.
    Reclaimed { key: ServiceKey },
    /// The grace ran out; the addresses are free for others.
    Freed { key: ServiceKey },
}

impl AddressEvent {
    /// `Moved` when the Service had another address on that host, else `Allocated`.
    pub(crate) fn placed(key: &ServiceKey, host: &LbHostName, old: Option<IpAddr>, ip: IpAddr) -> Self {
        match old {
            Some(from) => AddressEvent::Moved {
                key: key.clone(),
                host: host.clone(),
                from,
                to: ip,
            },
            None => AddressEvent::Allocated {
                key: key.clone(),
                host: host.clone(),
                ip,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub ledger: Ledger,
    /// The addresses of each exposed Service, per LB host (possibly fewer hosts than asked, when a
    /// pool is exhausted; the problem says so).
    pub addresses: BTreeMap<ServiceKey, HostAddresses>,
    /// The IPv6 addresses of dual-stack Services, per LB host with IPv6 pools.
    pub addresses_v6: BTreeMap<ServiceKey, HostAddresses>,
    pub events: Vec<AddressEvent>,
    pub problems: Vec<Problem>,
}

/// The addresses in use on each LB host: every ledger entry's, withdrawn ones included.
pub type Used = BTreeMap<LbHostName, BTreeSet<IpAddr>>;

/// The addresses in use in `ledger`.
pub fn used_addresses(ledger: &Ledger) -> Used {
    let mut used: Used = BTreeMap::new();
    for entry in ledger.services.values() {
        for (host, ip) in entry.addresses.iter().chain(&entry.addresses_v6) {
            used.entry(host.clone()).or_default().insert(*ip);
        }
    }
    used
}

/// Allocates for `exposed`, keeps the entries of `kept` (Services skipped for errors) untouched,
/// and withdraws every other ledger entry.
pub fn allocate(
    config: &Config,
    previous: &Ledger,
    exposed: &[&ExposedService],
    kept: &BTreeSet<ServiceKey>,
    now: Timestamp,
) -> Allocation {
    let mut ledger = previous.clone();
    let mut events = Vec::new();
    let grace = SignedDuration::from_secs(i64::try_from(config.release_grace_seconds).unwrap_or(i64::MAX));
    let exposed_keys: BTreeSet<&ServiceKey> = exposed.iter().map(|s| &s.key).collect();

    // Hosts gone from flipbit.yaml take their addresses with them. Entries are written only when
    // they change: the ledger is shared with `previous` until then.
    for (key, entry) in previous.services.iter() {
        if entry.addresses.keys().all(|host| config.host(host).is_some()) {
            continue;
        }
        if let Some(entry) = ledger.services.get_mut(key) {
            entry.addresses.retain(|host, ip| {
                let keep = config.host(host).is_some();
                if !keep {
                    events.push(AddressEvent::Dropped {
                        key: key.clone(),
                        host: host.clone(),
                        ip: *ip,
                    });
                }
                keep
            });
        }
    }

    // Withdraw and free.
    for (key, entry) in previous.services.iter() {
        if exposed_keys.contains(key) || kept.contains(key) {
            continue;
        }
        match entry.released_at {
            None => {
                if let Some(entry) = ledger.services.get_mut(key) {
                    entry.released_at = Some(now);
                }
                events.push(AddressEvent::Withdrawn { key: key.clone() });
            }
            Some(at) if now >= at.saturating_add(grace).unwrap_or(Timestamp::MAX) => {
                ledger.services.remove(key);
                events.push(AddressEvent::Freed { key: key.clone() });
            }
            Some(_) => {}
        }
    }

    let mut sorted: Vec<&&ExposedService> = exposed.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let mut placement = Placement::new(used_addresses(&ledger));
    placement.events = events;

    // Shared addresses: the groups, and the address each group already has on each host (the
    // first member in creation order that holds one there). Members with an address keep it.
    let mut groups: BTreeMap<(String, String), Vec<&ExposedService>> = BTreeMap::new();
    for svc in &sorted {
        if let Some(k) = &svc.settings.shared_key {
            groups
                .entry((svc.key.namespace.to_string(), k.clone()))
                .or_default()
                .push(svc);
        }
    }
    for (group, members) in groups.iter_mut() {
        members.sort_by(|a, b| (a.created, &a.key).cmp(&(b.created, &b.key)));
        for member in members.iter() {
            let Some(entry) = ledger.services.get(&member.key) else {
                continue;
            };
            for (host, ip) in &entry.addresses {
                placement
                    .group_address
                    .entry((group.clone(), host.clone()))
                    .or_insert(*ip);
            }
        }
    }

    // Who holds each address, and requested addresses that are free: reserved for their first
    // requester (by key) before any lowest-free allocation can take them.
    // Only requested addresses consult it: without any, it is not built (150,000 entries at 50k).
    if sorted.iter().any(|svc| !svc.settings.requested.is_empty()) {
        for (key, entry) in ledger.services.iter() {
            for (host, ip) in &entry.addresses {
                placement.holders.insert((host.clone(), *ip), key.clone());
            }
        }
    }
    // Addresses held by more than one entry (members of a sharing group): a Service that leaves
    // its group must not take the group's address with it.
    if ledger.services.values().any(|e| e.shared_key.is_some()) {
        for entry in ledger.services.values() {
            for (host, ip) in &entry.addresses {
                *placement.co_held.entry((host.clone(), *ip)).or_insert(0) += 1;
            }
        }
        placement.co_held.retain(|_, holders| *holders > 1);
    }
    for svc in &sorted {
        for (host, ip) in &svc.settings.requested {
            if let std::collections::btree_map::Entry::Vacant(slot) = placement.holders.entry((host.clone(), *ip)) {
                slot.insert(svc.key.clone());
                placement.used.entry(host.clone()).or_default().insert(*ip);
            }
        }
    }
    for svc in sorted {
        placement.place(config, &mut ledger, svc);
    }
    placement.events.sort();
    // A cold decision places 150,000 addresses: the vector may have grown to twice that.
    placement.events.shrink_to_fit();
    Allocation {
        ledger,
        addresses: placement.addresses,
        addresses_v6: placement.addresses_v6,
        events: placement.events,
        problems: placement.problems,
    }
}

/// One decision's address bookkeeping, and what it placed.
#[derive(Debug, Default)]
pub(crate) struct Placement {
    pub(crate) used: Used,
    cursors: BTreeMap<LbHostName, Cursor>,
    cursors_v6: BTreeMap<LbHostName, Cursor>,
    /// Who holds each requested address (built only when some Service requests one).
    holders: BTreeMap<(LbHostName, IpAddr), ServiceKey>,
    /// The address each shared-key group has on each host.
    group_address: BTreeMap<((String, String), LbHostName), IpAddr>,
    /// Addresses several entries hold, with how many.
    co_held: BTreeMap<(LbHostName, IpAddr), usize>,
    pub(crate) addresses: BTreeMap<ServiceKey, HostAddresses>,
    pub(crate) addresses_v6: BTreeMap<ServiceKey, HostAddresses>,
    pub(crate) events: Vec<AddressEvent>,
    pub(crate) problems: Vec<Problem>,
}

impl Placement {
    pub(crate) fn new(used: Used) -> Self {
        Self {
            used,
            ..Self::default()
        }
    }

    /// Gives `svc` its addresses: kept while valid, requested ones, its group's, or the lowest
    /// free; records them in its ledger entry (removed when it got none).
    pub(crate) fn place(&mut self, config: &Config, ledger: &mut Ledger, svc: &ExposedService) {
        let Placement {
            used,
            cursors,
            cursors_v6,
            holders,
            group_address,
            co_held,
            addresses,
            addresses_v6,
            events,
            problems,
        } = self;
        let key = &svc.key;
        let entry = ledger.services.entry(key.clone()).or_default();
        if entry.released_at.take().is_some() {
            events.push(AddressEvent::Reclaimed { key: key.clone() });
        }
        let targets: Vec<&LbHost> = config
            .lb_hosts
            .iter()
            .filter(|h| svc.settings.lb_hosts.as_ref().is_none_or(|set| set.contains(&h.name)))
            // A host that can carry none of its ports (UDP on HAProxy) holds no address for it.
            .filter(|h| crate::flavor::host_serves(h, svc))
            .collect();
        // The second (IPv6) address, on hosts with pools of both families.
        let targets_v6: Vec<&LbHost> = targets
            .iter()
            .copied()
            .filter(|h| h.pools.iter().any(|p| p.is_v6()) && h.pools.iter().any(|p| !p.is_v6()))
            .collect();
        // The primary address comes from IPv4 pools, or IPv6 ones on an IPv6-only host.
        let targets: Vec<&LbHost> = targets
            .into_iter()
            .filter(|h| svc.ipv4 || !h.pools.iter().any(|p| !p.is_v6()))
            .collect();
        let keep = |host: &LbHostName| targets.iter().any(|t| &t.name == host);
        drop_hosts(key, &mut entry.addresses, keep, used, cursors, events);
        for host in targets {
            let old = entry.addresses.get(&host.name).copied();
            if let Some(want) = svc.settings.requested.get(&host.name).copied() {
                if old == Some(want) {
                    continue;
                }
                if let Some(holder) = holders.get(&(host.name.clone(), want))
                    && holder != key
                {
                    let keeping = old.map_or("it is not exposed there".to_owned(), |ip| format!("it keeps {ip}"));
                    problems.push(Problem::service_error(
                        key,
                        crate::annotations::field(crate::annotations::IPS),
                        format!("{want} on LB host {} is held by {holder}; {keeping}", host.name),
                    ));
                    continue;
                }
                let host_used = used.entry(host.name.clone()).or_default();
                if let Some(ip) = old {
                    host_used.remove(&ip);
                    holders.remove(&(host.name.clone(), ip));
                    cursors.remove(&host.name);
                }
                host_used.insert(want);
                holders.insert((host.name.clone(), want), key.clone());
                entry.addresses.insert(host.name.clone(), want);
                events.push(AddressEvent::Requested {
                    key: key.clone(),
                    host: host.name.clone(),
                    from: old,
                    to: want,
                });
                continue;
            }
            // Leaving a sharing group (or changing it) with an address others still hold: the
            // address stays theirs and this Service gets another.
            let left_group = entry.shared_key != svc.settings.shared_key
                && old.is_some_and(|ip| co_held.contains_key(&(host.name.clone(), ip)));
            if let Some(ip) = old
                && host.in_pools(ip)
                && !left_group
            {
                continue;
            }
            let host_used = used.entry(host.name.clone()).or_default();
            if let Some(ip) = old {
                match co_held.get_mut(&(host.name.clone(), ip)) {
                    Some(holders) if left_group => {
                        *holders -= 1;
                        if *holders < 2 {
                            co_held.remove(&(host.name.clone(), ip));
                        }
                    }
                    _ => {
                        host_used.remove(&ip);
                    }
                }
                entry.addresses.remove(&host.name);
            }
            let group = svc
                .settings
                .shared_key
                .as_ref()
                .map(|k| (key.namespace.to_string(), k.clone()));
            let shared = group
                .as_ref()
                .and_then(|g| group_address.get(&(g.clone(), host.name.clone())))
                .copied()
                .filter(|ip| host.in_pools(*ip));
            if let Some(ip) = shared {
                host_used.insert(ip);
                entry.addresses.insert(host.name.clone(), ip);
                events.push(AddressEvent::Allocated {
                    key: key.clone(),
                    host: host.name.clone(),
                    ip,
                });
                continue;
            }
            let cursor = cursors.entry(host.name.clone()).or_default();
            let found = cursor.lowest_free(host, host_used);
            if let (Some(g), Some(ip)) = (&group, found) {
                group_address.insert((g.clone(), host.name.clone()), ip);
            }
            match found {
                Some(ip) => {
                    host_used.insert(ip);
                    entry.addresses.insert(host.name.clone(), ip);
                    events.push(AddressEvent::placed(key, &host.name, old, ip));
                }
                None => problems.push(Problem::service_error(
                    key,
                    "",
                    format!(
                        "no free address on LB host {} (pools {} are exhausted); not exposed there",
                        host.name,
                        host.pools
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            }
        }
        crate::allocate_v6::place(svc, &targets_v6, entry, used, cursors_v6, events, problems);
        entry.ports = svc.ports.iter().map(PortSpec::from).collect();
        entry.shared_key = svc.settings.shared_key.clone();
        if entry.addresses.is_empty() && entry.addresses_v6.is_empty() {
            ledger.services.remove(key);
        } else {
            addresses.insert(key.clone(), entry.addresses.clone());
            if !entry.addresses_v6.is_empty() {
                addresses_v6.insert(key.clone(), entry.addresses_v6.clone());
            }
        }
    }
}

/// Releases the addresses in `addresses` on hosts `keep` rejects: each becomes free at once (the
/// Service still exists, so there is no grace) and is reported as `Dropped`.
pub(crate) fn drop_hosts(
    key: &ServiceKey,
    addresses: &mut HostAddresses,
    keep: impl Fn(&LbHostName) -> bool,
    used: &mut BTreeMap<LbHostName, BTreeSet<IpAddr>>,
    cursors: &mut BTreeMap<LbHostName, Cursor>,
    events: &mut Vec<AddressEvent>,
) {
    addresses.retain(|host, ip| {
        if keep(host) {
            return true;
        }
        events.push(AddressEvent::Dropped {
            key: key.clone(),
            host: host.clone(),
            ip: *ip,
        });
        if let Some(set) = used.get_mut(host) {
            set.remove(ip);
        }
        cursors.remove(host);
        false
    });
}

/// Where the search for the lowest free address resumes on one host within one decision: every
/// address before it is known to be taken, so a cold allocation of N Services walks the pool once.
#[derive(Debug, Default)]
pub(crate) struct Cursor {
    pool: usize,
    next: Option<IpAddr>,
}

impl Cursor {
    /// The lowest free primary address: IPv4 pools first; IPv6 pools only on an IPv6-only host.
    fn lowest_free(&mut self, host: &LbHost, used: &BTreeSet<IpAddr>) -> Option<IpAddr> {
        let v6_only = host.pools.iter().all(|p| p.is_v6());
        self.lowest_free_of(host, used, v6_only)
    }

    pub(crate) fn lowest_free_of(&mut self, host: &LbHost, used: &BTreeSet<IpAddr>, v6: bool) -> Option<IpAddr> {
        while let Some(pool) = host.pools.get(self.pool) {
            if pool.is_v6() != v6 {
                self.pool += 1;
                self.next = None;
                continue;
            }
            let mut candidate = pool.first_at_or_after(self.next);
            while let Some(ip) = candidate {
                if !used.contains(&ip) {
                    self.next = Some(ip);
                    return Some(ip);
                }
                candidate = pool.next_after(ip);
            }
            self.pool += 1;
            self.next = None;
        }
        None
    }
}
