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
use flipbit_store::{CommitId, Store};

use crate::dns::{self, client::UpdateClient};
use crate::dns_step::{self, DnsOutcome};
use crate::nginx::Nginx;
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
    let state = StateDir::new(opts.state_dir.clone())?;
    let _lock = Lock::take(&state)?;
    let store = Store::open(&state.cache_repo(), &opts.repo, &opts.branch)?;
    let head = store
        .fetch()?
        .ok_or_else(|| anyhow!("branch {} not found in {}", opts.branch, opts.repo))?;
    let nginx = nginx_step(opts, &state, &store, head)?;
    let dns = match &opts.dns {
        None => None,
        Some(settings) => {
            let key = dns::key::load(&settings.key_file)?;
            let client = UpdateClient {
                server: settings.server,
                key,
                timeout: settings.timeout,
            };
            Some(dns_step::run(&store, &state, &opts.lb, head, &client)?)
        }
    };
    Ok(Report { nginx, dns })
}

fn nginx_step(opts: &ApplyOptions, state: &StateDir, store: &Store, head: CommitId) -> Result<Applied> {
    let started = Instant::now();
    let commit = head.to_string();
    let applied = state.applied(NGINX_STEP);
    let current = state.current();
    let verifier = opts.signatures.as_ref().map(SignaturePolicy::load).transpose()?;
    let mut applied_id = None;
    if let Some(prev) = &applied {
        if prev == &commit && current.is_some() {
            return Ok(Applied::UpToDate { commit });
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
        return Ok(Applied::Recorded { commit });
    }

    // Files whose blob is unchanged since the running release are hard-linked from it (releases are
    // never modified in place), so a one-Service change writes one file, not every file.
    let running: BTreeMap<String, CommitId> = match current.as_deref().map(CommitId::from_str) {
        Some(Ok(id)) => store.list(id, &host_dir).unwrap_or_default(),
        _ => BTreeMap::new(),
    };
    let running_dir = current.as_deref().map(|r| state.release_dir(r));
    let mut files = BTreeMap::new();
    for (path, blob) in store.list(head, &host_dir)? {
        if layout::parse_lb_path(&path).is_none() {
            tracing::warn!(%path, %commit, "not a generated snippet path; skipped");
            continue;
        }
        let rel = path.trim_start_matches(&format!("{host_dir}/")).to_owned();
        let source = match &running_dir {
            Some(dir) if running.get(&path) == Some(&blob) => FileSource::Link(dir.join(&rel)),
            _ => FileSource::Content(store.blob(blob)?),
        };
        files.insert(rel, source);
    }
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "files read from git");
    let release = state.write_release(&commit, &files)?;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        files = files.len(),
        "release written"
    );
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
    let result = opts.nginx.reload();
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "reload confirmed");
    if let Err(e) = result {
        // A failed reload leaves nginx running its previous config; put the files back to match.
        state.switch_to(previous.as_deref())?;
        let back = previous.as_deref().unwrap_or("no release");
        return Err(anyhow!(e).context(format!(
            "commit {commit} on {}: nginx kept its running config; rolled back to {back}",
            opts.lb
        )));
    }
    state.record_applied(NGINX_STEP, &commit)?;
    let mut keep = vec![commit.as_str()];
    if let Some(p) = &previous {
        keep.push(p.as_str());
    }
    state.prune(&keep);
    Ok(Applied::Reloaded {
        commit,
        files: files.len(),
        millis: started.elapsed().as_millis(),
    })
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
    let candidate = text.replace(&current, &format!("{}/", release.display()));
    let dir = main.parent().unwrap_or(std::path::Path::new("."));
    let test_conf = dir.join(format!(".flipbit-test-{}.conf", std::process::id()));
    std::fs::write(&test_conf, candidate).with_context(|| format!("writing {}", test_conf.display()))?;
    let result = opts.nginx.test(&test_conf);
    let _ = std::fs::remove_file(&test_conf);
    Ok(result?)
}
