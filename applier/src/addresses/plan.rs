//! What to change on the interface, from what the release serves and what the interface holds:
//! a pure function, so every rule about whose address may be touched is tested without one.

use std::collections::BTreeSet;
use std::net::IpAddr;

use flipbit_core::pool::Pool;

use super::netlink::Present;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Served and not on the interface: to add, then announce.
    pub add: Vec<IpAddr>,
    /// The applier's, served, whose IPv6 duplicate address detection failed: to remove and add
    /// again (a new detection; it fails again while the other holder is there).
    pub retry: Vec<Present>,
    /// The applier's, served, still tentative (a run stopped while the detection ran): to wait
    /// for.
    pub settling: Vec<IpAddr>,
    /// The applier's, inside this host's pools, no longer served: to remove once no socket uses
    /// them.
    pub remove: Vec<Present>,
    /// The applier's but outside every pool of this host now (a pool shrank or moved): left
    /// alone and reported, since the applier touches nothing outside its pools.
    pub strays: Vec<IpAddr>,
}

/// The changes that make the interface hold `served` and, of the addresses inside `pools`, no
/// other address of the applier's. Addresses it did not add (unmarked) are never changed, nor
/// added again when they are there: an operator's address that a Service is served on stays the
/// operator's.
pub fn plan(served: &BTreeSet<IpAddr>, present: &[Present], pools: &[Pool]) -> Plan {
    let mut plan = Plan::default();
    let on_interface: BTreeSet<IpAddr> = present.iter().map(|p| p.ip).collect();
    plan.add = served.iter().filter(|ip| !on_interface.contains(ip)).copied().collect();
    for address in present.iter().filter(|p| p.ours()) {
        if served.contains(&address.ip) {
            if address.dad_failed {
                plan.retry.push(*address);
            } else if address.tentative {
                plan.settling.push(address.ip);
            }
        } else if pools.iter().any(|pool| pool.contains(address.ip)) {
            plan.remove.push(*address);
        } else {
            plan.strays.push(address.ip);
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::super::netlink::FLIPBIT_PROTO;
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn at(text: &str, prefix_len: u8, proto: u8) -> Present {
        Present {
            ip: ip(text),
            prefix_len,
            proto,
            tentative: false,
            dad_failed: false,
        }
    }

    fn pools() -> Vec<Pool> {
        vec![
            Pool::parse("198.51.100.16/28").unwrap(),
            Pool::parse("2001:db8:1::100/124").unwrap(),
        ]
    }

    #[test]
    fn served_addresses_are_added_and_the_applier_s_unserved_ones_removed() {
        let served: BTreeSet<IpAddr> = [ip("198.51.100.17"), ip("198.51.100.18"), ip("2001:db8:1::101")].into();
        let present = [
            at("198.51.100.1", 24, 0),
            at("198.51.100.18", 32, FLIPBIT_PROTO),
            at("198.51.100.19", 32, FLIPBIT_PROTO),
        ];
        let plan = plan(&served, &present, &pools());
        assert_eq!(plan.add, [ip("198.51.100.17"), ip("2001:db8:1::101")]);
        assert_eq!(plan.remove, [present[2]]);
        assert!(plan.retry.is_empty() && plan.settling.is_empty() && plan.strays.is_empty());
    }

    #[test]
    fn an_operator_s_addresses_are_never_touched_inside_the_pools_or_out() {
        // In a pool but not served, in a pool and served, outside every pool.
        let present = [
            at("198.51.100.20", 32, 0),
            at("198.51.100.17", 24, 0),
            at("203.0.113.5", 32, 0),
        ];
        let served: BTreeSet<IpAddr> = [ip("198.51.100.17")].into();
        assert_eq!(plan(&served, &present, &pools()), Plan::default());
        assert_eq!(plan(&BTreeSet::new(), &present, &pools()), Plan::default());
    }

    #[test]
    fn the_applier_s_address_outside_its_pools_is_reported_not_removed() {
        let present = [at("198.51.100.200", 32, FLIPBIT_PROTO)];
        let plan = plan(&BTreeSet::new(), &present, &pools());
        assert_eq!(plan.strays, [ip("198.51.100.200")]);
        assert!(plan.remove.is_empty());
    }

    #[test]
    fn a_failed_duplicate_address_detection_is_retried_and_a_running_one_waited_for() {
        let failed = Present {
            dad_failed: true,
            tentative: true,
            ..at("2001:db8:1::101", 128, FLIPBIT_PROTO)
        };
        let running = Present {
            tentative: true,
            ..at("2001:db8:1::102", 128, FLIPBIT_PROTO)
        };
        let served: BTreeSet<IpAddr> = [failed.ip, running.ip].into();
        let plan = plan(&served, &[failed, running], &pools());
        assert_eq!(plan.retry, [failed]);
        assert_eq!(plan.settling, [running.ip]);
        assert!(plan.add.is_empty());
    }
}
