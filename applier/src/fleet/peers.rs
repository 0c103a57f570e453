//! Watching the other LB hosts (docs/design.md §5.6): a peer whose published state is stale and
//! whose served addresses do not answer has its address records taken out of DNS by a host that
//! sees a majority of the fleet healthy, so clients stop being sent to a dead host within seconds.
//! The withdrawal is two kinds of UPDATE, each conditional on the peer's state record: first the
//! record is marked withdrawn (conditional on the stale text read), then the records are deleted
//! (conditional on the marked text). A peer that comes back in between changes its record, and
//! every later UPDATE of the withdrawal fails its prerequisite and changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;

use flipbit_core::fleet::HostState;
use flipbit_core::names::LbHostName;
use flipbit_core::text::escaped;
use flipbit_store::CommitId;

use super::decide::{self, PeerView, Verdict};
use super::{Fleet, Own, now};
use crate::dns::client::{DnsError, MAX_RRS_PER_MESSAGE};
use crate::dns::message::delete_record;
use crate::dns::records;

/// What one look at the peers found and did.
#[derive(Debug, Clone, Default)]
pub struct PeersReport {
    /// Peers seen down.
    pub down: Vec<LbHostName>,
    /// Peers this host withdrew in this run.
    pub withdrawn: Vec<LbHostName>,
    /// Why nothing was done, when nothing was.
    pub held_back: Option<String>,
}

/// How many of a peer's served sockets are tried before it counts as not answering.
const PROBES: usize = 3;

impl Fleet<'_> {
    /// Looks at every peer; withdraws the down ones when this host may act (`self_healthy`: its
    /// own load-balancer step succeeded).
    pub fn watch_peers(&self, self_healthy: bool) -> PeersReport {
        let mut report = PeersReport::default();
        let me = &self.opts.lb;
        let peers: Vec<LbHostName> = self
            .config
            .lb_hosts
            .iter()
            .map(|h| h.name.clone())
            .filter(|h| h != me)
            .collect();
        if peers.is_empty() {
            return report;
        }
        let timeout = self.opts.fleet.peer_timeout.as_secs();
        let now = now();
        let mut seen: BTreeMap<LbHostName, (Own, Verdict)> = BTreeMap::new();
        for peer in &peers {
            let own = match self.read(peer.as_str()) {
                Ok(own) => own,
                Err(e) => {
                    tracing::warn!(%peer, error = %escaped(&format!("{e:#}")), "cannot read a peer's state");
                    report.held_back = Some("a peer's state could not be read".into());
                    return report;
                }
            };
            let suspect = own.state.as_ref().is_some_and(|s| decide::suspect(s, timeout, now));
            let answers = if suspect {
                self.answers(peer, own.state.as_ref())
            } else {
                Some(true)
            };
            let view = PeerView {
                state: own.state.clone(),
                answers,
            };
            let verdict = decide::judge(&view, timeout, now);
            match &verdict {
                // A host being installed: said once per run at debug, not as a warning.
                Verdict::Unjudged(why) if why == decide::NO_STATE => {
                    tracing::debug!(%peer, why, "not judging this peer");
                }
                Verdict::Unjudged(why) => tracing::warn!(%peer, why = %escaped(why), "not judging this peer"),
                _ => {}
            }
            if verdict == Verdict::Down {
                report.down.push(peer.clone());
            }
            seen.insert(peer.clone(), (own, verdict));
        }
        if report.down.is_empty() {
            return report;
        }
        let verdicts: BTreeMap<LbHostName, Verdict> = seen.iter().map(|(h, (_, v))| (h.clone(), v.clone())).collect();
        if !self_healthy {
            report.held_back = Some("this host is not healthy itself".into());
            return report;
        }
        if !decide::has_majority(self_healthy, &verdicts, self.config.lb_hosts.len()) {
            tracing::warn!(down = ?report.down, "peers look down, but this host does not see a majority of the fleet healthy: no withdrawal");
            report.held_back = Some("no majority of the fleet is healthy as this host sees it".into());
            return report;
        }
        let healthy: Vec<LbHostName> = std::iter::once(me.clone())
            .chain(
                verdicts
                    .iter()
                    .filter(|(_, v)| **v == Verdict::Healthy)
                    .map(|(h, _)| h.clone()),
            )
            .collect();
        for peer in report.down.clone() {
            let Some((own, _)) = seen.get(&peer) else { continue };
            match self.withdraw(&peer, own, &healthy) {
                Ok(true) => report.withdrawn.push(peer),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(%peer, error = %escaped(&format!("{e:#}")), "withdrawal failed; tried again next run")
                }
            }
        }
        report
    }

    /// Whether one of `peer`'s served TCP sockets accepts a connection (`None`: it serves none
    /// to try), from its files at the commit it published (or the head).
    fn answers(&self, peer: &LbHostName, state: Option<&HostState>) -> Option<bool> {
        let host = self.config.host(peer)?;
        let commit = self.commit_of(state);
        let format = crate::verify::output_format(self.store, commit).ok()?;
        match super::reach::served_sockets(self.store, commit, host, format, PROBES) {
            Ok(sockets) => super::reach::any_answers(&sockets),
            Err(e) => {
                tracing::debug!(%peer, error = %escaped(&e), "cannot list a peer's sockets");
                None
            }
        }
    }

    /// The commit a peer published as served, when the cache knows it, else the head.
    fn commit_of(&self, state: Option<&HostState>) -> CommitId {
        state
            .and_then(|s| s.commit.as_deref())
            .and_then(|c| CommitId::from_str(c).ok())
            .filter(|c| self.store.shape(*c).is_ok())
            .unwrap_or(self.head)
    }

    /// Withdraws `peer`: marks its state withdrawn, then deletes its address records but those
    /// on names no `healthy` host publishes. `Ok(false)` when its record changed meanwhile (it
    /// is back): nothing deleted.
    pub fn withdraw(&self, peer: &LbHostName, own: &Own, healthy: &[LbHostName]) -> Result<bool> {
        let state = own.state.clone().unwrap_or(HostState {
            commit: None,
            since: 0,
            head: None,
            at: 0,
            lb: flipbit_core::fleet::StepState::Ok,
            dns: flipbit_core::fleet::StepState::Ok,
            withdrawn: false,
            interval: 0,
        });
        if !state.withdrawn {
            let marked = HostState {
                withdrawn: true,
                ..state.clone()
            };
            match self.write(peer.as_str(), own.record.as_ref(), &marked) {
                Ok(()) => {}
                Err(DnsError::PrerequisiteFailed { .. }) => {
                    tracing::info!(%peer, "the peer's state changed before the withdrawal: it is back; nothing removed");
                    return Ok(false);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let marked = self.read(peer.as_str())?;
        let Some(marked_record) = marked.record else {
            return Ok(false);
        };
        if !marked.state.is_some_and(|s| s.withdrawn) {
            return Ok(false);
        }
        let records = crate::dns_step::records_of(self.store, self.commit_of(Some(&state)), peer)?;
        let mut served: BTreeSet<String> = BTreeSet::new();
        for host in healthy {
            served.extend(
                crate::dns_step::records_of(self.store, self.head, host)?
                    .into_iter()
                    .map(|r| r.name),
            );
        }
        let deletes = decide::to_delete(&records, &served);
        let kept = records.len() - deletes.len();
        let zone = &self.config.zone;
        let prerequisite = records::exactly(&marked_record);
        let same_zone = self.status_zone == *zone;
        for chunk in deletes.chunks(MAX_RRS_PER_MESSAGE) {
            let updates = chunk
                .iter()
                .map(|r| delete_record(zone, r))
                .collect::<Result<Vec<_>, _>>()?;
            let sent = if same_zone {
                self.client
                    .send_records(zone, std::slice::from_ref(&prerequisite), &updates)
            } else {
                // The state lives in another zone, which one UPDATE cannot also hold: check it
                // right before each message instead (a narrow window, documented).
                match self.read(peer.as_str())?.record {
                    Some(r) if r == marked_record => self.client.send_records(zone, &[], &updates),
                    _ => return Ok(false),
                }
            };
            match sent {
                Ok(()) => {}
                Err(DnsError::PrerequisiteFailed { .. }) => {
                    tracing::info!(%peer, "the peer took its state back during the withdrawal: stopped");
                    return Ok(false);
                }
                Err(e) => return Err(e.into()),
            }
        }
        tracing::warn!(%peer, removed = deletes.len(), kept_last_address = kept, "peer withdrawn from DNS: its published state is stale and its addresses do not answer");
        Ok(true)
    }
}
