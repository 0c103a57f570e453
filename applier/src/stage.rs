//! Staging a release: this host's files at a commit, less the withheld Services' files, written
//! as `<state>/releases/<id>/` for the load balancer to validate and, once swapped in, load.
//! Every file staged from Git was checked by `verify` first (a changed file) or lies unchanged in
//! the loaded release, which was checked when it was staged.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{Result, anyhow};

use flipbit_core::names::ServiceKey;
use flipbit_core::render;
use flipbit_core::repo_paths;
use flipbit_core::text::escaped;
use flipbit_store::{BlobId, CommitId, Store};

use crate::balancer::LoadBalancer;
use crate::journal::Release;
use crate::release::{FileSource, StateDir};

/// What is being staged, and from what.
pub struct Staging<'a> {
    pub store: &'a Store,
    pub state: &'a StateDir,
    pub lb: &'a dyn LoadBalancer,
    pub host_dir: &'a str,
    /// The release to write.
    pub release: &'a Release,
    /// The release `current` points at, whose unchanged files are hard-linked.
    pub running: Option<&'a Release>,
    /// A replacement for a host file's text (the listeners without a blocked wildcard), by repo
    /// path.
    pub rewritten: &'a BTreeMap<String, String>,
}

/// The Service a repo path of this host belongs to.
fn owner(path: &str) -> Option<ServiceKey> {
    repo_paths::parse_lb_path(path).map(|(_, key)| key)
}

impl Staging<'_> {
    /// Writes the release; returns its directory and the number of files in it.
    ///
    /// Unchanged files are hard-linked from the running release (releases are never modified in
    /// place). When a release the load balancer no longer runs is on disk (normally the one
    /// before the running one, kept as a fallback), it is brought to the new commit by the
    /// difference of the two commits instead of writing a whole new release, so a one-Service
    /// change costs a few tree reads and file operations, not one per Service.
    pub fn write(&self) -> Result<(PathBuf, usize)> {
        let head = self.release.commit;
        let id = self.release.id();
        let release_dir = self.state.release_dir(&id);
        // Already on disk whole (a run that stopped before the swap, or `current` itself when
        // the journal was lost): its marker says it is exactly this release.
        if self.state.release_of(&id).as_ref() == Some(self.release) {
            return Ok((release_dir, self.store.count_files(head, self.host_dir)?));
        }
        // Files are never linked from the directory being replaced.
        let running = self.running.filter(|r| r.id() != id);
        let running_dir = running.map(|r| self.state.release_dir(&r.id()));
        // A file the running release holds unchanged (`same`) is hard-linked from it.
        let source = |rel: &String, path: &str, blob: &BlobId, same: bool| -> Result<FileSource> {
            if let Some(text) = self.rewritten.get(path) {
                return self.bound(rel, text.clone(), &release_dir);
            }
            if repo_paths::binds_release(rel) {
                // A shared-listeners host file names the release it sits in: never shared.
                let text =
                    String::from_utf8(self.store.blob(*blob)?).map_err(|_| anyhow!("{}: not UTF-8", escaped(rel)))?;
                return self.bound(rel, text, &release_dir);
            }
            Ok(match &running_dir {
                Some(dir) if same => FileSource::Link(dir.join(rel)),
                _ => FileSource::Content(self.store.blob(*blob)?),
            })
        };
        let withheld = |path: &str| owner(path).is_some_and(|key| self.release.withheld.contains(&key));
        // For the few files a change writes, the running release's blob is looked up path by path
        // (listing all its files costs ~10 ms at 10k Services); a withheld file is not in it.
        let same_in_running = |path: &str, blob: &BlobId| {
            running.is_some_and(|r| {
                !owner(path).is_some_and(|key| r.withheld.contains(&key))
                    && self.store.entry_id(r.commit, path).ok().flatten() == Some(*blob)
            })
        };
        let current_id = self.running.map(Release::id);
        let spare = self
            .state
            .releases()
            .into_iter()
            .filter(|spare| Some(spare) != current_id.as_ref())
            .find_map(|spare| self.state.release_of(&spare));
        if let Some(spare) = &spare {
            match self.update_spare(spare, &source, &withheld, &same_in_running) {
                Ok(staged) => return Ok(staged),
                // Half-updated: it is no spare any more; a whole release is written below.
                Err(e) => tracing::warn!(spare = %spare.id(), error = %e, "could not reuse a spare release"),
            }
        }
        let wanted = self.host_files(head, true)?;
        // Every file is compared, so the running release's blobs are listed once (a lookup per
        // path costs ~0.3 ms at 10k Services, seconds in all).
        let in_running: BTreeMap<String, BlobId> = match running {
            Some(r) => self
                .store
                .list(r.commit, self.host_dir)?
                .into_iter()
                .filter(|(path, _)| !owner(path).is_some_and(|key| r.withheld.contains(&key)))
                .collect(),
            None => BTreeMap::new(),
        };
        let mut files = BTreeMap::new();
        for (rel, (path, blob)) in &wanted {
            if withheld(path) {
                continue;
            }
            let same = in_running.get(path) == Some(blob);
            files.insert(rel.clone(), source(rel, path, blob, same)?);
        }
        let count = files.len();
        Ok((self.state.write_release(self.release, &files)?, count))
    }

    /// The release made from `spare` by the difference between its commit and the new one.
    fn update_spare(
        &self,
        spare: &Release,
        source: &dyn Fn(&String, &str, &BlobId, bool) -> Result<FileSource>,
        withheld: &dyn Fn(&str) -> bool,
        same_in_running: &dyn Fn(&str, &BlobId) -> bool,
    ) -> Result<(PathBuf, usize)> {
        let head = self.release.commit;
        let mut changed = self.store.diff_dir(spare.commit, head, self.host_dir)?.changed;
        // Host-level files name the release they sit in: written into every release.
        for (path, blob) in self
            .store
            .list(head, &format!("{}/{}", self.host_dir, repo_paths::HOST_FILES_DIR))?
        {
            changed.insert(path, Some(blob));
        }
        // The files of Services withheld from either release differ between the two as well.
        let differ: BTreeSet<&ServiceKey> = spare.withheld.union(&self.release.withheld).collect();
        if !differ.is_empty() {
            for (path, blob) in self.store.list(head, self.host_dir)? {
                if owner(&path).is_some_and(|key| differ.contains(&key)) {
                    changed.insert(path, Some(blob));
                }
            }
        }
        let (mut removes, mut writes) = (Vec::new(), BTreeMap::new());
        for (path, blob) in &changed {
            let Some(rel) = self.lb.release_path(path) else {
                if blob.is_some() {
                    tracing::warn!(path = %escaped(path), %head, "not a generated file of this flavour; skipped");
                }
                continue;
            };
            match blob {
                Some(blob) if !withheld(path) => {
                    let file = source(&rel, path, blob, same_in_running(path, blob))?;
                    writes.insert(rel, file);
                }
                _ => removes.push(rel),
            }
        }
        let dir = self
            .state
            .update_release(&spare.id(), self.release, &removes, &writes)?;
        tracing::debug!(spare = %spare.id(), removed = removes.len(), written = writes.len(), "release staged from a spare");
        let count = self.store.count_files(head, self.host_dir)?;
        Ok((dir, count))
    }

    /// This host's files at `commit` that the load balancer reads: release path → (repo path,
    /// blob); other paths are skipped (with a warning when `warn`).
    fn host_files(&self, commit: CommitId, warn: bool) -> Result<BTreeMap<String, (String, BlobId)>> {
        let mut out = BTreeMap::new();
        for (path, blob) in self.store.list(commit, self.host_dir)? {
            let Some(rel) = self.lb.release_path(&path) else {
                if warn {
                    tracing::warn!(path = %escaped(&path), %commit, "not a generated file of this flavour; skipped");
                }
                continue;
            };
            out.insert(rel, (path, blob));
        }
        Ok(out)
    }

    /// A host file's text bound to the release directory it is staged in.
    fn bound(&self, rel: &str, text: String, release_dir: &std::path::Path) -> Result<FileSource> {
        let bound = render::map::bind_release(&text, release_dir).map_err(|e| anyhow!("{}: {e}", escaped(rel)))?;
        Ok(FileSource::Content(bound.into_bytes()))
    }
}
