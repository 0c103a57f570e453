//! The store's own push to a plain path: what the remote holds afterwards, and what a moved or
//! locked branch does to it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use git2::{Oid, Repository, Signature};

use crate::tests::{commit_and_push, fsck, remote, snippets, verify_packs};
use crate::{Store, StoreError};

fn author() -> Signature<'static> {
    Store::signature("flipbit-generator", "flipbit-generator@localhost").expect("signature")
}

/// Commits `files` and `deletes` through the store on top of `parent`, the blobs through a batch
/// (one pack past 256 of them, loose objects below); returns the commit.
fn commit(store: &Store, parent: Oid, files: &[(String, Vec<u8>)], deletes: &[&str]) -> Oid {
    let mut batch = store.batch();
    let ids: Vec<Oid> = files.iter().map(|(_, text)| batch.add(text).expect("add")).collect();
    batch.finish().expect("finish the batch");
    let mut changes: BTreeMap<&str, Option<Oid>> = files
        .iter()
        .zip(ids)
        .map(|((p, _), id)| (p.as_str(), Some(id)))
        .collect();
    for path in deletes {
        changes.insert(path, None);
    }
    store
        .commit_blobs(parent, &changes, |_| Some("change".into()), &author())
        .expect("commit")
        .expect("something changed")
        .id
}

/// A commit on `main` made in `repo` itself, as another writer would; returns it.
fn commit_in(repo: &Repository, path: &str, text: &[u8]) -> Oid {
    let sig = Signature::now("other", "other@localhost").expect("signature");
    let parent = repo
        .find_commit(repo.refname_to_id("refs/heads/main").expect("main"))
        .expect("commit");
    let mut tree = repo.treebuilder(Some(&parent.tree().expect("tree"))).expect("builder");
    tree.insert(path, repo.blob(text).expect("blob"), 0o100644)
        .expect("insert");
    let tree = repo.find_tree(tree.write().expect("tree")).expect("tree");
    repo.commit(Some("refs/heads/main"), &sig, &sig, "by hand", &tree, &[&parent])
        .expect("commit")
}

/// Every one of `files` reads back at `commit` through a fresh cache fetching the remote at
/// `path` over libgit2's transport (a `file://` URL), and through a `git clone --no-local`
/// (git's upload-pack reads every object, and the clone checks connectivity).
fn reads_back(path: &Path, commit: Oid, files: &[(String, Vec<u8>)]) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", path.display());
    let reader = Store::open(&tmp.path().join("reader.git"), &url, "main").expect("open a reader");
    assert_eq!(reader.fetch().expect("fetch"), Some(commit));
    for (file, text) in files {
        assert_eq!(reader.read(commit, file).expect("read").as_ref(), Some(text), "{file}");
    }
    let clone = tmp.path().join("clone");
    let run = Command::new("git")
        .args(["clone", "--quiet", "--no-local", "--branch", "main"])
        .arg(path)
        .arg(&clone)
        .output()
        .expect("run git clone");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    for (file, text) in files {
        assert_eq!(&std::fs::read(clone.join(file)).expect("a cloned file"), text, "{file}");
    }
}

/// A remote with one commit on `main` at a plain path, and a cache pushing to it.
fn setup() -> (tempfile::TempDir, PathBuf, Repository, Store) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let remote_path = tmp.path().join("remote.git");
    let repo = remote(&remote_path);
    let url = remote_path.display().to_string();
    let store = Store::open(&tmp.path().join("cache.git"), &url, "main").expect("open the cache");
    (tmp, remote_path, repo, store)
}

fn main_of(repo: &Repository) -> Oid {
    repo.refname_to_id("refs/heads/main").expect("main")
}

#[test]
fn a_local_push_is_one_pack_that_git_and_libgit2_read_back() {
    let (_tmp, remote_path, repo, store) = setup();
    let pushed = commit_and_push(&store);
    assert_eq!(main_of(&repo), pushed);
    fsck(&remote_path);
    let listed = verify_packs(&remote_path);
    assert!(!listed.contains("chain length"), "{listed}");
    // One pack and its index, read-only as git leaves them; nothing temporary left behind.
    let mut names: Vec<String> = std::fs::read_dir(remote_path.join("objects/pack"))
        .expect("the remote's pack dir")
        .map(|e| e.expect("entry"))
        .inspect(|e| assert!(e.metadata().expect("metadata").permissions().readonly()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[0].starts_with("pack-") && names[0].ends_with(".idx"), "{names:?}");
    reads_back(&remote_path, pushed, &snippets());
    // The cache tracks what it pushed; the same push again changes nothing.
    assert_eq!(
        store.repo.refname_to_id("refs/remotes/origin/main").expect("tracking"),
        pushed
    );
    store.push(pushed).expect("the same push again");
    assert_eq!(main_of(&repo), pushed);
}

/// The batch's blobs are copied from the cache's pack as they are; only the trees and the
/// commit (loose in the cache) are deflated again.
#[test]
fn packed_blobs_are_copied_not_compressed_again() {
    let (_tmp, remote_path, repo, store) = setup();
    let head = store.fetch().expect("fetch").expect("main");
    let files = snippets();
    let top = commit(&store, head, &files, &[]);
    let theirs = repo.odb().expect("odb");
    let objects = crate::reach::missing_objects(&store.repo, &theirs, top, [head]).expect("walk");
    let sent = store.send(&repo, &objects).expect("send");
    // 300 blobs; the commit, the root and lb, lb/lb-1, lb/lb-1/ns trees.
    assert_eq!((sent.copied, sent.deflated), (files.len(), 5));
    assert_eq!(objects.len(), files.len() + 5);
    verify_packs(&remote_path);
}

/// Another writer moves the branch after the push checked it and before it moves it: the push
/// is rejected, the other writer's commit stays, and the next decision builds on it.
#[test]
fn a_branch_moved_during_the_push_rejects_it_and_loses_nothing() {
    let (_tmp, remote_path, repo, store) = setup();
    let head = store.fetch().expect("fetch").expect("main");
    let ours = commit(&store, head, &snippets(), &[]);
    let theirs = std::rc::Rc::new(std::cell::Cell::new(None));
    let moved = theirs.clone();
    super::BEFORE_REF_UPDATE.with(|hook| {
        *hook.borrow_mut() = Some(Box::new(move |remote: &Repository| {
            moved.set(Some(commit_in(remote, "holds.yaml", b"holds: []\n")));
        }));
    });
    let err = store.push(ours).expect_err("the push overwrote a concurrent writer");
    let theirs = theirs.get().expect("the hook ran");
    assert!(matches!(err, StoreError::Rejected { .. }), "{err}");
    assert!(
        err.to_string().contains("changed in the remote during the push"),
        "{err}"
    );
    assert_eq!(main_of(&repo), theirs, "the other writer's commit is the branch");
    fsck(&remote_path);

    // Fetch and decide again: the new commit builds on the other writer's.
    assert_eq!(store.fetch().expect("fetch"), Some(theirs));
    let again = commit(&store, theirs, &snippets(), &[]);
    store.push(again).expect("push after fetching");
    assert_eq!(main_of(&repo), again);
    assert!(repo.graph_descendant_of(again, theirs).expect("history"));
    fsck(&remote_path);
    let mut files = snippets();
    files.push(("holds.yaml".into(), b"holds: []\n".to_vec()));
    reads_back(&remote_path, again, &files);
}

/// A push that is no fast-forward, over a branch holding a commit the cache lacks, or while
/// another writer holds the branch's lock is rejected and leaves the branch as it was.
#[test]
fn a_push_that_would_lose_a_commit_is_rejected() {
    let (_tmp, remote_path, repo, store) = setup();
    let head = store.fetch().expect("fetch").expect("main");
    let file = |text: &str| vec![("ledger.yaml".to_owned(), text.as_bytes().to_vec())];
    let a = commit(&store, head, &file("a\n"), &[]);
    let b = commit(&store, head, &file("b\n"), &[]);
    store.push(a).expect("push a");
    // A few objects arrive loose, as git's receive-pack leaves them: no pack per everyday push.
    assert!(verify_packs(&remote_path).is_empty(), "a pack for a commit of one file");
    let rejected = |err: StoreError, says: &str| {
        assert!(matches!(err, StoreError::Rejected { .. }), "{err}");
        assert!(err.to_string().contains(says), "{err}");
    };
    rejected(store.push(b).expect_err("b is no fast-forward"), "non-fastforwardable");
    assert_eq!(main_of(&repo), a);

    let lock = remote_path.join("refs/heads/main.lock");
    std::fs::write(&lock, "").expect("take the lock");
    let c = commit(&store, a, &file("c\n"), &[]);
    rejected(store.push(c).expect_err("the branch is locked"), "holds the lock");
    assert_eq!(main_of(&repo), a);
    assert!(lock.exists(), "the other writer's lock stays");
    std::fs::remove_file(&lock).expect("release the lock");

    let by_hand = commit_in(&repo, "holds.yaml", b"holds: []\n");
    rejected(
        store.push(c).expect_err("the cache lacks the branch's commit"),
        "not present locally",
    );
    assert_eq!(main_of(&repo), by_hand);
    fsck(&remote_path);
}

/// The remote is several commits behind (each with packed or loose blobs, one deleting a file),
/// and holds a branch whose commit the cache never saw: the push sends every commit in between,
/// and the remote ends complete.
#[test]
fn a_remote_several_commits_behind_ends_complete() {
    let (_tmp, remote_path, repo, store) = setup();
    let head = store.fetch().expect("fetch").expect("main");
    let elsewhere = commit_in(&repo, "other.yaml", b"x\n");
    repo.reference("refs/heads/other", elsewhere, true, "test")
        .expect("other");
    repo.reference("refs/heads/main", head, true, "test")
        .expect("main back");

    let mut files = snippets();
    let first = commit(&store, head, &files, &[]);
    let changed = ("lb/lb-1/ns/svc-007.conf".to_owned(), b"upstream changed {}\n".to_vec());
    let second = commit(&store, first, std::slice::from_ref(&changed), &[]);
    let more: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| {
            (
                format!("dns/example.test/ns/svc-{i:03}.zone"),
                format!("svc-{i:03} 300 IN A 127.0.0.{}\n", i % 250).into_bytes(),
            )
        })
        .collect();
    let third = commit(&store, second, &more, &["lb/lb-1/ns/svc-000.conf"]);
    store.push(third).expect("push");
    assert_eq!(main_of(&repo), third);
    fsck(&remote_path);

    files.retain(|(p, _)| p != "lb/lb-1/ns/svc-000.conf" && *p != changed.0);
    files.push(changed);
    files.extend(more);
    files.push(("flipbit.yaml".into(), b"zone: example.test\n".to_vec()));
    reads_back(&remote_path, third, &files);
    for commit in [first, second] {
        assert!(repo.graph_descendant_of(third, commit).expect("history"));
    }
}

/// A cache whose objects git repacked with deltas (as `git gc` does): the deltified entries are
/// sent whole, and the remote gets no delta.
#[test]
fn a_deltified_cache_pack_is_sent_whole() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let first = tmp.path().join("first.git");
    remote(&first);
    let cache = tmp.path().join("cache.git");
    let store = Store::open(&cache, &first.display().to_string(), "main").expect("open the cache");
    let pushed = commit_and_push(&store);
    drop(store);
    // The cache's own settings keep git from deltifying (`push_without_deltas`): lifted here.
    let run = Command::new("git")
        .arg("--git-dir")
        .arg(&cache)
        .args(["-c", "core.bigFileThreshold=512m", "-c", "pack.deltaCacheSize=256m"])
        .args(["repack", "-a", "-d", "-f", "-q", "--window=50"])
        .output()
        .expect("run git repack");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(verify_packs(&cache).contains("chain length"), "git made no delta");

    let second = tmp.path().join("second.git");
    let repo = Repository::init_bare(&second).expect("init");
    let store = Store::open(&cache, &second.display().to_string(), "main").expect("open the cache");
    store.push(pushed).expect("push");
    assert_eq!(main_of(&repo), pushed);
    fsck(&second);
    assert!(!verify_packs(&second).contains("chain length"));
    let mut files = snippets();
    files.push(("flipbit.yaml".into(), b"zone: example.test\n".to_vec()));
    reads_back(&second, pushed, &files);
}
