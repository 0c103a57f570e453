//! The addresses of held Services, kept out of everyone else's reach while a human holds them,
//! and given back when the hold is lifted (see the parent module for holds themselves).

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::exposure::ExposedService;
use crate::host_addresses::HostAddresses;
use crate::ledger::{Entry, Ledger};
use crate::names::{LbHostName, ServiceKey};

use super::{Hold, HoldUpdate};

/// The ledger to allocate against: `previous` plus, for held Services without an entry (a revert
/// removed it), a stand-in entry holding their reserved addresses so nobody else gets them (the
/// stand-ins are returned and never written), plus, for exposed Services whose hold was lifted
/// and that have no entry, their reserved addresses back. Addresses someone else holds by now
/// are left out.
pub(crate) fn with_reservations<'a>(
    previous: &'a Ledger,
    holds: &HoldUpdate,
    exposed: &[ExposedService],
) -> (std::borrow::Cow<'a, Ledger>, BTreeSet<ServiceKey>, BTreeSet<ServiceKey>) {
    if holds.holds.holds.is_empty() && holds.lifted.is_empty() {
        // Nothing held or lifted (the usual case): no copy of a ledger of 50,000 entries.
        return (std::borrow::Cow::Borrowed(previous), BTreeSet::new(), BTreeSet::new());
    }
    let mut working = previous.clone();
    let mut taken: BTreeSet<(LbHostName, IpAddr)> = working
        .services
        .values()
        .flat_map(|e| e.addresses.iter().chain(&e.addresses_v6))
        .map(|(h, ip)| (h.clone(), *ip))
        .collect();
    let mut give = |key: &ServiceKey, hold: &Hold, working: &mut Ledger| -> bool {
        if working.services.contains_key(key) {
            return false;
        }
        let mut free = |map: &HostAddresses| -> HostAddresses {
            map.iter()
                .filter(|(h, ip)| taken.insert(((*h).clone(), **ip)))
                .map(|(h, ip)| (h.clone(), *ip))
                .collect()
        };
        let entry = Entry {
            addresses: free(&hold.addresses),
            addresses_v6: free(&hold.addresses_v6),
            ..Entry::default()
        };
        if entry.addresses.is_empty() && entry.addresses_v6.is_empty() {
            return false;
        }
        working.services.insert(key.clone(), entry);
        true
    };
    let mut phantoms = BTreeSet::new();
    for (key, hold) in &holds.holds.holds {
        if give(key, hold, &mut working) {
            phantoms.insert(key.clone());
        }
    }
    let mut resumed = BTreeSet::new();
    for (key, hold) in &holds.lifted {
        if exposed.iter().any(|e| &e.key == key) {
            give(key, hold, &mut working);
            resumed.insert(key.clone());
        }
    }
    (std::borrow::Cow::Owned(working), phantoms, resumed)
}
