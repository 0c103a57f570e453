//! Fetching from a repository on a local path without libgit2's local transport. That transport
//! builds a pack in-process with a delta search over every new object, and hands it to the
//! indexer in pieces of one object header or body each; the indexer unmaps its pack windows
//! before every piece. A commit changing 10,000 zone fragments took ~450 ms to fetch that way,
//! over half of it in delta search and in `munmap` (issue 19 item 5, `flipbit-bench dns-ratio`).
//!
//! Here the new objects are found by walking the new commits and their trees, skipping every
//! tree and blob the cache already holds (a tree the cache holds comes with everything under
//! it: the cache only ever receives whole commits), and copied whole, without deltas. Each is
//! read from the source once and hashed, and the fetch stops at one whose content does not hash
//! to its id: the state repo is untrusted input, and nothing downstream hashes again (reads are
//! not re-hashed, see `tune_libgit2`). A few objects are written loose; more go into one pack
//! and index written here (`pack.rs`), not by libgit2's indexer, which would inflate and hash
//! each object a second time. Only plain paths take this way; URLs, `file://` included, use
//! libgit2.

use std::path::Path;

use git2::{ErrorCode, ObjectType, Odb, Oid, Repository};

use crate::{Store, StoreError, tracking_ref};

mod held;
mod pack;
mod source;
use held::Held;
use pack::PackWriter;
use source::{Location, SourcePacks};

/// The source of a fetch from `url`, when it is a local path holding a repository.
pub(crate) fn local_source(url: &str) -> Option<Repository> {
    if url.contains("://") || url.is_empty() {
        return None;
    }
    let path = Path::new(url);
    if !path.is_dir() {
        return None;
    }
    Repository::open_ext(path, git2::RepositoryOpenFlags::NO_SEARCH, std::iter::empty::<&str>()).ok()
}

impl Store {
    /// [`Store::fetch_branch`] from the repository `source` (see the module docs).
    pub(crate) fn fetch_local(&self, source: &Repository, branch: &str) -> Result<Option<Oid>, StoreError> {
        let err = |error| StoreError::Fetch {
            url: self.url.clone(),
            branch: branch.to_owned(),
            error,
        };
        let head = match source.find_reference(&format!("refs/heads/{branch}")) {
            Ok(reference) => reference.peel_to_commit().map_err(err)?.id(),
            Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        let ours = self.repo.odb().map_err(err)?;
        if !ours.exists(head) {
            let objects = self.new_objects(source, head).map_err(err)?;
            self.copy_objects(source, &objects).map_err(err)?;
        }
        self.repo
            .reference(&tracking_ref(branch), head, true, "fetch")
            .map_err(err)?;
        Ok(Some(head))
    }

    /// The objects reachable from `head` in `source` that the cache does not hold: commits the
    /// cache's references name are not walked again, with their history and trees.
    fn new_objects(&self, source: &Repository, head: Oid) -> Result<Vec<(Oid, ObjectType)>, git2::Error> {
        let held = Held::of(&self.repo.path().join("objects"));
        let held_commits: Vec<Oid> = self.repo.references()?.flatten().filter_map(|r| r.target()).collect();
        crate::reach::missing_objects_by(source, |id| held.contains(id), head, held_commits)
    }

    /// Copies `objects` from `source` into the cache: each is read once and hashed, and one whose
    /// content does not hash to its id is refused (the source is as untrusted as any remote).
    /// A few are written loose, as git does under `fetch.unpackLimit`, so a fetch of one changed
    /// file does not leave a pack behind; more go into one pack ([`PackWriter`]).
    fn copy_objects(&self, source: &Repository, objects: &[(Oid, ObjectType)]) -> Result<(), git2::Error> {
        let theirs = source.odb()?;
        let ours = self.repo.odb()?;
        if objects.len() < UNPACK_LIMIT {
            // Each after everything under it: a fetch killed midway leaves no commit or tree
            // whose entries are missing (the next fetch would skip it).
            for (id, kind) in crate::reach::write_order(source, objects)? {
                let object = read_as(&theirs, id, kind)?;
                let written = ours.write(kind, object.data())?;
                if written != id {
                    return Err(mismatch(id, kind, written));
                }
            }
            return Ok(());
        }
        // An empty object stays loose (libgit2 reads no zero-length pack entry). Only the empty
        // object of its type hashes to that id, so the pack's count is known before any read.
        let empty: Vec<(ObjectType, Oid)> = [ObjectType::Commit, ObjectType::Tree, ObjectType::Blob]
            .into_iter()
            .map(|kind| Oid::hash_object(kind, &[]).map(|id| (kind, id)))
            .collect::<Result<_, _>>()?;
        let is_empty = |id: Oid, kind: ObjectType| empty.contains(&(kind, id));
        let packed = objects.iter().filter(|(id, kind)| !is_empty(*id, *kind)).count();
        let count = u32::try_from(packed).map_err(|_| git2::Error::from_str("more than 2^32 objects"))?;
        let mut pack = (count > 0)
            .then(|| PackWriter::create(&self.repo.path().join("objects/pack"), count))
            .transpose()?;
        // Undeltified entries of the source's packs are copied as they are, once hashed; in the
        // order they lie there, so the reads go forward through each pack.
        let mut packs = SourcePacks::open(&source.path().join("objects"));
        let mut located: Vec<(Option<Location>, Oid, ObjectType)> = objects
            .iter()
            .map(|&(id, kind)| ((!is_empty(id, kind)).then(|| packs.locate(id)).flatten(), id, kind))
            .collect();
        located.sort_by_key(|(at, _, _)| *at);
        for (at, id, kind) in located {
            if let (Some(at), Some(pack)) = (at, &mut pack)
                && let Some(packed) = packs.read(at)
            {
                if packed.kind != kind {
                    return Err(git2::Error::from_str(&format!(
                        "object {id} is a {}, not a {kind}",
                        packed.kind
                    )));
                }
                let hashed = Oid::hash_object(kind, packed.data)?;
                if hashed != id {
                    return Err(mismatch(id, kind, hashed));
                }
                pack.append_deflated(id, kind, packed.data.len(), packed.deflated)?;
                continue;
            }
            let object = read_as(&theirs, id, kind)?;
            let data = object.data();
            let hashed = Oid::hash_object(kind, data)?;
            if hashed != id {
                return Err(mismatch(id, kind, hashed));
            }
            match &mut pack {
                Some(pack) if !is_empty(id, kind) => pack.append(id, kind, data)?,
                _ => {
                    ours.write(kind, data)?;
                }
            }
        }
        if let Some(pack) = pack {
            pack.finish()?;
            ours.refresh()?;
        }
        Ok(())
    }
}

/// Fewer objects than this are written loose (git's default `fetch.unpackLimit`).
const UNPACK_LIMIT: usize = 100;

/// Object `id` of `odb`, which must be a `kind`.
fn read_as<'o>(odb: &'o Odb<'_>, id: Oid, kind: ObjectType) -> Result<git2::OdbObject<'o>, git2::Error> {
    let object = odb.read(id)?;
    if object.kind() != kind {
        return Err(git2::Error::from_str(&format!(
            "object {id} is a {}, not a {kind}",
            object.kind()
        )));
    }
    Ok(object)
}

fn mismatch(id: Oid, kind: ObjectType, hashed: Oid) -> git2::Error {
    git2::Error::from_str(&format!(
        "the {kind} stored as {id} hashes to {hashed}: the repository is corrupt or was tampered with; the fetch stopped and the branch was not updated"
    ))
}

#[cfg(test)]
mod tests {
    use git2::{Repository, Signature};

    use super::*;

    /// Commits `files` (path in the root tree → content) on `main` of `repo`.
    fn commit(repo: &Repository, files: &[(&str, &[u8])]) -> Oid {
        let sig = Signature::now("t", "t@localhost").expect("signature");
        let parent = repo
            .refname_to_id("refs/heads/main")
            .ok()
            .map(|id| repo.find_commit(id).expect("parent"));
        let base = parent.as_ref().map(|p| p.tree().expect("tree"));
        let mut root = repo.treebuilder(base.as_ref()).expect("builder");
        let mut sub = repo.treebuilder(None).expect("builder");
        for (path, text) in files {
            let blob = repo.blob(text).expect("blob");
            match path.split_once('/') {
                Some((_, name)) => sub.insert(name, blob, 0o100644).expect("insert"),
                None => root.insert(path, blob, 0o100644).expect("insert"),
            };
        }
        if !sub.is_empty() {
            root.insert("dns", sub.write().expect("tree"), 0o040000).expect("dir");
        }
        let tree = repo.find_tree(root.write().expect("tree")).expect("tree");
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        repo.commit(Some("refs/heads/main"), &sig, &sig, "c", &tree, &parents)
            .expect("commit")
    }

    /// Every file of `commit` in `store` reads back as in `source`.
    fn same_files(store: &Store, source: &Repository, commit: Oid) {
        let tree = source.find_commit(commit).expect("commit").tree().expect("tree");
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            if entry.kind() == Some(ObjectType::Blob) {
                let path = format!("{dir}{}", entry.name().expect("name"));
                let want = source.find_blob(entry.id()).expect("blob").content().to_vec();
                assert_eq!(store.read(commit, &path).expect("read"), Some(want), "{path}");
            }
            git2::TreeWalkResult::Ok
        })
        .expect("walk");
    }

    #[test]
    fn a_local_fetch_copies_only_what_the_cache_lacks_and_every_file_reads_back() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("remote.git");
        let source = Repository::init_bare(&path).expect("init");
        let url = path.display().to_string();
        assert!(local_source(&url).is_some());
        assert!(
            local_source(&format!("file://{url}")).is_none(),
            "URLs go through libgit2"
        );
        let many: Vec<(String, Vec<u8>)> = (0..300)
            .map(|i| {
                (
                    format!("dns/svc{i}"),
                    format!("svc{i}.example.test. 300 IN A 127.0.0.{}\n", i % 250).into_bytes(),
                )
            })
            .collect();
        let files: Vec<(&str, &[u8])> = many.iter().map(|(p, t)| (p.as_str(), t.as_slice())).collect();
        let first = commit(&source, &files);
        let store = Store::open(&tmp.path().join("cache.git"), &url, "main").expect("open");
        assert_eq!(store.fetch().expect("fetch"), Some(first));
        same_files(&store, &source, first);
        // The pack and index written for it are what git itself accepts.
        let packs = verify_packs(&store);
        assert_eq!(packs, 1, "300 files come in one pack");

        // A change, an empty file (kept loose: the indexer refuses empty entries) and a large one.
        let big = "x".repeat(100_000);
        let second = commit(
            &source,
            &[("dns/svc7", b"changed\n"), ("empty", b""), ("big", big.as_bytes())],
        );
        assert_eq!(store.fetch().expect("fetch"), Some(second));
        same_files(&store, &source, second);
        assert!(store.descends_from(second, first).expect("history"));
        assert_eq!(verify_packs(&store), 1, "a fetch of a few objects leaves no pack");
        // Nothing new: the head again.
        assert_eq!(store.fetch().expect("fetch"), Some(second));
        assert_eq!(store.fetch_branch("other").expect("fetch"), None);
    }

    /// Runs `git verify-pack` on every pack of `store`; returns how many there are.
    fn verify_packs(store: &Store) -> usize {
        let dir = store.repo.path().join("objects/pack");
        let idx: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "idx"))
            .collect();
        for path in &idx {
            let run = std::process::Command::new("git")
                .args(["verify-pack", "-v"])
                .arg(path)
                .output()
                .expect("run git verify-pack");
            assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        }
        let fsck = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(store.repo.path())
            .args(["fsck", "--full", "--no-dangling"])
            .output()
            .expect("run git fsck");
        assert!(fsck.status.success(), "{}", String::from_utf8_lossy(&fsck.stderr));
        idx.len()
    }

    /// A source whose object `wanted` holds other content (its loose file copied from another
    /// object's): a tampered or corrupt repository.
    fn tampered(source: &Repository, fillers: usize) -> Oid {
        let other = source.blob(b"other content\n").expect("blob");
        let wanted = Oid::hash_object(ObjectType::Blob, b"wanted content\n").expect("hash");
        let loose = |id: Oid| {
            let hex = id.to_string();
            source.path().join("objects").join(&hex[..2]).join(&hex[2..])
        };
        let to = loose(wanted);
        std::fs::create_dir_all(to.parent().expect("object dir")).expect("object dir");
        std::fs::copy(loose(other), &to).expect("copy the object file");
        let mut files: Vec<(String, Vec<u8>)> = (0..fillers)
            .map(|i| (format!("dns/f{i}"), format!("filler {i}\n").into_bytes()))
            .collect();
        files.push(("ok".into(), b"ok\n".to_vec()));
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(p, t)| (p.as_str(), t.as_slice())).collect();
        let head = commit(source, &refs);
        // Point `bad` at the tampered object.
        let sig = Signature::now("t", "t@localhost").expect("signature");
        let parent = source.find_commit(head).expect("commit");
        let mut root = source
            .treebuilder(Some(&parent.tree().expect("tree")))
            .expect("builder");
        root.insert("bad", wanted, 0o100644).expect("insert");
        let tree = source.find_tree(root.write().expect("tree")).expect("tree");
        source
            .commit(Some("refs/heads/main"), &sig, &sig, "bad", &tree, &[&parent])
            .expect("commit")
    }

    /// The tampered object of [`tampered`] moved from its loose file into a pack of its own,
    /// which the fetch reads in place.
    fn tampered_in_a_pack(source: &Repository, fillers: usize) {
        tampered(source, fillers);
        let wanted = Oid::hash_object(ObjectType::Blob, b"wanted content\n").expect("hash");
        let mut pack = PackWriter::create(&source.path().join("objects/pack"), 1).expect("pack");
        pack.append(wanted, ObjectType::Blob, b"other content\n")
            .expect("append");
        pack.finish().expect("finish");
        let hex = wanted.to_string();
        std::fs::remove_file(source.path().join("objects").join(&hex[..2]).join(&hex[2..])).expect("remove");
    }

    #[test]
    fn a_packed_object_whose_content_does_not_hash_to_its_id_stops_the_fetch() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("remote.git");
        let source = Repository::init_bare(&path).expect("init");
        let store = Store::open(&tmp.path().join("cache.git"), &path.display().to_string(), "main").expect("open");
        tampered_in_a_pack(&source, 300);
        let err = store.fetch().expect_err("a tampered object is refused").to_string();
        assert!(err.contains("hashes to"), "{err}");
        assert!(
            store.repo.refname_to_id(&tracking_ref("main")).is_err(),
            "the branch was not updated"
        );
    }

    /// A source whose objects git packed with deltas: those go through libgit2, the rest are
    /// copied from the packs as they are, and everything reads back.
    #[test]
    fn a_fetch_from_a_repacked_source_with_deltas_reads_back() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("remote.git");
        let source = Repository::init_bare(&path).expect("init");
        let url = path.display().to_string();
        let files = |round: usize| -> Vec<(String, Vec<u8>)> {
            (0..200)
                .map(|i| {
                    let mut text = format!("svc{i}.example.test. 300 IN A 127.0.0.{}\n", i % 250).repeat(20);
                    text.push_str(&format!("round {round}\n"));
                    (format!("dns/svc{i}"), text.into_bytes())
                })
                .collect()
        };
        let mut heads = Vec::new();
        for round in 0..3 {
            let many = files(round);
            let refs: Vec<(&str, &[u8])> = many.iter().map(|(p, t)| (p.as_str(), t.as_slice())).collect();
            heads.push(commit(&source, &refs));
        }
        let repack = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(&path)
            .args(["repack", "-adf", "--window=50", "-q"])
            .output()
            .expect("run git repack");
        assert!(repack.status.success(), "{}", String::from_utf8_lossy(&repack.stderr));
        let store = Store::open(&tmp.path().join("cache.git"), &url, "main").expect("open");
        assert_eq!(store.fetch().expect("fetch"), heads.last().copied());
        for head in &heads {
            same_files(&store, &source, *head);
        }
        verify_packs(&store);
    }

    #[test]
    fn an_object_whose_content_does_not_hash_to_its_id_stops_the_fetch() {
        // A few objects (written loose) and many (written into a pack).
        for fillers in [0, 300] {
            let tmp = tempfile::tempdir().expect("tempdir");
            let path = tmp.path().join("remote.git");
            let source = Repository::init_bare(&path).expect("init");
            let store = Store::open(&tmp.path().join("cache.git"), &path.display().to_string(), "main").expect("open");
            tampered(&source, fillers);
            let err = store.fetch().expect_err("a tampered object is refused").to_string();
            assert!(err.contains("hashes to"), "{fillers}: {err}");
            assert!(
                store.repo.refname_to_id(&tracking_ref("main")).is_err(),
                "{fillers}: the branch was not updated"
            );
        }
    }
}
