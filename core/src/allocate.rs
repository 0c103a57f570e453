//! Address allocation against the ledger. An address never moves while its Service is exposed and
//! the address is still inside a pool of its LB host that admits the Service; new addresses are
//! the lowest free ones of the pools that admit it; a withdrawn Service's addresses are held for
//! the release grace. Time is a parameter.

pub(crate) mod admitted;
mod books;
pub(crate) mod cursor;
mod family;
mod v6;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use jiff::{SignedDuration, Timestamp};

use self::admitted::{Admitted, admitted_at};
pub(crate) use self::books::{Books, CoHeld, Released};
pub(crate) use self::cursor::Cursors;
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
    /// The old address left every pool of its host that admits the Service (a pool edit, or a
    /// label change), so the Service got a new one.
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
    // first member in creation order that holds one there that it may keep: inside a pool of the
    // host that admits it). Members with an address keep it. An address a member must give up
    // (a pool shrank past it) is not the group's: were it, that member would find no group
    // address this time and take the next member's on the next decision, so deciding twice from
    // the same cluster would not give the same ledger.
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
                if !config.host(host).is_some_and(|h| admitted_at(h, member, *ip)) {
                    continue;
                }
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
    // An exposed Service's address in a pool that no longer admits it is given up in this
    // decision, so it holds it for no one: a request may take it at once.
    if sorted.iter().any(|svc| !svc.settings.requested.is_empty()) {
        for (key, entry) in ledger.services.iter() {
            let exposed = sorted.binary_search_by(|s| s.key.cmp(key)).ok().map(|i| sorted[i]);
            for (host, ip) in &entry.addresses {
                let given_up = exposed
                    .zip(config.host(host))
                    .is_some_and(|(svc, h)| h.in_pools(*ip) && !admitted_at(h, svc, *ip));
                if !given_up {
                    placement.holders.insert((host.clone(), *ip), key.clone());
                }
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
    reserve_requests(config, &ledger, &sorted, &mut placement);
    for svc in &sorted {
        placement.release_unadmitted(config, &ledger, svc);
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

/// Reserves requested addresses (`flipbit.io/ips`) for their requesters, to a fixed point: a
/// request is granted when its address is free or already the requester's (the first requester
/// by key wins a free one), and a Service granted one gives up the address it holds on that host
/// (unless its sharing group still holds it), which may let another request through. Not in
/// placement order, so that order decides nothing: a request refused because its holder had not
/// yet moved to its own request would be granted by the next decision, and two decisions from
/// one cluster would differ. Requests in a pool that does not admit their Service reserve
/// nothing: they are refused when placed. Two Services asking for each other's addresses both
/// keep theirs.
fn reserve_requests(config: &Config, ledger: &Ledger, sorted: &[&&ExposedService], placement: &mut Placement) {
    let mut granted: BTreeSet<(&ServiceKey, &LbHostName)> = BTreeSet::new();
    loop {
        let mut progress = false;
        for svc in sorted {
            for (host, ip) in &svc.settings.requested {
                if granted.contains(&(&svc.key, host)) || !config.host(host).is_some_and(|h| admitted_at(h, svc, *ip)) {
                    continue;
                }
                if placement
                    .holders
                    .get(&(host.clone(), *ip))
                    .is_some_and(|holder| holder != &svc.key)
                {
                    continue;
                }
                placement.holders.insert((host.clone(), *ip), svc.key.clone());
                placement.used.entry(host.clone()).or_default().insert(*ip);
                granted.insert((&svc.key, host));
                progress = true;
                let current = ledger.services.get(&svc.key).and_then(|e| e.addresses.get(host));
                if let Some(current) = current.filter(|c| *c != ip) {
                    let at = (host.clone(), *current);
                    if !placement.co_held.contains_key(&at) && placement.holders.get(&at) == Some(&svc.key) {
                        placement.holders.remove(&at);
                        placement.release(config, &svc.key, host, *current);
                    }
                }
            }
        }
        if !progress {
            break;
        }
    }
}

/// One decision's address bookkeeping, and what it placed.
#[derive(Debug, Default)]
pub(crate) struct Placement {
    pub(crate) used: Used,
    cursors: Cursors,
    cursors_v6: Cursors,
    /// Who holds each requested address (built only when some Service requests one).
    holders: BTreeMap<(LbHostName, IpAddr), ServiceKey>,
    /// The address each shared-key group has on each host.
    group_address: BTreeMap<((String, String), LbHostName), IpAddr>,
    /// Addresses several entries hold, with how many.
    co_held: CoHeld,
    /// Addresses let go before placement ([`Placement::release_unadmitted`]).
    released: Released,
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

    /// Lets go, before any Service is placed, each address `svc` holds in a pool of its host that
    /// no longer admits it (it gives every such address up when placed, whatever else happens;
    /// an address left for a granted request is let go by `reserve_requests`).
    /// Without this the order of placement would decide: a Service placed earlier would find a
    /// pool exhausted by an address a later one is about to give up, and the next decision, from
    /// the written ledger, would give it that address: two decisions from one cluster differing.
    pub(crate) fn release_unadmitted(&mut self, config: &Config, ledger: &Ledger, svc: &ExposedService) {
        let Some(entry) = ledger.services.get(&svc.key) else {
            return;
        };
        for (host_name, ip) in &entry.addresses {
            let Some(host) = config.host(host_name) else { continue };
            if host.in_pools(*ip) && !admitted_at(host, svc, *ip) {
                self.release(config, &svc.key, host_name, *ip);
            }
        }
    }

    /// `key` gives `ip` on `host` up ahead of placement (as [`Books::let_go`]); when it is
    /// placed, the address only leaves its entry.
    fn release(&mut self, config: &Config, key: &ServiceKey, host: &LbHostName, ip: IpAddr) {
        let mut books = Books {
            config,
            key,
            used: &mut self.used,
            cursors: &mut self.cursors,
            holders: &mut self.holders,
            co_held: &mut self.co_held,
            released: &mut self.released,
        };
        books.let_go(host, ip);
        self.released.insert((key.clone(), host.clone()), ip);
    }

    /// Gives `svc` its addresses: kept while valid (inside a pool that admits it), requested
    /// ones, its group's, or the lowest free of the pools that admit it; records them in its
    /// ledger entry (removed when it got none).
    pub(crate) fn place(&mut self, config: &Config, ledger: &mut Ledger, svc: &ExposedService) {
        let Placement {
            used,
            cursors,
            cursors_v6,
            holders,
            group_address,
            co_held,
            released,
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
        let mut books = Books {
            config,
            key,
            used: &mut *used,
            cursors: &mut *cursors,
            holders: &mut *holders,
            co_held: &mut *co_held,
            released: &mut *released,
        };
        books.drop_hosts(&mut entry.addresses, keep, events);
        for host in targets {
            let admitted = Admitted::of(host, svc);
            let old = entry.addresses.get(&host.name).copied();
            let old_admitted = old.is_some_and(|ip| admitted.holds(host, ip));
            if let Some(want) = svc.settings.requested.get(&host.name).copied() {
                let refusal = if !admitted.holds(host, want) {
                    Some(admitted::refusal(config, host, want))
                } else {
                    books
                        .holders
                        .get(&(host.name.clone(), want))
                        .filter(|holder| *holder != key)
                        .map(|holder| format!("{want} on LB host {} is held by {holder}", host.name))
                };
                if let Some(why) = refusal {
                    // It keeps its address if that is still one it may have, else goes without.
                    let outcome = match old {
                        Some(ip) if old_admitted => format!("it keeps {ip}"),
                        _ => "it is not exposed there".to_owned(),
                    };
                    problems.push(Problem::service_error(
                        key,
                        crate::annotations::field(crate::annotations::IPS),
                        format!("{why}; {outcome}"),
                    ));
                    if let Some(ip) = old.filter(|_| !old_admitted) {
                        books.let_go(&host.name, ip);
                        entry.addresses.remove(&host.name);
                        events.push(AddressEvent::Dropped {
                            key: key.clone(),
                            host: host.name.clone(),
                            ip,
                        });
                    }
                    continue;
                }
                if old == Some(want) {
                    continue;
                }
                if let Some(ip) = old {
                    books.let_go(&host.name, ip);
                }
                books.used.entry(host.name.clone()).or_default().insert(want);
                books.holders.insert((host.name.clone(), want), key.clone());
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
                && old.is_some_and(|ip| books.co_held.contains_key(&(host.name.clone(), ip)));
            if old_admitted && !left_group {
                continue;
            }
            let unadmitted = books.give_up(host, &mut entry.addresses, old, old_admitted);
            let group = svc
                .settings
                .shared_key
                .as_ref()
                .map(|k| (key.namespace.to_string(), k.clone()));
            let shared = group
                .as_ref()
                .and_then(|g| group_address.get(&(g.clone(), host.name.clone())))
                .copied()
                .filter(|ip| admitted.holds(host, *ip));
            let v6_only = host.pools.iter().all(|p| p.is_v6());
            let found = match shared {
                Some(ip) => {
                    // One more holder of the group's address: a member leaving it later in this
                    // decision must not free it.
                    *books.co_held.entry((host.name.clone(), ip)).or_insert(1) += 1;
                    Some(ip)
                }
                None => {
                    let found = books.lowest_free(host, &admitted, v6_only);
                    if let (Some(g), Some(ip)) = (&group, found) {
                        group_address.insert((g.clone(), host.name.clone()), ip);
                    }
                    found
                }
            };
            books.report_unadmitted(host, unadmitted, found, problems);
            match books.settle(host, &mut entry.addresses, old, found, events) {
                Some(ip) => events.push(match shared {
                    Some(_) => AddressEvent::Allocated {
                        key: key.clone(),
                        host: host.name.clone(),
                        ip,
                    },
                    None => AddressEvent::placed(key, &host.name, old, ip),
                }),
                None => problems.push(match admitted.any(host, v6_only) {
                    false => admitted::none_admits(config, host, key, false),
                    true => Problem::service_error(
                        key,
                        "",
                        format!(
                            "no free address on LB host {} (pools {} are exhausted); not exposed there",
                            host.name,
                            admitted.listed(host, v6_only)
                        ),
                    ),
                }),
            }
        }
        books.cursors = cursors_v6;
        v6::place(svc, &targets_v6, entry, &mut books, events, problems);
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
