//! The DNS step of an apply (docs/design.md §5.4): after the load balancer serves a commit, publish the
//! records of this host's own addresses. The change is the difference between the records this
//! host published at the last commit whose DNS step completed and those it should publish at
//! the new one, both read from Git, so deletes never need a zone transfer and a record Flipbit
//! did not write is never touched. A host owns exactly the records whose address lies in its own
//! pools (pools never overlap across hosts).
//!
//! Only the zone `flipbit.yaml` names is read and updated (a fragment under another `dns/<zone>/`
//! is skipped), never a reserved name or the apex, never a Service withheld from this host's load
//! balancer, and never a name that already holds something Flipbit did not write (an address
//! outside every LB host's pools, a CNAME): such a name is left out and checked again on every
//! run until it is free.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, anyhow};

use flipbit_core::config::Config;
use flipbit_core::names::{LbHostName, ServiceKey};
use flipbit_core::repo_paths;
use flipbit_core::text::escaped;
use flipbit_store::{BlobId, CommitId, Store};

use crate::dns::client::{AddressRecord, UpdateClient, ZoneUpdate};
use crate::dns::lookup::{self, Families, Lookup};
use crate::failpoint;
use crate::journal::{self, DnsRecord, Journal};
use crate::lb_step::config_at;
use crate::release::StateDir;
use flipbit_core::dns::fragment;

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

/// What the DNS step takes as already published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// The journal's record (the usual case).
    Journal,
    /// The journal's record, and every wanted record is sent again: a peer withdrew this host's
    /// records while it looked down.
    Republish,
    /// The records of this commit: the journal has no record (a new state dir, or no DNS step
    /// completed yet), and the host's published state says it served this commit, whose records
    /// may still be in the zone; their deletes are computed from it. Or may not be: a run can fail
    /// after the reload and before DNS (the post-apply probe, the addresses step), and its commit
    /// is published all the same. So every wanted record is sent again too.
    Commit(CommitId),
}

/// This host's records at one commit: the zone, the config they were read under, and per zone
/// fragment the Service, its blob and its records (`Err` for a fragment that does not parse: the
/// caller keeps that Service's previous records).
pub struct Owned {
    zone: String,
    /// The blob of `flipbit.yaml`: under the same config, a fragment with the same blob has the
    /// same records (the zone and this host's pools decide which), so it is not read again.
    config: Option<BlobId>,
    fragments: BTreeMap<String, Fragment>,
}

#[derive(Clone)]
struct Fragment {
    key: ServiceKey,
    /// The fragment's blob.
    blob: BlobId,
    records: Result<BTreeSet<AddressRecord>, String>,
}

/// Fragments read on two threads past this many (~4 µs each: a blob read and a parse).
const SPLIT_READS_AT: usize = 2_000;

/// The address records `lb` publishes at `commit` (its addresses, by its pools, from the valid
/// fragments of the commit's zone): what a peer withdraws when `lb` is down, and what `status`
/// counts.
pub fn records_of(store: &Store, commit: CommitId, lb: &LbHostName) -> Result<BTreeSet<AddressRecord>> {
    let config = config_at(store, commit)?;
    let owned = owned_records(&Reader::one(store), commit, &config, lb, None)?;
    Ok(owned
        .fragments
        .into_values()
        .filter_map(|fragment| fragment.records.ok())
        .flatten()
        .collect())
}

/// How fragments are read: through `store`, and with `cache` (the path of its repository) on a
/// second handle too when there are many; `cancel` stops a read nobody waits for any more.
struct Reader<'a> {
    store: &'a Store,
    cache: Option<&'a Path>,
    cancel: Option<&'a AtomicBool>,
}

impl<'a> Reader<'a> {
    fn one(store: &'a Store) -> Self {
        Reader {
            store,
            cache: None,
            cancel: None,
        }
    }
}

/// `lb`'s records at `commit`. A fragment whose path and blob `reuse` (an earlier commit's, read
/// under the same config) holds is taken from it rather than read: a commit that changed a few
/// Services reads a few fragments.
fn owned_records(
    reader: &Reader<'_>,
    commit: CommitId,
    config: &Config,
    lb: &LbHostName,
    reuse: Option<&Owned>,
) -> Result<Owned> {
    let store = reader.store;
    let zone = config.zone.clone();
    let config_blob = store.entry_id(commit, repo_paths::CONFIG_FILE)?;
    let reuse = reuse.filter(|old| old.zone == zone && old.config.is_some() && old.config == config_blob);
    let mut fragments = BTreeMap::new();
    let mut to_read = Vec::new();
    for (path, blob) in store.list(commit, repo_paths::DNS_DIR)? {
        let Some((path_zone, key)) = repo_paths::parse_dns_path(&path) else {
            tracing::warn!(path = %escaped(&path), %commit, "not a zone fragment path; skipped");
            continue;
        };
        if path_zone != zone {
            tracing::warn!(path = %escaped(&path), %commit, %zone, "a fragment outside the zone flipbit.yaml names; skipped");
            continue;
        }
        match reuse
            .and_then(|old| old.fragments.get(&path))
            .filter(|f| f.blob == blob)
        {
            Some(same) => {
                fragments.insert(path, same.clone());
            }
            None => to_read.push((path, key, blob)),
        }
    }
    let cancel = reader.cancel;
    let read = |store: &Store, part: &[(String, ServiceKey, BlobId)]| -> Result<Vec<(String, Fragment)>> {
        let host = config.host(lb);
        let mut out = Vec::with_capacity(part.len());
        for (path, key, blob) in part {
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(anyhow!("reading the fragments of commit {commit}: cancelled"));
            }
            let text = String::from_utf8(store.blob(*blob)?)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            // A host that left flipbit.yaml owns nothing any more: its records go.
            let records = fragment::parse(&zone, &text).map(|records| {
                records
                    .into_iter()
                    .filter(|r| host.is_some_and(|h| h.in_pools(r.addr)))
                    .collect::<BTreeSet<_>>()
            });
            let fragment = Fragment {
                key: key.clone(),
                blob: *blob,
                records,
            };
            out.push((path.clone(), fragment));
        }
        Ok(out)
    };
    let read_fragments = match reader.cache {
        // Half on a second handle of the same cache (a libgit2 repository is one thread's).
        Some(cache) if to_read.len() >= SPLIT_READS_AT => {
            let (mine, theirs) = to_read.split_at(to_read.len() / 2);
            let (url, branch) = (store.url(), store.branch());
            std::thread::scope(|scope| -> Result<Vec<(String, Fragment)>> {
                let other = scope.spawn(|| -> Result<Vec<(String, Fragment)>> {
                    let second = Store::open(cache, url, branch)?;
                    read(&second, theirs)
                });
                let mut out = read(store, mine)?;
                let rest = match other.join() {
                    Ok(Ok(rest)) => rest,
                    // A second handle that did not open (or failed): the rest on this one.
                    Ok(Err(_)) | Err(_) => read(store, theirs)?,
                };
                out.extend(rest);
                Ok(out)
            })?
        }
        _ => read(store, &to_read)?,
    };
    fragments.extend(read_fragments);
    Ok(Owned {
        zone,
        config: config_blob,
        fragments,
    })
}

/// The records of the commit the DNS step last published, read on their own thread while the
/// run fetches (the journal names the commit before the fetch starts). Dropped unused (the head
/// did not move, or the step takes another baseline), it is cancelled and joined.
pub struct Prefetch {
    commit: CommitId,
    cancel: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<Result<Owned>>>,
}

impl Prefetch {
    /// Starts reading `lb`'s records at `commit` from the cache at `cache`. Call it after the
    /// run's own store is opened: opening a store writes the cache's config.
    pub fn start(cache: PathBuf, url: &str, branch: &str, lb: &LbHostName, commit: CommitId) -> Option<Self> {
        let cancel = Arc::new(AtomicBool::new(false));
        let (url, branch, lb, stop) = (url.to_owned(), branch.to_owned(), lb.clone(), cancel.clone());
        let reader = std::thread::Builder::new()
            .name("flipbit-dns-read".into())
            .spawn(move || -> Result<Owned> {
                let store = Store::open(&cache, &url, &branch)?;
                let config = config_at(&store, commit)?;
                let reader = Reader {
                    store: &store,
                    cache: None,
                    cancel: Some(&stop),
                };
                owned_records(&reader, commit, &config, &lb, None)
            })
            .ok()?;
        Some(Prefetch {
            commit,
            cancel,
            reader: Some(reader),
        })
    }

    /// What was read, when it is `commit`'s and the read worked (else the caller reads).
    fn take(mut self, commit: CommitId) -> Option<Owned> {
        if commit != self.commit {
            return None;
        }
        match self.reader.take()?.join() {
            Ok(Ok(owned)) => Some(owned),
            Ok(Err(e)) => {
                tracing::debug!(error = %escaped(&format!("{e:#}")), "the records read during the fetch are not used");
                None
            }
            Err(_) => None,
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Sends the DNS changes from the last DNS-applied commit to `head` and records `head` in the
/// journal. The load balancer serves `journal.loaded` (the caller ran the LB step). `prefetch`:
/// the published commit's records, when the run read them during its fetch.
#[allow(clippy::too_many_arguments)]
pub fn run(
    store: &Store,
    state: &StateDir,
    lb: &LbHostName,
    head: CommitId,
    client: &UpdateClient,
    journal: &mut Journal,
    baseline: Baseline,
    prefetch: Option<Prefetch>,
) -> Result<DnsOutcome> {
    let started = Instant::now();
    let withheld = journal
        .loaded
        .as_ref()
        .map(|l| l.withheld.clone())
        .ok_or_else(|| anyhow!("the DNS step runs only once the load balancer serves a release"))?;
    let previous = match baseline {
        Baseline::Journal | Baseline::Republish => journal.dns.clone(),
        Baseline::Commit(commit) => Some(DnsRecord {
            commit,
            omitted: BTreeSet::new(),
            omitted_names: BTreeSet::new(),
        }),
    };
    let resend_all = matches!(baseline, Baseline::Republish | Baseline::Commit(_));
    if let Some(prev) = &previous
        && !resend_all
        && prev.commit == head
        && prev.omitted == withheld
        && prev.omitted_names.is_empty()
    {
        return Ok(DnsOutcome::UpToDate);
    }
    let config = config_at(store, head)?;
    // The published commit's records, read during the fetch when that was possible; the head's
    // read only where they differ (fragments with the same blob under the same config are
    // taken as they are).
    let cache = state.cache_repo();
    let reader = Reader {
        store,
        cache: Some(&cache),
        cancel: None,
    };
    let old = match &previous {
        Some(prev) => match prefetch.and_then(|p| p.take(prev.commit)) {
            Some(owned) => Some(owned),
            None => Some(owned_records(
                &reader,
                prev.commit,
                &config_at(store, prev.commit)?,
                lb,
                None,
            )?),
        },
        None => None,
    };
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "published records read");
    let new = owned_records(&reader, head, &config, lb, old.as_ref())?;
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "records read from git");

    // What was published: the old commit's records less what was left out then.
    let mut before: BTreeSet<&AddressRecord> = BTreeSet::new();
    let no_omitted = (BTreeSet::new(), BTreeSet::new());
    let (old_omitted, old_names) = previous
        .as_ref()
        .map_or((&no_omitted.0, &no_omitted.1), |p| (&p.omitted, &p.omitted_names));
    if let Some(old) = &old {
        for Fragment { key, records, .. } in old.fragments.values() {
            if let (false, Ok(records)) = (old_omitted.contains(key), records) {
                before.extend(records.iter().filter(|r| !old_names.contains(&r.name)));
            }
        }
    }
    // What should be: the new records less the withheld Services' and reserved names'.
    let reserved = config.reserved_names();
    let mut after: BTreeSet<&AddressRecord> = BTreeSet::new();
    let mut omitted_names: BTreeMap<String, String> = BTreeMap::new();
    for (path, Fragment { key, records, .. }) in &new.fragments {
        if withheld.contains(key) {
            continue;
        }
        let records = match records {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!(path = %escaped(path), %head, error = %escaped(e), "zone fragment refused; its records stay as they were");
                match old.as_ref().and_then(|o| o.fragments.get(path)) {
                    Some(Fragment { records: Ok(kept), .. }) => kept,
                    _ => continue,
                }
            }
        };
        for record in records {
            if reserved.contains(&record.name) {
                omitted_names.insert(
                    record.name.clone(),
                    format!("{} is reserved (the apex or flipbit.yaml's reservedNames)", record.name),
                );
                continue;
            }
            after.insert(record);
        }
    }
    // Names this host did not publish before: they must not hold anything Flipbit did not write.
    let published: BTreeSet<&str> = before.iter().map(|r| r.name.as_str()).collect();
    let mut fresh: BTreeMap<String, Families> = BTreeMap::new();
    for record in after.iter().filter(|r| !published.contains(r.name.as_str())) {
        let families = fresh.entry(record.name.clone()).or_default();
        families.v4 |= record.addr.is_ipv4();
        families.v6 |= record.addr.is_ipv6();
    }
    if !fresh.is_empty() {
        let lookup = Lookup {
            server: client.server,
            timeout: client.timeout,
        };
        let zone = &new.zone;
        for name in lookup
            .infrastructure(zone)
            .with_context(|| format!("reading zone {zone}"))?
        {
            if fresh.contains_key(&name) {
                omitted_names.insert(name.clone(), format!("{name} is a name server of zone {zone}"));
            }
        }
        let held = lookup.held(&fresh).with_context(|| format!("reading zone {zone}"))?;
        let ours = |ip: IpAddr| config.lb_hosts.iter().any(|h| h.in_pools(ip));
        omitted_names.extend(lookup::foreign(&held, ours));
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            names = fresh.len(),
            "new names checked"
        );
    }
    after.retain(|r| !omitted_names.contains_key(&r.name));
    for (name, why) in &omitted_names {
        tracing::warn!(%lb, name = %escaped(name), why = %escaped(why), "no record published for this name; checked again on every run");
    }

    let update_of = |zone: &str| ZoneUpdate {
        zone: zone.to_owned(),
        ..ZoneUpdate::default()
    };
    let mut updates: BTreeMap<&str, ZoneUpdate> = BTreeMap::new();
    let old_zone = old.as_ref().map_or(new.zone.as_str(), |o| o.zone.as_str());
    for record in before.difference(&after) {
        updates
            .entry(old_zone)
            .or_insert_with(|| update_of(old_zone))
            .deletes
            .push((*record).clone());
    }
    // A host whose records a peer withdrew, or whose journal has no DNS record, sends them all
    // again (adds of records the zone still holds change nothing).
    let added: Vec<&&AddressRecord> = if resend_all {
        after.iter().collect()
    } else {
        after.difference(&before).collect()
    };
    for record in added {
        updates
            .entry(&new.zone)
            .or_insert_with(|| update_of(&new.zone))
            .adds
            .push((*record).clone());
    }
    let (mut adds, mut deletes, mut messages) = (0, 0, 0);
    for update in updates.values() {
        let stats = client.send(update).with_context(|| {
            format!("DNS step for commit {head} on {lb} (the load balancer is applied; the DNS step is retried on the next run)")
        })?;
        failpoint::reached("dns-sent");
        adds += update.adds.len();
        deletes += update.deletes.len();
        messages += stats.messages;
    }
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "updates sent");
    journal.dns = Some(DnsRecord {
        commit: head,
        omitted: withheld,
        omitted_names: omitted_names.into_keys().collect(),
    });
    journal::write(state, journal).context("writing the journal")?;
    Ok(DnsOutcome::Applied {
        adds,
        deletes,
        messages,
        millis: started.elapsed().as_millis(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const ZONE: &str = "k8s.example.test";

    fn yaml(pool: &str) -> String {
        format!("zone: {ZONE}\nlbHosts:\n  - name: lb-a\n    pools: [\"{pool}\"]\n")
    }

    fn fragment(name: &str, ip: &str) -> String {
        format!("; generated\n{name}.ns.{ZONE}. 300 IN A {ip}\n")
    }

    fn path(name: &str) -> String {
        format!("dns/{ZONE}/ns/{name}.zone")
    }

    /// A cache holding a root commit fetched from a work tree made with the git CLI.
    fn store(dir: &Path) -> (Store, CommitId) {
        let work = dir.join("work");
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .arg("-C")
                .arg(&work)
                .args(["-c", "user.name=t", "-c", "user.email=t@localhost"])
                .args(args)
                .output()
                .expect("run git");
            assert!(
                out.status.success(),
                "git {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::create_dir_all(&work).expect("work tree");
        git(&["init", "-q", "-b", "main"]);
        std::fs::write(work.join("README"), "root\n").expect("file");
        git(&["add", "README"]);
        git(&["commit", "-q", "-m", "root"]);
        let store = Store::open(&dir.join("cache.git"), &work.display().to_string(), "main").expect("open");
        let root = store.fetch().expect("fetch").expect("main");
        (store, root)
    }

    fn commit(store: &Store, parent: CommitId, writes: &[(String, String)]) -> CommitId {
        let writes: BTreeMap<String, String> = writes.iter().cloned().collect();
        let author = Store::signature("t", "t@localhost").expect("signature");
        store
            .commit(parent, &writes, &BTreeSet::new(), |_| Some("c".into()), &author)
            .expect("commit")
            .expect("a change")
            .id
    }

    fn records(owned: &Owned) -> BTreeMap<String, Vec<String>> {
        owned
            .fragments
            .iter()
            .map(|(path, f)| {
                let records = match &f.records {
                    Ok(records) => records
                        .iter()
                        .map(|r| format!("{} {} {}", r.name, r.ttl, r.addr))
                        .collect(),
                    Err(e) => vec![format!("error: {e}")],
                };
                (path.clone(), records)
            })
            .collect()
    }

    /// Reading a commit with an earlier commit's records to reuse gives exactly what a full read
    /// gives: the same fragments reused under the same flipbit.yaml, none once it changed (a
    /// pool edit changes which records the same fragment gives this host).
    #[test]
    fn reused_fragments_read_as_a_full_read_would() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (store, root) = store(tmp.path());
        let lb = LbHostName::new("lb-a").expect("name");
        let first = commit(
            &store,
            root,
            &[
                ("flipbit.yaml".into(), yaml("127.40.1.0/24")),
                (path("a"), fragment("a", "127.40.1.1")),
                (path("b"), fragment("b", "127.40.1.2")),
                (path("c"), "not a record\n".into()),
            ],
        );
        // Under the same config: one fragment changed, one added, one refused one still refused.
        let second = commit(
            &store,
            first,
            &[
                (path("b"), fragment("b", "127.40.1.3")),
                (path("d"), fragment("d", "127.40.1.4")),
            ],
        );
        // A pool edit: `a`'s fragment is the same blob but its address is no longer this host's.
        let third = commit(
            &store,
            second,
            &[("flipbit.yaml".into(), yaml("127.40.1.2-127.40.1.9"))],
        );
        let read = |commit: CommitId, reuse: Option<&Owned>| {
            let config = config_at(&store, commit).expect("config");
            owned_records(&Reader::one(&store), commit, &config, &lb, reuse).expect("records")
        };
        let at_first = read(first, None);
        let at_second = read(second, Some(&at_first));
        assert_eq!(records(&at_second), records(&read(second, None)));
        assert_eq!(
            at_second.fragments[&path("b")].records.as_ref().map(BTreeSet::len),
            Ok(1)
        );
        let at_third = read(third, Some(&at_second));
        assert_eq!(records(&at_third), records(&read(third, None)));
        assert_eq!(
            at_third.fragments[&path("a")].records.as_ref().map(BTreeSet::len),
            Ok(0),
            "not reused across a config change"
        );
    }
}
