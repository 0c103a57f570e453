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
use std::path::{Path, PathBuf};

use flipbit_core::engine::{Engine, KeptChoice};
use flipbit_core::ledger::Ledger;
use flipbit_core::names::ServiceKey;
use flipbit_store::CommitId;

use crate::cycle::{Memory, RepoTarget};
use crate::manifests::ParseCache;
#[cfg(test)]
use crate::manifests::Parsed;

mod parsed_codec;

/// What the last run kept.
#[derive(Default)]
pub struct Kept {
    pub memory: Memory,
    pub manifests: ParseCache,
}

/// The cache file inside the cache dir (the bare cache repo, where Git ignores it).
pub const FILE: &str = "flipbit-render.cache";

const MAGIC: &[u8] = b"flipbit render cache\n";
/// Bumped whenever the layout below changes.
const VERSION: u32 = 2;

pub fn path(cache_dir: &Path) -> PathBuf {
    cache_dir.join(FILE)
}

/// What the last run kept for `target`, or nothing (with a log line saying why) when there is no
/// usable cache.
pub fn load(cache_dir: &Path, target: &RepoTarget) -> Kept {
    let file = path(cache_dir);
    // A warm run: small pages from here on, before the cache's own bytes are read (see
    // `allocator::huge_pages`); back to huge pages when the cache turns out unusable (a cold run).
    crate::allocator::huge_pages(false);
    let bytes = match std::fs::read(&file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::allocator::huge_pages(true);
            return Kept::default();
        }
        Err(e) => {
            crate::allocator::huge_pages(true);
            tracing::warn!(file = %file.display(), error = %e, "render cache unreadable; deciding from the repo alone");
            return Kept::default();
        }
    };
    let t = std::time::Instant::now();
    let kept = decode(&bytes, &tag(target));
    if !matches!(&kept, Ok(Some(k)) if k.memory.engine().base().is_some()) {
        crate::allocator::huge_pages(true);
    }
    match kept {
        Ok(Some(kept)) => {
            if kept.memory.engine().base().is_some() {
                crate::allocator::keep_freed_memory_a_while();
            }
            let engine = kept.memory.engine();
            tracing::debug!(
                ms = t.elapsed().as_millis() as u64,
                paths = engine.len(),
                base = engine.base().unwrap_or_default(),
                manifests = kept.manifests.len(),
                "render cache loaded"
            );
            kept
        }
        Ok(None) => {
            tracing::info!(file = %file.display(), "render cache from another build, repo or branch; ignored");
            Kept::default()
        }
        Err(why) => {
            tracing::warn!(file = %file.display(), %why, "render cache corrupt; ignored and rebuilt");
            Kept::default()
        }
    }
}

/// Writes what this run knows for the next one (atomically: a crash leaves the old file or the
/// new one). A failure is logged, not fatal: the next run only decides from the repo alone.
pub fn save(cache_dir: &Path, target: &RepoTarget, memory: &Memory, manifests: &ParseCache) {
    if !memory.engine().changed() && manifests.changed == 0 && path(cache_dir).exists() {
        // What is there already says all this run knows.
        return;
    }
    let t = std::time::Instant::now();
    let bytes = encode(memory, manifests, &tag(target));
    let file = path(cache_dir);
    let temp = cache_dir.join(format!("{FILE}.{}.tmp", std::process::id()));
    let written = std::fs::File::create(&temp)
        .and_then(|mut f| f.write_all(&bytes))
        .and_then(|()| std::fs::rename(&temp, &file));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        tracing::warn!(file = %file.display(), error = %e, "could not write the render cache");
    }
    tracing::debug!(
        ms = t.elapsed().as_millis() as u64,
        bytes = bytes.len(),
        "render cache written"
    );
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

fn checksum(bytes: &[u8]) -> u64 {
    use std::hash::BuildHasher as _;
    // foldhash with a fixed seed: the same in every process of one build, which is all a cache
    // written by the same build needs, and ~10x faster than SipHash over the 70 MB of a 50k
    // cache (SipHash was 8% of a warm run). It finds damage, not forgery: the cache dir is the
    // generator's own.
    foldhash::quality::FixedState::with_seed(0x666c_6970_6269_7400).hash_one(bytes)
}

/// `MAGIC`, version, tag; the engine: a base flag, base commit, path count, then per path its
/// length and bytes, a fingerprint flag and value, the blob id, then the node choices, then the
/// last decision's memory (a flag and `Engine::kept_settled`'s bytes); the last ledger (a flag,
/// its blob id, JSON); the manifests: per map (whole files, then items) a count, then each text
/// and what it read as (`parsed_codec`); a checksum of all that.
fn encode(memory: &Memory, manifests: &ParseCache, tag: &str) -> Vec<u8> {
    let (engine, ledger) = (memory.engine(), memory.ledger());
    let mut out = Vec::with_capacity(64 + engine.len() * 80);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    put_bytes(&mut out, tag.as_bytes());
    match engine.base().and_then(|b| b.parse::<CommitId>().ok()) {
        Some(base) => {
            out.push(1);
            out.extend_from_slice(base.as_bytes());
            out.extend_from_slice(&(engine.len() as u64).to_le_bytes());
            for (path, fingerprint, blob) in engine.files() {
                put_bytes(&mut out, path.as_bytes());
                out.push(u8::from(fingerprint.is_some()));
                out.extend_from_slice(&fingerprint.unwrap_or_default().to_le_bytes());
                out.extend_from_slice(blob.as_bytes());
            }
            let choices = engine.kept_choices();
            out.extend_from_slice(&(choices.len() as u64).to_le_bytes());
            for c in choices {
                put_bytes(&mut out, c.key.to_string().as_bytes());
                for n in [c.candidates, c.max as u64, c.all, c.fingerprint] {
                    out.extend_from_slice(&n.to_le_bytes());
                }
                out.extend_from_slice(&(c.positions.len() as u32).to_le_bytes());
                for p in c.positions {
                    out.extend_from_slice(&p.to_le_bytes());
                }
            }
            match engine.kept_settled(ledger.map(|(_, l)| &**l)) {
                Some(settled) => {
                    out.push(1);
                    out.extend_from_slice(&(settled.len() as u64).to_le_bytes());
                    out.extend_from_slice(&settled);
                }
                None => out.push(0),
            }
        }
        None => out.push(0),
    }
    match ledger {
        Some((id, ledger)) => {
            out.push(1);
            out.extend_from_slice(id.as_bytes());
            // Serializing the ledger's plain data does not fail.
            put_bytes(&mut out, &serde_json::to_vec(&**ledger).unwrap_or_default());
        }
        None => out.push(0),
    }
    for units in [&manifests.files, &manifests.items] {
        out.extend_from_slice(&(units.len() as u64).to_le_bytes());
        for (text, parsed) in units {
            put_bytes(&mut out, text.as_bytes());
            parsed_codec::put(&mut out, parsed);
        }
    }
    let sum = checksum(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// What `bytes` kept; `Ok(None)` for an intact cache written for another tag, `Err` for a
/// damaged one.
fn decode(bytes: &[u8], tag: &str) -> Result<Option<Kept>, String> {
    let body_len = bytes.len().checked_sub(8).ok_or("shorter than its checksum")?;
    let (body, sum) = bytes.split_at(body_len);
    let mut r = Reader { bytes: body, at: 0 };
    if r.take(MAGIC.len())? != MAGIC {
        return Err("not a render cache".into());
    }
    let version = u32::from_le_bytes(r.array()?);
    if version != VERSION {
        return Err(format!("version {version}, not {VERSION}"));
    }
    if u64::from_le_bytes(sum.try_into().map_err(|_| "no checksum")?) != checksum(body) {
        return Err("checksum mismatch (truncated or damaged)".into());
    }
    if r.sized()? != tag.as_bytes() {
        return Ok(None);
    }
    let engine = match r.take(1)?[0] {
        0 => Engine::default(),
        _ => {
            let base = CommitId::from_bytes(r.take(20)?).map_err(|e| e.to_string())?;
            let count = u64::from_le_bytes(r.array()?);
            let mut files = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(body.len() / 33));
            for _ in 0..count {
                let path = std::str::from_utf8(r.sized()?)
                    .map_err(|_| "a path that is not UTF-8")?
                    .to_owned();
                let has_fingerprint = r.take(1)?[0] == 1;
                let fingerprint = u64::from_le_bytes(r.array()?);
                let blob = CommitId::from_bytes(r.take(20)?).map_err(|e| e.to_string())?;
                files.push((path, has_fingerprint.then_some(fingerprint), blob));
            }
            let count = u64::from_le_bytes(r.array()?);
            let mut choices = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(body.len() / 16));
            for _ in 0..count {
                let key = std::str::from_utf8(r.sized()?).map_err(|_| "a key that is not UTF-8")?;
                let key: ServiceKey = key.parse().map_err(|e| format!("a node choice: {e}"))?;
                let candidates = u64::from_le_bytes(r.array()?);
                let max = usize::try_from(u64::from_le_bytes(r.array()?)).map_err(|_| "a node choice's max")?;
                let all = u64::from_le_bytes(r.array()?);
                let fingerprint = u64::from_le_bytes(r.array()?);
                let n = u32::from_le_bytes(r.array()?);
                let mut positions = Vec::with_capacity((n as usize).min(body.len()));
                for _ in 0..n {
                    positions.push(u32::from_le_bytes(r.array()?));
                }
                choices.push(KeptChoice {
                    key,
                    candidates,
                    max,
                    all,
                    positions,
                    fingerprint,
                });
            }
            let mut engine = Engine::restore(&base.to_string(), files, choices);
            if r.take(1)?[0] == 1 {
                let n = usize::try_from(u64::from_le_bytes(r.array()?)).map_err(|_| "a length out of range")?;
                engine.restore_settled(r.take(n)?.to_vec());
            }
            engine
        }
    };
    let ledger = match r.take(1)?[0] {
        0 => None,
        _ => {
            let id = CommitId::from_bytes(r.take(20)?).map_err(|e| e.to_string())?;
            let ledger: Ledger = serde_json::from_slice(r.sized()?).map_err(|e| format!("the ledger: {e}"))?;
            Some((id, std::sync::Arc::new(ledger)))
        }
    };
    let memory = Memory::restored(engine, ledger);
    let mut manifests = ParseCache::default();
    for units in [&mut manifests.files, &mut manifests.items] {
        let count = u64::from_le_bytes(r.array()?);
        units.reserve(usize::try_from(count).unwrap_or(0).min(body.len() / 16));
        for _ in 0..count {
            let text = std::str::from_utf8(r.sized()?)
                .map_err(|_| "a manifest that is not UTF-8")?
                .to_owned();
            let parsed = parsed_codec::get(&mut r).map_err(|e| format!("a parse result: {e}"))?;
            units.insert(text, parsed);
        }
    }
    if r.at != body.len() {
        return Err("bytes after the end".into());
    }
    Ok(Some(Kept { memory, manifests }))
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
    use flipbit_core::model::ServiceInput;

    fn id(n: u8) -> CommitId {
        CommitId::from_bytes(&[n; 20]).expect("20 bytes")
    }

    fn engine() -> Engine<CommitId> {
        let files = [
            ("lb/lb-1/ns/a.conf".to_owned(), Some(7), id(1)),
            ("ledger.yaml".to_owned(), None, id(2)),
        ];
        let choices = [KeptChoice {
            key: "shop/web".parse().expect("a key"),
            candidates: 5,
            max: 2,
            all: 6,
            positions: vec![0, 3],
            fingerprint: 7,
        }];
        Engine::restore(&id(9).to_string(), files, choices)
    }

    fn memory() -> Memory {
        let ledger = Ledger::parse(
            "version: 1\nservices:\n  shop/web:\n    addresses: {lb-1: 10.0.0.1}\n    addressesV6: {lb-1: \"fd00::1\"}\n    ports: [TCP/80, UDP/53]\n    releasedAt: 2026-12-05T00:00:00Z\n    sharedKey: k\n",
        )
        .expect("a ledger");
        Memory::restored(engine(), Some((id(3), std::sync::Arc::new(ledger))))
    }

    fn manifests() -> ParseCache {
        let parsed = Parsed {
            services: vec![ServiceInput {
                namespace: "shop".into(),
                name: "web".into(),
                ..ServiceInput::default()
            }],
            ..Parsed::default()
        };
        let mut cache = ParseCache::default();
        cache.items.insert("- kind: Service\n".into(), parsed.clone());
        cache.files.insert("kind: Service\n".into(), parsed);
        cache
    }

    fn sorted(engine: &Engine<CommitId>) -> Vec<(String, Option<u64>, CommitId)> {
        let mut v: Vec<_> = engine.files().map(|(p, f, b)| (p.to_owned(), f, b)).collect();
        v.sort();
        v
    }

    #[test]
    fn a_cache_reads_back_as_written() {
        let bytes = encode(&memory(), &manifests(), "tag");
        let back = decode(&bytes, "tag").expect("intact").expect("same tag");
        assert_eq!(back.memory.engine().base(), engine().base());
        assert_eq!(sorted(back.memory.engine()), sorted(&engine()));
        assert_eq!(back.memory.engine().kept_choices(), engine().kept_choices());
        assert_eq!(back.memory.ledger(), memory().ledger());
        assert_eq!(back.manifests.items, manifests().items);
        assert_eq!(back.manifests.files, manifests().files);
    }

    #[test]
    fn another_tag_is_ignored() {
        let bytes = encode(&memory(), &manifests(), "tag");
        assert!(decode(&bytes, "other build").expect("intact").is_none());
    }

    /// Every truncation and every flipped byte is refused, never read as another memory.
    #[test]
    fn truncated_or_damaged_caches_are_refused() {
        let bytes = encode(&memory(), &manifests(), "tag");
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len], "tag").is_err(), "truncated to {len}");
        }
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x20;
            assert!(decode(&damaged, "tag").is_err(), "byte {i} flipped");
        }
    }
}
