//! Which peers to withdraw, decided from what this host sees, with no I/O: the rules of
//! docs/design.md §5.6 in one place, tested alone.
//!
//! - A peer is down when its published state is older than the peer timeout, or says its load
//!   balancer failed, and none of its served addresses accepts a connection.
//! - A peer that has published no state is never judged: a host being installed (or one without
//!   the DNS step) has no records of its own to withdraw, and marking it withdrawn would only make
//!   it take its record back.
//! - A peer whose run interval is more than half the timeout is never judged (a timer fleet needs
//!   a longer timeout than a watch fleet): a late heartbeat is not a death.
//! - Only a host that sees a majority of the fleet healthy, itself included, acts: a partition
//!   must not empty the zone. A peer not judged counts as unknown, not healthy.
//! - A name never loses its last address: a down peer's record stays on a name no healthy host
//!   serves.

use std::collections::{BTreeMap, BTreeSet};

use flipbit_core::fleet::HostState;
use flipbit_core::names::LbHostName;

use crate::dns::client::AddressRecord;

/// What this host sees of one peer.
#[derive(Debug, Clone)]
pub struct PeerView {
    pub state: Option<HostState>,
    /// One of its served addresses accepted a connection (`None`: it serves nothing to probe).
    pub answers: Option<bool>,
}

/// A peer's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    Down,
    /// Not judged, and why.
    Unjudged(String),
}

/// The verdict on one peer at `now` (unix seconds).
pub fn judge(peer: &PeerView, timeout_secs: u64, now: u64) -> Verdict {
    let Some(state) = &peer.state else {
        return Verdict::Unjudged(NO_STATE.into());
    };
    if u64::from(state.interval) * 2 > timeout_secs {
        return Verdict::Unjudged(format!(
            "its run interval ({} s) is more than half the peer timeout ({timeout_secs} s)",
            state.interval
        ));
    }
    match (suspect(state, timeout_secs, now), peer.answers) {
        (true, Some(false)) => Verdict::Down,
        // Nothing to probe: the heartbeat alone says.
        (true, None) => Verdict::Down,
        _ => Verdict::Healthy,
    }
}

/// The peer timeout when none is given: four of this host's run intervals, at least 10 s. A
/// fleet's hosts usually share their schedule, so peers on it are judged (their interval is at
/// most half the timeout) and a heartbeat may be late by up to three runs before it counts.
pub fn default_peer_timeout(interval: std::time::Duration) -> std::time::Duration {
    (interval * 4).max(std::time::Duration::from_secs(10))
}

/// Why a peer that has published no state is not judged.
pub const NO_STATE: &str = "it has published no state yet";

/// A published state that calls for a look at the peer's sockets: stale, or fresh but saying
/// its load balancer failed (a crashed nginx under a live applier).
pub fn suspect(state: &HostState, timeout_secs: u64, now: u64) -> bool {
    now.saturating_sub(state.at) > timeout_secs || state.lb != flipbit_core::fleet::StepState::Ok
}

/// True when this host, healthy itself or not, sees more than half of the fleet healthy
/// (`fleet_size` counts every host, this one included; a peer not judged is not counted).
pub fn has_majority(self_healthy: bool, verdicts: &BTreeMap<LbHostName, Verdict>, fleet_size: usize) -> bool {
    let healthy = usize::from(self_healthy) + verdicts.values().filter(|v| **v == Verdict::Healthy).count();
    healthy * 2 > fleet_size
}

/// The records of a down peer to delete: all of them but those on names no healthy host
/// publishes (`served`: the names the healthy hosts publish).
pub fn to_delete(records: &BTreeSet<AddressRecord>, served: &BTreeSet<String>) -> Vec<AddressRecord> {
    records.iter().filter(|r| served.contains(&r.name)).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(at: u64, interval: u32) -> HostState {
        HostState {
            commit: Some("a".repeat(40)),
            since: 0,
            head: None,
            at,
            lb: flipbit_core::fleet::StepState::Ok,
            dns: flipbit_core::fleet::StepState::Ok,
            withdrawn: false,
            interval,
        }
    }

    fn peer(at: Option<u64>, answers: Option<bool>) -> PeerView {
        PeerView {
            state: at.map(|at| state(at, 1)),
            answers,
        }
    }

    #[test]
    fn down_needs_a_stale_state_and_no_answer() {
        assert_eq!(
            judge(&peer(Some(100), Some(false)), 10, 105),
            Verdict::Healthy,
            "fresh state"
        );
        assert_eq!(
            judge(&peer(Some(100), Some(true)), 10, 200),
            Verdict::Healthy,
            "still answers"
        );
        assert_eq!(judge(&peer(Some(100), Some(false)), 10, 111), Verdict::Down);
        assert_eq!(
            judge(&peer(None, Some(false)), 10, 111),
            Verdict::Unjudged(NO_STATE.into()),
            "never published"
        );
        assert_eq!(
            judge(&peer(Some(100), None), 10, 111),
            Verdict::Down,
            "nothing to probe"
        );
        let mut crashed = peer(Some(100), Some(false));
        if let Some(s) = crashed.state.as_mut() {
            s.lb = flipbit_core::fleet::StepState::Failed(flipbit_core::fleet::Cause::Reload);
        }
        assert_eq!(
            judge(&crashed, 10, 101),
            Verdict::Down,
            "a fresh state saying nginx failed"
        );
        let slow = PeerView {
            state: Some(state(0, 15)),
            answers: Some(false),
        };
        assert!(matches!(judge(&slow, 10, 1000), Verdict::Unjudged(why) if why.contains("15 s")));
    }

    #[test]
    fn the_default_timeout_judges_peers_on_the_same_schedule() {
        use std::time::Duration;
        assert_eq!(default_peer_timeout(Duration::from_secs(1)), Duration::from_secs(10));
        let timer = default_peer_timeout(Duration::from_secs(15));
        assert_eq!(timer, Duration::from_secs(60));
        let peer = PeerView {
            state: Some(state(0, 15)),
            answers: Some(false),
        };
        assert_eq!(judge(&peer, timer.as_secs(), 61), Verdict::Down);
    }

    #[test]
    fn a_minority_does_not_act() {
        let name = |n: &str| n.parse::<LbHostName>().unwrap();
        let verdicts = BTreeMap::from([(name("lb-2"), Verdict::Down), (name("lb-3"), Verdict::Healthy)]);
        assert!(has_majority(true, &verdicts, 3));
        let verdicts = BTreeMap::from([(name("lb-2"), Verdict::Down), (name("lb-3"), Verdict::Down)]);
        assert!(!has_majority(true, &verdicts, 3), "one of three is no majority");
        let verdicts = BTreeMap::from([
            (name("lb-2"), Verdict::Down),
            (name("lb-3"), Verdict::Unjudged(NO_STATE.into())),
        ]);
        assert!(!has_majority(true, &verdicts, 3), "a peer not judged is not healthy");
        assert!(!has_majority(
            false,
            &BTreeMap::from([(name("lb-2"), Verdict::Healthy)]),
            2
        ));
    }

    #[test]
    fn a_name_keeps_its_last_address() {
        let rec = |name: &str, ip: &str| AddressRecord {
            name: name.into(),
            ttl: 60,
            addr: ip.parse().unwrap(),
        };
        let records: BTreeSet<AddressRecord> = [rec("a.z", "127.1.2.1"), rec("b.z", "127.1.2.2")].into();
        let served: BTreeSet<String> = ["a.z".to_owned()].into();
        assert_eq!(to_delete(&records, &served), vec![rec("a.z", "127.1.2.1")]);
    }
}
