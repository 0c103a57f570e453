//! The state repo through Git objects only: no index and no work tree, so reading one host's files
//! or committing one changed file costs the same with 150 files or 150,000. Both the generator and
//! the applier keep a bare cache repo that fetches from (and, for the generator, pushes to) the
//! real remote, which may be any URL libgit2 supports or a plain path to a bare repo.

mod auth;
mod batch;
mod dirs;
mod headcheck;
mod history;
mod local_fetch;
mod local_push;
mod packfile;
mod reach;
pub mod signing;
pub use batch::BlobBatch;
pub use dirs::{DirDiff, DirListing};
mod tree;
mod trust;

#[cfg(test)]
mod tests;

pub use auth::Credentials;
pub use headcheck::HeadCheck;
pub use history::CommitMeta;
pub use signing::SshSigner;
pub use trust::{GLOBAL_KNOWN_HOSTS, Refusal, ServerTrust, TrustError};

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use git2::{ErrorCode, FetchOptions, Oid, PushOptions, Repository};

pub use git2::Signature;

/// The id of a commit.
pub use git2::Oid as CommitId;
/// The id of a blob, a file's content: the same Git object id type as [`CommitId`], named for
/// what it holds where both appear.
pub use git2::Oid as BlobId;

/// libgit2's error is part of each message and deliberately not a `source`: printed with its
/// chain (`{:#}`, as the binaries print errors), it would say everything twice.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cache repo {path}: {error}")]
    Cache { path: String, error: git2::Error },
    #[error("fetching {branch} from {url}: {error}")]
    Fetch {
        url: String,
        branch: String,
        error: git2::Error,
    },
    #[error(
        "fetching {branch} from {url}: no answer within {} (the server accepted the connection but did not serve the fetch; check the Git server)", human_secs(*after)
    )]
    TimedOut {
        url: String,
        branch: String,
        after: std::time::Duration,
    },
    #[error("push to {url} was rejected ({reason}): the branch moved on; fetch and decide again")]
    Rejected { url: String, reason: String },
    #[error("pushing to {url}: {error}")]
    Push { url: String, error: git2::Error },
    #[error("reading {what} at commit {commit}: {error}")]
    Read {
        what: String,
        commit: Oid,
        error: git2::Error,
    },
    #[error("writing commit: {0}")]
    Write(git2::Error),
    #[error(transparent)]
    Signing(#[from] signing::SigningError),
    /// The server's SSH host key or TLS certificate was refused (`what`: "fetching main from
    /// URL", "pushing to URL").
    #[error("{what}: {refusal}")]
    Untrusted { what: String, refusal: Box<Refusal> },
    #[error(transparent)]
    Trust(#[from] TrustError),
}

fn human_secs(d: std::time::Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Bounds on a fetch, so a remote that accepts the connection and then never answers (or
/// answers a byte a minute) cannot hold the caller, and the lock it holds, forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// To open the connection.
    pub connect: std::time::Duration,
    /// The whole fetch: no read may wait longer, and the transfer is cancelled once it is over.
    pub total: std::time::Duration,
}

/// True when `refs/heads/<name>` is a reference name Git accepts.
pub fn valid_branch_name(name: &str) -> bool {
    git2::Reference::is_valid_name(&format!("refs/heads/{name}"))
}

fn tracking_ref(branch: &str) -> String {
    format!("refs/remotes/origin/{branch}")
}

/// A bare cache of the state repo, tracking one branch of one remote.
pub struct Store {
    repo: Repository,
    url: String,
    branch: String,
    credentials: Credentials,
    /// Signs every commit this store makes, when set.
    signer: Option<SshSigner>,
    /// Bounds every fetch, when set.
    limits: Option<FetchLimits>,
    /// How the Git server is checked.
    trust: ServerTrust,
}

/// The result of a commit: its id and how many paths' content really changed (which ones:
/// [`Store::changed_paths`]; a cold commit at 50,000 Services changes 200,000).
#[derive(Debug, Clone)]
pub struct Committed {
    pub id: Oid,
    pub files: usize,
}

/// libgit2's process-wide settings, set once. Every push walks the whole tree the remote already
/// has (to leave its objects out of the pack): 150,000 paths at 50,000 Services. libgit2 caches
/// only trees under 4 KiB and re-hashes every object it reads; a namespace directory of 500
/// snippets is a 20 KiB tree, so each push re-read, inflated and hashed megabytes. Trees up to
/// 1 MiB are now cached, and reads are not re-hashed: every object in the cache repo was hashed
/// when it was written here or indexed from a fetched pack.
fn tune_libgit2() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        git2::opts::strict_hash_verification(false);
        // SAFETY: called once, before this process opens any repository through the store.
        let _ = unsafe { git2::opts::set_cache_object_limit(git2::ObjectType::Tree, 1 << 20) };
        // Packs are read through mapped windows, which count as resident memory once touched: at
        // most 16 MiB of them (libgit2 maps windows of 1 GiB and up to 8 GiB by default). The cold
        // push at 50,000 Services peaked at 293 MB RSS with 32 MiB and 277 MB with 16, in the same
        // time; 8 MiB saved 4 MB more and cost 3 s of remapping.
        // SAFETY: as above.
        let _ = unsafe { git2::opts::set_mwindow_size(8 << 20) };
        // SAFETY: as above.
        let _ = unsafe { git2::opts::set_mwindow_mapped_limit(16 << 20) };
    });
}

/// Pushes carry whole objects, no deltas. libgit2 searches deltas across every object it pushes
/// and holds them all until the pack is written: the cold push at 50,000 Services took 22 s and
/// lifted peak RSS from 293 to 354 MB; without deltas it takes 10 s. Its pack is about twice the
/// size (16 MB against 7 MB at 10,000 Services) once; an everyday push of a few files differs by
/// bytes, and the server's `git gc` deltifies what it stores.
///
/// libgit2 1.9 has no switch for this; objects over its "big file" threshold are never
/// deltified, and it reads that threshold from `pack.deltaCacheSize` (pack-objects.c), which also
/// caps the delta cache. Both are set to one byte; `core.bigFileThreshold`, git's name for the
/// threshold, too, should a later libgit2 read that instead. A test checks the pushed pack.
fn push_without_deltas(repo: &Repository) -> Result<(), git2::Error> {
    let mut config = repo.config()?;
    config.set_i64("pack.deltaCacheSize", 1)?;
    config.set_i64("core.bigFileThreshold", 1)
}

impl Store {
    /// Opens the bare cache at `cache`, creating it when missing.
    pub fn open(cache: &Path, url: &str, branch: &str) -> Result<Self, StoreError> {
        tune_libgit2();
        let err = |error| StoreError::Cache {
            path: cache.display().to_string(),
            error,
        };
        let repo = match Repository::open_bare(cache) {
            Ok(repo) => repo,
            Err(_) => Repository::init_bare(cache).map_err(err)?,
        };
        push_without_deltas(&repo).map_err(err)?;
        Ok(Self {
            repo,
            url: url.to_owned(),
            branch: branch.to_owned(),
            credentials: Credentials::from_env(),
            signer: None,
            limits: None,
            trust: ServerTrust::installed(),
        })
    }

    /// Checks the Git server as `trust` says, rather than as the process installed
    /// ([`ServerTrust::install`]; the defaults without). A CA bundle joins the process's trust.
    pub fn trust_server(&mut self, trust: ServerTrust) -> Result<(), StoreError> {
        trust.prepare()?;
        self.trust = trust;
        Ok(())
    }

    /// Bounds every fetch from now on by `limits`. libgit2 keeps its connect and read timeouts
    /// per process (they apply to `git://`, `ssh://` and `https://` alike; a local path has no
    /// connection), so this sets them for every store of the process; the whole-fetch deadline
    /// is this store's own.
    pub fn limit_fetches(&mut self, limits: FetchLimits) {
        let millis = |d: std::time::Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX).max(1);
        // SAFETY: plain integer settings, read when libgit2 opens its next connection.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(millis(limits.connect.min(limits.total)));
            let _ = git2::opts::set_server_timeout_in_milliseconds(millis(limits.total));
        }
        self.limits = Some(limits);
    }

    /// Signs every commit made from now on with `signer`.
    pub fn sign_with(&mut self, signer: SshSigner) {
        self.signer = Some(signer);
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// Fetches the branch; returns its head, or `None` when the remote has no such branch.
    pub fn fetch(&self) -> Result<Option<Oid>, StoreError> {
        self.fetch_branch(&self.branch)
    }

    /// Fetches `branch` (the tracked one or another, such as a review branch); returns its head,
    /// or `None` when the remote has no such branch.
    pub fn fetch_branch(&self, branch: &str) -> Result<Option<Oid>, StoreError> {
        // A repository on a local path: its objects are copied rather than packed and sent.
        if let Some(source) = local_fetch::local_source(&self.url) {
            return self.fetch_local(&source, branch);
        }
        let err = |error| StoreError::Fetch {
            url: self.url.clone(),
            branch: branch.to_owned(),
            error,
        };
        let mut remote = self.repo.remote_anonymous(&self.url).map_err(err)?;
        let refspec = format!("+refs/heads/{branch}:{}", tracking_ref(branch));
        let started = std::time::Instant::now();
        let over = || self.limits.is_some_and(|l| started.elapsed() >= l.total);
        let check = trust::ServerCheck::new(&self.trust, &self.url);
        let mut callbacks = self.credentials.callbacks();
        check.attach(&mut callbacks);
        // Called as data arrives: past the deadline, returning false cancels the transfer.
        callbacks.transfer_progress(|_| !over());
        callbacks.sideband_progress(|_| !over());
        let mut opts = FetchOptions::new();
        opts.download_tags(git2::AutotagOption::None);
        opts.remote_callbacks(callbacks);
        let fetched = remote.fetch(&[refspec.as_str()], Some(&mut opts), None);
        drop(opts);
        if let Err(e) = &fetched
            && let Some(refusal) = check.refusal(e)
        {
            return Err(StoreError::Untrusted {
                what: format!("fetching {branch} from {}", self.url),
                refusal: Box::new(refusal),
            });
        }
        if let (Err(e), Some(_)) = (&fetched, self.limits)
            && (over() || e.code() == ErrorCode::Timeout)
        {
            tracing::debug!(error = %e, "fetch timed out");
            return Err(StoreError::TimedOut {
                url: self.url.clone(),
                branch: branch.to_owned(),
                after: started.elapsed(),
            });
        }
        fetched.map_err(err)?;
        // A fetch that found no such branch leaves any old tracking ref; check the remote's list.
        let listed = remote
            .list()
            .map_err(err)?
            .iter()
            .any(|h| h.name() == format!("refs/heads/{branch}"));
        if !listed {
            return Ok(None);
        }
        match self.repo.refname_to_id(&tracking_ref(branch)) {
            Ok(id) => Ok(Some(id)),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(err(e)),
        }
    }

    /// The content of `path` at `commit`, or `None` when there is no such file.
    pub fn read(&self, commit: Oid, path: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let err = |error| StoreError::Read {
            what: path.to_owned(),
            commit,
            error,
        };
        let tree = self.repo.find_commit(commit).and_then(|c| c.tree()).map_err(err)?;
        let entry = match tree.get_path(Path::new(path)) {
            Ok(entry) => entry,
            Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        match entry.to_object(&self.repo).map_err(err)?.into_blob() {
            Ok(blob) => Ok(Some(blob.content().to_vec())),
            Err(_) => Ok(None),
        }
    }

    /// The paths whose content differs between the trees of `from` and `to` (added, changed or
    /// deleted files).
    pub fn changed_paths(&self, from: Oid, to: Oid) -> Result<BTreeSet<String>, StoreError> {
        let err = |error| StoreError::Read {
            what: format!("the changes since {from}"),
            commit: to,
            error,
        };
        let tree = |id: Oid| self.repo.find_commit(id).and_then(|c| c.tree()).map_err(err);
        let (old, new) = (tree(from)?, tree(to)?);
        let diff = self.repo.diff_tree_to_tree(Some(&old), Some(&new), None).map_err(err)?;
        let mut out = BTreeSet::new();
        for delta in diff.deltas() {
            for file in [delta.old_file(), delta.new_file()] {
                if let Some(path) = file.path().and_then(Path::to_str) {
                    out.insert(path.to_owned());
                }
            }
        }
        Ok(out)
    }

    pub fn blob(&self, id: Oid) -> Result<Vec<u8>, StoreError> {
        let blob = self.repo.find_blob(id).map_err(|error| StoreError::Read {
            what: format!("blob {id}"),
            commit: Oid::ZERO_SHA1,
            error,
        })?;
        Ok(blob.content().to_vec())
    }

    /// True when `descendant` has `ancestor` in its history (or is it).
    pub fn descends_from(&self, descendant: Oid, ancestor: Oid) -> Result<bool, StoreError> {
        if descendant == ancestor {
            return Ok(true);
        }
        self.repo
            .graph_descendant_of(descendant, ancestor)
            .map_err(|error| StoreError::Read {
                what: format!("history of {ancestor}"),
                commit: descendant,
                error,
            })
    }

    /// Commits `writes` and `deletes` on top of `parent`, touching only the trees on their paths.
    /// Returns `None` when no content would change (no empty commits).
    pub fn commit(
        &self,
        parent: Oid,
        writes: &BTreeMap<String, String>,
        deletes: &BTreeSet<String>,
        message_for: impl FnOnce(&BTreeSet<String>) -> Option<String>,
        author: &Signature<'_>,
    ) -> Result<Option<Committed>, StoreError> {
        let parent_commit = self.repo.find_commit(parent).map_err(StoreError::Write)?;
        let base = parent_commit.tree().map_err(StoreError::Write)?;
        let existing = self.blobs_in(&base)?;
        let mut changes: BTreeMap<String, Option<Oid>> = BTreeMap::new();
        for (path, text) in writes {
            // Hash in memory first: only content that really changed is written to the object store.
            let id = Oid::hash_object(git2::ObjectType::Blob, text.as_bytes()).map_err(StoreError::Write)?;
            if existing.get(path.as_str()) != Some(&id) {
                let written = self.repo.blob(text.as_bytes()).map_err(StoreError::Write)?;
                changes.insert(path.clone(), Some(written));
            }
        }
        for path in deletes {
            if !writes.contains_key(path) && existing.contains_key(path.as_str()) {
                changes.insert(path.clone(), None);
            }
        }
        if changes.is_empty() {
            return Ok(None);
        }
        let changed: BTreeSet<String> = changes.keys().cloned().collect();
        let Some(message) = message_for(&changed) else {
            return Ok(None);
        };
        let view: BTreeMap<&str, Option<Oid>> = changes.iter().map(|(path, blob)| (path.as_str(), *blob)).collect();
        let tree_id = tree::update(&self.repo, Some(&base), &view).map_err(StoreError::Write)?;
        let tree = self.repo.find_tree(tree_id).map_err(StoreError::Write)?;
        let id = self.write_commit(author, &message, &tree, &[&parent_commit])?;
        Ok(Some(Committed {
            id,
            files: changed.len(),
        }))
    }

    /// The id `text` has as a blob, computed in memory (nothing is written).
    pub fn blob_id(text: &[u8]) -> Result<Oid, StoreError> {
        Oid::hash_object(git2::ObjectType::Blob, text).map_err(StoreError::Write)
    }

    /// Writes `text` as a blob.
    pub fn write_blob(&self, text: &[u8]) -> Result<Oid, StoreError> {
        self.repo.blob(text).map_err(StoreError::Write)
    }

    /// The id of the entry at `path` in `commit` (a file's blob, or a directory's tree: equal
    /// tree ids tell cheaply that nothing under a directory changed), or `None` when there is no
    /// such path.
    pub fn entry_id(&self, commit: Oid, path: &str) -> Result<Option<Oid>, StoreError> {
        let err = |error| StoreError::Read {
            what: path.to_owned(),
            commit,
            error,
        };
        let tree = self.repo.find_commit(commit).and_then(|c| c.tree()).map_err(err)?;
        match tree.get_path(Path::new(path)) {
            Ok(entry) => Ok(Some(entry.id())),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(err(e)),
        }
    }

    /// Commits blobs already written (`changes`: path → blob, `None` deletes) on top of `parent`,
    /// rebuilding only the trees on their paths. `None` when the tree would not change.
    pub fn commit_blobs(
        &self,
        parent: Oid,
        changes: &BTreeMap<&str, Option<Oid>>,
        message_for: impl FnOnce(&BTreeSet<&str>) -> Option<String>,
        author: &Signature<'_>,
    ) -> Result<Option<Committed>, StoreError> {
        if changes.is_empty() {
            return Ok(None);
        }
        let parent_commit = self.repo.find_commit(parent).map_err(StoreError::Write)?;
        let base = parent_commit.tree().map_err(StoreError::Write)?;
        let tree_id = tree::update(&self.repo, Some(&base), changes).map_err(StoreError::Write)?;
        if tree_id == base.id() {
            return Ok(None);
        }
        let changed: BTreeSet<&str> = changes.keys().copied().collect();
        let Some(message) = message_for(&changed) else {
            return Ok(None);
        };
        let tree = self.repo.find_tree(tree_id).map_err(StoreError::Write)?;
        let id = self.write_commit(author, &message, &tree, &[&parent_commit])?;
        Ok(Some(Committed {
            id,
            files: changed.len(),
        }))
    }

    /// Writes a commit object (signed when there is a signer) without moving any reference.
    fn write_commit(
        &self,
        author: &Signature<'_>,
        message: &str,
        tree: &git2::Tree<'_>,
        parents: &[&git2::Commit<'_>],
    ) -> Result<Oid, StoreError> {
        let Some(signer) = &self.signer else {
            return self
                .repo
                .commit(None, author, author, message, tree, parents)
                .map_err(StoreError::Write);
        };
        let buffer = self
            .repo
            .commit_create_buffer(author, author, message, tree, parents)
            .map_err(StoreError::Write)?;
        let signature = signer.sign(&buffer)?;
        let text = std::str::from_utf8(&buffer).map_err(|_| {
            StoreError::Write(git2::Error::from_str(
                "the commit object is not UTF-8 (author name or message)",
            ))
        })?;
        self.repo
            .commit_signed(text, &signature, Some("gpgsig"))
            .map_err(StoreError::Write)
    }

    /// Every blob of `tree` by path, read in one walk (a lookup per path re-reads large trees).
    fn blobs_in(&self, tree: &git2::Tree<'_>) -> Result<std::collections::HashMap<String, Oid>, StoreError> {
        let mut out = std::collections::HashMap::new();
        tree.walk(git2::TreeWalkMode::PreOrder, |parent, entry| {
            if entry.kind() == Some(git2::ObjectType::Blob)
                && let Ok(name) = entry.name()
            {
                out.insert(format!("{parent}{name}"), entry.id());
            }
            git2::TreeWalkResult::Ok
        })
        .map_err(StoreError::Write)?;
        Ok(out)
    }

    /// Pushes `commit` to the branch, as a fast-forward only.
    pub fn push(&self, commit: Oid) -> Result<(), StoreError> {
        self.push_branch(&self.branch, Some(commit), false)
    }

    /// Sets `branch` on the remote to `commit` (`None` deletes it). Without `force` only a
    /// fast-forward is accepted; a rejection is [`StoreError::Rejected`]. A bare repository on a
    /// plain local path receives the objects as a pack the store writes itself, reusing the
    /// cache's packed objects (`local_push.rs`); every other remote through libgit2.
    pub fn push_branch(&self, branch: &str, commit: Option<Oid>, force: bool) -> Result<(), StoreError> {
        if let Some(commit) = commit
            && let Some(target) = local_push::local_target(&self.url)
        {
            self.push_local(&target, branch, commit, force)?;
            let _ = self
                .repo
                .reference(&tracking_ref(branch), commit, true, "flipbit pushed");
            return Ok(());
        }
        let err = |error| StoreError::Push {
            url: self.url.clone(),
            error,
        };
        let local = format!("refs/flipbit/push/{branch}");
        if let Some(commit) = commit {
            self.repo.reference(&local, commit, true, "flipbit push").map_err(err)?;
        }
        let mut remote = self.repo.remote_anonymous(&self.url).map_err(err)?;
        let rejected = std::cell::RefCell::new(None::<String>);
        let check = trust::ServerCheck::new(&self.trust, &self.url);
        let mut callbacks = self.credentials.callbacks();
        check.attach(&mut callbacks);
        callbacks.push_update_reference(|_, status| {
            if let Some(msg) = status {
                *rejected.borrow_mut() = Some(msg.to_owned());
            }
            Ok(())
        });
        let mut opts = PushOptions::new();
        opts.remote_callbacks(callbacks);
        let spec = match (commit, force) {
            (None, _) => format!(":refs/heads/{branch}"),
            (Some(_), false) => format!("{local}:refs/heads/{branch}"),
            (Some(_), true) => format!("+{local}:refs/heads/{branch}"),
        };
        let result = remote.push(&[spec.as_str()], Some(&mut opts));
        drop(opts);
        if let Err(e) = &result
            && let Some(refusal) = check.refusal(e)
        {
            return Err(StoreError::Untrusted {
                what: format!("pushing to {}", self.url),
                refusal: Box::new(refusal),
            });
        }
        if let Some(reason) = rejected.into_inner() {
            return Err(StoreError::Rejected {
                url: self.url.clone(),
                reason,
            });
        }
        match result {
            Ok(()) => {
                let tracking = tracking_ref(branch);
                let _ = match commit {
                    Some(c) => self.repo.reference(&tracking, c, true, "flipbit pushed").map(drop),
                    None => self.repo.find_reference(&tracking).and_then(|mut r| r.delete()),
                };
                Ok(())
            }
            Err(e) if e.code() == ErrorCode::NotFastForward || e.message().contains("fast") => {
                Err(StoreError::Rejected {
                    url: self.url.clone(),
                    reason: e.message().to_owned(),
                })
            }
            Err(e) => Err(err(e)),
        }
    }

    /// The tree and parents of `commit`.
    pub fn shape(&self, commit: Oid) -> Result<(Oid, Vec<Oid>), StoreError> {
        let c = self.repo.find_commit(commit).map_err(|error| StoreError::Read {
            what: "commit".into(),
            commit,
            error,
        })?;
        Ok((c.tree_id(), c.parent_ids().collect()))
    }

    /// The signature commits are made with.
    pub fn signature(name: &str, email: &str) -> Result<Signature<'static>, StoreError> {
        Signature::now(name, email).map_err(StoreError::Write)
    }
}
