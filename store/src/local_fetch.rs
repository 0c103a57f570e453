//! Fetching from a repository on a local path without libgit2's local transport. That transport
//! builds a pack in-process with a delta search over every new object, and hands it to the
//! indexer in pieces of one object header or body each; the indexer unmaps its pack windows
//! before every piece. A commit changing 10,000 zone fragments took ~450 ms to fetch that way,
//! over half of it in delta search and in `munmap` (issue 19 item 5, `flipbit-bench dns-ratio`).
//!
//! Here the new objects are found by walking the new commits and their trees, skipping every
//! tree and blob the cache already holds (a tree the cache holds comes with everything under
//! it: the cache only ever receives whole commits), and copied whole, without deltas, into one
//! pack that libgit2's indexer receives in large pieces and checks (it hashes every object, and
//! the pack's trailer). Only plain paths take this way; URLs, `file://` included, use libgit2.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use flate2::Compression;
use flate2::write::ZlibEncoder;
use git2::{ErrorCode, ObjectType, Odb, OdbLookupFlags, Oid, Repository};

use crate::{Store, StoreError, tracking_ref};

/// Bytes handed to the indexer at once.
const CHUNK: usize = 1 << 20;

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

    /// The objects reachable from `head` in `source` that the cache does not hold.
    fn new_objects(&self, source: &Repository, head: Oid) -> Result<Vec<(Oid, ObjectType)>, git2::Error> {
        let ours = self.repo.odb()?;
        let theirs = source.odb()?;
        let mut walk = source.revwalk()?;
        walk.push(head)?;
        // Commits the cache holds, with their history and trees: not walked again.
        for reference in self.repo.references()?.flatten() {
            if let Some(id) = reference.target()
                && theirs.exists(id)
            {
                let _ = walk.hide(id);
            }
        }
        // Without a rescan of the pack directory after every miss (libgit2's default), which
        // most lookups here are.
        let held = |odb: &Odb<'_>, id: Oid| odb.exists_ext(id, OdbLookupFlags::NO_REFRESH);
        let mut seen: HashSet<Oid> = HashSet::new();
        let mut out = Vec::new();
        for commit in walk {
            let commit = source.find_commit(commit?)?;
            if held(&ours, commit.id()) {
                continue;
            }
            out.push((commit.id(), ObjectType::Commit));
            let mut trees = vec![commit.tree_id()];
            while let Some(tree) = trees.pop() {
                if held(&ours, tree) || !seen.insert(tree) {
                    continue;
                }
                out.push((tree, ObjectType::Tree));
                for entry in source.find_tree(tree)?.iter() {
                    let id = entry.id();
                    match entry.kind() {
                        Some(ObjectType::Tree) => trees.push(id),
                        Some(ObjectType::Blob) if !held(&ours, id) && seen.insert(id) => {
                            out.push((id, ObjectType::Blob));
                        }
                        // A submodule's commit is not in this repository.
                        _ => {}
                    }
                }
            }
        }
        Ok(out)
    }

    /// Copies `objects` from `source` into one pack of the cache (an empty object, which the
    /// indexer refuses in a pack, is written loose).
    fn copy_objects(&self, source: &Repository, objects: &[(Oid, ObjectType)]) -> Result<(), git2::Error> {
        let theirs = source.odb()?;
        let ours = self.repo.odb()?;
        let mut packed = Vec::with_capacity(objects.len());
        for (id, kind) in objects {
            let object = theirs.read(*id)?;
            if object.kind() != *kind {
                return Err(git2::Error::from_str(&format!(
                    "object {id} is a {}, not a {kind}",
                    object.kind()
                )));
            }
            if object.len() == 0 {
                ours.write(*kind, &[])?;
            } else {
                packed.push(*id);
            }
        }
        if packed.is_empty() {
            return Ok(());
        }
        let count = u32::try_from(packed.len()).map_err(|_| git2::Error::from_str("more than 2^32 objects"))?;
        let io = |e: std::io::Error| git2::Error::from_str(&format!("writing the fetched pack: {e}"));
        let mut pack = Hashed {
            out: ours.packwriter()?,
            sha: sha1_smol::Sha1::new(),
            buf: Vec::with_capacity(CHUNK + (64 << 10)),
        };
        pack.write_all(b"PACK\0\0\0\x02").map_err(io)?;
        pack.write_all(&count.to_be_bytes()).map_err(io)?;
        for id in &packed {
            let object = theirs.read(*id)?;
            let data = object.data();
            pack.write_all(&entry_header(object.kind(), data.len())).map_err(io)?;
            let mut z = ZlibEncoder::new(&mut pack, Compression::fast());
            z.write_all(data).map_err(io)?;
            z.finish().map_err(io)?;
        }
        pack.flush().map_err(io)?;
        let Hashed { mut out, sha, .. } = pack;
        out.write_all(&sha.digest().bytes()).map_err(io)?;
        out.commit()?;
        Ok(())
    }
}

/// A pack entry's header: the type and the size in the variable-length form.
pub(crate) fn entry_header(kind: ObjectType, size: usize) -> Vec<u8> {
    let mut size = size;
    let mut header = Vec::with_capacity(10);
    let mut byte = ((kind.raw() as u8) << 4) | (size & 0x0f) as u8;
    size >>= 4;
    while size > 0 {
        header.push(byte | 0x80);
        byte = (size & 0x7f) as u8;
        size >>= 7;
    }
    header.push(byte);
    header
}

/// The pack as it goes to the indexer: hashed for its trailer, passed on in [`CHUNK`]s.
struct Hashed<W: Write> {
    out: W,
    sha: sha1_smol::Sha1,
    buf: Vec<u8>,
}

impl<W: Write> Write for Hashed<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.sha.update(data);
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        self.out.flush()
    }
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

        // A change, an empty file (kept loose: the indexer refuses empty entries) and a large one.
        let big = "x".repeat(100_000);
        let second = commit(
            &source,
            &[("dns/svc7", b"changed\n"), ("empty", b""), ("big", big.as_bytes())],
        );
        assert_eq!(store.fetch().expect("fetch"), Some(second));
        same_files(&store, &source, second);
        assert!(store.descends_from(second, first).expect("history"));
        // Nothing new: the head again.
        assert_eq!(store.fetch().expect("fetch"), Some(second));
        assert_eq!(store.fetch_branch("other").expect("fetch"), None);
    }
}
