//! What `flipbit-generator render` keeps in its `--cache-dir` between runs, so a fresh process
//! does not re-derive what `run` keeps in memory: the engine's memory of the last commit it made
//! or found up to date (every generated path with its blob id and the fingerprint of the inputs
//! its text came from), and what each manifest (or `List` item) read as, by its exact text
//! (`manifests::ParseCache`). Without them every run parses every manifest, and renders and hashes
//! all 200,000 files at 50,000 Services to find the one that changed.
//!
//! The cache is never trusted over the repo. It is used only when it is intact (version, length
//! and checksum), was written by this very build for the same repo URL and branch (a fingerprint
//! hashes a file's inputs, not the templates, so another build could render the same inputs
//! differently), and describes a commit: when the fetched head is another commit, the engine
//! re-reads the head's paths and blob ids and keeps only fingerprints of blobs that did not change
//! (`Engine::sync`, as `run` does after a human's commit). Anything else is ignored with a log
//! line, the run decides from the repo alone, and the cache is written afresh after it. A test
//! checks that the committed trees are the same with a warm, a stale, a corrupt and no cache.

use std::io::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::cycle::{Memory, RepoTarget};
use crate::manifests::ParseCache;

pub mod answer;
mod parsed_codec;
mod record;

/// What the last run kept.
#[derive(Default)]
pub struct Kept {
    pub memory: Memory,
    pub manifests: ParseCache,
    /// The bytes it was read from, for [`save`] to write only what this run changed.
    pub retained: Option<Retained>,
}

/// A cache file and its journal as read: the state they describe is what a run compares its
/// memory with, to append only the difference.
pub struct Retained {
    file: Vec<u8>,
    /// The file's one record.
    record: Range<usize>,
    /// The file's checksum: the journal names the file it continues by it.
    sum: u64,
    /// The journal's intact part (empty when there is none for this file).
    journal: Vec<u8>,
    /// Its records' bodies.
    records: Vec<Range<usize>>,
    /// The chained checksum of its last intact record (`sum` when there is none).
    last_sum: u64,
    /// Whether the journal had a damaged or torn tail (then the next write is a whole file).
    damaged: bool,
}

/// The cache file inside the cache dir (the bare cache repo, where Git ignores it).
pub const FILE: &str = "flipbit-render.cache";
/// What runs after the one that wrote [`FILE`] changed, one record each (see `record`).
pub const JOURNAL: &str = "flipbit-render.journal";

const MAGIC: &[u8] = b"flipbit render cache\n";
const JOURNAL_MAGIC: &[u8] = b"flipbit render journal\n";
/// Bumped whenever the layout below or in `record` changes.
const VERSION: u32 = 5;
/// A journal longer than half the file (and than a small floor, so small caches keep one too) or
/// with more records is folded into a new file: a load reads the file and every record.
const JOURNAL_SHARE: usize = 2;
const JOURNAL_FLOOR: usize = 64 * 1024;
const JOURNAL_RECORDS: usize = 200;

pub fn path(cache_dir: &Path) -> PathBuf {
    cache_dir.join(FILE)
}

pub fn journal_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join(JOURNAL)
}

/// What the last run kept for `target`, or nothing (with a log line saying why) when there is no
/// usable cache; and what `read_manifests` made of the manifest parse results it kept (or of none).
/// The manifests are read while another thread rebuilds the rest of the memory (the engine's
/// 200,000 paths and the ledger): at 50,000 Services each takes ~100-150 ms, and they need nothing
/// of each other. Should the memory turn out unusable after all, the manifests are read again
/// without the cache's parse results, so nothing of an unusable cache is used.
pub fn load_with<R>(cache_dir: &Path, target: &RepoTarget, read_manifests: &dyn Fn(ParseCache) -> R) -> (Kept, R) {
    let file = path(cache_dir);
    let unused = |read_manifests: &dyn Fn(ParseCache) -> R| {
        crate::allocator::huge_pages(true);
        (Kept::default(), read_manifests(ParseCache::default()))
    };
    // A warm run: small pages from here on, before the cache's own bytes are read (see
    // `allocator::huge_pages`); back to huge pages when the cache turns out unusable (a cold run).
    crate::allocator::huge_pages(false);
    let bytes = match std::fs::read(&file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return unused(read_manifests),
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "render cache unreadable; deciding from the repo alone");
            return unused(read_manifests);
        }
    };
    // A missing or unreadable journal is one with no records: the file alone is a state.
    let journal = std::fs::read(journal_path(cache_dir)).unwrap_or_default();
    let t = std::time::Instant::now();
    match decode_with(bytes, journal, &tag(target), read_manifests) {
        Ok(Some((kept, read))) => {
            if kept.memory.engine().base().is_some() {
                crate::allocator::keep_freed_memory_a_while();
            } else {
                crate::allocator::huge_pages(true);
            }
            let engine = kept.memory.engine();
            let retained = kept.retained.as_ref();
            if retained.is_some_and(|r| r.damaged) {
                tracing::warn!(file = %journal_path(cache_dir).display(), "render cache journal has a damaged tail; what follows the last intact record is ignored");
            }
            tracing::debug!(
                ms = t.elapsed().as_millis() as u64,
                paths = engine.len(),
                base = engine.base().unwrap_or_default(),
                journal_records = retained.map_or(0, |r| r.records.len()),
                "render cache loaded (the manifests read meanwhile)"
            );
            (kept, read)
        }
        Ok(None) => {
            tracing::info!(file = %file.display(), "render cache from another build, format, repo or branch; ignored");
            unused(read_manifests)
        }
        Err(why) => {
            tracing::warn!(file = %file.display(), %why, "render cache corrupt; ignored and rebuilt");
            unused(read_manifests)
        }
    }
}

/// Writes what this run knows for the next one: a journal record of what changed since the cache
/// was read when that is small, else a whole new file (atomically: a crash leaves the old file or
/// the new one; a torn journal record fails its checksum and is ignored). A failure is logged, not
/// fatal: the next run only decides from the repo alone.
pub fn save(cache_dir: &Path, target: &RepoTarget, memory: &Memory, manifests: &ParseCache, read: Option<&Retained>) {
    if !memory.engine().changed() && manifests.changed == 0 && path(cache_dir).exists() {
        // What is there already says all this run knows.
        return;
    }
    let t = std::time::Instant::now();
    if let Some(bytes) = read.and_then(|r| journal_record(r, memory, manifests)) {
        let file = journal_path(cache_dir);
        match append(cache_dir, &file, &bytes) {
            Ok(()) => {
                tracing::debug!(
                    ms = t.elapsed().as_millis() as u64,
                    bytes = bytes.len(),
                    "render cache journal appended"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "could not append to the render cache journal; writing the whole cache")
            }
        }
    }
    let bytes = encode(memory, manifests, &tag(target));
    let file = path(cache_dir);
    // The journal goes first: a journal naming a file that is not there any more is ignored.
    match std::fs::remove_file(journal_path(cache_dir)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(file = %journal_path(cache_dir).display(), error = %e, "could not remove the render cache journal; not writing the cache");
            let _ = std::fs::remove_file(&file);
            return;
        }
    }
    let written = write_atomically(cache_dir, &file, &bytes);
    if let Err(e) = written {
        tracing::warn!(file = %file.display(), error = %e, "could not write the render cache");
    }
    tracing::debug!(
        ms = t.elapsed().as_millis() as u64,
        bytes = bytes.len(),
        "render cache written"
    );
}

fn write_atomically(dir: &Path, file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or(FILE);
    let temp = dir.join(format!("{name}.{}.tmp", std::process::id()));
    let written = std::fs::File::create(&temp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| std::fs::rename(&temp, file));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// Appends a journal record (`bytes` from [`journal_record`]), or writes a new journal when
/// `bytes` start with its header.
fn append(dir: &Path, file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if bytes.starts_with(JOURNAL_MAGIC) {
        return write_atomically(dir, file, bytes);
    }
    // One write: a crash leaves a record whole or torn, and a torn one fails its checksum.
    std::fs::OpenOptions::new().append(true).open(file)?.write_all(bytes)
}

/// What to write to the journal for the difference between `read` and this run's memory: one
/// record, after a new journal's header when `read` had none; `None` when the whole file should
/// be written instead (the journal is damaged or has grown, the difference does not fit a record).
fn journal_record(read: &Retained, memory: &Memory, manifests: &ParseCache) -> Option<Vec<u8>> {
    if read.damaged || read.records.len() >= JOURNAL_RECORDS {
        return None;
    }
    // When the memory says which paths it touched, the 200,000 paths before need not be indexed
    // (nor compared): only those are written. A memory synced with another head does not say, and
    // is compared path by path, which also finds the paths the head no longer has.
    let mut before = record::Index::new(memory.touched_paths().is_some());
    before.apply(&read.file[read.record.clone()]).ok()?;
    for r in &read.records {
        before.apply(&read.journal[r.clone()]).ok()?;
    }
    let mut body = Vec::new();
    record::put_difference(&mut body, memory, manifests, before)?;
    if read.journal.len() + body.len() > (read.file.len() / JOURNAL_SHARE).max(JOURNAL_FLOOR) {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() + 64);
    if read.journal.is_empty() {
        out.extend_from_slice(JOURNAL_MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&read.sum.to_le_bytes());
    }
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&chained(read.last_sum, &body).to_le_bytes());
    Some(out)
}

/// What a cache must have been written for: this build (version, revision and the executable's
/// size and modification time, since a development build keeps its revision), the repo URL and
/// the branch.
fn tag(target: &RepoTarget) -> String {
    let exe = std::env::current_exe()
        .and_then(std::fs::metadata)
        .map(|m| {
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            format!("{} {:?}", m.len(), mtime.map(|d| d.as_nanos()))
        })
        .unwrap_or_default();
    format!(
        "{} {} {exe}\n{}\n{}",
        env!("CARGO_PKG_VERSION"),
        env!("FLIPBIT_REVISION"),
        target.url,
        target.branch
    )
}

fn hasher() -> foldhash::quality::FixedState {
    // foldhash with a fixed seed: the same in every process of one build, which is all a cache
    // written by the same build needs, and ~10x faster than SipHash over the 70 MB of a 50k
    // cache (SipHash was 8% of a warm run). It finds damage, not forgery: the cache dir is the
    // generator's own.
    foldhash::quality::FixedState::with_seed(0x666c_6970_6269_7400)
}

fn checksum(bytes: &[u8]) -> u64 {
    use std::hash::BuildHasher as _;
    hasher().hash_one(bytes)
}

/// A journal record's checksum, chained to the one before it (the file's for the first): records
/// of another journal, or two runs' records interleaved, do not check.
fn chained(before: u64, body: &[u8]) -> u64 {
    use std::hash::BuildHasher as _;
    hasher().hash_one((before, body))
}

/// `MAGIC`, version, tag, a nonce (so each file written has its own checksum, and a journal names
/// only the one it continues), the whole memory as one record (`record`), a checksum of all that.
fn encode(memory: &Memory, manifests: &ParseCache, tag: &str) -> Vec<u8> {
    let engine = memory.engine();
    let mut out = Vec::with_capacity(64 + engine.len() * 80);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    put_bytes(&mut out, tag.as_bytes());
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id()).rotate_left(48);
    out.extend_from_slice(&nonce.to_le_bytes());
    // Against an empty state every memory is a difference.
    let _ = record::put_difference(&mut out, memory, manifests, record::Index::default());
    let sum = checksum(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// What `file` and `journal` kept; `Ok(None)` for a cache of another format version or tag, `Err`
/// for a damaged file. A journal that is damaged counts up to its last intact record; one that
/// continues another file counts for nothing.
#[cfg(test)]
fn decode(file: Vec<u8>, journal: Vec<u8>, tag: &str) -> Result<Option<Kept>, String> {
    let kept = decode_with(file, journal, tag, &|manifests| manifests)?;
    Ok(kept.map(|(kept, manifests)| Kept { manifests, ..kept }))
}

/// [`decode`], with the manifest parse results handed to `read_manifests` (run on this thread while
/// another rebuilds the memory) rather than kept; `Kept::manifests` is then empty.
fn decode_with<R>(
    file: Vec<u8>,
    journal: Vec<u8>,
    tag: &str,
    read_manifests: &dyn Fn(ParseCache) -> R,
) -> Result<Option<(Kept, R)>, String> {
    let body_len = file.len().checked_sub(8).ok_or("shorter than its checksum")?;
    let (body, sum) = file.split_at(body_len);
    let mut r = Reader { bytes: body, at: 0 };
    if r.take(MAGIC.len())? != MAGIC {
        return Err("not a render cache".into());
    }
    let version = u32::from_le_bytes(r.array()?);
    let sum = u64::from_le_bytes(sum.try_into().map_err(|_| "no checksum")?);
    if sum != checksum(body) {
        return Err("checksum mismatch (truncated or damaged)".into());
    }
    if version != VERSION {
        // Intact, written by another build in an older or newer format: not ours, not damage.
        return Ok(None);
    }
    if r.sized()? != tag.as_bytes() {
        return Ok(None);
    }
    r.take(8)?;
    let record = r.at..body_len;
    let (journal, records, last_sum, damaged) = read_journal(journal, sum);
    // Two threads walk the records: this one builds the manifest parse results and reads the
    // manifests with them, the other the rest of the memory (each ignores the other's part).
    let (first, journal_bytes, records_at) = (&file[record.clone()], &journal[..], &records[..]);
    let apply = |build| build_from(build, first, journal_bytes, records_at);
    let (memory, read) = std::thread::scope(|scope| {
        let memory = scope.spawn(|| apply(record::Build::rest())?.finish());
        let read = apply(record::Build::manifests()).map(|build| read_manifests(build.manifests));
        (memory.join(), read)
    });
    let read = read?;
    let memory = memory.map_err(|_| "rebuilding the memory failed".to_owned())??;
    let retained = Retained {
        file,
        record,
        sum,
        journal,
        records,
        last_sum,
        damaged,
    };
    let kept = Kept {
        memory,
        manifests: ParseCache::default(),
        retained: Some(retained),
    };
    Ok(Some((kept, read)))
}

/// `build` with the file's record and the journal's records applied.
fn build_from<'a>(
    mut build: record::Build<'a>,
    first: &'a [u8],
    journal: &'a [u8],
    records: &[Range<usize>],
) -> Result<record::Build<'a>, String> {
    build.apply(first)?;
    for r in records {
        build
            .apply(&journal[r.clone()])
            .map_err(|e| format!("a journal record: {e}"))?;
    }
    Ok(build)
}

/// The intact records of a journal continuing the file with checksum `sum`: (the journal cut to
/// them, their bodies, the last chained checksum, whether anything after them was damaged).
fn read_journal(mut journal: Vec<u8>, sum: u64) -> (Vec<u8>, Vec<Range<usize>>, u64, bool) {
    let header = JOURNAL_MAGIC.len() + 4 + 8;
    if journal.is_empty() {
        return (journal, Vec::new(), sum, false);
    }
    let intact = journal.len() >= header
        && journal.starts_with(JOURNAL_MAGIC)
        && journal[JOURNAL_MAGIC.len()..JOURNAL_MAGIC.len() + 4] == VERSION.to_le_bytes();
    if !intact || journal[header - 8..header] != sum.to_le_bytes() {
        // Damaged before its first record, or another file's journal (left by a crash before
        // its file was replaced): nothing of it counts, and the next write starts a new one.
        return (Vec::new(), Vec::new(), sum, !intact);
    }
    let (mut records, mut last, mut at) = (Vec::new(), sum, header);
    while at < journal.len() {
        let Some(len) = journal
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .and_then(|n| usize::try_from(n).ok())
        else {
            break;
        };
        let body = at + 8..at.saturating_add(8).saturating_add(len);
        let Some(end) = body.end.checked_add(8).filter(|end| *end <= journal.len()) else {
            break;
        };
        let chain = u64::from_le_bytes(journal[body.end..end].try_into().unwrap_or_default());
        if chain != chained(last, &journal[body.clone()]) {
            break;
        }
        records.push(body);
        last = chain;
        at = end;
    }
    let damaged = at < journal.len();
    journal.truncate(at);
    (journal, records, last, damaged)
}

pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.bytes.len());
        let end = end.ok_or_else(|| format!("truncated at byte {}", self.at))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        self.take(N)?.try_into().map_err(|_| "short read".to_owned())
    }

    pub(crate) fn sized(&mut self) -> Result<&'a [u8], String> {
        let n = u32::from_le_bytes(self.array()?);
        self.take(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifests::Parsed;
    use flipbit_core::engine::{Engine, KeptChoice};
    use flipbit_core::ledger::Ledger;
    use flipbit_core::model::ServiceInput;
    use flipbit_store::CommitId;

    fn id(n: u8) -> CommitId {
        CommitId::from_bytes(&[n; 20]).expect("20 bytes")
    }

    fn choice(key: &str, positions: Vec<u32>) -> KeptChoice {
        KeptChoice {
            key: key.parse().expect("a key"),
            candidates: 5,
            max: 2,
            all: 6,
            positions,
            fingerprint: 7,
        }
    }

    fn engine() -> Engine<CommitId> {
        let files = [
            ("lb/lb-1/ns/a.conf".to_owned(), Some(7), id(1)),
            ("ledger.yaml".to_owned(), None, id(2)),
        ];
        Engine::restore(&id(9).to_string(), files, [choice("shop/web", vec![0, 3])])
    }

    fn ledger() -> Ledger {
        Ledger::parse(
            "version: 1\nservices:\n  shop/web:\n    addresses: {lb-1: 10.0.0.1}\n    addressesV6: {lb-1: \"fd00::1\"}\n    ports: [TCP/80, UDP/53]\n    releasedAt: 2026-12-05T00:00:00Z\n    sharedKey: k\n",
        )
        .expect("a ledger")
    }

    fn memory() -> Memory {
        Memory::restored(engine(), Some((id(3), std::sync::Arc::new(ledger()))))
    }

    fn parsed(name: &str) -> Parsed {
        Parsed {
            services: vec![ServiceInput {
                namespace: "shop".into(),
                name: name.into(),
                ..ServiceInput::default()
            }],
            ..Parsed::default()
        }
    }

    fn manifests() -> ParseCache {
        let mut cache = ParseCache::default();
        cache.items.insert("- kind: Service\n".into(), parsed("web"));
        cache.files.insert("kind: Service\n".into(), parsed("web"));
        cache.seen.insert("m/a.yaml".into(), seen(1));
        cache.seen.insert("m/b.yaml".into(), seen(2));
        cache
    }

    fn seen(n: u8) -> crate::manifests::FileSeen {
        crate::manifests::FileSeen {
            identity: crate::manifests::Identity {
                size: 10 + u64::from(n),
                mtime_ns: -7,
                ctime_ns: 9,
                ino: 3,
                dev: u64::MAX,
            },
            seen_at: 1_800_000_000_000_000_000,
            content: u128::MAX - u128::from(n),
            units: vec![(true, 5), (false, u64::from(n))],
        }
    }

    /// A later run's memory: another base, one path changed, one gone, one new; a choice changed
    /// and one new; the last decision's memory kept; one `List` item gone and another read.
    fn later() -> (Memory, ParseCache) {
        let files = [
            ("lb/lb-1/ns/a.conf".to_owned(), Some(8), id(4)),
            ("lb/lb-2/ns/b.conf".to_owned(), Some(9), id(5)),
        ];
        let choices = [choice("shop/web", vec![1, 3]), choice("shop/db", vec![2])];
        let mut engine = Engine::restore(&id(10).to_string(), files, choices);
        engine.restore_settled(vec![1, 2, 3]);
        let mut memory = Memory::restored(engine, Some((id(3), std::sync::Arc::new(ledger()))));
        let touched = ["lb/lb-1/ns/a.conf", "lb/lb-2/ns/b.conf", "ledger.yaml"];
        memory.set_touched(Some(touched.into_iter().map(str::to_owned).collect()));
        let mut cache = manifests();
        cache.items.clear();
        cache.items.insert("- kind: Service\n  name: db\n".into(), parsed("db"));
        cache.seen.remove("m/b.yaml");
        cache.seen.insert("m/a.yaml".into(), seen(3));
        (memory, cache)
    }

    /// And the run after it: the ledger gone, the last decision's memory gone, an item back.
    fn latest() -> (Memory, ParseCache) {
        let (memory, mut cache) = later();
        let files = memory.engine().files().map(|(p, f, b)| (p.to_owned(), f, b));
        let engine = Engine::restore(
            &id(11).to_string(),
            files.collect::<Vec<_>>(),
            memory.engine().kept_choices(),
        );
        cache.items.insert("- kind: Service\n".into(), parsed("web"));
        (Memory::restored(engine, None), cache)
    }

    type State = (
        Option<String>,
        Vec<(String, Option<u64>, CommitId)>,
        Vec<(String, Vec<u32>)>,
        Option<Vec<u8>>,
        Option<CommitId>,
        Vec<String>,
        Vec<String>,
        Vec<(String, crate::manifests::FileSeen)>,
    );

    fn state(memory: &Memory, manifests: &ParseCache) -> State {
        let engine = memory.engine();
        let mut files: Vec<_> = engine.files().map(|(p, f, b)| (p.to_owned(), f, b)).collect();
        files.sort();
        let mut choices: Vec<_> = engine
            .kept_choices()
            .into_iter()
            .map(|c| (c.key.to_string(), c.positions))
            .collect();
        choices.sort();
        let mut items: Vec<_> = manifests.items.keys().map(|t| t.to_string()).collect();
        items.sort();
        let mut whole: Vec<_> = manifests.files.keys().map(|t| t.to_string()).collect();
        whole.sort();
        let mut seen: Vec<_> = manifests.seen.iter().map(|(p, s)| (p.clone(), s.clone())).collect();
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        (
            engine.base().map(str::to_owned),
            files,
            choices,
            engine.kept_settled(None),
            memory.ledger().map(|(id, _)| *id),
            items,
            whole,
            seen,
        )
    }

    fn read(file: &[u8], journal: &[u8]) -> Kept {
        decode(file.to_vec(), journal.to_vec(), "tag")
            .expect("intact")
            .expect("same tag")
    }

    #[test]
    fn a_cache_reads_back_as_written() {
        let bytes = encode(&memory(), &manifests(), "tag");
        let back = read(&bytes, &[]);
        assert_eq!(state(&back.memory, &back.manifests), state(&memory(), &manifests()));
        assert_eq!(back.memory.engine().kept_choices(), engine().kept_choices());
        assert_eq!(back.memory.ledger(), memory().ledger());
        assert_eq!(back.manifests.items, manifests().items);
        assert_eq!(back.manifests.files, manifests().files);
    }

    #[test]
    fn another_tag_is_ignored() {
        let bytes = encode(&memory(), &manifests(), "tag");
        assert!(decode(bytes, Vec::new(), "other build").expect("intact").is_none());
    }

    /// An intact cache of another format version (an upgrade) is ignored like one of another
    /// build, not reported as damaged.
    #[test]
    fn another_format_version_is_ignored_not_refused() {
        let mut bytes = encode(&memory(), &manifests(), "tag");
        let at = MAGIC.len();
        bytes[at..at + 4].copy_from_slice(&(VERSION - 1).to_le_bytes());
        let body = bytes.len() - 8;
        let sum = checksum(&bytes[..body]);
        bytes[body..].copy_from_slice(&sum.to_le_bytes());
        assert!(decode(bytes, Vec::new(), "tag").expect("intact").is_none());
    }

    /// Every truncation and every flipped byte is refused, never read as another memory.
    #[test]
    fn truncated_or_damaged_caches_are_refused() {
        let bytes = encode(&memory(), &manifests(), "tag");
        for len in 0..bytes.len() {
            assert!(
                decode(bytes[..len].to_vec(), Vec::new(), "tag").is_err(),
                "truncated to {len}"
            );
        }
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x20;
            assert!(decode(damaged, Vec::new(), "tag").is_err(), "byte {i} flipped");
        }
    }

    /// The file, then a journal of two later runs: each record holds only what its run changed,
    /// and the file with the journal reads back as the last run's memory.
    fn journal() -> (Vec<u8>, Vec<u8>, usize) {
        let file = encode(&memory(), &manifests(), "tag");
        let first = read(&file, &[]);
        let (m2, p2) = later();
        let rec2 = journal_record(first.retained.as_ref().expect("retained"), &m2, &p2).expect("a record");
        assert!(rec2.starts_with(JOURNAL_MAGIC), "a new journal starts with its header");
        let second = read(&file, &rec2);
        assert_eq!(state(&second.memory, &second.manifests), state(&m2, &p2));
        let (m3, p3) = latest();
        let rec3 = journal_record(second.retained.as_ref().expect("retained"), &m3, &p3).expect("a record");
        assert!(!rec3.starts_with(JOURNAL_MAGIC), "a record appended to the journal");
        // Only differences: the second run's record names nothing of the unchanged whole file, and
        // the third's none of the paths, which did not change.
        assert!(
            !contains(&rec2, &sized("kind: Service\n")),
            "the unchanged whole file is not written again"
        );
        assert!(
            !contains(&rec3, &sized("lb/lb-2/ns/b.conf")),
            "an unchanged path is not written again"
        );
        assert!(contains(&rec2, &sized("lb/lb-2/ns/b.conf")), "a new path is written");
        let journal = [rec2.clone(), rec3].concat();
        (file, journal, rec2.len())
    }

    fn sized(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        put_bytes(&mut out, text.as_bytes());
        out
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn a_journal_reads_back_as_the_memory_of_the_last_run() {
        let (file, journal, _) = journal();
        let back = read(&file, &journal);
        let (m3, p3) = latest();
        assert_eq!(state(&back.memory, &back.manifests), state(&m3, &p3));
        assert_eq!(back.manifests.items, p3.items);
        let retained = back.retained.expect("retained");
        assert_eq!((retained.records.len(), retained.damaged), (2, false));

        // A memory that does not say which paths it touched (synced with another head) is
        // compared path by path: the same state.
        let file = encode(&memory(), &manifests(), "tag");
        let first = read(&file, &[]);
        let (mut m2, p2) = later();
        m2.set_touched(None);
        let rec = journal_record(first.retained.as_ref().expect("retained"), &m2, &p2).expect("a record");
        let back = read(&file, &rec);
        assert_eq!(state(&back.memory, &back.manifests), state(&m2, &p2));
    }

    /// A journal cut anywhere (a crash while appending) or with any byte flipped reads as the file
    /// plus its intact records before the damage, never as anything else, and the damage is
    /// noticed (the next write is a whole file).
    #[test]
    fn a_torn_or_damaged_journal_counts_up_to_its_last_intact_record() {
        let (file, journal, first_len) = journal();
        let states = [state(&memory(), &manifests()), {
            let (m, p) = later();
            state(&m, &p)
        }];
        let header = JOURNAL_MAGIC.len() + 12;
        for len in 0..journal.len() {
            let back = read(&file, &journal[..len]);
            let expected = &states[usize::from(len >= first_len)];
            assert_eq!(&state(&back.memory, &back.manifests), expected, "journal cut to {len}");
            let retained = back.retained.expect("retained");
            assert_eq!(
                retained.damaged,
                len != 0 && len != first_len && len != header,
                "cut to {len}"
            );
            if retained.damaged {
                assert!(
                    journal_record(&retained, &memory(), &manifests()).is_none(),
                    "cut to {len}"
                );
            }
        }
        for i in 0..journal.len() {
            let mut damaged = journal.clone();
            damaged[i] ^= 0x20;
            let back = read(&file, &damaged);
            let expected = &states[usize::from(i >= first_len)];
            assert_eq!(&state(&back.memory, &back.manifests), expected, "byte {i} flipped");
            let retained = back.retained.expect("retained");
            // A flip in the base checksum makes the journal another file's: ignored, not damaged.
            let names_another_file = (header - 8..header).contains(&i);
            assert_eq!(retained.damaged, !names_another_file, "byte {i} flipped");
        }
    }

    /// A journal left beside a newer file (a crash between removing it and writing the file, or
    /// a file replaced by hand) continues another file: it is ignored, and the next run starts a
    /// new journal rather than appending to it.
    #[test]
    fn a_journal_of_another_file_is_ignored() {
        let (_, journal, _) = journal();
        let (m3, p3) = latest();
        let newer = encode(&m3, &p3, "tag");
        let back = read(&newer, &journal);
        assert_eq!(state(&back.memory, &back.manifests), state(&m3, &p3));
        let retained = back.retained.expect("retained");
        assert!(retained.journal.is_empty() && !retained.damaged);
        let (m2, p2) = later();
        let record = journal_record(&retained, &m2, &p2).expect("a record");
        assert!(record.starts_with(JOURNAL_MAGIC), "a new journal");
    }

    /// A cache intact by its checksum whose memory cannot be rebuilt (here its ledger is not JSON
    /// any more) is ignored whole: the manifests, read meanwhile with its parse results, are read
    /// again without them.
    #[test]
    fn a_memory_that_cannot_be_rebuilt_is_ignored_with_its_parse_results() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = RepoTarget {
            url: "/srv/state.git".into(),
            branch: "main".into(),
            cache_dir: Some(tmp.path().to_path_buf()),
            author_name: "flipbit".into(),
            author_email: "flipbit@localhost".into(),
            signing_key: None,
            propose_branch: None,
        };
        let mut bytes = encode(&memory(), &manifests(), &tag(&target));
        let json = br#"{"version":1"#;
        let at = bytes
            .windows(json.len())
            .position(|w| w == json)
            .expect("the ledger's JSON");
        bytes[at] = b'[';
        let body = bytes.len() - 8;
        let sum = checksum(&bytes[..body]);
        bytes[body..].copy_from_slice(&sum.to_le_bytes());
        assert!(
            decode(bytes.clone(), Vec::new(), &tag(&target)).is_err(),
            "the ledger is damaged"
        );
        std::fs::write(path(tmp.path()), &bytes).expect("write the cache");

        let calls = std::sync::Mutex::new(Vec::new());
        let (kept, read) = load_with(tmp.path(), &target, &|cache: ParseCache| {
            calls.lock().expect("lock").push(cache.len());
            cache.len()
        });
        assert_eq!(
            *calls.lock().expect("lock"),
            vec![2, 0],
            "read with the parse results, then without"
        );
        assert_eq!(read, 0);
        assert!(kept.memory.engine().base().is_none() && kept.retained.is_none());
    }
}
