//! One Service's view of a decision's address books while it is placed, and the one way an
//! address is given up (moved, dropped with a host, refused): shared addresses stay with the
//! group's other members, an address promised to another Service's request stays promised, and
//! any other comes free for the rest of the decision.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::allocate::cursor::Cursors;
use crate::allocate::{AddressEvent, Used, cursor};
use crate::config::Config;
use crate::host_addresses::HostAddresses;
use crate::names::{LbHostName, ServiceKey};

/// Addresses several ledger entries hold (members of a sharing group), with how many.
pub(crate) type CoHeld = BTreeMap<(LbHostName, IpAddr), usize>;

/// One Service's view of a decision's address books while it is placed: what is in use, where the
/// searches resume, who was promised what, and which addresses are shared.
pub(crate) struct Books<'a> {
    pub(crate) config: &'a Config,
    pub(crate) key: &'a ServiceKey,
    pub(crate) used: &'a mut Used,
    /// The cursors of the family being placed.
    pub(crate) cursors: &'a mut Cursors,
    pub(crate) holders: &'a mut BTreeMap<(LbHostName, IpAddr), ServiceKey>,
    pub(crate) co_held: &'a mut CoHeld,
    /// Addresses given up before any Service was placed (`Placement::release_unadmitted`): let
    /// go once, then, when their Service is placed, only taken out of its entry.
    pub(crate) released: &'a mut Released,
}

/// Addresses let go ahead of placement, by Service and host.
pub(crate) type Released = BTreeMap<(ServiceKey, LbHostName), IpAddr>;

impl Books<'_> {
    /// The Service gives `ip` on `host` up. It becomes free, unless other members of its sharing
    /// group still hold it, or a request of this decision was promised it (a pool stopped
    /// admitting its holder: the requester takes it, so it stays in use).
    pub(crate) fn let_go(&mut self, host: &LbHostName, ip: IpAddr) {
        let mine = (self.key.clone(), host.clone());
        if self.released.get(&mine) == Some(&ip) {
            // Let go before placement began; another Service may hold it by now.
            self.released.remove(&mine);
            return;
        }
        let at = (host.clone(), ip);
        if let Some(holders) = self.co_held.get_mut(&at) {
            *holders -= 1;
            if *holders < 2 {
                self.co_held.remove(&at);
            }
            return;
        }
        match self.holders.get(&at) {
            Some(holder) if holder != self.key => return,
            Some(_) => {
                self.holders.remove(&at);
            }
            None => {}
        }
        cursor::free(self.config, host, ip, self.used, self.cursors);
    }

    /// Releases the addresses in `addresses` on hosts `keep` rejects: each is let go at once (the
    /// Service still exists, so there is no grace) and reported as `Dropped`.
    pub(crate) fn drop_hosts(
        &mut self,
        addresses: &mut HostAddresses,
        keep: impl Fn(&LbHostName) -> bool,
        events: &mut Vec<AddressEvent>,
    ) {
        let dropped: Vec<(LbHostName, IpAddr)> = addresses
            .iter()
            .filter(|(host, _)| !keep(host))
            .map(|(host, ip)| (host.clone(), *ip))
            .collect();
        for (host, ip) in dropped {
            addresses.remove(&host);
            self.let_go(&host, ip);
            events.push(AddressEvent::Dropped {
                key: self.key.clone(),
                host,
                ip,
            });
        }
    }
}
