//! Reading history: which commits the generator has not looked at yet, and what each changed. A
//! generator commit is made on top of the head it decided from, so every commit in its history
//! was looked at; the rest (reverts, hand edits, merges of a review branch) are new.

use std::collections::BTreeSet;

use git2::{Oid, Sort};

use crate::{Store, StoreError};

/// The parts of a commit the generator needs to judge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitMeta {
    pub id: Oid,
    pub parents: Vec<Oid>,
    pub committer_email: String,
    /// First line of the message (for logs and Events only: it is never written to a file).
    pub summary: String,
}

impl Store {
    fn meta(&self, id: Oid) -> Result<CommitMeta, StoreError> {
        let c = self.repo.find_commit(id).map_err(|error| StoreError::Read {
            what: "commit".into(),
            commit: id,
            error,
        })?;
        Ok(CommitMeta {
            id,
            parents: c.parent_ids().collect(),
            committer_email: String::from_utf8_lossy(c.committer().email_bytes()).into_owned(),
            summary: String::from_utf8_lossy(c.summary_bytes().unwrap_or_default()).into_owned(),
        })
    }

    /// When `id` was committed (the committer's time, Unix seconds): the applier's metrics say how
    /// old the commit it serves is, which a timestamp of the apply alone cannot.
    pub fn commit_time(&self, id: Oid) -> Result<i64, StoreError> {
        let c = self.repo.find_commit(id).map_err(|error| StoreError::Read {
            what: "commit".into(),
            commit: id,
            error,
        })?;
        Ok(c.committer().when().seconds())
    }

    /// Commits reachable from `head` that are in the history of no commit `ours` accepts, oldest
    /// first (parents before children). `None` when no commit reachable from `head` is ours.
    pub fn commits_since_ours(
        &self,
        head: Oid,
        ours: impl Fn(&CommitMeta) -> bool,
    ) -> Result<Option<Vec<CommitMeta>>, StoreError> {
        let err = |error| StoreError::Read {
            what: "history".into(),
            commit: head,
            error,
        };
        let walk_from = |sorting: Sort, hidden: &[Oid]| -> Result<git2::Revwalk<'_>, StoreError> {
            let mut walk = self.repo.revwalk().map_err(err)?;
            walk.set_sorting(sorting).map_err(err)?;
            walk.push(head).map_err(err)?;
            for id in hidden {
                walk.hide(*id).map_err(err)?;
            }
            Ok(walk)
        };
        // Hide each commit of ours as it turns up and walk again, until a walk meets none: what is
        // left is exactly what no commit of ours has in its history. These walks are unsorted, so
        // libgit2 reads commits only as far as it yields them (a topological walk reads the whole
        // history first, every cycle: with a long-lived repo that grows without bound).
        // The usual case, the head is ours: nothing new, one commit read.
        if ours(&self.meta(head)?) {
            return Ok(Some(Vec::new()));
        }
        let mut hidden: Vec<Oid> = Vec::new();
        loop {
            let mut found = None;
            for id in walk_from(Sort::NONE, &hidden)? {
                let meta = self.meta(id.map_err(err)?)?;
                if ours(&meta) {
                    found = Some(meta.id);
                    break;
                }
            }
            match found {
                Some(id) => hidden.push(id),
                None => break,
            }
        }
        if hidden.is_empty() {
            return Ok(None);
        }
        // The rest, bounded by our commits, in order: parents before children.
        let mut others = Vec::new();
        for id in walk_from(Sort::TOPOLOGICAL | Sort::TIME | Sort::REVERSE, &hidden)? {
            others.push(self.meta(id.map_err(err)?)?);
        }
        Ok(Some(others))
    }

    /// Paths (files, full repo paths) whose content in `commit` differs from every parent's: what
    /// the commit itself changed, not what a merge brought in from one side. Empty for a root commit.
    pub fn changed_by(&self, commit: &CommitMeta) -> Result<BTreeSet<String>, StoreError> {
        let err = |error| StoreError::Read {
            what: "changes".into(),
            commit: commit.id,
            error,
        };
        let tree = self.repo.find_commit(commit.id).and_then(|c| c.tree()).map_err(err)?;
        let mut common: Option<BTreeSet<String>> = None;
        for parent in &commit.parents {
            let parent_tree = self.repo.find_commit(*parent).and_then(|c| c.tree()).map_err(err)?;
            let diff = self
                .repo
                .diff_tree_to_tree(Some(&parent_tree), Some(&tree), None)
                .map_err(err)?;
            let paths: BTreeSet<String> = diff
                .deltas()
                .filter_map(|d| d.new_file().path().or_else(|| d.old_file().path()))
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            common = Some(match common {
                None => paths,
                Some(c) => c.intersection(&paths).cloned().collect(),
            });
        }
        Ok(common.unwrap_or_default())
    }
}
