//! Pushing to a bare repository on a local path without libgit2's push. libgit2 1.9 re-deflates
//! every object it sends at a fixed zlib level, on one thread, with no reuse of packed data: the
//! cold push at 50,000 Services (200,000 blobs) took 9 s of a 15.5 s cold start, the commit
//! itself 6.4 s (issue 19 item 4, `flipbit-bench scale`). Its local transport also sets the
//! remote's branch without checking that it still holds the value the push was planned against,
//! so a writer that moved the branch meanwhile lost its commit.
//!
//! Here the objects the remote lacks are found by walking the new commits (`reach.rs`) and
//! written as one pack straight into the remote's `objects/pack`, with its index. An object the
//! cache holds undeltified in a pack (every blob of a large batch: the store wrote that pack
//! itself) is copied byte for byte, its CRC-32 checked against the cache's index; anything else
//! (trees and commits, which are loose, and deltified entries of a fetched pack) is read and
//! deflated. A push of fewer than [`UNPACK_LIMIT`] objects (an everyday commit) writes them as
//! loose objects instead, as git's `receive-pack` does.
//!
//! Then the branch is moved as a compare-and-swap under git's ref lock (`refs/heads/<branch>.lock`,
//! as `git` itself takes it): a push that is no fast-forward, a branch that moved between the
//! check and the update, or a lock another writer holds is [`StoreError::Rejected`] and leaves
//! the branch as it was (the objects written stay unreferenced until git's `gc` prunes them). A
//! forced push (the review branch) sets the branch unconditionally, as libgit2's does.
//!
//! Only a plain path to a bare repository takes this way, as for `local_fetch.rs`; URLs,
//! `file://` included, non-bare repositories, and deletions go through libgit2.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};

use git2::{ErrorCode, ObjectType, Oid, Repository};

use crate::packfile::{self, Entry, Index};
use crate::{Store, StoreError};

/// Pushes of fewer objects are written as loose objects, as git's `receive-pack` does below its
/// `receive.unpackLimit` (100): a pack per everyday push of a few files would pile up in the
/// remote (libgit2's push left one each time).
const UNPACK_LIMIT: usize = 100;

/// The remote of a push to `url`, when it is a bare repository on a local path.
pub(crate) fn local_target(url: &str) -> Option<Repository> {
    crate::local_fetch::local_source(url).filter(Repository::is_bare)
}

/// What a test runs right before the branch is moved (see [`BEFORE_REF_UPDATE`]).
#[cfg(test)]
pub(crate) type RefUpdateHook = Box<dyn FnOnce(&Repository)>;

#[cfg(test)]
thread_local! {
    /// Run right before the branch is moved: lets a test move it first, as a concurrent writer.
    pub(crate) static BEFORE_REF_UPDATE: std::cell::RefCell<Option<RefUpdateHook>> = const { std::cell::RefCell::new(None) };
}

impl Store {
    /// [`Store::push_branch`] of `commit` to the bare repository `target` (see the module docs).
    pub(crate) fn push_local(
        &self,
        target: &Repository,
        branch: &str,
        commit: Oid,
        force: bool,
    ) -> Result<(), StoreError> {
        let err = |error| StoreError::Push {
            url: self.url.clone(),
            error,
        };
        let rejected = |reason: String| StoreError::Rejected {
            url: self.url.clone(),
            reason,
        };
        let name = format!("refs/heads/{branch}");
        let old = match target.find_reference(&name) {
            Ok(reference) => match reference.target() {
                Some(id) => Some(id),
                None => {
                    return Err(err(git2::Error::from_str(&format!(
                        "{name} is a symbolic reference in the remote"
                    ))));
                }
            },
            Err(e) if e.code() == ErrorCode::NotFound => None,
            Err(e) => return Err(err(e)),
        };
        if old == Some(commit) {
            return Ok(());
        }
        // libgit2's checks and messages for the same push.
        if let (Some(old), false) = (old, force) {
            if !self.repo.odb().map_err(err)?.exists(old) {
                return Err(rejected(
                    "cannot push because a reference that you are trying to update on the remote contains commits that are not present locally".into(),
                ));
            }
            if !self.repo.graph_descendant_of(commit, old).map_err(err)? {
                return Err(rejected("cannot push non-fastforwardable reference".into()));
            }
        }
        let theirs = target.odb().map_err(err)?;
        let hide: Vec<Oid> = target
            .references()
            .map_err(err)?
            .flatten()
            .filter_map(|r| r.target())
            .collect();
        let started = std::time::Instant::now();
        let objects = crate::reach::missing_objects(&self.repo, &theirs, commit, hide).map_err(err)?;
        let walked = started.elapsed();
        let written = self.send(target, &objects).map_err(err)?;
        tracing::debug!(
            objects = objects.len(),
            copied = written.copied,
            deflated = written.deflated,
            walk_ms = walked.as_millis() as u64,
            write_ms = (started.elapsed() - walked).as_millis() as u64,
            "pushed to a local path"
        );

        #[cfg(test)]
        if let Some(hook) = BEFORE_REF_UPDATE.with(|h| h.borrow_mut().take()) {
            hook(target);
        }
        let updated = if force {
            target.reference(&name, commit, true, "flipbit push")
        } else {
            // Under the ref's lock, only if the branch still holds what the checks above saw
            // (the zero id: that it still does not exist).
            target.reference_matching(&name, commit, true, old.unwrap_or(Oid::ZERO_SHA1), "flipbit push")
        };
        match updated {
            Ok(_) => Ok(()),
            Err(e) if e.code() == ErrorCode::Locked => Err(rejected(format!(
                "another writer holds the lock of {name} in the remote: {}",
                e.message()
            ))),
            Err(e) if matches!(e.code(), ErrorCode::Modified | ErrorCode::Exists) => Err(rejected(format!(
                "{name} changed in the remote during the push: {}",
                e.message()
            ))),
            Err(e) => Err(err(e)),
        }
    }

    /// Writes `objects` into `target` as one pack and its index (empty objects, which libgit2's
    /// indexer refuses in a pack when it fetches them, are written loose), or, when they are
    /// few, all as loose objects.
    fn send(&self, target: &Repository, objects: &[(Oid, ObjectType)]) -> Result<Sent, git2::Error> {
        let io = |what: &str| {
            let what = what.to_owned();
            move |e: std::io::Error| git2::Error::from_str(&format!("{what} in the remote: {e}"))
        };
        let ours = self.repo.odb()?;
        let theirs = target.odb()?;
        if objects.len() < UNPACK_LIMIT {
            // Each after everything under it: a push killed midway leaves no tree or commit
            // whose entries are missing (the next walk would skip it).
            for (id, _) in crate::reach::write_order(&self.repo, objects)? {
                let object = ours.read(id)?;
                let written = theirs.write(object.kind(), object.data())?;
                if written != id {
                    return Err(git2::Error::from_str(&format!(
                        "object {id} in the cache hashes to {written}: the cache is damaged"
                    )));
                }
            }
            return Ok(Sent {
                copied: 0,
                deflated: objects.len(),
            });
        }
        let mut indexes: Vec<Index> = std::fs::read_dir(self.repo.path().join("objects/pack"))
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "idx"))
                    .filter_map(|p| Index::open(&p))
                    .collect()
            })
            .unwrap_or_default();
        // Each object either copied from the first of the cache's packs that holds it, or
        // read through libgit2 and deflated here.
        let mut copies: Vec<Reuse> = Vec::new();
        let mut fresh: Vec<Oid> = Vec::new();
        for (id, _) in objects {
            let found = indexes.iter().enumerate().find_map(|(pack, index)| {
                let at = index.position(*id)?;
                Some(Reuse {
                    id: *id,
                    pack,
                    offset: index.offset(at)?,
                    crc: index.crc(at),
                })
            });
            match found {
                Some(copy) => copies.push(copy),
                None => fresh.push(*id),
            }
        }
        let mut packed_fresh = Vec::with_capacity(fresh.len());
        for id in fresh {
            let (len, kind) = ours.read_header(id)?;
            if len == 0 {
                theirs.write(kind, &[])?;
            } else {
                packed_fresh.push(id);
            }
        }
        let count = u32::try_from(copies.len() + packed_fresh.len())
            .map_err(|_| git2::Error::from_str("more than 2^32 objects in one push"))?;
        let mut sent = Sent::default();
        if count == 0 {
            return Ok(sent);
        }
        // Read each pack front to back.
        copies.sort_unstable_by_key(|c| (c.pack, c.offset));

        let dir = target.path().join("objects/pack");
        std::fs::create_dir_all(&dir).map_err(io("creating objects/pack"))?;
        // `tmp_pack_` is the prefix `git gc` clears when a process dies mid-write.
        let file = tempfile::Builder::new()
            .prefix("tmp_pack_")
            .tempfile_in(&dir)
            .map_err(io("creating a pack"))?;
        let mut out = PackOut {
            out: BufWriter::with_capacity(1 << 20, file),
            sha: sha1_smol::Sha1::new(),
            offset: 0,
        };
        let w = io("writing a pack");
        out.write_all(&packfile::header(count)).map_err(&w)?;
        let mut entries = Vec::with_capacity(count as usize);
        let mut entry = Vec::new();
        for id in packed_fresh {
            let object = ours.read(id)?;
            entry = packfile::deflated_entry(object.kind(), object.data(), entry).map_err(&w)?;
            entries.push(out.entry(id, &entry, crc32fast::hash(&entry)).map_err(&w)?);
            sent.deflated += 1;
        }
        let mut reader: Option<(usize, BufReader<File>, u64)> = None;
        for copy in &copies {
            let end = indexes[copy.pack].end_of(copy.offset);
            let index = &indexes[copy.pack];
            let unreadable =
                |what: &str| git2::Error::from_str(&format!("object {} in {}: {what}", copy.id, index.pack.display()));
            let end = end.ok_or_else(|| unreadable("no entry end in the index"))?;
            let len = usize::try_from(end.saturating_sub(copy.offset)).map_err(|_| unreadable("too large"))?;
            if reader.as_ref().is_none_or(|(pack, ..)| *pack != copy.pack) {
                let f = File::open(&index.pack).map_err(|e| unreadable(&e.to_string()))?;
                reader = Some((copy.pack, BufReader::with_capacity(1 << 20, f), 0));
            }
            let Some((_, r, at)) = reader.as_mut() else {
                continue;
            };
            let skip = i64::try_from(copy.offset).unwrap_or(i64::MAX) - i64::try_from(*at).unwrap_or(0);
            r.seek_relative(skip).map_err(|e| unreadable(&e.to_string()))?;
            entry.resize(len, 0);
            r.read_exact(&mut entry).map_err(|e| unreadable(&e.to_string()))?;
            *at = end;
            let kind = entry.first().map(|b| (b >> 4) & 7);
            if matches!(kind, Some(1..=4)) {
                if crc32fast::hash(&entry) != copy.crc {
                    return Err(unreadable("the entry does not match its index's CRC-32"));
                }
                entries.push(out.entry(copy.id, &entry, copy.crc).map_err(&w)?);
                sent.copied += 1;
            } else {
                // A delta against another entry: sent whole.
                let object = ours.read(copy.id)?;
                entry = packfile::deflated_entry(object.kind(), object.data(), entry).map_err(&w)?;
                entries.push(out.entry(copy.id, &entry, crc32fast::hash(&entry)).map_err(&w)?);
                sent.deflated += 1;
            }
        }
        let PackOut { out, sha, .. } = out;
        let checksum = sha.digest().bytes();
        let mut file = out.into_inner().map_err(|e| w(e.into_error()))?;
        file.write_all(&checksum).map_err(&w)?;
        file.as_file().sync_all().map_err(&w)?;
        packfile::store(&dir, file, &checksum, &mut entries).map_err(io("storing a pack"))?;
        Ok(sent)
    }
}

/// How the objects of one push were written.
#[derive(Default)]
struct Sent {
    copied: usize,
    deflated: usize,
}

/// An object to copy from one of the cache's packs.
struct Reuse {
    id: Oid,
    pack: usize,
    offset: u64,
    crc: u32,
}

/// The pack being written: hashed for its trailer, with the offset of the next entry.
struct PackOut {
    out: BufWriter<tempfile::NamedTempFile>,
    sha: sha1_smol::Sha1,
    offset: u64,
}

impl PackOut {
    /// Appends one whole entry; returns what the index lists for it.
    fn entry(&mut self, id: Oid, bytes: &[u8], crc: u32) -> std::io::Result<Entry> {
        let offset = self.offset;
        self.write_all(bytes)?;
        Ok(Entry { id, offset, crc })
    }
}

impl Write for PackOut {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(data)?;
        self.sha.update(&data[..n]);
        self.offset += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests;
