//! The DNS step of an apply (DESIGN.md §5.4): after nginx serves a commit, publish the records of
//! this host's own addresses. The change is the difference between the records this host owned
//! at the last commit whose DNS step completed and at the new one, both read from Git, so deletes
//! never need a zone transfer and a record Flipbit did not write is never touched. A host owns
//! exactly the records whose address lies in its own pools (pools never overlap across hosts).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::{Context, Result};

use flipbit_core::config::Config;
use flipbit_core::layout;
use flipbit_core::names::LbHostName;
use flipbit_store::{CommitId, Store};

use crate::dns::client::{AddressRecord, UpdateClient, ZoneUpdate};
use crate::fragment;
use crate::release::StateDir;

pub const DNS_STEP: &str = "dns";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsOutcome {
    UpToDate,
    Applied {
        adds: usize,
        deletes: usize,
        messages: usize,
        millis: u128,
    },
}

/// This host's records at `commit`, per zone fragment path: `Err` for a fragment that does not
/// parse (the caller keeps that Service's previous records).
type Owned = BTreeMap<String, (String, Result<BTreeSet<AddressRecord>, String>)>;

fn owned_records(store: &Store, commit: CommitId, lb: &LbHostName) -> Result<Owned> {
    let config = store
        .read(commit, layout::CONFIG_FILE)?
        .with_context(|| format!("commit {commit} has no {}", layout::CONFIG_FILE))?;
    let config = Config::parse(&String::from_utf8_lossy(&config)).with_context(|| format!("commit {commit}"))?;
    // A host that left flipbit.yaml owns nothing any more: its records go.
    let host = config.host(lb);
    let mut out = Owned::new();
    for (path, blob) in store.list(commit, layout::DNS_DIR)? {
        let Some((zone, _)) = layout::parse_dns_path(&path) else {
            tracing::warn!(%path, %commit, "not a zone fragment path; skipped");
            continue;
        };
        let text =
            String::from_utf8(store.blob(blob)?).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        let records = fragment::parse(&zone, &text).map(|records| {
            records
                .into_iter()
                .filter(|r| host.is_some_and(|h| h.in_pools(r.addr)))
                .collect::<BTreeSet<_>>()
        });
        out.insert(path, (zone, records));
    }
    Ok(out)
}

/// Sends the DNS changes from the last DNS-applied commit to `head` and records `head`.
pub fn run(
    store: &Store,
    state: &StateDir,
    lb: &LbHostName,
    head: CommitId,
    client: &UpdateClient,
) -> Result<DnsOutcome> {
    let started = Instant::now();
    let previous = state.applied(DNS_STEP);
    if previous.as_deref() == Some(head.to_string().as_str()) {
        return Ok(DnsOutcome::UpToDate);
    }
    let previous = previous
        .map(|id| CommitId::from_str(&id).with_context(|| format!("{}: corrupt applied-dns", state.root().display())))
        .transpose()?;
    // Both commits' fragments are read side by side, the old one through a second handle on the
    // same cache: at 10k Services each side is ~40 ms of blob reads and parsing.
    let (url, branch, cache) = (store.url(), store.branch(), state.cache_repo());
    let (old, new) = std::thread::scope(|scope| {
        let old = previous.map(|id| {
            let cache = &cache;
            scope.spawn(move || -> Result<Owned> { owned_records(&Store::open(cache, url, branch)?, id, lb) })
        });
        let new = owned_records(store, head, lb);
        let old = match old {
            Some(reader) => reader
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("reading the records of commit {previous:?} failed"))),
            None => Ok(Owned::new()),
        };
        (old, new)
    });
    let (old, new) = (old?, new?);
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "records read from git");

    // Sets of references: only the records that differ are copied into the update.
    let mut before: BTreeMap<&str, BTreeSet<&AddressRecord>> = BTreeMap::new();
    let mut after: BTreeMap<&str, BTreeSet<&AddressRecord>> = BTreeMap::new();
    for (zone, records) in old.values() {
        if let Ok(records) = records {
            before.entry(zone).or_default().extend(records);
        }
    }
    for (path, (zone, records)) in &new {
        match records {
            Ok(records) => after.entry(zone).or_default().extend(records),
            Err(e) => {
                tracing::warn!(%path, %head, error = %e, "zone fragment refused; its records stay as they were");
                if let Some((_, Ok(kept))) = old.get(path) {
                    after.entry(zone).or_default().extend(kept);
                }
            }
        }
    }

    let zones: BTreeSet<&str> = before.keys().chain(after.keys()).copied().collect();
    let (mut adds, mut deletes, mut messages) = (0, 0, 0);
    let empty = BTreeSet::new();
    for zone in zones {
        let b = before.get(zone).unwrap_or(&empty);
        let a = after.get(zone).unwrap_or(&empty);
        // A TTL change is a delete of the old RR and an add of the new one.
        let update = ZoneUpdate {
            zone: zone.to_owned(),
            deletes: b.difference(a).map(|r| (*r).clone()).collect(),
            adds: a.difference(b).map(|r| (*r).clone()).collect(),
        };
        if update.deletes.is_empty() && update.adds.is_empty() {
            continue;
        }
        let stats = client.send(&update).with_context(|| {
            format!("DNS step for commit {head} on {lb} (nginx is applied; the DNS step is retried on the next run)")
        })?;
        adds += update.adds.len();
        deletes += update.deletes.len();
        messages += stats.messages;
    }
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "updates sent");
    state.record_applied(DNS_STEP, &head.to_string())?;
    Ok(DnsOutcome::Applied {
        adds,
        deletes,
        messages,
        millis: started.elapsed().as_millis(),
    })
}
