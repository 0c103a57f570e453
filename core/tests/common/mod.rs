//! Builders shared by the core tests: the inputs of `inputs` (a LoadBalancer Service of our class,
//! a backend node), a decision over one Ready node at a fixed time, and the state repo as the
//! engine tests keep it.
#![allow(dead_code)]

mod inputs;

pub use inputs::*;

use std::collections::BTreeMap;

use flipbit_core::config::Config;
use flipbit_core::decide::{Decision, decide_with_holds};
use flipbit_core::engine::{Change, Engine, Step};
use flipbit_core::holds::HoldUpdate;
use flipbit_core::ledger::Ledger;
use flipbit_core::model::{ServiceInput, Snapshot};
use flipbit_core::repo_paths;
use jiff::Timestamp;
use proptest::prelude::*;

/// Texts by id, counting writes: the blob store of engine tests.
#[derive(Default)]
pub struct Store {
    pub texts: std::collections::HashMap<u64, String>,
    pub writes: usize,
}

/// Applies an engine step's changes (a blob id to write, or `None` to delete) to a tree.
pub fn commit_changes(tree: &mut BTreeMap<String, u64>, changes: &BTreeMap<String, Change<u64>>) {
    for (path, change) in changes {
        match change.blob() {
            Some(id) => tree.insert(path.clone(), id),
            None => tree.remove(path),
        };
    }
}

/// The state repo as the engine tests keep it: the engine, the blobs it wrote, the tree of the
/// last commit (path → blob id), the ledger committed last and how many commits there were.
pub struct Repo {
    pub engine: Engine<u64>,
    pub store: Store,
    pub tree: BTreeMap<String, u64>,
    pub ledger: Ledger,
    pub commits: usize,
}

impl Repo {
    pub fn new() -> Self {
        Self {
            engine: Engine::default(),
            store: Store::default(),
            tree: BTreeMap::new(),
            ledger: Ledger::empty(),
            commits: 0,
        }
    }

    /// One engine decision, held to a full decision on the same inputs: the same ledger, exposed
    /// and kept Services, events and problems; and once its changes are committed to the tree, a
    /// kept Service's files exactly as they were and every other file what the full decision
    /// rendered. Returns the full decision, the engine's and its step, not yet advanced to.
    pub fn decide_as_full(
        &mut self,
        snapshot: &Snapshot,
        config: &Config,
        now: Timestamp,
    ) -> Result<(Decision, Decision, Step<u64>), TestCaseError> {
        let holds = HoldUpdate::default();
        let full = decide_with_holds(snapshot, config, &self.ledger, &holds, now);
        let (decision, step) = self
            .engine
            .decide(snapshot, config, &self.ledger, &holds, now, &mut self.store)
            .map_err(TestCaseError::fail)?;
        prop_assert_eq!(&decision.ledger, &full.ledger);
        prop_assert_eq!(&decision.exposed, &full.exposed);
        prop_assert_eq!(&decision.kept, &full.kept);
        prop_assert_eq!(&decision.events, &full.events);
        prop_assert_eq!(&decision.problems, &full.problems);
        let before = self.tree.clone();
        commit_changes(&mut self.tree, &step.changes);
        let kept = |path: &String| repo_paths::service_of(path).is_some_and(|k| full.kept.contains(&k));
        let mut wrong: Vec<&String> = Vec::new();
        for path in self.tree.keys().chain(full.files.keys()) {
            let ours = self.tree.get(path).map(|id| &self.store.texts[id]);
            let right = if kept(path) {
                before.get(path).map(|id| &self.store.texts[id])
            } else {
                full.files.get(path)
            };
            if ours != right {
                wrong.push(path);
            }
        }
        prop_assert!(wrong.is_empty(), "files differ from a full decision's: {:?}", wrong);
        Ok((full, decision, step))
    }

    /// Counts a commit of `step`, advances the engine to it and keeps `decision`'s ledger;
    /// returns the commit's name.
    pub fn advance(&mut self, step: Step<u64>, decision: &Decision) -> String {
        self.commits += 1;
        let commit = self.last_commit();
        self.engine.advance(&commit, step, decision);
        self.ledger = decision.ledger.clone();
        commit
    }

    /// The name of the last commit: `c<count>`.
    pub fn last_commit(&self) -> String {
        format!("c{}", self.commits)
    }

    /// The engine's memory of its last decision as bytes, kept beside the repo's ledger.
    pub fn memory(&self) -> Option<Vec<u8>> {
        self.engine.kept_settled(Some(&self.ledger))
    }
}

/// The story the shortcut's property tests tell of a `world`: Services 0 to 3 created (`create`)
/// and decided (`cycle`), then each of `ops` applied (`apply`) and decided.
pub fn create_four_then<W, Op, R>(
    world: &mut W,
    ops: &[Op],
    create: impl Fn(usize) -> Op,
    apply: impl Fn(&mut W, &Op),
    cycle: impl Fn(&mut W) -> Result<R, TestCaseError>,
) -> Result<(), TestCaseError> {
    for i in 0..4 {
        apply(world, &create(i));
    }
    cycle(world)?;
    for op in ops {
        apply(world, op);
        cycle(world)?;
    }
    Ok(())
}

/// `secs` seconds after `now`.
pub fn after(now: Timestamp, secs: u32) -> Timestamp {
    now.saturating_add(jiff::SignedDuration::from_secs(secs.into()))
        .expect("time")
}

pub fn id_of(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

impl flipbit_core::engine::Blobs for Store {
    type Id = u64;
    fn id(&mut self, text: &str) -> Result<u64, String> {
        Ok(id_of(text))
    }
    fn write(&mut self, text: &str) -> Result<u64, String> {
        self.writes += 1;
        let id = id_of(text);
        self.texts.insert(id, text.to_owned());
        Ok(id)
    }
}

/// Decides for `services` with one Ready node at `node_ip`, at a fixed time.
pub fn decide_one_node(config: &Config, services: Vec<ServiceInput>, node_ip: &str, ledger: &Ledger) -> Decision {
    decide_one_node_held(config, services, node_ip, ledger, &HoldUpdate::default())
}

/// [`decide_one_node`] with holds in force.
pub fn decide_one_node_held(
    config: &Config,
    services: Vec<ServiceInput>,
    node_ip: &str,
    ledger: &Ledger,
    holds: &HoldUpdate,
) -> Decision {
    decide_with_holds(
        &one_node_snapshot(services, node_ip),
        config,
        ledger,
        holds,
        Timestamp::from_second(1_800_000_000).expect("time"),
    )
}
