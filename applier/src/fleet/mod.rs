//! This host in the fleet (docs/design.md §5.6): it publishes its state after every run, takes
//! its records back when a peer withdrew them while it looked down, and watches its peers
//! (`peers`). All of it needs the DNS step: DNS is the one thing every applier may already write,
//! so the fleet needs no new credentials and works from a systemd timer.

pub mod decide;
pub mod peers;
pub mod reach;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow};
use hickory_proto::rr::{Record, RecordType};

use flipbit_core::config::Config;
use flipbit_core::fleet::{HostState, StepState, state_name};
use flipbit_core::text::escaped;
use flipbit_store::{CommitId, Store};

use crate::apply::{ApplyOptions, Run};
use crate::dns::client::{DnsError, UpdateClient};
use crate::dns::lookup::Lookup;
use crate::dns::records;
use crate::dns_step::Baseline;

pub use decide::{PeerView, Verdict};

/// TTL of the state records: resolvers that cache them see a peer's state at most this late.
const STATE_TTL: u32 = 10;

/// This host's view of the fleet for one run.
pub struct Fleet<'a> {
    pub opts: &'a ApplyOptions,
    pub store: &'a Store,
    pub head: CommitId,
    pub config: Config,
    pub client: UpdateClient,
    /// The zone of the state records.
    pub status_zone: String,
}

/// This host's own record as read at the start of the run.
#[derive(Debug, Clone, Default)]
pub struct Own {
    /// The TXT record as it is in the zone (the prerequisite of the next write).
    pub record: Option<Record>,
    /// Its state, when it parses.
    pub state: Option<HostState>,
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl<'a> Fleet<'a> {
    /// The fleet view, when the DNS step is configured (`client`).
    pub fn new(opts: &'a ApplyOptions, store: &'a Store, head: CommitId, client: UpdateClient) -> Result<Self> {
        let config = crate::lb_step::config_at(store, head)?;
        let status_zone = opts.fleet.status_zone.clone().unwrap_or_else(|| config.zone.clone());
        Ok(Self {
            opts,
            store,
            head,
            config,
            client,
            status_zone,
        })
    }

    pub fn lookup(&self) -> Lookup {
        Lookup {
            server: self.client.server,
            timeout: self.client.timeout,
        }
    }

    /// The state record name of `host`.
    pub fn state_name(&self, host: &str) -> String {
        state_name(host, &self.status_zone)
    }

    /// The record `host` published, and its state when it parses.
    pub fn read(&self, host: &str) -> Result<Own> {
        let records = self.lookup().txt(&self.state_name(host))?;
        let record = records.into_iter().next();
        let state = record
            .as_ref()
            .and_then(records::txt_text)
            .and_then(|text| match HostState::parse(&text) {
                Ok(state) => Some(state),
                Err(why) => {
                    tracing::warn!(%host, why = %escaped(&why), "a published state does not parse; taken as none");
                    None
                }
            });
        Ok(Own { record, state })
    }

    /// Replaces `host`'s state record with `state`, on condition that it still is `read` (or
    /// absent, when nothing was read): a write never overwrites a change it did not see.
    pub fn write(&self, host: &str, read: Option<&Record>, state: &HostState) -> Result<(), DnsError> {
        let name = records::name(&self.state_name(host)).map_err(|detail| DnsError::Encode {
            zone: self.status_zone.clone(),
            detail,
        })?;
        let prerequisite = match read {
            Some(record) => records::exactly(record),
            None => records::absent(&name, RecordType::TXT),
        };
        let updates = [
            records::delete_rrset(&name, RecordType::TXT),
            records::txt(&name, STATE_TTL, &state.render()),
        ];
        self.client.send_records(&self.status_zone, &[prerequisite], &updates)
    }

    /// Before the DNS step: what it should take as published. A host a peer withdrew, serving
    /// again (`serving`), first takes its record over (conditional on the withdrawn one, so a peer
    /// still deleting stops), then sends all its records again; one not serving publishes nothing
    /// (`None`: skip the DNS step). A host whose journal lost its DNS record starts from the
    /// commit it published last.
    pub fn baseline(&self, own: &mut Own, journal_has_dns: bool, serving: bool) -> Option<Baseline> {
        let me = self.opts.lb.as_str();
        if let Some(state) = own.state.clone().filter(|s| s.withdrawn) {
            if !serving {
                tracing::warn!("withdrawn by a peer and not serving: no DNS change");
                return None;
            }
            let taken = HostState { at: now(), ..state };
            match self.write(me, own.record.as_ref(), &taken) {
                Ok(()) => {
                    tracing::info!("serving again after a peer withdrew this host: its records are sent again");
                    own.record = self.read(me).ok().and_then(|o| o.record);
                    own.state = Some(taken);
                    return Some(Baseline::Republish);
                }
                Err(e) => {
                    tracing::warn!(error = %escaped(&e.to_string()), "could not take this host's state back; tried again next run");
                    return None;
                }
            }
        }
        if !journal_has_dns
            && let Some(commit) = own
                .state
                .as_ref()
                .and_then(|s| s.commit.as_deref())
                .and_then(|c| CommitId::from_str(c).ok())
                .filter(|c| self.store.shape(*c).is_ok())
        {
            tracing::info!(%commit, "no DNS record in the journal: starting from the commit this host published");
            return Some(Baseline::Commit(commit));
        }
        Some(Baseline::Journal)
    }

    /// After the run: this host's state, published when it changed or the last heartbeat is
    /// older than a quarter of the peer timeout (a watch fleet's peers need it that fresh; a
    /// record per run would be an UPDATE a second per host).
    pub fn publish(&self, own: &Own, run: &Run, republished: bool) {
        let me = self.opts.lb.as_str();
        let previous = own.state.as_ref();
        let commit = run.journal.lb.map(|c| c.to_string());
        let lb = match &run.lb {
            Ok(_) => StepState::Ok,
            Err(f) => StepState::Failed(f.cause),
        };
        let dns = match &run.dns {
            Some(Ok(_)) => StepState::Ok,
            Some(Err(f)) => StepState::Failed(f.cause),
            None => previous.map_or(StepState::Ok, |p| p.dns),
        };
        let now = now();
        let since = match previous {
            Some(p) if p.commit == commit && p.lb == StepState::Ok && lb == StepState::Ok => p.since,
            Some(p) if lb != StepState::Ok => p.since,
            _ => now,
        };
        let state = HostState {
            commit,
            since,
            head: run.head.map(|h| h.to_string()),
            at: now,
            lb,
            dns,
            withdrawn: previous.is_some_and(|p| p.withdrawn) && !republished,
            interval: u32::try_from(self.opts.fleet.interval.as_secs().max(1)).unwrap_or(u32::MAX),
        };
        let heartbeat = (self.opts.fleet.peer_timeout / 4).max(self.opts.fleet.interval);
        let unchanged = previous.is_some_and(|p| {
            HostState {
                at: p.at,
                ..state.clone()
            } == *p
        });
        let fresh = previous.is_some_and(|p| Duration::from_secs(now.saturating_sub(p.at)) < heartbeat);
        if unchanged && fresh {
            return;
        }
        if let Err(e) = self.write(me, own.record.as_ref(), &state) {
            // A peer changed the record since it was read (it withdrew this host): the next run
            // sees that and takes the record back.
            tracing::warn!(error = %escaped(&e.to_string()), "state not published this run");
        }
    }
}

/// A `Fleet` for this run, when the DNS step is configured.
pub fn for_run<'a>(opts: &'a ApplyOptions, store: &'a Store, head: CommitId) -> Result<Option<Fleet<'a>>> {
    let Some(settings) = &opts.dns else {
        return Ok(None);
    };
    let client = settings.client()?;
    Fleet::new(opts, store, head, client)
        .map(Some)
        .map_err(|e| anyhow!("the fleet view: {e:#}"))
}
