//! The IPv6 side of dual-stack Services: a Service whose `ipFamilies` include IPv6 also gets the
//! lowest free address of the IPv6 pools of each LB host that has them, with the same promise as
//! the primary address (kept while it stays in the pools, dropped only with the host or the
//! family). Requested and shared addresses apply to the primary address only.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::allocate::{AddressEvent, Cursor};
use crate::config::LbHost;
use crate::exposure::ExposedService;
use crate::ledger::Entry;
use crate::names::LbHostName;
use crate::problem::Problem;

/// Places `svc`'s IPv6 addresses on `targets` (its LB hosts that have IPv6 pools).
pub(crate) fn place(
    svc: &ExposedService,
    targets: &[&LbHost],
    entry: &mut Entry,
    used: &mut BTreeMap<LbHostName, BTreeSet<IpAddr>>,
    cursors: &mut BTreeMap<LbHostName, Cursor>,
    events: &mut Vec<AddressEvent>,
    problems: &mut Vec<Problem>,
) {
    let key = &svc.key;
    let keep = |host: &LbHostName| svc.ipv6 && targets.iter().any(|t| &t.name == host);
    crate::allocate::drop_hosts(key, &mut entry.addresses_v6, keep, used, cursors, events);
    if !svc.ipv6 {
        return;
    }
    for host in targets {
        let old = entry.addresses_v6.get(&host.name).copied();
        if old.is_some_and(|ip| host.in_pools(ip)) {
            continue;
        }
        let host_used = used.entry(host.name.clone()).or_default();
        if let Some(ip) = old {
            host_used.remove(&ip);
            entry.addresses_v6.remove(&host.name);
        }
        match cursors
            .entry(host.name.clone())
            .or_default()
            .lowest_free_of(host, host_used, true)
        {
            Some(ip) => {
                host_used.insert(ip);
                entry.addresses_v6.insert(host.name.clone(), ip);
                events.push(AddressEvent::placed(key, &host.name, old, ip));
            }
            None => problems.push(Problem::service_error(
                key,
                "spec.ipFamilies",
                format!(
                    "no free IPv6 address on LB host {}; served over IPv4 only there",
                    host.name
                ),
            )),
        }
    }
}
