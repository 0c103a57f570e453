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
    // Without a rescan of the pack directory after every miss (libgit2's default), which most
    // lookups here are.
    missing_objects_by(from, |id| to.exists_ext(id, OdbLookupFlags::NO_REFRESH), head, hide)
}

/// [`missing_objects`], with `held` saying whether the receiver holds an object (whole: a
/// false "yes" would skip what it lacks).
pub(crate) fn missing_objects_by(
    from: &Repository,
    held: impl Fn(Oid) -> bool,
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

/// `objects` (from [`missing_objects`]) in an order to write them one by one: every object after
/// everything under it. The walk skips whatever the receiver holds with all under it, so a
/// transfer killed midway must never leave a tree or commit whose entries are missing: blobs
/// first, then trees with each subtree before the trees that hold it, then commits (a held
/// commit is only ever skipped with its tree, which is then complete).
pub(crate) fn write_order(
    from: &Repository,
    objects: &[(Oid, ObjectType)],
) -> Result<Vec<(Oid, ObjectType)>, git2::Error> {
    let trees: HashSet<Oid> = objects
        .iter()
        .filter(|(_, kind)| *kind == ObjectType::Tree)
        .map(|(id, _)| *id)
        .collect();
    let mut out: Vec<(Oid, ObjectType)> = objects
        .iter()
        .filter(|(_, kind)| *kind == ObjectType::Blob)
        .copied()
        .collect();
    let mut placed: HashSet<Oid> = HashSet::new();
    for (id, kind) in objects {
        if *kind != ObjectType::Tree || placed.contains(id) {
            continue;
        }
        // Depth first, each tree placed after its subtrees: (tree, its subtrees were pushed).
        let mut stack = vec![(*id, false)];
        while let Some((tree, expanded)) = stack.pop() {
            if placed.contains(&tree) {
                continue;
            }
            if expanded {
                placed.insert(tree);
                out.push((tree, ObjectType::Tree));
                continue;
            }
            stack.push((tree, true));
            for entry in from.find_tree(tree)?.iter() {
                if entry.kind() == Some(ObjectType::Tree)
                    && trees.contains(&entry.id())
                    && !placed.contains(&entry.id())
                {
                    stack.push((entry.id(), false));
                }
            }
        }
    }
    out.extend(
        objects
            .iter()
            .filter(|(_, kind)| *kind == ObjectType::Commit)
            .rev()
            .copied(),
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two commits sharing a subtree first reached through the newer one: the older commit's
    /// root tree, which holds it too, must still come after it.
    #[test]
    fn every_object_is_written_after_everything_under_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repository::init_bare(dir.path()).expect("repo");
        let blob = |text: &str| repo.blob(text.as_bytes()).expect("blob");
        let tree = |entries: &[(&str, Oid, i32)]| {
            let mut b = repo.treebuilder(None).expect("builder");
            for (name, id, mode) in entries {
                b.insert(name, *id, *mode).expect("insert");
            }
            b.write().expect("tree")
        };
        let shared_blob = blob("shared");
        let shared = tree(&[("f", shared_blob, 0o100644)]);
        let inner = tree(&[("s", shared, 0o040000)]);
        let old_root = tree(&[("s", shared, 0o040000), ("a", blob("a"), 0o100644)]);
        let new_root = tree(&[("i", inner, 0o040000), ("s2", shared, 0o040000)]);
        let sig = git2::Signature::new("t", "t@example.test", &git2::Time::new(0, 0)).expect("sig");
        let old = repo
            .commit(None, &sig, &sig, "old", &repo.find_tree(old_root).expect("tree"), &[])
            .expect("commit");
        let parent = repo.find_commit(old).expect("commit");
        let new = repo
            .commit(
                None,
                &sig,
                &sig,
                "new",
                &repo.find_tree(new_root).expect("tree"),
                &[&parent],
            )
            .expect("commit");
        let receiver = tempfile::tempdir().expect("tempdir");
        let to = Repository::init_bare(receiver.path()).expect("repo");
        let objects = missing_objects(&repo, &to.odb().expect("odb"), new, []).expect("walk");
        let order = write_order(&repo, &objects).expect("order");
        assert_eq!(order.len(), objects.len(), "every object once");
        let at = |id: Oid| order.iter().position(|(o, _)| *o == id).expect("listed");
        for (id, kind) in &order {
            let under: Vec<Oid> = match kind {
                ObjectType::Tree => repo.find_tree(*id).expect("tree").iter().map(|e| e.id()).collect(),
                ObjectType::Commit => vec![repo.find_commit(*id).expect("commit").tree_id()],
                _ => vec![],
            };
            for child in under {
                assert!(at(child) < at(*id), "{child} comes after {id}, which holds it");
            }
        }
    }
}
