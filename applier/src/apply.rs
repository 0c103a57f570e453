//! One apply on one LB host (DESIGN.md §5): fetch, check the commit, stage this host's files as a
//! release, `nginx -t`, swap, reload, confirm, record. Any failure before the swap leaves nginx
//! untouched; a failed reload swaps back and reloads the old release.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};

use flipbit_core::config::Config;
use flipbit_core::layout;
use flipbit_core::names::LbHostName;
use flipbit_core::render_map;
use flipbit_store::{CommitId, Store};

use crate::dns::{self, client::UpdateClient};
use crate::dns_step::{self, DnsOutcome};
use crate::nginx::{Nginx, Reloaded};
use crate::release::{FileSource, Lock, StateDir};
use crate::signatures::SignaturePolicy;

const NGINX_STEP: &str = "nginx";

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub repo: String,
    pub branch: String,
    pub lb: LbHostName,
    pub state_dir: PathBuf,
    pub nginx: Nginx,
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
    /// A new commit that does not change this host's files: recorded, nginx left alone.
    Recorded { commit: String },
    /// nginx now runs this commit's files.
    Reloaded { commit: String, files: usize, millis: u128 },
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

/// The nginx step; when it reloaded, also the reload whose old workers may still be accepting.
fn nginx_step(
    opts: &ApplyOptions,
    state: &StateDir,
    store: &Store,
    head: CommitId,
) -> Result<(Applied, Option<Reloaded>)> {
    let started = Instant::now();
    let commit = head.to_string();
    let applied = state.applied(NGINX_STEP);
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
    check_host(store, head, &opts.lb)?;

    // The running release has the same files for this host: nothing for nginx to do.
    let host_dir = layout::lb_host_dir(&opts.lb);
    if let Some(release) = &current
        && let Ok(release_id) = CommitId::from_str(release)
        && store.tree_id(release_id, &host_dir).ok().flatten() == store.tree_id(head, &host_dir)?
    {
        state.record_applied(NGINX_STEP, &commit)?;
        return Ok((Applied::Recorded { commit }, None));
    }

    let (release, files) = stage(store, state, head, &commit, &host_dir, current.as_deref())?;
    tracing::debug!(ms = started.elapsed().as_millis() as u64, files, "release staged");
    let result = validate(opts, state, &release);
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "nginx -t done");
    if let Err(e) = result {
        state.remove_release(&commit);
        return Err(e.context(format!("commit {commit} refused for {}", opts.lb)));
    }
    opts.nginx
        .master()
        .with_context(|| format!("commit {commit} staged but not applied"))?;

    let previous = state.current();
    state.switch_to(Some(&commit))?;
    let result = opts.nginx.start_reload();
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "reload took: new workers serve"
    );
    let reloaded = match result {
        Ok(reloaded) => reloaded,
        Err(e) => {
            // A failed reload leaves nginx running its previous config; put the files back to match.
            state.switch_to(previous.as_deref())?;
            let back = previous.as_deref().unwrap_or("no release");
            return Err(anyhow!(e).context(format!(
                "commit {commit} on {}: nginx kept its running config; rolled back to {back}",
                opts.lb
            )));
        }
    };
    state.record_applied(NGINX_STEP, &commit)?;
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
    };
    Ok((applied, Some(reloaded)))
}

/// This host's snippet files at `commit` (a release id), by path inside the release; other paths
/// are skipped (with a warning when `warn`, so each is reported once per apply).
fn host_files(store: &Store, commit: CommitId, host_dir: &str, warn: bool) -> Result<BTreeMap<String, CommitId>> {
    let prefix = format!("{host_dir}/");
    let mut out = BTreeMap::new();
    for (path, blob) in store.list(commit, host_dir)? {
        if layout::parse_lb_path(&path).is_none() && layout::parse_lb_host_path(&path).is_none() {
            if warn {
                tracing::warn!(%path, %commit, "not a generated snippet path; skipped");
            }
            continue;
        }
        out.insert(path.trim_start_matches(&prefix).to_owned(), blob);
    }
    Ok(out)
}

/// The files of the release `id` as they were staged, when `id` is a commit the cache knows.
fn release_files(store: &Store, id: &str, host_dir: &str) -> Option<BTreeMap<String, CommitId>> {
    host_files(store, CommitId::from_str(id).ok()?, host_dir, false).ok()
}

/// Stages this host's files at `head` as release `commit`; returns its directory and file count.
///
/// Unchanged files are hard-linked from the running release (releases are never modified in
/// place). When a release nginx no longer runs is on disk (normally the one before the running
/// one, kept as a fallback), it is brought to `head` by the difference instead of writing a whole
/// new release, so a one-Service change costs a few file operations, not one per Service.
fn stage(
    store: &Store,
    state: &StateDir,
    head: CommitId,
    commit: &str,
    host_dir: &str,
    current: Option<&str>,
) -> Result<(PathBuf, usize)> {
    let wanted = host_files(store, head, host_dir, true)?;
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
    let same_in_running = |rel: &str, blob: &CommitId| {
        running_id.is_some_and(|id| store.tree_id(id, &format!("{host_dir}/{rel}")).ok().flatten() == Some(*blob))
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
        let Some(old) = release_files(store, &spare, host_dir) else {
            continue;
        };
        let removes: Vec<String> = old.keys().filter(|rel| !wanted.contains_key(*rel)).cloned().collect();
        let mut writes = BTreeMap::new();
        for (rel, blob) in &wanted {
            if old.get(rel) != Some(blob) || layout::binds_release(rel) {
                writes.insert(rel.clone(), source(rel, blob, same_in_running(rel, blob))?);
            }
        }
        match state.update_release(&spare, commit, &removes, &writes) {
            Ok(dir) => {
                tracing::debug!(%spare, removed = removes.len(), written = writes.len(), "release staged from a spare");
                return Ok((dir, wanted.len()));
            }
            // Half-updated: it is no spare any more; a whole release is written below.
            Err(e) => tracing::warn!(%spare, error = %e, "could not reuse a spare release"),
        }
        break;
    }
    let running = current
        .and_then(|id| release_files(store, id, host_dir))
        .unwrap_or_default();
    let mut files = BTreeMap::new();
    for (rel, blob) in &wanted {
        files.insert(rel.clone(), source(rel, blob, running.get(rel) == Some(blob))?);
    }
    Ok((state.write_release(commit, &files)?, wanted.len()))
}

fn check_host(store: &Store, head: CommitId, lb: &LbHostName) -> Result<()> {
    let text = store
        .read(head, layout::CONFIG_FILE)?
        .ok_or_else(|| anyhow!("commit {head} has no {}", layout::CONFIG_FILE))?;
    let config = Config::parse(&String::from_utf8_lossy(&text)).with_context(|| format!("commit {head} refused"))?;
    if config.host(lb).is_none() {
        bail!("commit {head} refused: LB host {lb} is not in its flipbit.yaml");
    }
    Ok(())
}

/// `nginx -t` on a copy of the main config whose include points at the candidate release. The
/// copy sits beside the main config so its relative includes resolve the same way.
fn validate(opts: &ApplyOptions, state: &StateDir, release: &std::path::Path) -> Result<()> {
    let main = &opts.nginx.conf;
    let text = std::fs::read_to_string(main).with_context(|| format!("reading {}", main.display()))?;
    let current = format!("{}/", state.current_link().display());
    if !text.contains(&current) {
        bail!(
            "{} does not include {current}*/*.conf inside its stream {{}} block, so Flipbit's files would never be used",
            main.display()
        );
    }
    // nginx reads the candidate through `<state>/staging`, a link as long as `current`, rather
    // than through `releases/<commit>/`: with 10k Services in the per-Service layout, `nginx -t`
    // took up to ~50% more CPU on other path lengths (its quadratic upstream lookup walks
    // structures whose spacing in memory follows the file names' lengths). Through a path of the
    // same length it works as the reload will, in the same time.
    let id = release
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("{}: not a release directory", release.display()))?;
    let staging = state.point_staging(id)?;
    let candidate = text.replace(&current, &format!("{}/", staging.display()));
    let dir = main.parent().unwrap_or(std::path::Path::new("."));
    let test_conf = dir.join(format!(".flipbit-test-{}.conf", std::process::id()));
    std::fs::write(&test_conf, candidate).with_context(|| format!("writing {}", test_conf.display()))?;
    let result = opts.nginx.test(&test_conf);
    let _ = std::fs::remove_file(&test_conf);
    state.remove_staging();
    Ok(result?)
}
