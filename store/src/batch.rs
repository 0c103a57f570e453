//! Writing many blobs at once. A first decision over 50,000 Services writes 200,000 blobs; as loose
//! objects that is 200,000 files created, each compressed and hashed on its own, and libgit2's push
//! then opens every one of them again. Past a few hundred blobs a batch streams them into one pack
//! instead (no deltas: a plain pack is valid, and the push searches deltas anyway), indexed by
//! libgit2's pack writer when the batch finishes. Small batches stay loose objects, so everyday
//! commits do not leave a pack each behind.

use std::io::{BufWriter, Read, Seek, SeekFrom, Write};

use flate2::Compression;
use flate2::write::ZlibEncoder;
use git2::{ObjectType, Oid};

use crate::{Store, StoreError};

/// Blobs kept in memory before a batch turns into a pack.
const LOOSE_LIMIT: usize = 256;

/// Blobs written through [`Store::batch`]; nothing is readable from the store before
/// [`BlobBatch::finish`].
pub struct BlobBatch<'a> {
    store: &'a Store,
    pending: Vec<(Oid, Vec<u8>)>,
    pack: Option<PackFile>,
}

struct PackFile {
    out: BufWriter<tempfile::NamedTempFile>,
    count: u32,
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
            // libgit2's indexer refuses an empty entry: the empty blob stays loose.
            Some(pack) if !text.is_empty() => pack.append(text)?,
            _ => {
                self.pending.push((id, text.to_vec()));
                if self.pack.is_none() && self.pending.len() > LOOSE_LIMIT {
                    let mut pack = PackFile::create(self.store)?;
                    for (_, text) in self.pending.iter().filter(|(_, t)| !t.is_empty()) {
                        pack.append(text)?;
                    }
                    self.pending.retain(|(_, t)| t.is_empty());
                    self.pack = Some(pack);
                }
            }
        }
        Ok(id)
    }

    /// Stores everything queued: a pack indexed into the repo, or loose objects.
    pub fn finish(self) -> Result<(), StoreError> {
        for (id, text) in &self.pending {
            let written = self.store.write_blob(text)?;
            debug_assert_eq!(written, *id);
        }
        if let Some(pack) = self.pack {
            pack.finish(self.store)?;
        }
        Ok(())
    }
}

impl PackFile {
    fn create(store: &Store) -> Result<Self, StoreError> {
        let file = tempfile::NamedTempFile::new_in(store.repo.path()).map_err(|e| io_error("creating a pack", e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        // Header: signature, version 2, object count (filled in by finish).
        out.write_all(b"PACK\0\0\0\x02\0\0\0\0")
            .map_err(|e| io_error("writing a pack", e))?;
        Ok(Self { out, count: 0 })
    }

    /// One undeltified blob entry: type and size in the variable-length header, then the
    /// zlib-compressed content.
    fn append(&mut self, text: &[u8]) -> Result<(), StoreError> {
        let header = crate::local_fetch::entry_header(ObjectType::Blob, text.len());
        let write = |out: &mut BufWriter<_>| -> std::io::Result<()> {
            out.write_all(&header)?;
            let mut z = ZlibEncoder::new(out, Compression::fast());
            z.write_all(text)?;
            z.finish()?;
            Ok(())
        };
        write(&mut self.out).map_err(|e| io_error("writing a pack", e))?;
        self.count = self
            .count
            .checked_add(1)
            .ok_or_else(|| StoreError::Write(git2::Error::from_str("more than 2^32 objects in one pack")))?;
        Ok(())
    }

    /// Fills in the count, appends the SHA-1 trailer and hands the pack to libgit2's indexer.
    fn finish(self, store: &Store) -> Result<(), StoreError> {
        let err = |e| io_error("finishing a pack", e);
        let mut file = self.out.into_inner().map_err(|e| err(e.into_error()))?;
        file.seek(SeekFrom::Start(8)).map_err(err)?;
        file.write_all(&self.count.to_be_bytes()).map_err(err)?;
        file.seek(SeekFrom::Start(0)).map_err(err)?;
        let odb = store.repo.odb().map_err(StoreError::Write)?;
        let mut writer = odb.packwriter().map_err(StoreError::Write)?;
        let mut sha = sha1_smol::Sha1::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(err)?;
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
            writer.write_all(&buf[..n]).map_err(err)?;
        }
        writer.write_all(&sha.digest().bytes()).map_err(err)?;
        writer.commit().map_err(StoreError::Write)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &std::path::Path) -> Store {
        Store::open(&dir.join("cache.git"), "unused", "main").expect("open")
    }

    fn packs(store: &Store) -> usize {
        std::fs::read_dir(store.repo.path().join("objects/pack"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
                    .count()
            })
            .unwrap_or(0)
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
        // Sizes needing three and four header bytes.
        texts.push(vec![b'x'; 5_000]);
        texts.push(vec![b'y'; 300_000]);
        let ids: Vec<Oid> = texts.iter().map(|t| batch.add(t).unwrap()).collect();
        batch.finish().unwrap();
        assert_eq!(packs(&store), 1);
        for (id, text) in ids.iter().zip(&texts) {
            assert_eq!(*id, Store::blob_id(text).unwrap());
            assert_eq!(&store.blob(*id).unwrap(), text);
        }
    }

    #[test]
    fn a_small_batch_stays_loose() {
        let tmp = tempfile::tempdir().unwrap();
        let store = store(tmp.path());
        let mut batch = store.batch();
        let id = batch.add(b"upstream a {}\n").unwrap();
        batch.finish().unwrap();
        assert_eq!(packs(&store), 0);
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
        assert_eq!(packs(&store), 0);
    }
}
