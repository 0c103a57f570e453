//! The steps both address families take for a Service on one LB host once its address there is
//! not kept: give the old address up, take the lowest free address of the pools that admit it,
//! and record the outcome. The IPv4 (primary) and IPv6 placements differ only in what they try
//! first (a request, a sharing group's address) and in how a missing address is reported, so
//! these steps are written once and a change to one family cannot drift from the other.

use std::net::IpAddr;

use crate::allocate::admitted::{self, Admitted};
use crate::allocate::{AddressEvent, Books, cursor};
use crate::config::LbHost;
use crate::host_addresses::HostAddresses;
use crate::problem::Problem;

impl Books<'_> {
    /// Gives up `old` on `host` (the Service will not keep it there) and takes it out of
    /// `addresses`. Returns it when it is still inside the host's pools but no longer one the
    /// Service may hold (`old_admitted` false): its pool stopped admitting the Service, which is
    /// reported once the new address is known ([`Books::report_unadmitted`]).
    pub(crate) fn give_up(
        &mut self,
        host: &LbHost,
        addresses: &mut HostAddresses,
        old: Option<IpAddr>,
        old_admitted: bool,
    ) -> Option<IpAddr> {
        let unadmitted = old.filter(|ip| host.in_pools(*ip) && !old_admitted);
        if let Some(ip) = old {
            self.let_go(&host.name, ip);
            addresses.remove(&host.name);
        }
        unadmitted
    }

    /// The lowest free address on `host` of the pools that admit the Service, in the family
    /// `v6`, searched from where this family's last search on the host stopped.
    pub(crate) fn lowest_free(&mut self, host: &LbHost, admitted: &Admitted, v6: bool) -> Option<IpAddr> {
        let host_used = self.used.entry(host.name.clone()).or_default();
        cursor::cursor(self.cursors, &host.name, admitted).lowest_free_of(host, host_used, v6, admitted)
    }

    /// Reports that `from` had to be given up because its pool no longer admits the Service, and
    /// what it got instead (`found`).
    pub(crate) fn report_unadmitted(
        &self,
        host: &LbHost,
        unadmitted: Option<IpAddr>,
        found: Option<IpAddr>,
        problems: &mut Vec<Problem>,
    ) {
        if let Some(from) = unadmitted {
            problems.push(admitted::no_longer_admits(self.config, host, self.key, from, found));
        }
    }

    /// Records where the placement on `host` ended: `found` is marked in use and written to
    /// `addresses`; with no address, a previous one (`old`) is reported `Dropped`. Returns
    /// `found`, for the caller's event (which differs with how it was found) or problem (which
    /// differs by family).
    pub(crate) fn settle(
        &mut self,
        host: &LbHost,
        addresses: &mut HostAddresses,
        old: Option<IpAddr>,
        found: Option<IpAddr>,
        events: &mut Vec<AddressEvent>,
    ) -> Option<IpAddr> {
        match found {
            Some(ip) => {
                self.used.entry(host.name.clone()).or_default().insert(ip);
                addresses.insert(host.name.clone(), ip);
            }
            None => {
                if let Some(ip) = old {
                    events.push(AddressEvent::Dropped {
                        key: self.key.clone(),
                        host: host.name.clone(),
                        ip,
                    });
                }
            }
        }
        found
    }
}
