//! Which objects one repository must receive from another: the walk both local transfers need
//! (a push to a local path, `local_push.rs`, and a fetch from one, `local_fetch.rs`, with the
//! roles swapped).
//!
//! The new commits are walked from the head, hiding every commit the receiver's references
//! name; each new commit's tree is walked, skipping every tree and blob the receiver already
//! holds. A tree the receiver holds counts as held with everything under it: a repository only
//! ever receives whole commits (a pushed pack, a fetched pack, git's quarantined receive), so a
//! tree never arrives without its entries.

use std::collections::HashSet;

use git2::{ObjectType, Odb, OdbLookupFlags, Oid, Repository};

/// The objects reachable from `head` in `from` that `to` lacks, commits first, then for each
/// commit its new trees and blobs. `hide` are commits `to` holds (its references' targets);
/// those `from` lacks are skipped.
pub(crate) fn missing_objects(
    from: &Repository,
    to: &Odb<'_>,
    head: Oid,
    hide: impl IntoIterator<Item = Oid>,
) -> Result<Vec<(Oid, ObjectType)>, git2::Error> {
    let ours = from.odb()?;
    let mut walk = from.revwalk()?;
    walk.push(head)?;
    for id in hide {
        if ours.exists(id) {
            // Not a commit (a tag's target, say): nothing to hide.
            let _ = walk.hide(id);
        }
    }
    // Without a rescan of the pack directory after every miss (libgit2's default), which most
    // lookups here are.
    let held = |id: Oid| to.exists_ext(id, OdbLookupFlags::NO_REFRESH);
    let mut seen: HashSet<Oid> = HashSet::new();
    let mut out = Vec::new();
    for commit in walk {
        let commit = from.find_commit(commit?)?;
        if held(commit.id()) {
            continue;
        }
        out.push((commit.id(), ObjectType::Commit));
        let mut trees = vec![commit.tree_id()];
        while let Some(tree) = trees.pop() {
            if !seen.insert(tree) || held(tree) {
                continue;
            }
            out.push((tree, ObjectType::Tree));
            for entry in from.find_tree(tree)?.iter() {
                let id = entry.id();
                match entry.kind() {
                    Some(ObjectType::Tree) => trees.push(id),
                    Some(ObjectType::Blob) if seen.insert(id) && !held(id) => out.push((id, ObjectType::Blob)),
                    // A submodule's commit is not in this repository.
                    _ => {}
                }
            }
        }
    }
    Ok(out)
}
