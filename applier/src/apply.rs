//! One apply on one LB host (DESIGN.md §5): fetch, check the commit, stage this host's files as a
//! release, validate (`nginx -t`, `haproxy -c`), swap, reload, confirm, record. Any failure before
//! the swap leaves the load balancer untouched; a failed reload swaps back to the old release,
//! which the load balancer still runs. The steps that differ per flavour sit behind
//! [`LoadBalancer`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};

use flipbit_core::config::{Config, Flavor};
use flipbit_core::layout;
use flipbit_core::names::LbHostName;
use flipbit_core::render_map;
use flipbit_store::{CommitId, Store};

use crate::balancer::{self, Draining, LoadBalancer};
use crate::dns::{self, client::UpdateClient};
use crate::dns_step::{self, DnsOutcome};
use crate::haproxy::Haproxy;
use crate::nginx::Nginx;
use crate::release::{FileSource, Lock, StateDir};
use crate::signatures::SignaturePolicy;

/// The step's name in `<state>/applied-<step>`: `nginx` from before HAProxy hosts, kept for
/// every flavour so existing state dirs carry over.
const LB_STEP: &str = "nginx";

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub repo: String,
    pub branch: String,
    pub lb: LbHostName,
    pub state_dir: PathBuf,
    pub nginx: Nginx,
    /// Used when this host's `flavor` in flipbit.yaml is `haproxy`.
    pub haproxy: Haproxy,
    /// Accept a head that does not descend from the last applied commit (a force push).
    pub allow_rewind: bool,
    /// The DNS step, when enabled.
    pub dns: Option<DnsSettings>,
    /// Accept only commits signed by an allowed key, when set.
    pub signatures: Option<SignaturePolicy>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Already at this commit.
    UpToDate { commit: String },
    /// A new commit that does not change this host's files: recorded, the load balancer left alone.
    Recorded { commit: String },
    /// The load balancer (`nginx` or `haproxy`, as `balancer` says) now runs this commit's files.
    Reloaded {
        commit: String,
        files: usize,
        millis: u128,
        balancer: &'static str,
    },
}

/// What one apply did: the nginx step, then the DNS step when one is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub nginx: Applied,
    pub dns: Option<DnsOutcome>,
}

/// Where and how the DNS step sends its updates.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    pub server: std::net::SocketAddr,
    pub key_file: PathBuf,
    pub timeout: std::time::Duration,
}

pub fn apply_once(opts: &ApplyOptions) -> Result<Report> {
    tracing::debug!(lb = %opts.lb, "apply started");
    let state = StateDir::new(opts.state_dir.clone())?;
    let _lock = Lock::take(&state)?;
    let store = Store::open(&state.cache_repo(), &opts.repo, &opts.branch)?;
    tracing::debug!("cache opened");
    let head = store
        .fetch()?
        .ok_or_else(|| anyhow!("branch {} not found in {}", opts.branch, opts.repo))?;
    tracing::debug!(%head, "fetched");
    let (mut nginx, reloaded) = nginx_step(opts, &state, &store, head)?;
    // The DNS step needs only the new workers: the addresses it adds are new listeners, which
    // the old workers never had. So it runs while nginx's old generation winds down (~100 ms),
    // and the run ends once that generation no longer accepts.
    let dns = dns_step(opts, &state, &store, head);
    if let Some(reloaded) = reloaded {
        let waited = Instant::now();
        reloaded.finish();
        if let Applied::Reloaded { millis, .. } = &mut nginx {
            *millis += waited.elapsed().as_millis();
        }
    }
    Ok(Report { nginx, dns: dns? })
}

fn dns_step(opts: &ApplyOptions, state: &StateDir, store: &Store, head: CommitId) -> Result<Option<DnsOutcome>> {
    let Some(settings) = &opts.dns else {
        return Ok(None);
    };
    let key = dns::key::load(&settings.key_file)?;
    let client = UpdateClient {
        server: settings.server,
        key,
        timeout: settings.timeout,
    };
    let outcome = dns_step::run(store, state, &opts.lb, head, &client)?;
    tracing::debug!("dns step done");
    Ok(Some(outcome))
}

/// The load-balancer step; when it reloaded, also the reload whose old workers may still be
/// accepting.
fn nginx_step(
    opts: &ApplyOptions,
    state: &StateDir,
    store: &Store,
    head: CommitId,
) -> Result<(Applied, Option<Box<dyn Draining>>)> {
    let started = Instant::now();
    let commit = head.to_string();
    let applied = state.applied(LB_STEP);
    let current = state.current();
    let verifier = opts.signatures.as_ref().map(SignaturePolicy::load).transpose()?;
    let mut applied_id = None;
    if let Some(prev) = &applied {
        if prev == &commit && current.is_some() {
            return Ok((Applied::UpToDate { commit }, None));
        }
        let prev_id =
            CommitId::from_str(prev).with_context(|| format!("{}: corrupt applied commit", state.root().display()))?;
        let known = store.descends_from(head, prev_id).unwrap_or(false);
        if !known && !opts.allow_rewind {
            bail!(
                "refusing commit {commit}: it does not descend from the applied commit {prev} (history rewritten by a force push?); run with --allow-rewind to accept it"
            );
        }
        applied_id = Some(prev_id);
    }
    // Before anything is staged or recorded, also when this host's files did not change.
    if let Some(verifier) = &verifier {
        verifier.check(store, applied_id, head)?;
    }
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "history checked");
    let flavor = check_host(store, head, &opts.lb)?;
    let lb = balancer::for_flavor(flavor, &opts.nginx, &opts.haproxy);

    // The running release has the same files for this host: nothing for nginx to do.
    let host_dir = layout::lb_host_dir(&opts.lb);
    if let Some(release) = &current
        && let Ok(release_id) = CommitId::from_str(release)
        && store.entry_id(release_id, &host_dir).ok().flatten() == store.entry_id(head, &host_dir)?
    {
        state.record_applied(LB_STEP, &commit)?;
        return Ok((Applied::Recorded { commit }, None));
    }

    let (release, files) = stage(store, state, lb, head, &commit, &host_dir, current.as_deref())?;
    tracing::debug!(ms = started.elapsed().as_millis() as u64, files, "release staged");
    let result = lb.validate(state, &release);
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "validated");
    if let Err(e) = result {
        state.remove_release(&commit);
        return Err(e.context(format!("commit {commit} refused for {}", opts.lb)));
    }
    lb.check_running(state)
        .with_context(|| format!("commit {commit} staged but not applied"))?;

    let previous = state.current();
    state.switch_to(Some(&commit))?;
    let result = lb.reload();
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "reload took: new workers serve"
    );
    let reloaded = match result {
        Ok(reloaded) => reloaded,
        Err(e) => {
            // A failed reload leaves the load balancer running its previous config; put the files
            // back to match.
            state.switch_to(previous.as_deref())?;
            let back = previous.as_deref().unwrap_or("no release");
            return Err(e.context(format!(
                "commit {commit} on {}: {} kept its running config; rolled back to {back}",
                opts.lb,
                lb.name()
            )));
        }
    };
    state.record_applied(LB_STEP, &commit)?;
    let mut keep = vec![commit.as_str()];
    if let Some(p) = &previous {
        keep.push(p.as_str());
    }
    state.prune(&keep);
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "recorded");
    let applied = Applied::Reloaded {
        commit,
        files,
        millis: started.elapsed().as_millis(),
        balancer: lb.name(),
    };
    Ok((applied, Some(reloaded)))
}

/// This host's files at `commit` (a release id) that `lb` reads: their blobs by path inside the
/// release; other paths are skipped (with a warning when `warn`, so each is reported once per
/// apply).
fn host_files(
    store: &Store,
    lb: &dyn LoadBalancer,
    commit: CommitId,
    host_dir: &str,
    warn: bool,
) -> Result<BTreeMap<String, CommitId>> {
    let mut out = BTreeMap::new();
    for (path, blob) in store.list(commit, host_dir)? {
        let Some(rel) = lb.release_path(&path) else {
            if warn {
                tracing::warn!(%path, %commit, lb = lb.name(), "not a generated file of this flavour; skipped");
            }
            continue;
        };
        out.insert(rel, blob);
    }
    Ok(out)
}

/// The files of the release `id` as they were staged, when `id` is a commit the cache knows.
fn release_files(store: &Store, lb: &dyn LoadBalancer, id: &str, host_dir: &str) -> Option<BTreeMap<String, CommitId>> {
    host_files(store, lb, CommitId::from_str(id).ok()?, host_dir, false).ok()
}

/// Stages this host's files at `head` as release `commit`; returns its directory and the number
/// of this host's files at `head`.
///
/// Unchanged files are hard-linked from the running release (releases are never modified in
/// place). When a release nginx no longer runs is on disk (normally the one before the running
/// one, kept as a fallback), it is brought to `head` by the difference of the two commits instead
/// of writing a whole new release, so a one-Service change costs a few tree reads and file
/// operations, not one per Service.
fn stage(
    store: &Store,
    state: &StateDir,
    lb: &dyn LoadBalancer,
    head: CommitId,
    commit: &str,
    host_dir: &str,
    current: Option<&str>,
) -> Result<(PathBuf, usize)> {
    let release_dir = state.release_dir(commit);
    let running_dir = current.map(|id| state.release_dir(id));
    // Where a file's content comes from: a file the running release holds unchanged (`same`) is
    // hard-linked from it, so releases share what did not change.
    let source = |rel: &String, blob: &CommitId, same: bool| -> Result<FileSource> {
        if layout::binds_release(rel) {
            // A shared-listeners host file names the release it sits in: never shared with another.
            let text = String::from_utf8(store.blob(*blob)?).map_err(|_| anyhow!("{rel}: not UTF-8"))?;
            let bound = render_map::bind_release(&text, &release_dir).map_err(|e| anyhow!("{rel}: {e}"))?;
            return Ok(FileSource::Content(bound.into_bytes()));
        }
        Ok(match &running_dir {
            Some(dir) if same => FileSource::Link(dir.join(rel)),
            _ => FileSource::Content(store.blob(*blob)?),
        })
    };
    // For the few files a change writes, the running release's blob is looked up path by path
    // (listing all its files costs ~10 ms at 10k Services).
    let running_id = current.and_then(|id| CommitId::from_str(id).ok());
    let same_in_running = |path: &str, blob: &CommitId| {
        running_id.is_some_and(|id| store.entry_id(id, path).ok().flatten() == Some(*blob))
    };
    // The release being staged may itself be on disk whole (a run that stopped before the
    // swap): it is the best spare, needing no change at all.
    let mut spares: Vec<String> = state
        .releases()
        .into_iter()
        .filter(|id| Some(id.as_str()) != current)
        .collect();
    spares.sort_by_key(|id| id != commit);
    for spare in spares {
        // A spare whose commit the cache does not know cannot be diffed: it is left alone.
        let Some(mut changed) = CommitId::from_str(&spare)
            .ok()
            .and_then(|spare_id| store.diff_dir(spare_id, head, host_dir).ok())
            .map(|diff| diff.changed)
        else {
            continue;
        };
        // Host-level files name the release they sit in: written into every release.
        for (path, blob) in store.list(head, &format!("{host_dir}/{}", layout::HOST_FILES_DIR))? {
            changed.insert(path, Some(blob));
        }
        let (mut removes, mut writes) = (Vec::new(), BTreeMap::new());
        for (path, blob) in &changed {
            let Some(rel) = lb.release_path(path) else {
                if blob.is_some() {
                    tracing::warn!(%path, %head, lb = lb.name(), "not a generated file of this flavour; skipped");
                }
                continue;
            };
            match blob {
                Some(blob) => {
                    let file = source(&rel, blob, same_in_running(path, blob))?;
                    writes.insert(rel, file);
                }
                None => removes.push(rel),
            }
        }
        match state.update_release(&spare, commit, &removes, &writes) {
            Ok(dir) => {
                tracing::debug!(%spare, removed = removes.len(), written = writes.len(), "release staged from a spare");
                return Ok((dir, store.count_files(head, host_dir)?));
            }
            // Half-updated: it is no spare any more; a whole release is written below.
            Err(e) => tracing::warn!(%spare, error = %e, "could not reuse a spare release"),
        }
        break;
    }
    let wanted = host_files(store, lb, head, host_dir, true)?;
    let running = current
        .and_then(|id| release_files(store, lb, id, host_dir))
        .unwrap_or_default();
    let mut files = BTreeMap::new();
    for (rel, blob) in &wanted {
        let same = running.get(rel) == Some(blob);
        files.insert(rel.clone(), source(rel, blob, same)?);
    }
    Ok((state.write_release(commit, &files)?, wanted.len()))
}

/// This host's flavour at `head`; an error when flipbit.yaml does not parse or lacks the host.
fn check_host(store: &Store, head: CommitId, lb: &LbHostName) -> Result<Flavor> {
    let text = store
        .read(head, layout::CONFIG_FILE)?
        .ok_or_else(|| anyhow!("commit {head} has no {}", layout::CONFIG_FILE))?;
    let config = Config::parse(&String::from_utf8_lossy(&text)).with_context(|| format!("commit {head} refused"))?;
    match config.host(lb) {
        Some(host) => Ok(host.flavor),
        None => bail!("commit {head} refused: LB host {lb} is not in its flipbit.yaml"),
    }
}
