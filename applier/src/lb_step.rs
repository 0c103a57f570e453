//! The load-balancer step of an apply (docs/design.md §5.1–5.3): check the commit, check this host's
//! changed files against the generator's grammar, withhold the Services whose sockets another
//! process holds, stage, validate, swap, reload, confirm, and record in the journal.
//!
//! The step is done when the journal's `loaded` release is the one wanted for the head and
//! `current` points at it, whole; anything else (a run killed between the swap and the reload, a
//! `current` whose release was deleted, a state dir from before the journal) is brought there by
//! staging that release again if needed and reloading onto it. The journal is written before the
//! swap (`pending`) and after the confirmed reload (`loaded`), so every crash leaves either the
//! old release confirmed and running, or a new one that the next run reloads onto and confirms.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::{Context, Result, anyhow};

use flipbit_core::config::{Config, Flavor, Layout, LbHost};
use flipbit_core::grammar::{Bind, BindAddr, LbFile};
use flipbit_core::names::ServiceKey;
use flipbit_core::render::{self, map::Listener};
use flipbit_core::repo_paths;
use flipbit_core::text::escaped;
use flipbit_store::{CommitId, Store};

use crate::apply::{Applied, ApplyOptions};
use crate::balancer::{Draining, LoadBalancer};
use crate::binds::{self, Prober};
use crate::failpoint;
use crate::journal::{self, Journal, Release};
use crate::outcome::refused;
use crate::release::StateDir;
use crate::signatures::SignaturePolicy;
use crate::stage::Staging;
use crate::verify::{self, CheckedFile};

/// Where the step runs.
pub struct Step<'a> {
    pub opts: &'a ApplyOptions,
    pub state: &'a StateDir,
    pub store: &'a Store,
    pub head: CommitId,
}

/// Why a Service is withheld from this host, by Service.
pub type Withheld = BTreeMap<ServiceKey, String>;

/// What the step did: the outcome, the Services withheld and why, and, when it reloaded, the
/// reload whose old workers may still be accepting.
pub struct Outcome {
    pub applied: Applied,
    pub withheld: Withheld,
    pub reloaded: Option<Box<dyn Draining>>,
}

impl Step<'_> {
    /// Runs the step; on success the journal records the head as applied.
    pub fn run(&self, journal: &mut Journal) -> Result<Outcome> {
        let started = Instant::now();
        let (opts, state, store, head) = (self.opts, self.state, self.store, self.head);
        let verifier = opts.signatures.as_ref().map(SignaturePolicy::load).transpose()?;
        if let Some(prev) = journal.lb
            && prev != head
        {
            let known = store.descends_from(head, prev).unwrap_or(false);
            if !known && !opts.allow_rewind {
                return Err(refused(format!(
                    "refusing commit {head}: it does not descend from the applied commit {prev} (history rewritten by a force push?); run with --allow-rewind to accept it"
                )));
            }
        }
        // Before anything is staged or recorded, also when this host's files did not change.
        if let Some(verifier) = &verifier
            && journal.lb != Some(head)
        {
            verifier.check(store, journal.lb, head)?;
        }
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "history checked");
        // The common case, every poll of a watch: the head is applied, confirmed, whole, and
        // nothing is withheld that could be tried again; and the load balancer still runs (a
        // crashed nginx is a failed step, which the host publishes for its peers to see).
        if journal.lb == Some(head)
            && journal.pending.is_none()
            && let Some(loaded) = &journal.loaded
            && loaded.withheld.is_empty()
            && is_current(state, loaded)
        {
            let config = config_at(store, head)?;
            if let Some(host) = config.host(&opts.lb) {
                driver(opts, host.flavor).check_running(state)?;
            }
            return Ok(Outcome {
                applied: Applied::UpToDate {
                    commit: head.to_string(),
                },
                withheld: Withheld::new(),
                reloaded: None,
            });
        }

        let config = config_at(store, head)?;
        let host = config.host(&opts.lb).ok_or_else(|| {
            refused(format!(
                "commit {head} refused: LB host {} is not in its flipbit.yaml",
                opts.lb
            ))
        })?;
        let format = verify::output_format(store, head)?;
        let lb = driver(opts, host.flavor);
        let host_dir = repo_paths::lb_host_dir(&opts.lb);

        // The release the load balancer was confirmed to run, if its commit is known here.
        let loaded = journal.loaded.clone().filter(|l| store.shape(l.commit).is_ok());
        let checked = self.changed_files(loaded.as_ref(), host, format, &host_dir)?;
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            files = checked.len(),
            "files checked"
        );
        let prober = || Prober::new(lb.processes(), lb.name(), self.ours(loaded.as_ref(), host));
        let (withheld, rewritten) = self.withhold(host.flavor, &checked, &mut prober())?;
        let wanted = Release {
            commit: head,
            withheld: withheld.keys().cloned().collect(),
        };

        if let Some(loaded) = &loaded
            && loaded.withheld == wanted.withheld
            && is_current(state, loaded)
            && store.entry_id(loaded.commit, &host_dir).ok().flatten() == store.entry_id(head, &host_dir)?
        {
            let up_to_date = journal.lb == Some(head) && journal.pending.is_none();
            journal.lb = Some(head);
            journal.pending = None;
            let commit = head.to_string();
            // A recorded commit only moves the rewind check's anchor, so the journal is written
            // once at the end of the run (`apply::steps`), with the DNS step's record when there
            // is one: one durable write fewer. A run killed before that records it again.
            let applied = if up_to_date {
                Applied::UpToDate { commit }
            } else {
                Applied::Recorded { commit }
            };
            return Ok(Outcome {
                applied,
                withheld,
                reloaded: None,
            });
        }
        if let Some(pending) = &journal.pending {
            tracing::info!(release = %pending, "the last run stopped during a swap or reload; completing it");
        }
        let (mut withheld, mut rewritten, mut release) = (withheld, rewritten, wanted);
        let mut retried = false;
        loop {
            match self.swap_in(lb, &release, &rewritten, loaded.as_ref(), journal, &host_dir, started) {
                Ok((applied, reloaded)) => {
                    return Ok(Outcome {
                        applied,
                        withheld,
                        reloaded: Some(reloaded),
                    });
                }
                // The reload could not bind a socket: another process may have taken one since
                // the probe. Probe again (afresh); when that withholds more, try once more.
                Err(SwapError::Bind(e)) if !retried => {
                    retried = true;
                    let (more, more_rewritten) = self.withhold(host.flavor, &checked, &mut prober())?;
                    if more.keys().eq(withheld.keys()) {
                        return Err(e);
                    }
                    (withheld, rewritten) = (more, more_rewritten);
                    release = Release {
                        commit: head,
                        withheld: withheld.keys().cloned().collect(),
                    };
                }
                Err(SwapError::Bind(e) | SwapError::Other(e)) => return Err(e),
            }
        }
    }

    /// The load balancer's sockets Flipbit opened, for the probe: addresses in this host's pools,
    /// and the wildcards of the listeners file of the release it was confirmed to run (none when
    /// that file does not read: a socket then counts as the operator's, and the worst case is a
    /// Service withheld for one run).
    fn ours(&self, loaded: Option<&Release>, host: &LbHost) -> binds::Ours {
        let wildcards = loaded
            .and_then(|l| {
                let path = repo_paths::lb_host_file_path(&host.name, render::map::LISTENERS_FILE);
                let blob = self.store.entry_id(l.commit, &path).ok()??;
                let then = config_at(self.store, l.commit).ok()?.host(&host.name)?.clone();
                let format = verify::output_format(self.store, l.commit).ok()?;
                let checked =
                    verify::check_files(self.store, l.commit, &then, format, &BTreeMap::from([(path, blob)])).ok()?;
                Some(
                    checked
                        .into_values()
                        .flat_map(|f| f.checked.binds)
                        .filter(|b| !matches!(b.addr, BindAddr::Ip(_)))
                        .collect(),
                )
            })
            .unwrap_or_default();
        binds::Ours {
            pools: host.pools.clone(),
            wildcards,
        }
    }

    /// The Services to withhold, each with why, and the listeners file rewritten without the
    /// wildcard listeners that cannot be bound (by repo path; empty when it keeps them all).
    /// Probes every socket the checked files bind (on nginx, a specific address covered by a
    /// wildcard of the listeners file is not bound by itself).
    fn withhold(
        &self,
        flavor: Flavor,
        checked: &BTreeMap<String, CheckedFile>,
        prober: &mut Prober,
    ) -> Result<(Withheld, BTreeMap<String, String>)> {
        let wildcards: BTreeSet<Bind> = checked
            .values()
            .filter(|f| f.kind == LbFile::HostListeners)
            .flat_map(|f| f.checked.binds.iter().copied())
            .collect();
        let mut probed: BTreeMap<Bind, Option<String>> = BTreeMap::new();
        let mut withheld = Withheld::new();
        let mut blocked_wildcards: BTreeMap<Bind, String> = BTreeMap::new();
        for file in checked.values() {
            let sockets = match flavor {
                Flavor::Nginx => {
                    binds::nginx_sockets(file.checked.binds.iter().copied().chain(wildcards.iter().copied()))
                }
                Flavor::Haproxy => file.checked.binds.iter().copied().collect(),
            };
            for bind in file.checked.binds.iter().filter(|b| sockets.contains(b)) {
                let cause = probed.entry(*bind).or_insert_with(|| prober.blocked(bind)).clone();
                let Some(cause) = cause else { continue };
                match key_of(&file.kind) {
                    Some(key) => {
                        withheld.entry(key.clone()).or_insert(cause);
                    }
                    None => {
                        blocked_wildcards.insert(*bind, cause);
                    }
                }
            }
        }
        for (wildcard, cause) in &blocked_wildcards {
            for key in users_of(checked, wildcard) {
                withheld.entry(key).or_insert_with(|| cause.clone());
            }
        }
        let mut rewritten = BTreeMap::new();
        if !blocked_wildcards.is_empty()
            && let Some(path) = checked
                .iter()
                .find(|(_, f)| f.kind == LbFile::HostListeners)
                .map(|(p, _)| p)
            && let Some(blob) = self.store.entry_id(self.head, path)?
        {
            let text = String::from_utf8_lossy(&self.store.blob(blob)?).into_owned();
            let drop: BTreeSet<Listener> = blocked_wildcards
                .keys()
                .map(|b| Listener {
                    protocol: b.protocol,
                    port: b.port,
                    ipv6: b.addr == BindAddr::AnyV6,
                })
                .collect();
            rewritten.insert(path.clone(), render::map::without_listeners(&text, &drop));
        }
        Ok((withheld, rewritten))
    }

    /// This host's files that differ from the loaded release, plus the withheld Services' files
    /// and the listeners file, checked against the grammar. All of them when nothing is loaded,
    /// when this host's entry in flipbit.yaml or the output format changed since, or when the
    /// listeners file changed (its wildcard ports are checked against every Service's).
    fn changed_files(
        &self,
        loaded: Option<&Release>,
        host: &LbHost,
        format: u32,
        host_dir: &str,
    ) -> Result<BTreeMap<String, CheckedFile>> {
        let (store, head) = (self.store, self.head);
        let listeners = repo_paths::lb_host_file_path(&host.name, render::map::LISTENERS_FILE);
        let same_rules = loaded.is_some_and(|l| {
            config_at(store, l.commit)
                .ok()
                .and_then(|c| c.host(&host.name).cloned())
                .is_some_and(|h| &h == host)
                && verify::output_format(store, l.commit).ok() == Some(format)
        });
        let mut files: BTreeMap<String, CommitId> = BTreeMap::new();
        let mut all = true;
        if let Some(loaded) = loaded.filter(|_| same_rules) {
            let diff = store.diff_dir(loaded.commit, head, host_dir)?;
            verify::refuse_links(head, &diff.not_files)?;
            all = diff.changed.contains_key(&listeners);
            files.extend(diff.changed.into_iter().filter_map(|(p, b)| Some((p, b?))));
            for key in &loaded.withheld {
                for path in service_paths(&host.name, key) {
                    if let Some(blob) = store.entry_id(head, &path)? {
                        files.insert(path, blob);
                    }
                }
            }
            if host.layout == Layout::SharedListeners
                && let Some(blob) = store.entry_id(head, &listeners)?
            {
                files.insert(listeners.clone(), blob);
            }
        }
        if all {
            let listing = store.list_dir(head, host_dir)?;
            verify::refuse_links(head, &listing.not_files)?;
            files = listing.files;
        }
        let checked = verify::check_files(store, head, host, format, &files)?;
        if all {
            verify::wildcards_used(head, &host.name, &checked)?;
        }
        Ok(checked)
    }

    /// Stages `release`, validates it, swaps it in, reloads and confirms; records it.
    #[allow(clippy::too_many_arguments)]
    fn swap_in(
        &self,
        lb: &dyn LoadBalancer,
        release: &Release,
        rewritten: &BTreeMap<String, String>,
        loaded: Option<&Release>,
        journal: &mut Journal,
        host_dir: &str,
        started: Instant,
    ) -> Result<(Applied, Box<dyn Draining>), SwapError> {
        let (opts, state) = (self.opts, self.state);
        let commit = self.head.to_string();
        let running = state.current_release();
        let (dir, files) = Staging {
            store: self.store,
            state,
            lb,
            host_dir,
            release,
            running: running.as_ref(),
            rewritten,
        }
        .write()?;
        failpoint::reached("staged");
        tracing::debug!(ms = started.elapsed().as_millis() as u64, files, "release staged");
        if let Err(e) = lb.validate(state, &dir) {
            state.remove_release(&release.id());
            return Err(e.context(format!("commit {commit} refused for {}", opts.lb)).into());
        }
        failpoint::reached("validated");
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "validated");
        lb.check_running(state)
            .with_context(|| format!("commit {commit} staged but not applied"))?;

        journal.pending = Some(release.clone());
        journal::write(state, journal).context("writing the journal")?;
        // What to put back when the reload fails: what the load balancer was confirmed to run,
        // or, when that is not known, what `current` pointed at.
        let previous = loaded
            .filter(|l| state.release_of(&l.id()).is_some())
            .map(Release::id)
            .or_else(|| state.current());
        state.switch_to(Some(&release.id())).map_err(anyhow::Error::from)?;
        failpoint::reached("swapped");
        let reloaded = match lb.reload() {
            Ok(reloaded) => reloaded,
            Err(e) => {
                // A failed reload leaves the load balancer running its previous config; put the
                // files back to match.
                state.switch_to(previous.as_deref()).map_err(anyhow::Error::from)?;
                journal.pending = None;
                journal::write(state, journal).context("writing the journal")?;
                let back = previous.as_deref().unwrap_or("no release");
                let could_not_bind = !binds::failed_binds(&format!("{e:#}")).is_empty();
                let e = e.context(format!(
                    "commit {commit} on {}: {} kept its running config; rolled back to {back}",
                    opts.lb,
                    lb.name()
                ));
                return Err(if could_not_bind {
                    SwapError::Bind(e)
                } else {
                    SwapError::Other(e)
                });
            }
        };
        failpoint::reached("reloaded");
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            "reload took: new workers serve"
        );
        journal.loaded = Some(release.clone());
        journal.pending = None;
        journal.lb = Some(self.head);
        journal::write(state, journal).context("writing the journal")?;
        let mut keep = vec![release.id()];
        keep.extend(previous);
        state.prune(&keep.iter().map(String::as_str).collect::<Vec<_>>());
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "recorded");
        let applied = Applied::Reloaded {
            commit,
            files,
            millis: started.elapsed().as_millis(),
            balancer: lb.name(),
        };
        Ok((applied, reloaded))
    }
}

/// A failed swap: a reload that could not bind some socket, or anything else.
enum SwapError {
    Bind(anyhow::Error),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for SwapError {
    fn from(e: anyhow::Error) -> Self {
        SwapError::Other(e)
    }
}

/// The commit's `flipbit.yaml`.
pub fn config_at(store: &Store, commit: CommitId) -> Result<Config> {
    let text = store
        .read(commit, repo_paths::CONFIG_FILE)?
        .ok_or_else(|| anyhow!("commit {commit} has no {}", repo_paths::CONFIG_FILE))?;
    Config::parse(&String::from_utf8_lossy(&text)).map_err(|e| refused(format!("commit {commit} refused: {e}")))
}

/// True when `current` points at `release` and it is whole on disk.
fn is_current(state: &StateDir, release: &Release) -> bool {
    state.current().as_deref() == Some(release.id().as_str())
        && state.release_of(&release.id()).as_ref() == Some(release)
}

/// Every path a Service's files can have on `host`.
fn service_paths(host: &flipbit_core::names::LbHostName, key: &ServiceKey) -> [String; 3] {
    [
        repo_paths::lb_service_path(host, key),
        repo_paths::lb_service_map_path(host, key),
        repo_paths::lb_service_cfg_path(host, key),
    ]
}

/// The Services whose files bind or route through `wildcard`'s protocol, family and port.
fn users_of(checked: &BTreeMap<String, CheckedFile>, wildcard: &Bind) -> Vec<ServiceKey> {
    let v6 = wildcard.addr == BindAddr::AnyV6;
    checked
        .values()
        .filter(|file| {
            file.checked
                .routes
                .iter()
                .any(|(p, a)| *p == wildcard.protocol && a.port() == wildcard.port && a.is_ipv6() == v6)
                || file.checked.binds.iter().any(|b| {
                    b.protocol == wildcard.protocol
                        && b.port == wildcard.port
                        && matches!(b.addr, BindAddr::Ip(ip) if ip.is_ipv6() == v6)
                })
        })
        .filter_map(|file| key_of(&file.kind).cloned())
        .collect()
}

fn key_of(kind: &LbFile) -> Option<&ServiceKey> {
    match kind {
        LbFile::NginxService(k) | LbFile::ServiceMap(k) | LbFile::Haproxy(k) => Some(k),
        LbFile::HostListeners | LbFile::HostNodes => None,
    }
}

/// Logs each withheld Service once per run.
pub fn report_withheld(lb: &flipbit_core::names::LbHostName, withheld: &Withheld) {
    for (key, cause) in withheld {
        tracing::warn!(service = %key, %lb, cause = %escaped(cause), "Service withheld from this host: its other Services are served, it gets no DNS record from here; retried on every run");
    }
}

/// The load balancer of `flavor` among the drivers in `opts`. (Here, not in `balancer`, so that
/// the trait knows nothing of the flavours that implement it.)
fn driver(opts: &ApplyOptions, flavor: Flavor) -> &dyn LoadBalancer {
    match flavor {
        Flavor::Nginx => &opts.nginx,
        Flavor::Haproxy => &opts.haproxy,
    }
}
