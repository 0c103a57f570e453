//! The IPv6 side of dual-stack Services: a Service whose `ipFamilies` include IPv6 also gets the
//! lowest free address of the IPv6 pools that admit it on each LB host that has them, with the
//! same promise as the primary address (kept while it stays in a pool that admits it, dropped only
//! with the host or the family). Requested and shared addresses apply to the primary address only.

use crate::allocate::admitted::{self, Admitted};
use crate::allocate::{AddressEvent, Books};
use crate::config::LbHost;
use crate::exposure::ExposedService;
use crate::ledger::Entry;
use crate::names::LbHostName;
use crate::problem::Problem;

/// Places `svc`'s IPv6 addresses on `targets` (its LB hosts that have IPv6 pools); `books` holds
/// the IPv6 cursors.
pub(crate) fn place(
    svc: &ExposedService,
    targets: &[&LbHost],
    entry: &mut Entry,
    books: &mut Books<'_>,
    events: &mut Vec<AddressEvent>,
    problems: &mut Vec<Problem>,
) {
    let key = &svc.key;
    let keep = |host: &LbHostName| svc.ipv6 && targets.iter().any(|t| &t.name == host);
    books.drop_hosts(&mut entry.addresses_v6, keep, events);
    if !svc.ipv6 {
        return;
    }
    for host in targets {
        let admitted = Admitted::of(host, svc);
        let old = entry.addresses_v6.get(&host.name).copied();
        if old.is_some_and(|ip| admitted.holds(host, ip)) {
            continue;
        }
        let unadmitted = books.give_up(host, &mut entry.addresses_v6, old, false);
        let found = books.lowest_free(host, &admitted, true);
        books.report_unadmitted(host, unadmitted, found, problems);
        match books.settle(host, &mut entry.addresses_v6, old, found, events) {
            Some(ip) => events.push(AddressEvent::placed(key, &host.name, old, ip)),
            None => problems.push(match admitted.any(host, true) {
                false => admitted::none_admits(books.config, host, key, true),
                true => Problem::service_error(
                    key,
                    "spec.ipFamilies",
                    format!(
                        "no free IPv6 address on LB host {}; served over IPv4 only there",
                        host.name
                    ),
                ),
            }),
        }
    }
}
