//! Writing many blobs at once. A first decision over 50,000 Services writes 200,000 blobs; as loose
//! objects that is 200,000 files created, each compressed and hashed on its own, and libgit2's push
//! then opens every one of them again. Past a few hundred blobs a batch streams them into one pack
//! instead (undeltified entries: a plain pack is valid, and pushes carry no deltas anyway). Small
//! batches stay loose objects, so everyday commits do not leave a pack each behind.
//!
//! The pack and its index are written here, not by libgit2's indexer: the batch already knows
//! every object's id, offset and checksum, and the indexer would inflate and SHA-1 every blob a
//! second time (about a fifth of the cold commit at 50,000 Services). Compressing and writing run
//! on a second thread while the caller renders the next file; ids are computed on the caller's
//! thread, as it needs them at once. `git verify-pack` checks the result in the tests.

use std::collections::HashSet;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use git2::{ObjectType, Oid};

use crate::packfile::{self, Entry};
use crate::{Store, StoreError};

/// Blobs kept in memory before a batch turns into a pack.
const LOOSE_LIMIT: usize = 256;

/// Blobs handed to the compressing thread and not yet written: enough to ride out a slow file,
/// few enough that the queue holds well under a megabyte of text.
const QUEUE: usize = 256;

/// Blobs written through [`Store::batch`]; nothing is readable from the store before
/// [`BlobBatch::finish`].
pub struct BlobBatch<'a> {
    store: &'a Store,
    pending: Vec<(Oid, Vec<u8>)>,
    pack: Option<PackFile>,
}

/// A pack being written by its thread.
struct PackFile {
    /// `None` once the thread was told to finish.
    queue: Option<SyncSender<Vec<u8>>>,
    writer: Option<JoinHandle<std::io::Result<Written>>>,
    /// Ids in the order their blobs were queued (the thread writes them in the same order).
    ids: Vec<Oid>,
    /// The same blob twice is written once.
    seen: HashSet<Oid>,
}

/// What the writing thread hands back: the file and, per blob in order, its offset and checksum.
struct Written {
    file: tempfile::NamedTempFile,
    entries: Vec<(u64, u32)>,
}

fn io_error(what: &str, e: std::io::Error) -> StoreError {
    StoreError::Write(git2::Error::from_str(&format!("{what}: {e}")))
}

impl Store {
    /// A batch of blob writes (see the module docs).
    pub fn batch(&self) -> BlobBatch<'_> {
        BlobBatch {
            store: self,
            pending: Vec::new(),
            pack: None,
        }
    }
}

impl BlobBatch<'_> {
    /// Queues `text`; returns its blob id.
    pub fn add(&mut self, text: &[u8]) -> Result<Oid, StoreError> {
        let id = Store::blob_id(text)?;
        match &mut self.pack {
            // The empty blob stays loose (a zero-length entry is a corner no reader needs).
            Some(pack) if !text.is_empty() => pack.append(id, text.to_vec())?,
            _ => {
                self.pending.push((id, text.to_vec()));
                if self.pack.is_none() && self.pending.len() > LOOSE_LIMIT {
                    let mut pack = PackFile::create(self.store)?;
                    for (id, text) in std::mem::take(&mut self.pending) {
                        if text.is_empty() {
                            self.pending.push((id, text));
                        } else {
                            pack.append(id, text)?;
                        }
                    }
                    self.pack = Some(pack);
                }
            }
        }
        Ok(id)
    }

    /// Stores everything queued: a pack and its index in the repo, or loose objects.
    pub fn finish(mut self) -> Result<(), StoreError> {
        for (id, text) in &self.pending {
            let written = self.store.write_blob(text)?;
            debug_assert_eq!(written, *id);
        }
        if let Some(pack) = self.pack.take() {
            pack.finish(self.store)?;
        }
        Ok(())
    }
}

impl PackFile {
    fn create(store: &Store) -> Result<Self, StoreError> {
        let dir = store.repo.path().join("objects/pack");
        std::fs::create_dir_all(&dir).map_err(|e| io_error("creating objects/pack", e))?;
        // `tmp_pack_` is the prefix `git gc` clears when a process dies mid-write.
        let file = tempfile::Builder::new()
            .prefix("tmp_pack_")
            .tempfile_in(&dir)
            .map_err(|e| io_error("creating a pack", e))?;
        let (queue, blobs) = sync_channel(QUEUE);
        let writer = std::thread::Builder::new()
            .name("flipbit-pack".into())
            .spawn(move || write_entries(file, blobs))
            .map_err(|e| io_error("starting the pack writer", e))?;
        Ok(Self {
            queue: Some(queue),
            writer: Some(writer),
            ids: Vec::new(),
            seen: HashSet::new(),
        })
    }

    fn append(&mut self, id: Oid, text: Vec<u8>) -> Result<(), StoreError> {
        if !self.seen.insert(id) {
            return Ok(());
        }
        if u32::try_from(self.ids.len()).is_err() {
            return Err(StoreError::Write(git2::Error::from_str(
                "more than 2^32 objects in one pack",
            )));
        }
        let sent = self.queue.as_ref().is_some_and(|q| q.send(text).is_ok());
        if !sent {
            // The thread stopped: its error says why.
            return Err(self
                .join()
                .err()
                .unwrap_or_else(|| StoreError::Write(git2::Error::from_str("the pack writer stopped early"))));
        }
        self.ids.push(id);
        Ok(())
    }

    /// Tells the thread there is nothing more and waits for it.
    fn join(&mut self) -> Result<Written, StoreError> {
        self.queue = None;
        let writer = self
            .writer
            .take()
            .ok_or_else(|| StoreError::Write(git2::Error::from_str("the pack writer was already joined")))?;
        match writer.join() {
            Ok(result) => result.map_err(|e| io_error("writing a pack", e)),
            Err(_) => Err(StoreError::Write(git2::Error::from_str("the pack writer panicked"))),
        }
    }

    /// Fills in the count, appends the SHA-1 trailer, writes the index, and moves both into
    /// `objects/pack` (the index last: a pack is found through its index).
    fn finish(mut self, store: &Store) -> Result<(), StoreError> {
        let Written { file, entries } = self.join()?;
        let err = |e| io_error("finishing a pack", e);
        let count = u32::try_from(entries.len())
            .map_err(|_| StoreError::Write(git2::Error::from_str("more than 2^32 objects in one pack")))?;
        let mut f = file.as_file();
        f.seek(SeekFrom::Start(8)).map_err(err)?;
        f.write_all(&count.to_be_bytes()).map_err(err)?;
        f.seek(SeekFrom::Start(0)).map_err(err)?;
        let mut sha = sha1_smol::Sha1::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(err)?;
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
        }
        let checksum = sha.digest().bytes();
        f.write_all(&checksum).map_err(err)?;
        f.sync_all().map_err(err)?;

        let mut objects: Vec<Entry> = self
            .ids
            .iter()
            .zip(entries)
            .map(|(id, (offset, crc))| Entry { id: *id, offset, crc })
            .collect();
        let dir = store.repo.path().join("objects/pack");
        packfile::store(&dir, file, &checksum, &mut objects).map_err(|e| io_error("storing a pack", e))?;
        store
            .repo
            .odb()
            .and_then(|odb| odb.refresh())
            .map_err(StoreError::Write)
    }
}

impl Drop for PackFile {
    /// A batch dropped unfinished: the thread stops and its temporary file goes with it.
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = self.join();
        }
    }
}

/// The writing thread: the pack header (its count filled in by `finish`), then each blob as an
/// undeltified entry: type and size in the variable-length header, then the zlib-compressed
/// content. Returns each entry's offset and the CRC-32 of its bytes, in order.
fn write_entries(file: tempfile::NamedTempFile, blobs: Receiver<Vec<u8>>) -> std::io::Result<Written> {
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&packfile::header(0))?;
    let mut offset: u64 = 12;
    let mut entries = Vec::new();
    let mut entry = Vec::new();
    for text in blobs {
        entry = packfile::deflated_entry(ObjectType::Blob, &text, entry)?;
        out.write_all(&entry)?;
        entries.push((offset, crc32fast::hash(&entry)));
        offset += entry.len() as u64;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    Ok(Written { file, entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &std::path::Path) -> Store {
        Store::open(&dir.join("cache.git"), "unused", "main").expect("open")
    }

    fn packs(store: &Store) -> Vec<std::path::PathBuf> {
        std::fs::read_dir(store.repo.path().join("objects/pack"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "pack"))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn a_large_batch_becomes_one_pack_and_every_blob_reads_back() {
        let tmp = tempfile::tempdir().unwrap();
        let store = store(tmp.path());
        let mut batch = store.batch();
        // Sizes around the header's 4-bit and 7-bit boundaries, and an empty blob.
        let mut texts: Vec<Vec<u8>> = (0..LOOSE_LIMIT + 50)
            .map(|i| {
                format!("server 127.0.0.{}:{};\n", i % 250, 30000 + i)
                    .repeat(i % 40)
                    .into_bytes()
            })
            .collect();
        // Sizes needing three and four header bytes, and the same blob twice.
        texts.push(vec![b'x'; 5_000]);
        texts.push(vec![b'y'; 300_000]);
        texts.push(vec![b'x'; 5_000]);
        let ids: Vec<Oid> = texts.iter().map(|t| batch.add(t).unwrap()).collect();
        batch.finish().unwrap();
        let packs = packs(&store);
        assert_eq!(packs.len(), 1);
        for (id, text) in ids.iter().zip(&texts) {
            assert_eq!(*id, Store::blob_id(text).unwrap());
            assert_eq!(&store.blob(*id).unwrap(), text);
        }
        // Git itself accepts the pack and the index (checksums, CRCs, offsets, sorted ids) and
        // finds each blob once.
        let idx = packs[0].with_extension("idx");
        let run = std::process::Command::new("git")
            .args(["verify-pack", "-v"])
            .arg(&idx)
            .output()
            .expect("run git verify-pack");
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let listed = String::from_utf8_lossy(&run.stdout);
        let distinct: HashSet<&Oid> = ids.iter().filter(|id| **id != Store::blob_id(b"").unwrap()).collect();
        assert_eq!(
            listed.lines().filter(|l| l.contains(" blob ")).count(),
            distinct.len(),
            "{listed}"
        );
    }

    #[test]
    fn a_small_batch_stays_loose() {
        let tmp = tempfile::tempdir().unwrap();
        let store = store(tmp.path());
        let mut batch = store.batch();
        let id = batch.add(b"upstream a {}\n").unwrap();
        batch.finish().unwrap();
        assert!(packs(&store).is_empty());
        assert_eq!(store.blob(id).unwrap(), b"upstream a {}\n");
    }

    #[test]
    fn nothing_is_stored_before_finish() {
        let tmp = tempfile::tempdir().unwrap();
        let store = store(tmp.path());
        let mut batch = store.batch();
        let ids: Vec<Oid> = (0..LOOSE_LIMIT + 2)
            .map(|i| batch.add(format!("{i}").as_bytes()).unwrap())
            .collect();
        drop(batch);
        assert!(store.blob(ids[0]).is_err());
        let left = std::fs::read_dir(store.repo.path().join("objects/pack"))
            .unwrap()
            .count();
        assert_eq!(left, 0, "the temporary pack was removed");
    }
}
