//! The generator's memory between decisions, so work follows what changed: for every generated
//! path, the fingerprint of the inputs its text came from and the id of the blob holding it. A
//! decision renders only files whose fingerprint is new, hands each new text to the blob store at
//! once (a cold run over 150,000 files never holds them all), and reports the paths to write and
//! delete. Node subsets are remembered too, so an unchanged node set is not rescored.
//!
//! The memory describes one commit (`base`). When the branch head is another commit (a human's,
//! another writer's), [`Engine::sync`] re-reads the paths and blob ids there: fingerprints survive
//! for blobs that did not change, so one external commit costs only what it touched.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use jiff::Timestamp;

use crate::config::Config;
use crate::decide::{self, Decision};
use crate::holds::HoldUpdate;
use crate::ledger::Ledger;
use crate::model::Snapshot;
use crate::names::ServiceKey;
use crate::nodes::{self, Node};
use crate::render::RenderError;
use crate::repo_paths;
use crate::settled::{Fast, Settled};
use crate::sink::{Chosen, FileSink};

/// Maps keyed by paths and Service keys, looked up 200,000 times a cycle at 50k Services:
/// foldhash (seeded per process) rather than SipHash.
type HashMap<K, V> = foldhash::HashMap<K, V>;
type HashSet<K> = foldhash::HashSet<K>;

/// Names and stores texts; the generator's is the Git object store.
pub trait Blobs {
    type Id: Copy + Eq + Debug;
    /// The id `text` would have, computed without storing it.
    fn id(&mut self, text: &str) -> Result<Self::Id, String>;
    /// Stores `text`; returns its id.
    fn write(&mut self, text: &str) -> Result<Self::Id, String>;
}

#[derive(Debug, Clone, Copy)]
struct Known<Id> {
    /// `None` until a decision renders this path (after a sync, the blob is known, not its inputs).
    fingerprint: Option<u64>,
    blob: Id,
    /// The last decision that produced this path (paths no decision produced go).
    seen: u64,
}

#[derive(Debug, Clone)]
struct Choice {
    candidates: u64,
    max: usize,
    chosen: Chosen,
}

#[derive(Debug)]
pub struct Engine<Id> {
    files: HashMap<String, Known<Id>>,
    /// Counts decisions, to mark the paths each produced without a set of 150,000 names.
    generation: u64,
    choices: HashMap<ServiceKey, Choice>,
    base: Option<String>,
    /// The last decision, when it describes `base`: the next one may look at changed Services only.
    settled: Option<Settled>,
    /// How many decisions took that shortcut.
    fast_decisions: u64,
    /// Node choices read back by [`Engine::restore`]: turned into a [`Choice`] the first time the
    /// Service's candidates are seen again (the nodes themselves come with the decision).
    restored_choices: HashMap<ServiceKey, KeptChoice>,
    /// Whether anything was learned or changed since [`Engine::restore`] (a new base, a path, a
    /// choice): `render` rewrites its cache only then.
    changed: bool,
    /// The last decision as [`Engine::kept_settled`] wrote it, read back by [`Engine::restore_settled`]:
    /// turned into the shortcut's memory by the next decision, which has the snapshot it needs.
    restored_settled: Option<Vec<u8>>,
    /// Why the restored decision could not be used, once a decision tried (for a log line).
    settled_refused: Option<String>,
}

impl<Id> Default for Engine<Id> {
    fn default() -> Self {
        Self {
            files: HashMap::default(),
            generation: 0,
            choices: HashMap::default(),
            base: None,
            settled: None,
            fast_decisions: 0,
            restored_choices: HashMap::default(),
            changed: true,
            restored_settled: None,
            settled_refused: None,
        }
    }
}

/// A Service's node choice as kept between processes: valid for a decision whose candidates and
/// eligible nodes have the same fingerprints, where the chosen nodes are at the same positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptChoice {
    pub key: ServiceKey,
    /// Fingerprint of the candidates the choice was made from.
    pub candidates: u64,
    pub max: usize,
    /// Fingerprint of the decision's eligible nodes, which `positions` index.
    pub all: u64,
    pub positions: Vec<u32>,
    /// [`Chosen::fingerprint`] of the chosen nodes.
    pub fingerprint: u64,
}

/// The repo changes one incremental decision implies (its [`Decision`] is returned beside it,
/// with `files` empty).
#[derive(Debug)]
pub struct Step<Id> {
    /// Paths to write or delete, relative to the engine's base. Each path is held once: a cold
    /// decision at 50,000 Services changes 200,000 of them, and [`Engine::advance`] moves them
    /// into the memory rather than copying them.
    pub changes: BTreeMap<String, Change<Id>>,
    /// Fingerprints learned for paths whose text turned out unchanged.
    learned: Vec<(String, u64, Id)>,
    /// The memory of this decision, kept once it is the base's content.
    settled: Option<Settled>,
}

/// What a step does to one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<Id> {
    /// Write `blob`, rendered from inputs with `fingerprint` (`None`: a file the caller adds,
    /// which the engine does not remember).
    Write {
        blob: Id,
        fingerprint: Option<u64>,
    },
    Delete,
}

impl<Id: Copy> Change<Id> {
    /// A file the caller adds to a step (not one the engine rendered).
    pub fn write(blob: Id) -> Self {
        Self::Write {
            blob,
            fingerprint: None,
        }
    }

    /// The blob written, or `None` for a deletion.
    pub fn blob(&self) -> Option<Id> {
        match self {
            Self::Write { blob, .. } => Some(*blob),
            Self::Delete => None,
        }
    }
}

impl<Id: Copy> Step<Id> {
    /// Each changed path with its new blob (`None`: deleted), as the blob store commits them.
    pub fn blob_changes(&self) -> BTreeMap<&str, Option<Id>> {
        self.changes
            .iter()
            .map(|(path, change)| (path.as_str(), change.blob()))
            .collect()
    }

    /// The paths whose fingerprint the step learned without their text changing: with
    /// [`Step::changes`], every path [`Engine::advance`] changes in the memory.
    pub fn learned_paths(&self) -> impl Iterator<Item = &str> {
        self.learned.iter().map(|(path, _, _)| path.as_str())
    }
}

impl<Id: Copy + Eq + Debug> Engine<Id> {
    /// The commit the memory describes.
    pub fn base(&self) -> Option<&str> {
        self.base.as_deref()
    }

    /// Aligns the memory with the generated files at `commit` (every path under `lb/` and `dns/`
    /// and the ledger, with blob ids), keeping fingerprints of blobs that did not change.
    pub fn sync(&mut self, commit: &str, tree: impl IntoIterator<Item = (String, Id)>) {
        let mut files = HashMap::default();
        for (path, blob) in tree {
            let fingerprint = self
                .files
                .get(&path)
                .filter(|k| k.blob == blob)
                .and_then(|k| k.fingerprint);
            files.insert(
                path,
                Known {
                    fingerprint,
                    blob,
                    seen: 0,
                },
            );
        }
        self.files = files;
        self.base = Some(commit.to_owned());
        self.settled = None;
        self.restored_settled = None;
        self.changed = true;
    }

    /// Decides, rendering only what changed since the base, and storing new texts in `blobs`.
    #[allow(clippy::too_many_arguments)]
    pub fn decide<B: Blobs<Id = Id>>(
        &mut self,
        snapshot: &Snapshot,
        config: &Config,
        previous: &Ledger,
        holds: &HoldUpdate,
        now: Timestamp,
        blobs: &mut B,
    ) -> Result<(Decision, Step<Id>), String> {
        self.generation += 1;
        let generation = self.generation;
        let settled = self
            .settled
            .take()
            .or_else(|| self.restored_settled(snapshot, config, previous));
        let mut sink = EngineSink {
            engine: self,
            blobs,
            pending: Vec::new(),
            generation,
            changes: BTreeMap::new(),
            learned: Vec::new(),
            unclean: HashSet::default(),
            error: None,
            all_fp: None,
        };
        let inputs = decide::Inputs {
            snapshot,
            config,
            previous,
            holds,
            now,
        };
        let fast = settled.and_then(|s| s.decide_fast(inputs, &mut sink));
        let (decision, settled, touched) = match fast {
            Some(Fast {
                decision,
                settled,
                touched,
            }) => (decision, Some(settled), Some(touched)),
            None => {
                let decision = decide::decide_into(inputs, &mut sink);
                let unclean = std::mem::take(&mut sink.unclean);
                let settled = Settled::after_full(snapshot, config, holds, &decision, unclean);
                (decision, settled, None)
            }
        };
        if let Some(e) = sink.error {
            return Err(e);
        }
        let (mut changes, learned) = (sink.changes, sink.learned);
        let gone = |path: &String, known: &Known<Id>| {
            known.seen != generation && !repo_paths::service_of(path).is_some_and(|key| decision.kept.contains(&key))
        };
        match &touched {
            // Only the Services looked at can have lost files.
            Some(touched) => {
                self.fast_decisions += 1;
                for key in touched {
                    for path in repo_paths::service_paths(config, key) {
                        if self.files.get(&path).is_some_and(|known| gone(&path, known)) {
                            changes.insert(path, Change::Delete);
                        }
                    }
                }
            }
            None => {
                for (path, known) in &self.files {
                    if gone(path, known) {
                        changes.insert(path.clone(), Change::Delete);
                    }
                }
            }
        }
        Ok((
            decision,
            Step {
                changes,
                learned,
                settled,
            },
        ))
    }

    /// Records that `step` is now the content of `commit` (committed, or nothing to commit): the
    /// memory moves to it, taking the step's paths.
    pub fn advance(&mut self, commit: &str, step: Step<Id>, decision: &Decision) {
        if !step.changes.is_empty() || !step.learned.is_empty() || self.base.as_deref() != Some(commit) {
            self.changed = true;
        }
        for (path, change) in step.changes {
            match change {
                Change::Write {
                    blob,
                    fingerprint: Some(fingerprint),
                } => self.remember([(path, fingerprint, blob)]),
                Change::Write { fingerprint: None, .. } => {}
                Change::Delete => {
                    self.files.remove(&path);
                }
            }
        }
        self.remember(step.learned);
        let exposed = &decision.exposed;
        // Every exposed Service has a choice: more choices than Services means some went.
        if self.choices.len() > exposed.len() {
            self.choices.retain(|key, _| exposed.contains_key(key));
        }
        // Only when one went: 50,000 lookups in the ordered map are ~40 ms of a warm `render`.
        if exposed
            .keys()
            .filter(|key| self.restored_choices.contains_key(*key))
            .count()
            < self.restored_choices.len()
        {
            self.restored_choices.retain(|key, _| exposed.contains_key(key));
        }
        self.base = Some(commit.to_owned());
        self.settled = step.settled;
    }

    /// Records what `step` learned about unchanged paths of `commit` (the base it was decided on),
    /// without its writes: for a decision that was proposed elsewhere, not committed on the base.
    pub fn learn(&mut self, commit: &str, step: &Step<Id>) {
        if self.base.as_deref() != Some(commit) {
            return;
        }
        self.changed |= !step.learned.is_empty();
        self.remember(step.learned.iter().cloned());
    }

    /// Records rendered paths with the fingerprint of their inputs and their blob.
    fn remember(&mut self, rendered: impl IntoIterator<Item = (String, u64, Id)>) {
        for (path, fingerprint, blob) in rendered {
            let known = Known {
                fingerprint: Some(fingerprint),
                blob,
                seen: self.generation,
            };
            self.files.insert(path, known);
        }
    }

    /// Every path the memory describes, with the fingerprint of the inputs its text came from
    /// (when a decision rendered it) and its blob: what `flipbit-generator render` keeps in its
    /// cache dir between runs, with [`Engine::base`].
    pub fn files(&self) -> impl Iterator<Item = (&str, Option<u64>, Id)> {
        self.files
            .iter()
            .map(|(path, k)| (path.as_str(), k.fingerprint, k.blob))
    }

    /// One path of [`Engine::files`]: its fingerprint and blob, when the memory has it.
    pub fn file(&self, path: &str) -> Option<(Option<u64>, Id)> {
        self.files.get(path).map(|k| (k.fingerprint, k.blob))
    }

    /// A memory of `commit` read back from what [`Engine::files`] gave for it. The caller vouches
    /// that `files` are that commit's generated paths (the cache is tagged with the commit and
    /// checked), and that the fingerprints come from this very build (they hash the inputs, not
    /// the templates). The last decision itself comes separately ([`Engine::restore_settled`]);
    /// without it the first decision is a full one, which renders only the files whose
    /// fingerprint is new.
    pub fn restore(
        commit: &str,
        files: impl IntoIterator<Item = (String, Option<u64>, Id)>,
        choices: impl IntoIterator<Item = KeptChoice>,
    ) -> Self {
        let files = files
            .into_iter()
            .map(|(path, fingerprint, blob)| {
                let known = Known {
                    fingerprint,
                    blob,
                    seen: 0,
                };
                (path, known)
            })
            .collect();
        let restored_choices = choices.into_iter().map(|c| (c.key.clone(), c)).collect();
        Self {
            files,
            base: Some(commit.to_owned()),
            restored_choices,
            changed: false,
            ..Self::default()
        }
    }

    /// The node choice of every Service that has one (for [`Engine::restore`]).
    pub fn kept_choices(&self) -> Vec<KeptChoice> {
        let mut all_fp: Option<(*const Node, u64)> = None;
        let mut out: Vec<KeptChoice> = Vec::with_capacity(self.choices.len() + self.restored_choices.len());
        for (key, c) in &self.choices {
            let all = c.chosen.nodes.all();
            let fp = match all_fp {
                Some((ptr, fp)) if std::ptr::eq(ptr, all.as_ptr()) => fp,
                _ => {
                    let fp = crate::sink::fingerprint(&**all);
                    all_fp = Some((all.as_ptr(), fp));
                    fp
                }
            };
            out.push(KeptChoice {
                key: key.clone(),
                candidates: c.candidates,
                max: c.max,
                all: fp,
                positions: c.chosen.nodes.positions().to_vec(),
                fingerprint: c.chosen.fingerprint,
            });
        }
        let unresolved = self
            .restored_choices
            .values()
            .filter(|c| !self.choices.contains_key(&c.key));
        out.extend(unresolved.cloned());
        out
    }

    /// The last decision's memory as bytes, when it describes the base (what `render` keeps beside
    /// [`Engine::files`] so its next process decides only what changed); `beside` is the ledger
    /// kept with them, which the bytes then name by hash only.
    pub fn kept_settled(&self, beside: Option<&Ledger>) -> Option<Vec<u8>> {
        match &self.settled {
            Some(settled) => settled.encode(beside),
            // Restored and not used yet (no decision since): still the base's.
            None => self.restored_settled.clone(),
        }
    }

    /// Gives a memory read back by [`Engine::restore`] the last decision, as
    /// [`Engine::kept_settled`] wrote it. The next decision uses it when it fits the snapshot,
    /// `flipbit.yaml` and ledger it is made on, and is a full one otherwise
    /// ([`Engine::settled_refused`] says why).
    pub fn restore_settled(&mut self, bytes: Vec<u8>) {
        self.restored_settled = Some(bytes);
    }

    /// Why the last decision could not use the restored memory of the one before (taken: said once).
    pub fn settled_refused(&mut self) -> Option<String> {
        self.settled_refused.take()
    }

    fn restored_settled(&mut self, snapshot: &Snapshot, config: &Config, previous: &Ledger) -> Option<Settled> {
        let bytes = self.restored_settled.take()?;
        Settled::decode(&bytes, snapshot, config, previous)
            .map_err(|why| self.settled_refused = Some(why))
            .ok()
    }

    /// Until when deciding again on the inputs, `flipbit.yaml` and ledger of the last decision (its
    /// commit, with plain holds) decides nothing new: `Some(None)` for ever, `Some(Some(at))` until
    /// a withdrawn address comes free, `None` when that is not plain (no memory of the last
    /// decision, or one that looks at some Service again every time). `render` keeps it so that a
    /// run on the same manifests and head can answer "up to date" without deciding.
    pub fn unchanged_until(&self) -> Option<Option<Timestamp>> {
        self.settled.as_ref()?.unchanged_until()
    }

    /// Whether anything was learned or changed since [`Engine::restore`].
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// Forgets everything (after an error that may have left the memory out of step).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// How many decisions looked only at the Services that changed (see `settled`).
    pub fn fast_decisions(&self) -> u64 {
        self.fast_decisions
    }

    /// How many paths the memory describes.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

impl<B: Blobs> EngineSink<'_, B> {
    /// A choice read back by [`Engine::restore`] for the same candidates and eligible nodes,
    /// now tied to this decision's nodes; `None` when there is none or they differ.
    fn restored_choice(
        &mut self,
        key: &ServiceKey,
        all: &Arc<[Node]>,
        candidates_fp: u64,
        max: usize,
    ) -> Option<Chosen> {
        let kept = self.engine.restored_choices.remove(key)?;
        let all_fp = match self.all_fp {
            Some((ptr, fp)) if std::ptr::eq(ptr, all.as_ptr()) => fp,
            _ => {
                let fp = crate::sink::fingerprint(&**all);
                self.all_fp = Some((all.as_ptr(), fp));
                fp
            }
        };
        if kept.candidates != candidates_fp || kept.max != max || kept.all != all_fp {
            return None;
        }
        let chosen = Chosen {
            nodes: nodes::NodeSet::at_positions(all, &kept.positions)?,
            fingerprint: kept.fingerprint,
        };
        let choice = Choice {
            candidates: candidates_fp,
            max,
            chosen: chosen.clone(),
        };
        self.engine.choices.insert(key.clone(), choice);
        Some(chosen)
    }
}

struct EngineSink<'a, B: Blobs> {
    engine: &'a mut Engine<B::Id>,
    blobs: &'a mut B,
    /// Files of the Service being decided: (path, fingerprint, new blob when rendered).
    pending: Vec<(String, u64, Option<B::Id>)>,
    generation: u64,
    changes: BTreeMap<String, Change<B::Id>>,
    learned: Vec<(String, u64, B::Id)>,
    /// Inputs that were not plainly exposed or ignored (for the next decision's memory).
    unclean: HashSet<(String, String)>,
    /// The blob store failed: the whole decision is void.
    error: Option<String>,
    /// The fingerprint of the decision's eligible nodes, once a restored choice needed it.
    all_fp: Option<(*const Node, u64)>,
}

impl<B: Blobs> FileSink for EngineSink<'_, B> {
    fn file(
        &mut self,
        path: String,
        fingerprint: u64,
        render: &mut dyn FnMut() -> Result<String, RenderError>,
    ) -> Result<(), RenderError> {
        let known = self.engine.files.get(&path);
        if known.and_then(|k| k.fingerprint) == Some(fingerprint) {
            self.pending.push((path, fingerprint, None));
            return Ok(());
        }
        let text = render()?;
        // Text that turns out unchanged (a sync forgot its inputs) is only hashed, not stored again.
        let stored = match known {
            Some(k) => match self.blobs.id(&text) {
                Ok(id) if id == k.blob => Ok(id),
                Ok(_) => self.blobs.write(&text),
                Err(e) => Err(e),
            },
            None => self.blobs.write(&text),
        };
        match stored {
            Ok(blob) => self.pending.push((path, fingerprint, Some(blob))),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        Ok(())
    }

    fn keep(&mut self) {
        for (path, fingerprint, blob) in self.pending.drain(..) {
            // A path the memory does not know yet is new: `advance` records it.
            let known = self.engine.files.get_mut(&path);
            let unchanged = known.as_ref().is_some_and(|k| Some(k.blob) == blob);
            if let Some(known) = known {
                known.seen = self.generation;
            }
            match blob {
                Some(blob) if unchanged => self.learned.push((path, fingerprint, blob)),
                Some(blob) => {
                    let fingerprint = Some(fingerprint);
                    self.changes.insert(path, Change::Write { blob, fingerprint });
                }
                None => {}
            }
        }
    }

    fn discard(&mut self) {
        self.pending.clear();
    }

    fn classified(&mut self, svc: &crate::model::ServiceInput, clean: bool) {
        if !clean {
            self.unclean.insert((svc.namespace.clone(), svc.name.clone()));
        }
    }

    fn chosen_nodes(
        &mut self,
        key: &ServiceKey,
        all: &Arc<[Node]>,
        candidates: &[&Node],
        candidates_fp: u64,
        max: usize,
    ) -> Chosen {
        if let Some(c) = self.engine.choices.get(key)
            && c.candidates == candidates_fp
            && c.max == max
        {
            return c.chosen.clone();
        }
        if let Some(chosen) = self.restored_choice(key, all, candidates_fp, max) {
            return chosen;
        }
        self.engine.changed = true;
        let chosen = Chosen::new(nodes::NodeSet::new(all, &nodes::choose(key, candidates, Some(max))));
        self.engine.choices.insert(
            key.clone(),
            Choice {
                candidates: candidates_fp,
                max,
                chosen: chosen.clone(),
            },
        );
        chosen
    }
}
