//! One record of the render cache: what the memory holds, as operations on the state before it
//! (set or delete a path, a node choice, a parse result; replace the decision's memory or the
//! ledger). The cache file is one record applied to nothing; each journal record is the difference
//! a later run made, so a run that changed one Service writes a few hundred bytes instead of the
//! whole 63 MB memory of a 50k cluster (see `journal`).
//!
//! Layout of a record: the engine's base (a flag, the commit); paths (a count, then per path its
//! text, an op — 0 delete, 1 set without fingerprint, 2 set with one — the fingerprint and blob id
//! when set); node choices (a count, then per Service its key, an op and, when set, its fields as
//! one sized field); the last decision's memory (an op: 0 as before, 1 none, 2 these chunks: a
//! count, then per chunk its checksum and either its bytes or nothing when the memory before had
//! a chunk with that checksum); the ledger (an op: 0 as before, 1 none, 2 its blob id and JSON);
//! the parse results of whole files, then of `List` items (a count, then per text
//! an op and, when set, what it read as, as one sized field); what each manifest file was when it
//! was read (a count, then per path an op and, when set, its identity and units as one sized
//! field). Sized fields let a reader that only indexes a record skip what it does not need.

use std::sync::Arc;

use flipbit_core::engine::{Engine, KeptChoice};
use flipbit_core::ledger::Ledger;
use flipbit_core::names::ServiceKey;
use flipbit_store::{BlobId, CommitId};

use super::{Reader, checksum, parsed_codec, put_bytes};
use crate::cycle::Memory;
use crate::manifests::ParseCache;

type HashMap<K, V> = foldhash::HashMap<K, V>;
type HashSet<K> = foldhash::HashSet<K>;

/// Each chunk's checksum, with its bytes unless the memory before had it.
type ChunkList<'a> = Vec<(u64, Option<&'a [u8]>)>;

const DELETE: u8 = 0;
const SET: u8 = 1;
const SET_FINGERPRINT: u8 = 2;
const SAME: u8 = 0;
const NONE: u8 = 1;
const BYTES: u8 = 2;

/// What a record says, read without building anything: each item with the bytes it names.
pub(super) trait Visit<'a> {
    /// Where the parts a record replaces whole go (`walk` applies them the same for every reader).
    fn whole(&mut self) -> &mut Whole<'a>;
    fn path(&mut self, path: &'a str, value: Option<(Option<u64>, BlobId)>);
    fn choice(&mut self, key: &'a str, body: Option<&'a [u8]>);
    /// `whole`: a whole file's text (else a `List` item's).
    fn unit(&mut self, whole: bool, text: &'a str, parsed: Option<&'a [u8]>);
    /// A manifest file by its path: what it was when it was read (`manifests::FileSeen`).
    fn seen(&mut self, path: &'a str, body: Option<&'a [u8]>);
}

/// The parts of the state a record replaces whole rather than item by item, as slices of the
/// records' bytes.
#[derive(Default)]
pub(super) struct Whole<'a> {
    base: Option<CommitId>,
    /// The last decision's memory, in the chunks it was written in.
    settled: Option<Vec<&'a [u8]>>,
    /// The ledger's blob id and JSON.
    ledger: Option<(BlobId, &'a [u8])>,
}

/// Reads one record body, which must be whole.
pub(super) fn walk<'a>(body: &'a [u8], v: &mut impl Visit<'a>) -> Result<(), String> {
    let mut r = Reader { bytes: body, at: 0 };
    let base = match r.take(1)?[0] {
        0 => None,
        _ => Some(CommitId::from_bytes(r.take(20)?).map_err(|e| e.to_string())?),
    };
    v.whole().base = base;
    for _ in 0..u64::from_le_bytes(r.array()?) {
        let path = std::str::from_utf8(r.sized()?).map_err(|_| "a path that is not UTF-8")?;
        let value = match r.take(1)?[0] {
            DELETE => None,
            op => {
                let fingerprint = u64::from_le_bytes(r.array()?);
                let blob = BlobId::from_bytes(r.take(20)?).map_err(|e| e.to_string())?;
                Some(((op == SET_FINGERPRINT).then_some(fingerprint), blob))
            }
        };
        v.path(path, value);
    }
    keyed(&mut r, "a key", |key, body| v.choice(key, body))?;
    let settled = match r.take(1)?[0] {
        SAME => None,
        NONE => Some(None),
        _ => {
            let n = u64::from_le_bytes(r.array()?);
            let mut chunks = Vec::with_capacity(usize::try_from(n).unwrap_or(0).min(body.len() / 9));
            for _ in 0..n {
                let sum = u64::from_le_bytes(r.array()?);
                let bytes = match r.take(1)?[0] {
                    0 => None,
                    _ => Some(r.sized()?),
                };
                chunks.push((sum, bytes));
            }
            Some(Some(chunks))
        }
    };
    // `None`: as before; `Some(None)`: none; else each chunk's checksum, with its bytes unless
    // the memory before had it.
    if let Some(chunks) = settled {
        let whole = v.whole();
        whole.settled = resolve(whole.settled.as_deref(), chunks)?;
    }
    let ledger = match r.take(1)?[0] {
        SAME => None,
        NONE => Some(None),
        _ => {
            let id = BlobId::from_bytes(r.take(20)?).map_err(|e| e.to_string())?;
            Some(Some((id, r.sized()?)))
        }
    };
    if let Some(ledger) = ledger {
        v.whole().ledger = ledger;
    }
    for whole in [true, false] {
        keyed(&mut r, "a manifest", |text, parsed| v.unit(whole, text, parsed))?;
    }
    keyed(&mut r, "a manifest path", |path, body| v.seen(path, body))?;
    if r.at != body.len() {
        return Err("bytes after the end of a record".into());
    }
    Ok(())
}

/// Items named by a key with a sized body: a count, then per item its key, an op and, when set,
/// the body; each handed to `each` (`None`: deleted).
fn keyed<'a>(r: &mut Reader<'a>, what: &str, mut each: impl FnMut(&'a str, Option<&'a [u8]>)) -> Result<(), String> {
    for _ in 0..u64::from_le_bytes(r.array()?) {
        let key = std::str::from_utf8(r.sized()?).map_err(|_| format!("{what} that is not UTF-8"))?;
        let body = match r.take(1)?[0] {
            DELETE => None,
            _ => Some(r.sized()?),
        };
        each(key, body);
    }
    Ok(())
}

/// The state some records leave, as slices of their bytes: what a run compares its memory with to
/// write only the difference.
#[derive(Default)]
pub(super) struct Index<'a> {
    /// Paths are not indexed when the memory says which it touched (see `put_difference`).
    skip_paths: bool,
    whole: Whole<'a>,
    paths: HashMap<&'a str, (Option<u64>, BlobId)>,
    choices: HashMap<&'a str, &'a [u8]>,
    units: [HashSet<&'a str>; 2],
    seen: HashMap<&'a str, &'a [u8]>,
}

impl<'a> Index<'a> {
    /// An empty state; `skip_paths` when the memory it will be compared with says which paths it
    /// touched.
    pub(super) fn new(skip_paths: bool) -> Self {
        Self {
            skip_paths,
            ..Self::default()
        }
    }

    /// Reads `body` on top of what the records before it left.
    pub(super) fn apply(&mut self, body: &'a [u8]) -> Result<(), String> {
        walk(body, self)
    }
}

impl<'a> Visit<'a> for Index<'a> {
    fn whole(&mut self) -> &mut Whole<'a> {
        &mut self.whole
    }

    fn path(&mut self, path: &'a str, value: Option<(Option<u64>, BlobId)>) {
        if self.skip_paths {
            return;
        }
        match value {
            Some(v) => self.paths.insert(path, v),
            None => self.paths.remove(path),
        };
    }

    fn choice(&mut self, key: &'a str, body: Option<&'a [u8]>) {
        match body {
            Some(b) => self.choices.insert(key, b),
            None => self.choices.remove(key),
        };
    }

    fn unit(&mut self, whole: bool, text: &'a str, parsed: Option<&'a [u8]>) {
        let units = &mut self.units[usize::from(!whole)];
        match parsed {
            Some(_) => units.insert(text),
            None => units.remove(text),
        };
    }

    fn seen(&mut self, path: &'a str, body: Option<&'a [u8]>) {
        match body {
            Some(body) => self.seen.insert(path, body),
            None => self.seen.remove(path),
        };
    }
}

/// What records build: the first one (the cache file) straight into lists, later ones (the
/// journal's, a few items each) into maps of changes applied at the end. One build makes either
/// the manifest parse results or the rest of the memory, so two threads can each walk the records
/// for one of them.
pub(super) struct Build<'a> {
    /// The manifest parse results (`manifests`), else the rest.
    for_manifests: bool,
    first_done: bool,
    whole: Whole<'a>,
    files: Vec<(String, Option<u64>, CommitId)>,
    file_changes: HashMap<&'a str, Option<(Option<u64>, BlobId)>>,
    choices: Vec<KeptChoice>,
    choice_changes: HashMap<&'a str, Option<&'a [u8]>>,
    pub(super) manifests: ParseCache,
    error: Option<String>,
}

impl<'a> Build<'a> {
    /// A build of the manifest parse results only.
    pub(super) fn manifests() -> Self {
        Self::new(true)
    }

    /// A build of the rest of the memory only (see [`Build::finish`]).
    pub(super) fn rest() -> Self {
        Self::new(false)
    }

    fn new(for_manifests: bool) -> Self {
        Self {
            for_manifests,
            first_done: false,
            whole: Whole::default(),
            files: Vec::new(),
            file_changes: HashMap::default(),
            choices: Vec::new(),
            choice_changes: HashMap::default(),
            manifests: ParseCache::default(),
            error: None,
        }
    }

    /// Reads `body` on top of what the records before it built.
    pub(super) fn apply(&mut self, body: &'a [u8]) -> Result<(), String> {
        walk(body, self)?;
        self.first_done = true;
        self.error.take().map_or(Ok(()), Err)
    }

    /// The memory all records applied describe.
    pub(super) fn finish(self) -> Result<Memory, String> {
        debug_assert!(!self.for_manifests, "a build of the rest");
        let Whole { base, settled, ledger } = self.whole;
        let engine = match base {
            None => Engine::default(),
            Some(base) => {
                let mut files = self.files;
                if !self.file_changes.is_empty() {
                    files.retain(|(path, _, _)| !self.file_changes.contains_key(path.as_str()));
                    let set = self.file_changes.into_iter().filter_map(|(p, v)| v.map(|v| (p, v)));
                    files.extend(set.map(|(path, (fingerprint, blob))| (path.to_owned(), fingerprint, blob)));
                }
                let mut choices = self.choices;
                if !self.choice_changes.is_empty() {
                    let mut changed = HashSet::default();
                    for key in self.choice_changes.keys() {
                        changed.insert(key.parse::<ServiceKey>().map_err(|e| format!("a node choice: {e}"))?);
                    }
                    choices.retain(|c| !changed.contains(&c.key));
                    for (key, body) in self.choice_changes {
                        if let Some(body) = body {
                            choices.push(choice_from(key, body)?);
                        }
                    }
                }
                let mut engine = Engine::restore(&base.to_string(), files, choices);
                if let Some(chunks) = settled {
                    engine.restore_settled(chunks.concat());
                }
                engine
            }
        };
        let ledger = match ledger {
            None => None,
            Some((id, json)) => {
                let ledger: Ledger = serde_json::from_slice(json).map_err(|e| format!("the ledger: {e}"))?;
                Some((id, Arc::new(ledger)))
            }
        };
        Ok(Memory::restored(engine, ledger))
    }
}

impl<'a> Visit<'a> for Build<'a> {
    fn whole(&mut self) -> &mut Whole<'a> {
        &mut self.whole
    }

    fn path(&mut self, path: &'a str, value: Option<(Option<u64>, BlobId)>) {
        if self.for_manifests {
            return;
        }
        match (self.first_done, value) {
            (false, Some((fingerprint, blob))) => self.files.push((path.to_owned(), fingerprint, blob)),
            (false, None) => self.error = Some("a deletion in the cache file".into()),
            (true, value) => {
                self.file_changes.insert(path, value);
            }
        }
    }

    fn choice(&mut self, key: &'a str, body: Option<&'a [u8]>) {
        if self.for_manifests {
            return;
        }
        match (self.first_done, body) {
            (false, Some(body)) => match choice_from(key, body) {
                Ok(c) => self.choices.push(c),
                Err(e) => self.error = Some(e),
            },
            (false, None) => self.error = Some("a deletion in the cache file".into()),
            (true, body) => {
                self.choice_changes.insert(key, body);
            }
        }
    }

    fn unit(&mut self, whole: bool, text: &'a str, parsed: Option<&'a [u8]>) {
        if !self.for_manifests {
            return;
        }
        let units = if whole {
            &mut self.manifests.files
        } else {
            &mut self.manifests.items
        };
        match parsed {
            None => {
                units.remove(text);
            }
            Some(bytes) => {
                let mut r = Reader { bytes, at: 0 };
                match parsed_codec::get(&mut r) {
                    Ok(parsed) if r.at == bytes.len() => {
                        units.insert(text.into(), parsed);
                    }
                    Ok(_) => self.error = Some("a parse result with bytes after it".into()),
                    Err(e) => self.error = Some(format!("a parse result: {e}")),
                }
            }
        }
    }

    fn seen(&mut self, path: &'a str, body: Option<&'a [u8]>) {
        if !self.for_manifests {
            return;
        }
        let Some(bytes) = body else {
            self.manifests.seen.remove(path);
            return;
        };
        let mut r = Reader { bytes, at: 0 };
        match parsed_codec::get_seen(&mut r) {
            Ok(seen) if r.at == bytes.len() => {
                self.manifests.seen.insert(path.to_owned(), seen);
            }
            Ok(_) => self.error = Some("a manifest file's record with bytes after it".into()),
            Err(e) => self.error = Some(format!("a manifest file's record: {e}")),
        }
    }
}

fn choice_from(key: &str, body: &[u8]) -> Result<KeptChoice, String> {
    let key: ServiceKey = key.parse().map_err(|e| format!("a node choice: {e}"))?;
    let mut r = Reader { bytes: body, at: 0 };
    let candidates = u64::from_le_bytes(r.array()?);
    let max = usize::try_from(u64::from_le_bytes(r.array()?)).map_err(|_| "a node choice's max")?;
    let all = u64::from_le_bytes(r.array()?);
    let fingerprint = u64::from_le_bytes(r.array()?);
    let n = u32::from_le_bytes(r.array()?);
    let mut positions = Vec::with_capacity((n as usize).min(body.len() / 4));
    for _ in 0..n {
        positions.push(u32::from_le_bytes(r.array()?));
    }
    if r.at != body.len() {
        return Err("a node choice with bytes after it".into());
    }
    Ok(KeptChoice {
        key,
        candidates,
        max,
        all,
        positions,
        fingerprint,
    })
}

fn put_choice_body(out: &mut Vec<u8>, c: &KeptChoice) {
    for n in [c.candidates, c.max as u64, c.all, c.fingerprint] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&(c.positions.len() as u32).to_le_bytes());
    for p in &c.positions {
        out.extend_from_slice(&p.to_le_bytes());
    }
}

/// Writes a sized field whose bytes `fill` appends.
fn put_sized_with(out: &mut Vec<u8>, fill: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    fill(out);
    let n = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&n.to_le_bytes());
}

/// Appends the record that turns the state `before` indexes into `memory` and `manifests`; with
/// an empty `before`, the whole memory (the cache file's record). `None` when the memory has no
/// base (a journal record could not say so; the caller writes the whole file).
pub(super) fn put_difference(
    out: &mut Vec<u8>,
    memory: &Memory,
    manifests: &ParseCache,
    mut before: Index<'_>,
) -> Option<()> {
    let (engine, ledger) = (memory.engine(), memory.ledger());
    let base = engine.base().and_then(|b| b.parse::<CommitId>().ok());
    match base {
        Some(base) => {
            out.push(1);
            out.extend_from_slice(base.as_bytes());
        }
        None if before.whole.base.is_none() => out.push(0),
        None => return None,
    }
    let at = count_at(out);
    let mut n = 0u64;
    let touched = memory.touched_paths();
    if before.skip_paths && touched.is_none() {
        // The paths before were not indexed, and the memory cannot say which changed: only a
        // whole file says what it holds (a journal record would keep paths the memory dropped).
        return None;
    }
    if let (Some(touched), Some(_), true) = (touched, base, before.skip_paths) {
        // Only the paths steps wrote, deleted or learned a fingerprint of: 200,000 paths need not
        // be compared, nor even walked.
        for path in touched {
            put_bytes(out, path.as_bytes());
            match engine.file(path) {
                Some((fingerprint, blob)) => {
                    out.push(if fingerprint.is_some() { SET_FINGERPRINT } else { SET });
                    out.extend_from_slice(&fingerprint.unwrap_or_default().to_le_bytes());
                    out.extend_from_slice(blob.as_bytes());
                }
                None => out.push(DELETE),
            }
            n += 1;
        }
    } else if base.is_some() {
        for (path, fingerprint, blob) in engine.files() {
            if before.paths.remove(path) == Some((fingerprint, blob)) {
                continue;
            }
            put_bytes(out, path.as_bytes());
            out.push(if fingerprint.is_some() { SET_FINGERPRINT } else { SET });
            out.extend_from_slice(&fingerprint.unwrap_or_default().to_le_bytes());
            out.extend_from_slice(blob.as_bytes());
            n += 1;
        }
    }
    for path in before.paths.keys() {
        put_bytes(out, path.as_bytes());
        out.push(DELETE);
        n += 1;
    }
    patch(out, at, n);

    let Index {
        whole,
        choices: choices_before,
        units: units_before,
        seen: seen_before,
        ..
    } = before;
    let (settled_was, ledger_was) = (whole.settled, whole.ledger.map(|(id, _)| id));
    // The last decision's memory and the ledger are encoded on another thread while this one
    // compares node choices, parse results and manifest files (~5% of a warm 50k run each).
    let (side, tail) = std::thread::scope(|scope| {
        let side = scope.spawn(|| {
            let mut side = Vec::new();
            let settled = base.and_then(|_| engine.kept_settled(ledger.map(|(_, l)| &**l)));
            put_settled(&mut side, settled.as_deref(), settled_was.as_deref());
            put_ledger(&mut side, ledger, ledger_was);
            side
        });
        let at = count_at(out);
        let choices = if base.is_some() {
            engine.kept_choices()
        } else {
            Vec::new()
        };
        let mut choices_before = choices_before;
        let keyed = choices.iter().map(|c| (c.key.to_string(), c));
        let n = put_keyed(out, keyed, put_choice_body, &mut choices_before);
        patch(out, at, n);
        let mut tail = Vec::new();
        put_units(&mut tail, manifests, units_before);
        let at = count_at(&mut tail);
        let keyed = manifests.seen.iter().map(|(path, seen)| (path.as_str(), seen));
        let mut seen_before = seen_before;
        let n = put_keyed(&mut tail, keyed, parsed_codec::put_seen, &mut seen_before);
        patch(&mut tail, at, n);
        (side.join(), tail)
    });
    out.extend_from_slice(&side.ok()?);
    out.extend_from_slice(&tail);
    Some(())
}

/// A count, patched in once known: where it is.
fn count_at(out: &mut Vec<u8>) -> usize {
    out.extend_from_slice(&0u64.to_le_bytes());
    out.len() - 8
}

fn patch(out: &mut [u8], at: usize, n: u64) {
    out[at..at + 8].copy_from_slice(&n.to_le_bytes());
}

/// The last decision's memory: as before, none, or its chunks (only the bytes of those the memory
/// before did not have: one changed Service changes a few).
fn put_settled(out: &mut Vec<u8>, now: Option<&[u8]>, was: Option<&[&[u8]]>) {
    let same =
        |now: &[u8], was: &[&[u8]]| now.len() == was.iter().map(|c| c.len()).sum::<usize>() && now == was.concat();
    match (now, was) {
        (Some(now), Some(was)) if same(now, was) => out.push(SAME),
        (None, None) => out.push(SAME),
        (None, Some(_)) => out.push(NONE),
        (Some(now), was) => {
            out.push(BYTES);
            let mut known: HashSet<u64> = was.unwrap_or_default().iter().map(|c| checksum(c)).collect();
            let chunks = chunks(now);
            out.extend_from_slice(&(chunks.len() as u64).to_le_bytes());
            for chunk in chunks {
                let sum = checksum(chunk);
                out.extend_from_slice(&sum.to_le_bytes());
                if known.insert(sum) {
                    out.push(1);
                    put_bytes(out, chunk);
                } else {
                    out.push(0);
                }
            }
        }
    }
}

/// The ledger: as before (the same blob), none, or its blob id and JSON.
fn put_ledger(out: &mut Vec<u8>, now: Option<&(BlobId, Arc<Ledger>)>, was: Option<BlobId>) {
    match (now, was) {
        (Some((id, _)), Some(was)) if *id == was => out.push(SAME),
        (None, None) => out.push(SAME),
        (None, Some(_)) => out.push(NONE),
        (Some((id, ledger)), _) => {
            out.push(BYTES);
            out.extend_from_slice(id.as_bytes());
            // Serializing the ledger's plain data does not fail.
            put_bytes(out, &serde_json::to_vec(&**ledger).unwrap_or_default());
        }
    }
}

/// The parse results of whole files, then of `List` items: those whose text `before` did not
/// have, then a delete for each text of `before` the cache no longer has.
fn put_units(out: &mut Vec<u8>, manifests: &ParseCache, mut before: [HashSet<&str>; 2]) {
    for (i, units) in [&manifests.files, &manifests.items].into_iter().enumerate() {
        let at = count_at(out);
        let mut n = 0u64;
        let known = &mut before[i];
        for (text, parsed) in units {
            if known.remove(&**text) {
                // The same text reads the same: nothing to say.
                continue;
            }
            put_bytes(out, text.as_bytes());
            out.push(SET);
            put_sized_with(out, |out| parsed_codec::put(out, parsed));
            n += 1;
        }
        for text in known.iter() {
            put_bytes(out, text.as_bytes());
            out.push(DELETE);
            n += 1;
        }
        patch(out, at, n);
    }
}

/// For items named by a key and written as one sized body: a set for each of `now` whose body is
/// not the one `before` has, then a delete for each key of `before` that `now` did not name; how
/// many.
fn put_keyed<K: AsRef<str>, T>(
    out: &mut Vec<u8>,
    now: impl Iterator<Item = (K, T)>,
    put_body: impl Fn(&mut Vec<u8>, T),
    before: &mut HashMap<&str, &[u8]>,
) -> u64 {
    let (mut n, mut body) = (0, Vec::with_capacity(64));
    for (key, item) in now {
        let key = key.as_ref();
        body.clear();
        put_body(&mut body, item);
        if before.remove(key) == Some(&body[..]) {
            continue;
        }
        put_bytes(out, key.as_bytes());
        out.push(SET);
        put_bytes(out, &body);
        n += 1;
    }
    for key in before.keys() {
        put_bytes(out, key.as_bytes());
        out.push(DELETE);
        n += 1;
    }
    n
}

/// The chunks a record names, from the bytes it carries and the chunks of the memory before it.
fn resolve<'a>(before: Option<&[&'a [u8]]>, chunks: Option<ChunkList<'a>>) -> Result<Option<Vec<&'a [u8]>>, String> {
    let Some(chunks) = chunks else {
        return Ok(None);
    };
    let mut known: HashMap<u64, &'a [u8]> = before.unwrap_or_default().iter().map(|c| (checksum(c), *c)).collect();
    let mut out = Vec::with_capacity(chunks.len());
    for (sum, bytes) in chunks {
        let chunk = match bytes {
            Some(bytes) if checksum(bytes) == sum => {
                known.insert(sum, bytes);
                bytes
            }
            Some(_) => return Err("a chunk of the last decision's memory that does not match its checksum".into()),
            None => *known
                .get(&sum)
                .ok_or("a chunk of the last decision's memory that the memory before did not have")?,
        };
        out.push(chunk);
    }
    Ok(Some(out))
}

/// Cuts `bytes` where their content says (a gear hash of the last 64 bytes), not at fixed
/// offsets: a few bytes changed in the middle change one or two chunks, and the rest cut the same.
fn chunks(bytes: &[u8]) -> Vec<&[u8]> {
    const MIN: usize = 1024;
    const MAX: usize = 64 * 1024;
    // The top 12 bits zero: a cut every ~4 KiB after the minimum.
    const MASK: u64 = 0xfff << 52;
    let mut out = Vec::with_capacity(bytes.len() / 4096 + 1);
    let (mut start, mut h) = (0, 0u64);
    for (i, &b) in bytes.iter().enumerate() {
        h = (h << 1).wrapping_add(GEAR[usize::from(b)]);
        let len = i + 1 - start;
        if (len >= MIN && h & MASK == 0) || len >= MAX {
            out.push(&bytes[start..=i]);
            start = i + 1;
            h = 0;
        }
    }
    if start < bytes.len() {
        out.push(&bytes[start..]);
    }
    out
}

/// 256 fixed pseudo-random words (splitmix64), one per byte value.
const GEAR: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut x: u64 = 0;
    let mut i = 0;
    while i < 256 {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        table[i] = z ^ (z >> 31);
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    /// A few bytes changed in the middle of a long memory change few chunks, and the chunks put
    /// back together are the bytes.
    #[test]
    fn a_small_change_changes_few_chunks() {
        let mut x = 1u64;
        let bytes: Vec<u8> = (0..400_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let before = chunks(&bytes);
        assert_eq!(before.concat(), bytes);
        assert!(before.len() > 40, "{} chunks", before.len());
        let mut changed = bytes.clone();
        changed.splice(200_000..200_010, [7u8; 25]);
        let after = chunks(&changed);
        assert_eq!(after.concat(), changed);
        let known: HashSet<&[u8]> = before.iter().copied().collect();
        let new = after.iter().filter(|c| !known.contains(*c)).count();
        assert!(new <= 3, "{new} new chunks of {}", after.len());
    }
}
