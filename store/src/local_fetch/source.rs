//! The source's packs read in place, for a local fetch. Reading each new object through libgit2
//! inflated it through a fresh zlib stream after a lookup in every pack, and the fetch then
//! compressed it again for its own pack: ~45 % of the fetch of 10,000 new zone fragments
//! (issue 19 item 5). Here an entry that is not a delta is found through the source's own index,
//! inflated once through one reused stream to hash it, and its compressed bytes are copied into
//! the new pack as they are.
//!
//! The source is untrusted: its index only says where to look. What is copied is exactly what
//! was inflated and hashed (the entry's header is written anew from the type and size that
//! inflated), and the caller refuses an object that does not hash to its id. Anything this
//! reader cannot take whole (a delta, a loose object, an index it does not read, an entry whose
//! zlib stream does not end where the next entry begins) is left to libgit2.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use flate2::{Decompress, FlushDecompress, Status};
use git2::{ObjectType, Oid};

use crate::packfile::Index;

/// Bytes read from a pack at a time: entries are read in pack order, so one read serves many.
const WINDOW: usize = 1 << 20;

/// The largest object inflated here; larger ones go through libgit2.
const LARGEST: usize = 64 << 20;

/// An undeltified object read from a source pack, inflated and ready to hash.
pub(crate) struct Packed<'a> {
    pub(crate) kind: ObjectType,
    /// The content, inflated.
    pub(crate) data: &'a [u8],
    /// The content as the pack holds it: one whole zlib stream that inflates to `data`.
    pub(crate) deflated: &'a [u8],
}

/// Where an object's entry lies: which pack, and the offset in it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Location {
    pack: usize,
    offset: u64,
}

struct Pack {
    index: Index,
    file: File,
    len: u64,
    /// Bytes of the pack from `window_at`.
    window: Vec<u8>,
    window_at: u64,
}

/// The source repository's packs with a version 2 index.
pub(crate) struct SourcePacks {
    packs: Vec<Pack>,
    inflate: Decompress,
    data: Vec<u8>,
}

impl SourcePacks {
    /// The packs under `objects` (the source's `objects` directory); none when it has none.
    pub(crate) fn open(objects: &Path) -> Self {
        let mut idx: Vec<std::path::PathBuf> = std::fs::read_dir(objects.join("pack"))
            .map(|dir| dir.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        idx.retain(|p| p.extension().is_some_and(|x| x == "idx"));
        // Newest first, as libgit2 searches: recent objects are in recent packs.
        idx.sort_by_cached_key(|p| std::cmp::Reverse(std::fs::metadata(p).and_then(|m| m.modified()).ok()));
        let packs = idx
            .iter()
            .filter_map(|path| {
                let index = Index::open(path)?;
                let file = File::open(&index.pack).ok()?;
                let len = file.metadata().ok()?.len();
                Some(Pack {
                    index,
                    file,
                    len,
                    window: Vec::new(),
                    window_at: 0,
                })
            })
            .collect();
        Self {
            packs,
            inflate: Decompress::new(true),
            data: Vec::new(),
        }
    }

    /// Where `id`'s entry is, when a pack's index lists it.
    pub(crate) fn locate(&self, id: Oid) -> Option<Location> {
        self.packs.iter().enumerate().find_map(|(pack, p)| {
            let position = p.index.position(id)?;
            Some(Location {
                pack,
                offset: p.index.offset(position)?,
            })
        })
    }

    /// The object at `at`, when it is an undeltified entry whose zlib stream ends where the
    /// entry does; `None` leaves it to libgit2.
    pub(crate) fn read(&mut self, at: Location) -> Option<Packed<'_>> {
        let pack = self.packs.get_mut(at.pack)?;
        let end = pack.index.end_of(at.offset)?;
        let len = usize::try_from(end.checked_sub(at.offset)?).ok()?;
        let entry = pack.bytes(at.offset, len)?;
        let (kind, size, header) = entry_header(entry)?;
        if size > LARGEST {
            return None;
        }
        let deflated = &entry[header..];
        self.data.clear();
        self.data.reserve(size);
        self.inflate.reset(true);
        let status = self
            .inflate
            .decompress_vec(deflated, &mut self.data, FlushDecompress::Finish)
            .ok()?;
        let whole =
            status == Status::StreamEnd && self.inflate.total_in() == deflated.len() as u64 && self.data.len() == size;
        whole.then_some(Packed {
            kind,
            data: &self.data,
            deflated,
        })
    }
}

impl Pack {
    /// `len` bytes of the pack from `offset`, through the window.
    fn bytes(&mut self, offset: u64, len: usize) -> Option<&[u8]> {
        let end = offset.checked_add(len as u64)?;
        if end > self.len {
            return None;
        }
        let covered = offset >= self.window_at && end <= self.window_at + self.window.len() as u64;
        if !covered {
            let want = usize::try_from((self.len - offset).min(WINDOW.max(len) as u64)).ok()?;
            self.window.resize(want, 0);
            self.file.read_exact_at(&mut self.window, offset).ok()?;
            self.window_at = offset;
        }
        let from = usize::try_from(offset - self.window_at).ok()?;
        self.window.get(from..from + len)
    }
}

/// An entry's type and size and the length of its header; `None` for a delta (or a header that
/// does not parse).
fn entry_header(entry: &[u8]) -> Option<(ObjectType, usize, usize)> {
    let first = *entry.first()?;
    let kind = match (first >> 4) & 7 {
        1 => ObjectType::Commit,
        2 => ObjectType::Tree,
        3 => ObjectType::Blob,
        4 => ObjectType::Tag,
        _ => return None,
    };
    let mut size = usize::from(first & 0x0f);
    let mut shift = 4;
    let mut used = 1;
    let mut byte = first;
    while byte & 0x80 != 0 {
        byte = *entry.get(used)?;
        used += 1;
        if shift > 56 {
            return None;
        }
        size |= usize::from(byte & 0x7f) << shift;
        shift += 7;
    }
    Some((kind, size, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_headers_read_back_as_written() {
        for (kind, size) in [
            (ObjectType::Blob, 0),
            (ObjectType::Blob, 15),
            (ObjectType::Tree, 16),
            (ObjectType::Commit, 302),
            (ObjectType::Blob, 1 << 30),
        ] {
            let header = crate::packfile::entry_header(kind, size);
            assert_eq!(entry_header(&header), Some((kind, size, header.len())));
        }
        // An offset delta, a reference delta, a header cut short.
        assert_eq!(entry_header(&[0x65]), None);
        assert_eq!(entry_header(&[0x75]), None);
        assert_eq!(entry_header(&[0xb5]), None);
    }
}
