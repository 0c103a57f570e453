//! One decision cycle against the state repo, shared by `render` and `run`: fetch → decide (pure)
//! → commit the changed paths → push. A push that loses a race fetches and decides again, so an
//! allocation made by another writer (a second generator, a human) is never overwritten.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use jiff::Timestamp;

use flipbit_core::config::Config;
use flipbit_core::decide::Decision;
use flipbit_core::engine::{Blobs, Change, Engine, Step};
use flipbit_core::format;
use flipbit_core::grammar::{self, LbFile};
use flipbit_core::holds::{self, Holds};
use flipbit_core::ledger::Ledger;
use flipbit_core::message;
use flipbit_core::model::Snapshot;
use flipbit_core::problem::Problem;
use flipbit_core::repo_paths;
use flipbit_store::{BlobId, CommitId, Committed, Store, StoreError};

/// Where the state repo is and who commits to it.
#[derive(Debug, Clone)]
pub struct RepoTarget {
    pub url: String,
    pub branch: String,
    /// A persistent bare cache; a temporary one when `None`.
    pub cache_dir: Option<PathBuf>,
    pub author_name: String,
    pub author_email: String,
    /// OpenSSH private key that signs every commit.
    pub signing_key: Option<PathBuf>,
    /// Review mode: commits go to this branch (rebased on `branch` each time) for a human to merge.
    pub propose_branch: Option<String>,
}

/// What review mode did with the review branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proposal {
    /// The branch now holds the commit, on top of the tracked branch's head.
    Proposed { branch: String },
    /// The branch already proposed exactly this change on this head.
    Unchanged { branch: String },
    /// Nothing is left to propose: the unmerged branch was deleted.
    Withdrawn { branch: String },
}

pub struct Outcome {
    pub decision: Decision,
    pub problems: Vec<Problem>,
    /// The commit made (pushed unless this was a plan), if anything changed.
    pub committed: Option<Committed>,
    pub message: Option<String>,
    /// The commit the decision was made on.
    pub base: flipbit_store::CommitId,
    /// `flipbit.yaml` at that commit.
    pub config: Config,
    /// Review mode only: what happened to the review branch.
    pub proposal: Option<Proposal>,
    /// How long the successful push took (the rest of a cycle is deciding and committing).
    pub push_time: Option<std::time::Duration>,
}

const PUSH_ATTEMPTS: u32 = 5;

/// The store for `target`; the temporary directory, when there is one, must outlive it.
pub fn open_store(target: &RepoTarget) -> Result<(Store, Option<tempfile::TempDir>)> {
    let (cache, temp) = match &target.cache_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let temp = tempfile::tempdir().context("creating a temporary cache repo")?;
            (temp.path().join("cache.git"), Some(temp))
        }
    };
    if let Some(branch) = &target.propose_branch {
        if branch == &target.branch {
            bail!("--propose-branch {branch}: the review branch must not be the branch the LB hosts follow");
        }
        if !flipbit_store::valid_branch_name(branch) {
            bail!("--propose-branch {branch:?}: not a valid Git branch name");
        }
    }
    let mut store = Store::open(&cache, &target.url, &target.branch)?;
    if let Some(path) = &target.signing_key {
        let signer = flipbit_store::SshSigner::load(path)?;
        tracing::info!(key = %signer.fingerprint(), "signing commits");
        store.sign_with(signer);
    }
    Ok((store, temp))
}

/// Decides from `snapshot`; commits and pushes when `push` (retrying lost races), else only
/// commits to the cache repo and reports what would be pushed (`plan`). One engine for `render`,
/// `plan` and `run`: with `memory` (the live generator's, kept between cycles, or `render`'s, kept
/// in its cache dir) only what changed since the last cycle is rendered; without, a fresh one
/// renders every file once, as a first cycle does.
pub fn run(
    store: &Store,
    target: &RepoTarget,
    snapshot: &Snapshot,
    load_problems: &[Problem],
    now: Timestamp,
    push: bool,
    memory: Option<&mut Memory>,
) -> Result<Outcome> {
    let mut fresh = Memory::default();
    let memory = match memory {
        Some(memory) => memory,
        None => &mut fresh,
    };
    if let Some(branch) = &target.propose_branch {
        let author = Store::signature(&target.author_name, &target.author_email)?;
        let (mut outcome, step) = decide_once(store, snapshot, load_problems, now, &author, memory)?;
        if push {
            outcome.proposal = propose(store, branch, &outcome)?;
            // The memory keeps describing the tracked branch, which the proposal did not change.
            memory.learn(&outcome.base.to_string(), &step);
        }
        return Ok(outcome);
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let author = Store::signature(&target.author_name, &target.author_email)?;
        let (mut outcome, step) = decide_once(store, snapshot, load_problems, now, &author, memory)?;
        if !push {
            return Ok(outcome);
        }
        let Some(committed) = outcome.committed.as_ref() else {
            memory.advance(outcome.base, step, &outcome.decision);
            return Ok(outcome);
        };
        // The memory moves to the commit before the push, taking the step's paths (200,000 in a
        // cold run at 50,000 Services) rather than holding them beside the push's own memory. A
        // push that fails leaves it describing a commit the remote lacks: the next decision finds
        // another head and re-reads it (`Engine::sync`).
        memory.advance(committed.id, step, &outcome.decision);
        let pushing = std::time::Instant::now();
        match store.push(committed.id) {
            Ok(()) => {
                outcome.push_time = Some(pushing.elapsed());
                return Ok(outcome);
            }
            Err(StoreError::Rejected { reason, .. }) if attempt < PUSH_ATTEMPTS => {
                tracing::warn!(%reason, attempt, "push lost a race; fetching and deciding again");
                std::thread::sleep(std::time::Duration::from_millis(100 * u64::from(attempt)));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Review mode: the decision is always made on the tracked branch's head (so the proposal is
/// rebased on whatever was merged, by fast-forward or merge commit), and the review branch is
/// force-set to the new commit, or deleted when nothing is left to propose.
fn propose(store: &Store, branch: &str, outcome: &Outcome) -> Result<Option<Proposal>> {
    let tip = store.fetch_branch(branch)?;
    let Some(committed) = &outcome.committed else {
        return Ok(match tip {
            Some(tip) if !store.descends_from(outcome.base, tip)? => {
                store.push_branch(branch, None, true)?;
                Some(Proposal::Withdrawn {
                    branch: branch.to_owned(),
                })
            }
            _ => None,
        });
    };
    if let Some(tip) = tip {
        let (tip_tree, tip_parents) = store.shape(tip)?;
        let (new_tree, _) = store.shape(committed.id)?;
        if tip_tree == new_tree && tip_parents == [outcome.base] {
            return Ok(Some(Proposal::Unchanged {
                branch: branch.to_owned(),
            }));
        }
    }
    store.push_branch(branch, Some(committed.id), true)?;
    Ok(Some(Proposal::Proposed {
        branch: branch.to_owned(),
    }))
}

/// What a decision starts from: the head and what it holds.
struct Head {
    id: CommitId,
    config: Config,
    ledger_id: Option<BlobId>,
    ledger_present: bool,
    ledger: std::sync::Arc<Ledger>,
    holds: Holds,
    hold_update: holds::HoldUpdate,
}

fn read_head(store: &Store, author: &flipbit_store::Signature<'_>, memory: &Memory) -> Result<Head> {
    let t = std::time::Instant::now();
    let fetched = store.fetch()?;
    tracing::debug!(ms = t.elapsed().as_millis() as u64, "fetched");
    let Some(head) = fetched else {
        bail!(
            "branch {} not found in {}: commit a flipbit.yaml to it first (see state-repo-example/)",
            store.branch(),
            store.url()
        );
    };
    let config_text = store
        .read(head, repo_paths::CONFIG_FILE)?
        .with_context(|| format!("{} has no {} at {head}", store.url(), repo_paths::CONFIG_FILE))?;
    let config = Config::parse(&String::from_utf8_lossy(&config_text))
        .with_context(|| format!("refusing to run on commit {head}"))?;
    // The ledger parsed last time is reused while its blob is the same (50,000 entries take a
    // while to parse).
    let ledger_id = store.entry_id(head, repo_paths::LEDGER_FILE)?;
    let cached = memory.ledger.as_ref().filter(|(id, _)| Some(*id) == ledger_id);
    let ledger = match (cached, ledger_id) {
        (Some((_, ledger)), _) => ledger.clone(),
        (None, None) => std::sync::Arc::new(Ledger::empty()),
        (None, Some(id)) => std::sync::Arc::new(
            Ledger::parse(&String::from_utf8_lossy(&store.blob(id)?))
                .with_context(|| format!("refusing to run on commit {head}: fix or revert the ledger by hand"))?,
        ),
    };
    let holds_text = store.read(head, holds::HOLDS_FILE)?;
    let head_holds = match &holds_text {
        Some(text) => Holds::parse(&String::from_utf8_lossy(text))
            .with_context(|| format!("refusing to run on commit {head}: fix or revert holds.yaml by hand"))?,
        None => Holds::default(),
    };
    let email = String::from_utf8_lossy(author.email_bytes()).into_owned();
    let changes = crate::history::human_changes(store, head, &email)?;
    let hold_update = holds::update(&head_holds, &changes);
    Ok(Head {
        id: head,
        config,
        ledger_id,
        ledger_present: ledger_id.is_some(),
        ledger,
        holds: head_holds,
        hold_update,
    })
}

fn decide_once(
    store: &Store,
    snapshot: &Snapshot,
    load_problems: &[Problem],
    now: Timestamp,
    author: &flipbit_store::Signature<'_>,
    memory: &mut Memory,
) -> Result<(Outcome, Step<BlobId>)> {
    let head = read_head(store, author, memory)?;
    if let Some(id) = head.ledger_id {
        memory.ledger = Some((id, head.ledger.clone()));
    }
    let (decision, committed, message, step) = decide_incrementally(store, snapshot, &head, now, author, memory)?;
    let mut problems = load_problems.to_vec();
    problems.extend(decision.problems.iter().cloned());
    Ok((
        Outcome {
            decision,
            problems,
            committed,
            message,
            base: head.id,
            config: head.config,
            proposal: None,
            push_time: None,
        },
        step,
    ))
}

type DecidedStep = (Decision, Option<Committed>, Option<String>, Step<BlobId>);

/// Only what changed since the engine's base is rendered and written (see flipbit_core::engine).
fn decide_incrementally(
    store: &Store,
    snapshot: &Snapshot,
    head: &Head,
    now: Timestamp,
    author: &flipbit_store::Signature<'_>,
    memory: &mut Memory,
) -> Result<DecidedStep> {
    let head_hex = head.id.to_string();
    if memory.engine.base() != Some(head_hex.as_str()) {
        let t = std::time::Instant::now();
        let mut tree = store.list(head.id, repo_paths::LB_DIR)?;
        tree.extend(store.list(head.id, repo_paths::DNS_DIR)?);
        for decision_file in [repo_paths::LEDGER_FILE, format::FORMAT_FILE] {
            if let Some(id) = store.entry_id(head.id, decision_file)? {
                tree.insert(decision_file.to_owned(), id);
            }
        }
        memory.engine.sync(&head_hex, tree);
        memory.touched = None;
        tracing::debug!(
            ms = t.elapsed().as_millis() as u64,
            paths = memory.engine.len(),
            "synced with the head"
        );
    }
    let t = std::time::Instant::now();
    let mut blobs = StoreBlobs(store.batch());
    let fast_before = memory.engine.fast_decisions();
    let (decision, mut step) = memory
        .engine
        .decide(snapshot, &head.config, &head.ledger, &head.hold_update, now, &mut blobs)
        .map_err(|e| anyhow::anyhow!("writing to the cache repo: {e}"))?;
    blobs.0.finish().context("writing to the cache repo")?;
    if let Some(why) = memory.engine.settled_refused() {
        tracing::info!(%why, "the memory of the last decision kept in the cache does not fit; deciding in full");
    }
    tracing::debug!(
        ms = t.elapsed().as_millis() as u64,
        changed = step.changes.len(),
        fast = memory.engine.fast_decisions() > fast_before,
        "decided"
    );
    let t = std::time::Instant::now();
    if !head.ledger_present && decision.ledger.services.is_empty() {
        step.changes.remove(repo_paths::LEDGER_FILE);
    }
    if head.hold_update.holds != head.holds {
        let id = store.write_blob(head.hold_update.holds.to_yaml().as_bytes())?;
        step.changes.insert(holds::HOLDS_FILE.to_owned(), Change::write(id));
    }
    if only_the_format_record(step.changes.keys()) {
        // Left out of the step too, so the engine does not take the file for present.
        step.changes.remove(format::FORMAT_FILE);
    }
    let mut message = None;
    let committed = store.commit_blobs(
        head.id,
        &step.blob_changes(),
        |changed: &BTreeSet<&str>| {
            message = compose(store, head, &decision, changed);
            message.clone()
        },
        author,
    )?;
    tracing::debug!(ms = t.elapsed().as_millis() as u64, "committed");
    Ok((decision, committed, message, step))
}

/// The generator's memory between cycles: the incremental engine and the last ledger it parsed.
#[derive(Default)]
pub struct Memory {
    engine: Engine<BlobId>,
    ledger: Option<(BlobId, std::sync::Arc<Ledger>)>,
    /// For `render`'s journal (`render_cache`): the paths steps wrote, deleted or learned a
    /// fingerprint of since the memory was read back from the cache. `None` when it was not (the live generator's memory), or
    /// once it was synced with another head, when any path may have changed.
    touched: Option<foldhash::HashSet<String>>,
}

impl Memory {
    /// How many decisions looked only at the Services that changed (see `flipbit_core::engine`).
    pub fn fast_decisions(&self) -> u64 {
        self.engine.fast_decisions()
    }

    /// A memory read back from `render`'s cache dir (see `render_cache`).
    pub fn restored(engine: Engine<BlobId>, ledger: Option<(BlobId, std::sync::Arc<Ledger>)>) -> Self {
        Self {
            engine,
            ledger,
            touched: Some(foldhash::HashSet::default()),
        }
    }

    /// The paths steps wrote or deleted since [`Memory::restored`] (see the field).
    pub fn touched_paths(&self) -> Option<&foldhash::HashSet<String>> {
        self.touched.as_ref()
    }

    #[cfg(test)]
    pub(crate) fn set_touched(&mut self, touched: Option<foldhash::HashSet<String>>) {
        self.touched = touched;
    }

    pub fn engine(&self) -> &Engine<BlobId> {
        &self.engine
    }

    /// The last ledger parsed or written, with its blob id.
    pub fn ledger(&self) -> Option<&(CommitId, std::sync::Arc<Ledger>)> {
        self.ledger.as_ref()
    }

    /// After a successful push (or nothing to commit): the engine's base moves to `commit`, and a
    /// ledger the commit wrote is remembered as parsed.
    fn advance(&mut self, commit: CommitId, step: Step<BlobId>, decision: &Decision) {
        if let Some(change) = step.changes.get(repo_paths::LEDGER_FILE) {
            // A persistent map: this copy shares every entry with the decision's.
            self.ledger = change
                .blob()
                .map(|id| (id, std::sync::Arc::new(decision.ledger.clone())));
        }
        if let Some(touched) = &mut self.touched {
            touched.extend(step.changes.keys().cloned());
            touched.extend(step.learned_paths().map(str::to_owned));
        }
        self.engine.advance(&commit.to_string(), step, decision);
    }

    /// What `step` learned about unchanged paths of `commit` (see `Engine::learn`), for a decision
    /// proposed on another branch.
    fn learn(&mut self, commit: &str, step: &Step<BlobId>) {
        if let Some(touched) = &mut self.touched
            && self.engine.base() == Some(commit)
        {
            touched.extend(step.learned_paths().map(str::to_owned));
        }
        self.engine.learn(commit, step);
    }
}

/// The engine's blob store: one batch per decision (a pack when it is large, see
/// `flipbit_store::BlobBatch`), finished before the commit's trees are built.
struct StoreBlobs<'a>(flipbit_store::BlobBatch<'a>);

impl Blobs for StoreBlobs<'_> {
    type Id = BlobId;
    fn id(&mut self, text: &str) -> Result<BlobId, String> {
        Store::blob_id(text.as_bytes()).map_err(|e| e.to_string())
    }
    fn write(&mut self, text: &str) -> Result<BlobId, String> {
        self.0.add(text.as_bytes()).map_err(|e| e.to_string())
    }
}

/// True when the only path among `changed` is `format.yaml`: a commit of it alone would change
/// nothing an LB host serves (a repo without it is format 1), so it waits for a real change and
/// rides along with it. Without this, upgrading the generator would commit to every repo at once.
fn only_the_format_record<P: AsRef<str>>(changed: impl IntoIterator<Item = P>) -> bool {
    let mut changed = changed.into_iter().peekable();
    changed.peek().is_some() && changed.all(|path| path.as_ref() == format::FORMAT_FILE)
}

/// The commit message for `changed` paths, naming the nodes whose upstreams came and went; `None`
/// (no commit) when only `format.yaml` would change.
fn compose<P: AsRef<str>>(store: &Store, head: &Head, decision: &Decision, changed: &BTreeSet<P>) -> Option<String> {
    if only_the_format_record(changed) {
        return None;
    }
    let old_upstreams = old_upstreams(store, head, changed);
    message::compose(decision, changed, head.config.release_grace_seconds, &old_upstreams)
}

/// The addresses each changed Service's snippets sent to before the change, nodes at node ports
/// or pods, read back through the grammar of the files the generator writes
/// (`grammar::Checked::upstreams`): from the first changed snippet of each Service, an nginx one
/// when there is one (all hosts of a Service share its upstreams, but a HAProxy file leaves UDP
/// ports out). A shared-listeners `.map` names no servers (its nodes are the host's `nodes.conf`),
/// and a file the grammar refuses (a human's edit) tells nothing: either way the Service gets no
/// entry, so its change is reported as one of ports or settings, never as nodes that came.
fn old_upstreams<P: AsRef<str>>(
    store: &Store,
    head: &Head,
    changed: &BTreeSet<P>,
) -> std::collections::BTreeMap<flipbit_core::names::ServiceKey, BTreeSet<std::net::SocketAddr>> {
    let mut out = std::collections::BTreeMap::new();
    let (nginx, others): (Vec<&str>, Vec<&str>) = changed.iter().map(AsRef::as_ref).partition(|p| p.ends_with(".conf"));
    for path in nginx.into_iter().chain(others) {
        let Some((host_name, key)) = repo_paths::parse_lb_path(path) else {
            continue;
        };
        if out.contains_key(&key) {
            continue;
        }
        let (Some(host), Some(file)) = (head.config.host(&host_name), LbFile::of_path(path, &host_name)) else {
            continue;
        };
        if matches!(file, LbFile::ServiceMap(_)) {
            continue;
        }
        let Ok(Some(bytes)) = store.read(head.id, path) else {
            continue;
        };
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        if let Ok(checked) = grammar::check(&file, text, host, grammar::OUTPUT_FORMAT) {
            out.insert(key, checked.upstreams);
        }
    }
    out
}
