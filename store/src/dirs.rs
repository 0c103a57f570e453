//! Reading one directory of a commit (an LB host's `lb/<host>`): all its files, how many there
//! are, or only what changed between two commits. The applier stages a one-Service change from
//! the difference, which skips every unchanged subtree by its id, instead of listing 10,000
//! files twice.

use std::collections::BTreeMap;
use std::path::Path;

use git2::{ErrorCode, FileMode, Oid, Tree, TreeWalkMode, TreeWalkResult};

use crate::{Store, StoreError};

impl Store {
    /// Every file under `dir` at `commit`, by full repo path, with its blob id. Entries that are
    /// not plain files (symbolic links, submodules) are left out: [`Store::list_dir`] names them.
    pub fn list(&self, commit: Oid, dir: &str) -> Result<BTreeMap<String, Oid>, StoreError> {
        Ok(self.list_dir(commit, dir)?.files)
    }

    /// Every entry under `dir` at `commit`: plain files (mode 100644 or 100755) with their blob
    /// ids, and apart from them the paths of anything else. A symbolic link is a blob too (its
    /// text is the target), so a reader that took every blob would write the target's name as a
    /// file's content on one host and follow the link on another.
    pub fn list_dir(&self, commit: Oid, dir: &str) -> Result<DirListing, StoreError> {
        let mut out = DirListing::default();
        let Some(tree) = self.dir_tree(commit, dir)? else {
            return Ok(out);
        };
        tree.walk(TreeWalkMode::PreOrder, |parent, entry| {
            let path = || format!("{dir}/{parent}{}", String::from_utf8_lossy(entry.name_bytes()));
            match (entry.kind(), entry.filemode()) {
                (Some(git2::ObjectType::Tree), _) => {}
                (Some(git2::ObjectType::Blob), mode) if is_file(mode) => match entry.name() {
                    Ok(name) => {
                        out.files.insert(format!("{dir}/{parent}{name}"), entry.id());
                    }
                    Err(_) => out.not_files.push(path()),
                },
                _ => out.not_files.push(path()),
            }
            TreeWalkResult::Ok
        })
        .map_err(read_err(dir, commit))?;
        Ok(out)
    }

    /// How many files lie under `dir` at `commit` (0 when there is no such directory).
    pub fn count_files(&self, commit: Oid, dir: &str) -> Result<usize, StoreError> {
        let Some(tree) = self.dir_tree(commit, dir)? else {
            return Ok(0);
        };
        let mut count = 0;
        tree.walk(TreeWalkMode::PreOrder, |_, entry| {
            if entry.kind() == Some(git2::ObjectType::Blob) {
                count += 1;
            }
            TreeWalkResult::Ok
        })
        .map_err(read_err(dir, commit))?;
        Ok(count)
    }

    /// The files under `dir` whose content differs between `from` and `to`, by full repo path:
    /// the blob at `to`, or `None` where `to` has no such file. A directory missing from either
    /// commit counts as empty. An entry of `to` that is not a plain file (a link, a submodule)
    /// is named in `not_files` and counts as gone from `changed`.
    pub fn diff_dir(&self, from: Oid, to: Oid, dir: &str) -> Result<DirDiff, StoreError> {
        let (old, new) = (self.dir_tree(from, dir)?, self.dir_tree(to, dir)?);
        let diff = self
            .repo
            .diff_tree_to_tree(old.as_ref(), new.as_ref(), None)
            .map_err(read_err(dir, to))?;
        let mut out = DirDiff::default();
        for delta in diff.deltas() {
            let (before, after) = (delta.old_file(), delta.new_file());
            let file_mode = |mode| matches!(mode, FileMode::Blob | FileMode::BlobExecutable);
            // A type change (a file replaced by a link, say) comes as one delta: the file went.
            let blob = (after.exists() && file_mode(after.mode())).then(|| after.id());
            if after.exists() && !file_mode(after.mode()) {
                let path = after.path_bytes().map(String::from_utf8_lossy).unwrap_or_default();
                out.not_files.push(format!("{dir}/{path}"));
            }
            for path in [before.path(), after.path()].into_iter().flatten() {
                if let Some(path) = path.to_str() {
                    out.changed.insert(format!("{dir}/{path}"), blob);
                }
            }
        }
        Ok(out)
    }

    /// The tree at `dir` in `commit`; `None` when there is none (no such path, or a file).
    fn dir_tree(&self, commit: Oid, dir: &str) -> Result<Option<Tree<'_>>, StoreError> {
        let err = read_err(dir, commit);
        let root = self.repo.find_commit(commit).and_then(|c| c.tree()).map_err(err)?;
        let entry = match root.get_path(Path::new(dir)) {
            Ok(entry) => entry,
            Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(read_err(dir, commit)(e)),
        };
        Ok(entry
            .to_object(&self.repo)
            .map_err(read_err(dir, commit))?
            .into_tree()
            .ok())
    }
}

/// What [`Store::list_dir`] found under a directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirListing {
    /// Plain files by full repo path.
    pub files: BTreeMap<String, Oid>,
    /// Anything else (symbolic links, submodules, names that are not UTF-8), by path, lossily.
    pub not_files: Vec<String>,
}

/// What [`Store::diff_dir`] found between two commits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirDiff {
    /// Changed paths: the file's blob at the newer commit, `None` where it has none.
    pub changed: BTreeMap<String, Option<Oid>>,
    /// Entries of the newer commit that are not plain files.
    pub not_files: Vec<String>,
}

/// A plain file's mode: 100644 or 100755 (a link is 120000, a submodule 160000).
fn is_file(mode: i32) -> bool {
    mode == i32::from(FileMode::Blob) || mode == i32::from(FileMode::BlobExecutable)
}

fn read_err(dir: &str, commit: Oid) -> impl Fn(git2::Error) -> StoreError + '_ {
    move |error| StoreError::Read {
        what: dir.to_owned(),
        commit,
        error,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use git2::Oid;

    use crate::Store;

    /// Commits `changes` (path to content, `None` deletes) on top of `parent`.
    fn commit(store: &Store, parent: Oid, changes: &[(&str, Option<&str>)]) -> Oid {
        let blobs: Vec<(&str, Option<Oid>)> = changes
            .iter()
            .map(|(path, text)| (*path, text.map(|t| store.write_blob(t.as_bytes()).expect("blob"))))
            .collect();
        let changes: BTreeMap<&str, Option<Oid>> = blobs.into_iter().collect();
        let author = Store::signature("t", "t@localhost").expect("signature");
        store
            .commit_blobs(parent, &changes, |_| Some("change".into()), &author)
            .expect("commit")
            .expect("something changed")
            .id
    }

    #[test]
    fn the_difference_of_a_directory_names_only_its_changed_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let remote = tmp.path().join("remote.git");
        crate::tests::remote(&remote);
        let store =
            Store::open(&tmp.path().join("cache.git"), &remote.display().to_string(), "main").expect("open the cache");
        let root = store.fetch().expect("fetch").expect("main");
        let before = commit(
            &store,
            root,
            &[
                ("lb/h/a/x.conf", Some("x1")),
                ("lb/h/a/y.conf", Some("y1")),
                ("lb/h/b/z.conf", Some("z1")),
                ("lb/h2/a/x.conf", Some("x1")),
                ("ledger.yaml", Some("l1")),
            ],
        );
        let after = commit(
            &store,
            before,
            &[
                ("lb/h/a/x.conf", Some("x2")),
                ("lb/h/b/z.conf", None),
                ("lb/h/c/w.conf", Some("w1")),
                ("lb/h2/a/x.conf", Some("x2")),
                ("ledger.yaml", Some("l2")),
            ],
        );
        let id = |text: &str| Store::blob_id(text.as_bytes()).expect("blob id");

        let diff = store.diff_dir(before, after, "lb/h").expect("diff").changed;
        let want: BTreeMap<String, Option<Oid>> = [
            ("lb/h/a/x.conf", Some(id("x2"))),
            ("lb/h/b/z.conf", None),
            ("lb/h/c/w.conf", Some(id("w1"))),
        ]
        .into_iter()
        .map(|(p, b)| (p.to_owned(), b))
        .collect();
        assert_eq!(diff, want);

        // Applied to the listing before, the difference gives the listing after.
        let mut listed = store.list(before, "lb/h").expect("list");
        for (path, blob) in &diff {
            match blob {
                Some(blob) => listed.insert(path.clone(), *blob),
                None => listed.remove(path),
            };
        }
        assert_eq!(listed, store.list(after, "lb/h").expect("list"));

        assert!(store.diff_dir(after, after, "lb/h").expect("diff").changed.is_empty());
        // A directory missing on one side is empty there.
        let added = store.diff_dir(root, before, "lb/h").expect("diff").changed;
        assert_eq!(added.len(), 3);
        assert!(added.values().all(Option::is_some));
        let gone = store.diff_dir(before, root, "lb/h").expect("diff").changed;
        assert!(gone.len() == 3 && gone.values().all(Option::is_none), "{gone:?}");

        assert_eq!(store.count_files(before, "lb/h").expect("count"), 3);
        assert_eq!(store.count_files(after, "lb/h").expect("count"), 3);
        assert_eq!(store.count_files(after, "lb").expect("count"), 4);
        assert_eq!(store.count_files(after, "lb/none").expect("count"), 0);
        assert_eq!(store.count_files(after, "ledger.yaml").expect("count"), 0);
    }
}
