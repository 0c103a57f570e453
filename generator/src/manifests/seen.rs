//! What a manifest file was when `render` last read it, so a warm run need not read, cut and look
//! up a file that did not change (git's index for a work tree does the same): its identity (size,
//! modification and change times in nanoseconds, inode, device), a checksum of its content, and
//! the units it read as, in order, each named by a checksum of its text. The change time is part
//! of the identity because a program can put a modification time back (`touch -d`, `cp -p`,
//! `tar x`) but not the change time, which the kernel sets at every write and every such reset:
//! a same-size edit whose modification time was put back still reads as changed.
//!
//! A file is taken as unchanged without reading it only when its identity is the one recorded and
//! its modification time was older than the recording by more than [`RACY`] (git's "racy clean"
//! rule: a file changed within the timestamp granularity of its last look keeps its size and
//! time). Any other file is read; when its content checksum is the recorded one (a file written
//! again with the same text, or a racy one), its units are still taken from the cache, else it is
//! cut and each unit is looked up by its whole text as before.

use std::os::unix::fs::MetadataExt as _;

use super::{HashMap, ParseCache, UnitText};

/// How long before a file's recording its modification time must be for its identity alone to
/// be trusted: well above any file system's timestamp granularity (FAT's is 2 s).
const RACY: i128 = 2_000_000_000;

/// See the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSeen {
    pub identity: Identity,
    /// When the identity was taken (nanoseconds since the epoch; taken before the file was).
    pub seen_at: i128,
    /// [`content_sum`] of its text.
    pub content: u128,
    /// Each unit, in order: whether it is the whole file (else a `List` item), and
    /// [`unit_sum`] of its text.
    pub units: Vec<(bool, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub ino: u64,
    pub dev: u64,
}

impl Identity {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

impl FileSeen {
    /// True when the file, now of `identity`, cannot have changed since it was recorded.
    pub fn unchanged_without_reading(&self, identity: &Identity) -> bool {
        self.identity == *identity && identity.mtime_ns + RACY < self.seen_at
    }
}

/// Now, in nanoseconds since the epoch (0 before it: nothing is then trusted without reading).
pub fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

fn state(seed: u64) -> foldhash::quality::FixedState {
    foldhash::quality::FixedState::with_seed(seed)
}

/// A file's content checksum: two 64-bit hashes with other seeds, so that a file whose text
/// changed reads again unless both collide.
pub fn content_sum(text: &str) -> u128 {
    use std::hash::BuildHasher as _;
    let a = state(0x6d61_6e69_6665_7374).hash_one(text);
    let b = state(0x636f_6e74_656e_7473).hash_one(text);
    (u128::from(a) << 64) | u128::from(b)
}

/// A unit's checksum, by which a file's record names the unit's text in the cache.
pub fn unit_sum(text: &str) -> u64 {
    use std::hash::BuildHasher as _;
    state(0x756e_6974_7465_7874).hash_one(text)
}

/// The cache's unit texts by (whole, [`unit_sum`]); a checksum two texts share names neither.
#[derive(Default)]
pub struct BySum(HashMap<(bool, u64), Option<UnitText>>);

impl BySum {
    pub fn of(cache: &ParseCache) -> Self {
        let mut by_sum = HashMap::default();
        for (whole, units) in [(true, &cache.files), (false, &cache.items)] {
            for text in units.keys() {
                by_sum
                    .entry((whole, unit_sum(text)))
                    .and_modify(|t: &mut Option<UnitText>| *t = None)
                    .or_insert_with(|| Some(text.clone()));
            }
        }
        Self(by_sum)
    }

    /// The texts of `units`, or `None` when one is not known (or not for sure).
    pub fn texts<'a>(&'a self, units: &[(bool, u64)]) -> Option<Vec<(bool, &'a str)>> {
        units
            .iter()
            .map(|&(whole, sum)| Some((whole, self.0.get(&(whole, sum))?.as_deref()?)))
            .collect()
    }
}
