//! Where the search for the lowest free address resumes on one host within one decision: every
//! address of the pools a cursor walks that lies before it is known to be taken, so a cold
//! allocation of N Services walks each pool once. A host with tenant pools has one cursor per set
//! of pools that admit a Service (Services admitted by different pools see different "lowest
//! free" addresses), and an address that comes free moves every cursor past it back to it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::allocate::Used;
use crate::allocate::admitted::Admitted;
use crate::config::{Config, LbHost};
use crate::names::LbHostName;

/// The cursors of each host, by the pools they walk.
pub(crate) type Cursors = BTreeMap<LbHostName, BTreeMap<Admitted, Cursor>>;

#[derive(Debug, Default)]
pub(crate) struct Cursor {
    pool: usize,
    next: Option<IpAddr>,
}

impl Cursor {
    /// The lowest address of the `admitted` pools of one family that is not in `used`.
    pub(crate) fn lowest_free_of(
        &mut self,
        host: &LbHost,
        used: &BTreeSet<IpAddr>,
        v6: bool,
        admitted: &Admitted,
    ) -> Option<IpAddr> {
        while let Some(pool) = host.pools.get(self.pool) {
            if pool.is_v6() != v6 || !admitted.contains(self.pool) {
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

    /// Moves the cursor back to `ip`, of pool `j`, when it lies behind it: `ip` just came free.
    fn rewind(&mut self, j: usize, ip: IpAddr) {
        if j < self.pool || (j == self.pool && self.next.is_some_and(|n| ip < n)) {
            self.pool = j;
            self.next = Some(ip);
        }
    }
}

/// The cursor of `host` for the pools `admitted` names.
pub(crate) fn cursor<'c>(cursors: &'c mut Cursors, host: &LbHostName, admitted: &Admitted) -> &'c mut Cursor {
    cursors
        .entry(host.clone())
        .or_default()
        .entry(admitted.clone())
        .or_default()
}

/// Marks `ip` on `host` free and rewinds the host's cursors to it: a later Service of this
/// decision may take it. (An address outside every pool, after a pool edit, is of no cursor.)
pub(crate) fn free(config: &Config, host: &LbHostName, ip: IpAddr, used: &mut Used, cursors: &mut Cursors) {
    if let Some(set) = used.get_mut(host) {
        set.remove(&ip);
    }
    let Some((j, _)) = config.host(host).and_then(|h| h.pool_of(ip)) else {
        return;
    };
    if let Some(of_host) = cursors.get_mut(host) {
        // Only cursors that walk pool `j`: one that skips it would otherwise start over from the
        // next pool it walks, and a pool edit moving thousands of Services would walk it again
        // for each of them.
        for (admitted, cursor) in of_host.iter_mut() {
            if admitted.contains(j) {
                cursor.rewind(j, ip);
            }
        }
    }
}
