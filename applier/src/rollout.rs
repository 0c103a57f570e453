//! Staged rollout (`rollout:` in flipbit.yaml, docs/design.md §5.6): a host of a later wave
//! applies a head only once the earlier waves serve it healthy. The decision is
//! `flipbit_core::rollout::gate`; this module reads what it needs: the head's flipbit.yaml, the
//! earlier hosts' published states (TXT records, plain queries, no key) and this host's journal.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use flipbit_core::fleet::{HostState, state_name};
use flipbit_core::names::LbHostName;
use flipbit_core::rollout::{self, Published};
use flipbit_store::{CommitId, Store};

use crate::apply::ApplyOptions;
use crate::dns::lookup::Lookup;
use crate::dns::records;
use crate::journal;
use crate::lb_step::config_at;
use crate::release::StateDir;

/// Why this host must not apply `head` yet, or `None` when it may: no `rollout:` in the head's
/// flipbit.yaml, this host is in the first wave, it already runs the head (holding would only
/// skip its DNS step), or every earlier host served the head healthy for the soak. A later-wave
/// host without the DNS step cannot see its peers, so it holds every head (and says why).
/// `Err` when the head's flipbit.yaml does not read or a peer's record cannot be queried.
pub fn hold(opts: &ApplyOptions, store: &Store, head: CommitId) -> Result<Option<String>> {
    let config = config_at(store, head)?;
    let Some(plan) = &config.rollout else {
        return Ok(None);
    };
    // A host the head does not list is refused by the load-balancer step, with its own reason.
    if config.host(&opts.lb).is_none() {
        return Ok(None);
    }
    let earlier = plan.earlier(&opts.lb);
    if earlier.is_empty() || runs_already(opts, head) {
        return Ok(None);
    }
    let Some(dns) = &opts.dns else {
        return Ok(Some(format!(
            "{} is in wave {} of flipbit.yaml's rollout but runs without --dns-server, so it cannot read the earlier waves' published states: it applies no new head until it runs with the DNS step",
            opts.lb,
            plan.wave_of(&opts.lb) + 1
        )));
    };
    let zone = opts.fleet.status_zone.as_deref().unwrap_or(&config.zone);
    let lookup = Lookup {
        server: dns.server,
        timeout: dns.timeout,
    };
    let mut published = Published::new();
    for peer in earlier {
        if let Some(state) = read_state(&lookup, peer, zone)? {
            published.insert(peer.clone(), state);
        }
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Ok(rollout::gate(&config, &opts.lb, &head.to_string(), &published, now).why())
}

/// `peer`'s published state: `None` when it has published nothing, `Err` inside when its record
/// does not read (both count as "not yet"); the outer `Err` when the server cannot be asked.
fn read_state(lookup: &Lookup, peer: &LbHostName, zone: &str) -> Result<Option<Result<HostState, String>>> {
    let name = state_name(peer.as_str(), zone);
    let found = lookup
        .txt(&name)
        .with_context(|| format!("rollout: reading {peer}'s state at {name}"))?;
    let texts: Vec<String> = found.iter().filter_map(records::txt_text).collect();
    Ok(match texts.as_slice() {
        [] => None,
        [text] => Some(HostState::parse(text)),
        more => Some(Err(format!("{} TXT records at {name}", more.len()))),
    })
}

/// True when this host already runs `head`, or was swapping it in when its last run stopped
/// (the head passed the gate then): the rollout holds new heads only.
fn runs_already(opts: &ApplyOptions, head: CommitId) -> bool {
    let Ok(state) = StateDir::new(opts.state_dir.clone()) else {
        return false;
    };
    match journal::read(&state) {
        journal::Read::Found(j) | journal::Read::Fresh(j) => {
            j.lb == Some(head) || j.pending.is_some_and(|p| p.commit == head)
        }
        journal::Read::Corrupt(_) => false,
    }
}
