//! Incremental tree writing: only the trees on the paths of changed files are rebuilt; every other
//! subtree is reused by id. Directories left empty are pruned, as Git cannot hold them.

use std::collections::BTreeMap;

use git2::{FileMode, Oid, Repository, Tree};

/// Applies `changes` (path → new blob, or `None` to delete) to `base`; returns the new root tree.
pub fn update(
    repo: &Repository,
    base: Option<&Tree<'_>>,
    changes: &BTreeMap<&str, Option<Oid>>,
) -> Result<Oid, git2::Error> {
    match update_dir(repo, base, changes)? {
        Some(id) => Ok(id),
        None => repo.treebuilder(None)?.write(),
    }
}

fn update_dir(
    repo: &Repository,
    base: Option<&Tree<'_>>,
    changes: &BTreeMap<&str, Option<Oid>>,
) -> Result<Option<Oid>, git2::Error> {
    let mut builder = repo.treebuilder(base)?;
    let mut subdirs: BTreeMap<&str, BTreeMap<&str, Option<Oid>>> = BTreeMap::new();
    for (path, blob) in changes {
        match path.split_once('/') {
            Some((dir, rest)) => {
                subdirs.entry(dir).or_default().insert(rest, *blob);
            }
            None => match blob {
                Some(id) => {
                    builder.insert(path, *id, FileMode::Blob.into())?;
                }
                None => {
                    if builder.get(path)?.is_some() {
                        builder.remove(path)?;
                    }
                }
            },
        }
    }
    for (dir, sub) in subdirs {
        let existing = match builder.get(dir)? {
            Some(entry) if entry.kind() == Some(git2::ObjectType::Tree) => Some(repo.find_tree(entry.id())?),
            _ => None,
        };
        match update_dir(repo, existing.as_ref(), &sub)? {
            Some(id) => {
                builder.insert(dir, id, FileMode::Tree.into())?;
            }
            None => {
                if builder.get(dir)?.is_some() {
                    builder.remove(dir)?;
                }
            }
        }
    }
    if builder.is_empty() {
        Ok(None)
    } else {
        builder.write().map(Some)
    }
}
