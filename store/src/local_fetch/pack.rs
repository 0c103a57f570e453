//! The pack a local fetch writes, with its index, written here rather than by
//! libgit2's indexer. The fetch has every object in hand, read from the source and hashed once to
//! check its id; the indexer would inflate and hash each one a second time, and a zlib stream per
//! object (deflate's state is reset, 64 KiB cleared, for every 60-byte zone fragment) cost more
//! than the objects themselves: a fetch of 10,000 new fragments took ~220 ms that way (issue 19
//! item 5, `flipbit-bench dns-ratio`).
//!
//! Small objects go in as stored zlib blocks (the bytes, a 6-byte frame and a checksum: valid
//! zlib that any reader inflates), larger ones through one reused compressor. The index is
//! version 2 (gitformat-pack(5)); `git verify-pack` checks both in the tests.
//!
//! Neither file is synced, like libgit2's indexer with its default settings: the cache can
//! always be fetched again.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::{Compress, Compression, FlushCompress, Status};
use git2::{ObjectType, Oid};

use crate::packfile::{Entry, hex, index_v2};

/// Objects up to this size are stored uncompressed: zlib gains little on them and costs a
/// reset of its state per object.
const STORED_UP_TO: usize = 512;

/// A pack being written into `objects/pack` under a temporary name.
pub(crate) struct PackWriter {
    dir: PathBuf,
    out: BufWriter<tempfile::NamedTempFile>,
    /// The SHA-1 of every byte written so far: the pack's trailer.
    sha: sha1_smol::Sha1,
    offset: u64,
    /// How many entries the header announced.
    count: u32,
    entries: Vec<Entry>,
    compress: Compress,
    /// One entry's bytes, reused.
    entry: Vec<u8>,
}

fn io(what: &str) -> impl Fn(std::io::Error) -> git2::Error + '_ {
    move |e| git2::Error::from_str(&format!("{what}: {e}"))
}

impl PackWriter {
    /// A pack of exactly `count` objects in `dir` (the repository's `objects/pack`).
    pub(crate) fn create(dir: &Path, count: u32) -> Result<Self, git2::Error> {
        std::fs::create_dir_all(dir).map_err(io("creating objects/pack"))?;
        // `tmp_pack_` is the prefix `git gc` clears when a process dies mid-write.
        let file = tempfile::Builder::new()
            .prefix("tmp_pack_")
            .tempfile_in(dir)
            .map_err(io("creating a pack"))?;
        let mut pack = Self {
            dir: dir.to_owned(),
            out: BufWriter::with_capacity(1 << 20, file),
            sha: sha1_smol::Sha1::new(),
            offset: 0,
            count,
            entries: Vec::with_capacity(count as usize),
            compress: Compress::new(Compression::fast(), true),
            entry: Vec::new(),
        };
        pack.write(&crate::packfile::header(count))?;
        Ok(pack)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), git2::Error> {
        self.sha.update(bytes);
        self.out.write_all(bytes).map_err(io("writing a pack"))?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Appends `data` as the undeltified object `id` of type `kind`. The caller checked that
    /// `data` hashes to `id`.
    pub(crate) fn append(&mut self, id: Oid, kind: ObjectType, data: &[u8]) -> Result<(), git2::Error> {
        if self.entries.len() >= self.count as usize {
            return Err(git2::Error::from_str("more objects than the pack's header announced"));
        }
        let mut entry = std::mem::take(&mut self.entry);
        entry.clear();
        entry.extend_from_slice(&crate::packfile::entry_header(kind, data.len()));
        if data.len() <= STORED_UP_TO {
            zlib_stored(&mut entry, data);
        } else {
            self.deflate(&mut entry, data)?;
        }
        let offset = self.offset;
        self.write(&entry)?;
        self.entries.push(Entry {
            id,
            offset,
            crc: crc32fast::hash(&entry),
        });
        self.entry = entry;
        Ok(())
    }

    /// Appends the undeltified object `id` of type `kind` and `size` bytes whose content is
    /// already deflated: `deflated` is one whole zlib stream the caller inflated to content that
    /// hashes to `id` (an entry of the source's pack, copied as it is).
    pub(crate) fn append_deflated(
        &mut self,
        id: Oid,
        kind: ObjectType,
        size: usize,
        deflated: &[u8],
    ) -> Result<(), git2::Error> {
        if self.entries.len() >= self.count as usize {
            return Err(git2::Error::from_str("more objects than the pack's header announced"));
        }
        let header = crate::packfile::entry_header(kind, size);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        crc.update(deflated);
        let offset = self.offset;
        self.write(&header)?;
        self.write(deflated)?;
        self.entries.push(Entry {
            id,
            offset,
            crc: crc.finalize(),
        });
        Ok(())
    }

    /// `data` as one zlib stream appended to `out`, through the reused compressor.
    fn deflate(&mut self, out: &mut Vec<u8>, data: &[u8]) -> Result<(), git2::Error> {
        self.compress.reset();
        out.reserve(data.len() + data.len() / 8 + 64);
        loop {
            let read = self.compress.total_in() as usize;
            let status = self
                .compress
                .compress_vec(&data[read..], out, FlushCompress::Finish)
                .map_err(|e| git2::Error::from_str(&format!("compressing an object: {e}")))?;
            match status {
                Status::StreamEnd => return Ok(()),
                Status::Ok | Status::BufError => out.reserve(out.capacity().max(64)),
            }
        }
    }

    /// Appends the trailer, writes the index and moves both into place under the pack's name
    /// (the index last: a pack is found through its index).
    pub(crate) fn finish(mut self) -> Result<(), git2::Error> {
        if self.entries.len() != self.count as usize {
            return Err(git2::Error::from_str(&format!(
                "the pack holds {} objects, its header announced {}",
                self.entries.len(),
                self.count
            )));
        }
        let checksum = self.sha.digest().bytes();
        self.out.write_all(&checksum).map_err(io("writing a pack"))?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| io("writing a pack")(e.into_error()))?;
        self.entries
            .sort_unstable_by(|a, b| a.id.as_bytes().cmp(b.id.as_bytes()));
        let index = index_v2(&self.entries, &checksum);
        let name = format!("pack-{}", hex(&checksum));
        let mut idx = tempfile::Builder::new()
            .prefix("tmp_idx_")
            .tempfile_in(&self.dir)
            .map_err(io("creating a pack index"))?;
        idx.write_all(&index).map_err(io("writing a pack index"))?;
        file.persist(self.dir.join(format!("{name}.pack")))
            .map_err(|e| io("storing a pack")(e.error))?;
        idx.persist(self.dir.join(format!("{name}.idx")))
            .map_err(|e| io("storing a pack index")(e.error))?;
        Ok(())
    }
}

/// `data` as a zlib stream of stored (uncompressed) blocks, appended to `out` (RFC 1950/1951).
fn zlib_stored(out: &mut Vec<u8>, data: &[u8]) {
    // CMF: deflate with a 32 KiB window; FLG: no dictionary, and CMF·256 + FLG a multiple of 31.
    out.extend_from_slice(&[0x78, 0x01]);
    let mut blocks = data.chunks(0xffff).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(block) = blocks.next() {
        let last = blocks.peek().is_none();
        let len = block.len() as u16;
        out.push(u8::from(last));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
}

/// zlib's checksum (RFC 1950 §9).
fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    // The most bytes summed before `b` could overflow 32 bits.
    const NMAX: usize = 5552;
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(NMAX) {
        for &byte in chunk {
            a += u32::from(byte);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use flate2::read::ZlibDecoder;

    use super::*;

    #[test]
    fn stored_zlib_inflates_back_whatever_the_size() {
        for size in [0, 1, 60, 0xffff, 0x10000, 200_000] {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let mut z = Vec::new();
            zlib_stored(&mut z, &data);
            let mut back = Vec::new();
            ZlibDecoder::new(z.as_slice())
                .read_to_end(&mut back)
                .expect("inflate (the checksum included)");
            assert_eq!(back, data, "{size} bytes");
        }
    }

    #[test]
    fn adler32_is_zlibs() {
        // Known values (RFC 1950's algorithm, as zlib computes them).
        assert_eq!(adler32(b""), 1);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
        let long = vec![0xffu8; 100_000];
        let mut z = Vec::new();
        zlib_stored(&mut z, &long);
        let mut back = Vec::new();
        ZlibDecoder::new(z.as_slice()).read_to_end(&mut back).expect("inflate");
        assert_eq!(back.len(), long.len());
    }
}
