//! Pack files written by the store itself (a batch's blobs, `batch.rs`; a push to a local path,
//! `local_push.rs`): undeltified entries, a version 2 index, and both moved into `objects/pack`
//! the way git leaves them. Reading a pack's index, to copy entries verbatim, is here too.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::ZlibEncoder;
use git2::{ObjectType, Oid};

/// One object of a pack: what its index lists.
pub(crate) struct Entry {
    pub(crate) id: Oid,
    pub(crate) offset: u64,
    pub(crate) crc: u32,
}

/// The 12-byte header of a version 2 pack holding `count` objects.
pub(crate) fn header(count: u32) -> [u8; 12] {
    let mut out = *b"PACK\0\0\0\x02\0\0\0\0";
    out[8..].copy_from_slice(&count.to_be_bytes());
    out
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

/// An undeltified entry for an object into `entry` (cleared first, returned for reuse): its
/// header, then the content deflated at zlib's fastest level.
pub(crate) fn deflated_entry(kind: ObjectType, data: &[u8], mut entry: Vec<u8>) -> std::io::Result<Vec<u8>> {
    entry.clear();
    entry.extend_from_slice(&entry_header(kind, data.len()));
    let mut z = ZlibEncoder::new(entry, Compression::fast());
    z.write_all(data)?;
    z.finish()
}

/// Moves a finished pack (`pack`: its trailer written and synced) and an index of `objects`
/// into the repository's pack directory `dir`, read-only as git leaves them; the index goes
/// last, since a pack is found through its index.
pub(crate) fn store(
    dir: &Path,
    pack: tempfile::NamedTempFile,
    checksum: &[u8; 20],
    objects: &mut [Entry],
) -> std::io::Result<PathBuf> {
    objects.sort_unstable_by(|a, b| a.id.as_bytes().cmp(b.id.as_bytes()));
    let index = index_v2(objects, checksum);
    let name = format!("pack-{}", hex(checksum));
    let mut idx = tempfile::Builder::new().prefix("tmp_idx_").tempfile_in(dir)?;
    idx.write_all(&index)?;
    idx.as_file().sync_all()?;
    let read_only = |f: &std::fs::File| {
        let mut perms = f.metadata()?.permissions();
        perms.set_readonly(true);
        f.set_permissions(perms)
    };
    read_only(pack.as_file())?;
    read_only(idx.as_file())?;
    let stored = dir.join(format!("{name}.pack"));
    pack.persist(&stored).map_err(|e| e.error)?;
    idx.persist(dir.join(format!("{name}.idx"))).map_err(|e| e.error)?;
    Ok(stored)
}

/// A version 2 pack index (gitformat-pack(5)): fan-out table, sorted ids, CRC-32s, 31-bit
/// offsets (larger ones point into a table of 64-bit offsets), the pack's checksum and the
/// index's own. `objects` are sorted by id.
pub(crate) fn index_v2(objects: &[Entry], pack_checksum: &[u8; 20]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 256 * 4 + objects.len() * 28 + 40);
    out.extend_from_slice(IDX_V2);
    let mut fanout = [0u32; 256];
    for o in objects {
        fanout[usize::from(o.id.as_bytes()[0])] += 1;
    }
    let mut total = 0u32;
    for n in fanout {
        total += n;
        out.extend_from_slice(&total.to_be_bytes());
    }
    for o in objects {
        out.extend_from_slice(o.id.as_bytes());
    }
    for o in objects {
        out.extend_from_slice(&o.crc.to_be_bytes());
    }
    let mut large = Vec::new();
    for o in objects {
        match u32::try_from(o.offset) {
            Ok(small) if small < 0x8000_0000 => out.extend_from_slice(&small.to_be_bytes()),
            _ => {
                let at = 0x8000_0000u32 | large.len() as u32;
                out.extend_from_slice(&at.to_be_bytes());
                large.push(o.offset);
            }
        }
    }
    for offset in large {
        out.extend_from_slice(&offset.to_be_bytes());
    }
    out.extend_from_slice(pack_checksum);
    let own = sha1_smol::Sha1::from(&out).digest().bytes();
    out.extend_from_slice(&own);
    out
}

const IDX_V2: &[u8; 8] = b"\xfftOc\0\0\0\x02";

/// A version 2 index read back, to find where an object's entry lies in its pack.
pub(crate) struct Index {
    bytes: Vec<u8>,
    count: usize,
    /// Every entry's offset, sorted, then where the trailer starts: an entry ends where the
    /// next begins. Built on first use.
    bounds: Option<Vec<u64>>,
    /// The pack this index describes.
    pub(crate) pack: PathBuf,
    pack_len: u64,
}

impl Index {
    /// The index at `idx` and its pack; `None` for anything but a well-formed version 2 index
    /// beside its pack (an older version, a pack still being written).
    pub(crate) fn open(idx: &Path) -> Option<Self> {
        let bytes = std::fs::read(idx).ok()?;
        if bytes.len() < 8 + 1024 + 40 || &bytes[..8] != IDX_V2 {
            return None;
        }
        let count = be32(&bytes, 8 + 255 * 4) as usize;
        if bytes.len() < 8 + 1024 + count * 28 + 40 {
            return None;
        }
        let pack = idx.with_extension("pack");
        let pack_len = std::fs::metadata(&pack).ok()?.len();
        Some(Self {
            bytes,
            count,
            bounds: None,
            pack,
            pack_len,
        })
    }

    /// Where `id` is in the index's sorted ids.
    pub(crate) fn position(&self, id: Oid) -> Option<usize> {
        let first = usize::from(id.as_bytes()[0]);
        let fan = |i: usize| be32(&self.bytes, 8 + i * 4) as usize;
        let (lo, hi) = (if first == 0 { 0 } else { fan(first - 1) }, fan(first));
        let ids = 8 + 1024;
        let (mut lo, mut hi) = (lo, hi.min(self.count));
        while lo < hi {
            let mid = (lo + hi) / 2;
            let at = ids + mid * 20;
            match self.bytes[at..at + 20].cmp(id.as_bytes()) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    pub(crate) fn crc(&self, position: usize) -> u32 {
        be32(&self.bytes, 8 + 1024 + self.count * 20 + position * 4)
    }

    pub(crate) fn offset(&self, position: usize) -> Option<u64> {
        let small = 8 + 1024 + self.count * 24;
        let word = be32(&self.bytes, small + position * 4);
        if word & 0x8000_0000 == 0 {
            return Some(u64::from(word));
        }
        let at = small + self.count * 4 + (word & 0x7fff_ffff) as usize * 8;
        let bytes = self.bytes.get(at..at + 8)?;
        Some(u64::from_be_bytes(bytes.try_into().ok()?))
    }

    /// Where the entry starting at `offset` ends.
    pub(crate) fn end_of(&mut self, offset: u64) -> Option<u64> {
        if self.bounds.is_none() {
            let mut bounds: Vec<u64> = (0..self.count).filter_map(|p| self.offset(p)).collect();
            bounds.push(self.pack_len.checked_sub(20)?);
            bounds.sort_unstable();
            self.bounds = Some(bounds);
        }
        let bounds = self.bounds.as_ref()?;
        let next = bounds.partition_point(|b| *b <= offset);
        bounds.get(next).copied()
    }
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(word)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offsets past 2 GiB go through the index's table of 64-bit offsets, and read back.
    #[test]
    fn large_offsets_are_indexed_in_the_64_bit_table() {
        let at = |byte: u8, offset: u64| Entry {
            id: Oid::from_bytes(&[byte; 20]).unwrap(),
            offset,
            crc: u32::from(byte) * 7,
        };
        let index = index_v2(&[at(1, 12), at(2, 0x8000_0010), at(3, 0x1_0000_0000)], &[0; 20]);
        let word = |at: usize| u32::from_be_bytes(index[at..at + 4].try_into().unwrap());
        let offsets = 8 + 256 * 4 + 3 * 20 + 3 * 4;
        assert_eq!(word(8 + 255 * 4), 3, "fan-out total");
        assert_eq!(word(offsets), 12);
        assert_eq!(word(offsets + 4), 0x8000_0000);
        assert_eq!(word(offsets + 8), 0x8000_0001);
        let table = offsets + 12;
        assert_eq!(
            u64::from_be_bytes(index[table..table + 8].try_into().unwrap()),
            0x8000_0010
        );
        assert_eq!(index.len(), table + 16 + 40);

        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("p.idx"), &index).unwrap();
        std::fs::write(tmp.path().join("p.pack"), b"").unwrap();
        let read = Index::open(&tmp.path().join("p.idx")).unwrap();
        for (byte, offset) in [(1u8, 12u64), (2, 0x8000_0010), (3, 0x1_0000_0000)] {
            let p = read.position(Oid::from_bytes(&[byte; 20]).unwrap()).unwrap();
            assert_eq!(read.offset(p), Some(offset));
            assert_eq!(read.crc(p), u32::from(byte) * 7);
        }
        assert_eq!(read.position(Oid::from_bytes(&[4; 20]).unwrap()), None);
        assert_eq!(read.position(Oid::from_bytes(&[0; 20]).unwrap()), None);
    }
}
