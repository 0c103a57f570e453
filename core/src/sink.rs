//! Where a decision's files go. The decision hands over each generated file with a fingerprint of
//! everything its text depends on and a way to render it; a sink that remembers the fingerprints it
//! saw last time (the generator's engine) renders and stores only files whose inputs changed, so a
//! one-Service change costs one Service's rendering at any scale. [`TextFiles`] keeps every text,
//! for `plan`, the golden tests and small one-shot runs.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use crate::names::ServiceKey;
use crate::nodes::{self, Node, NodeSet};
use crate::render::RenderError;

pub trait FileSink {
    /// A file of the Service being decided. `render` makes its text when the sink needs it.
    fn file(
        &mut self,
        path: String,
        fingerprint: u64,
        render: &mut dyn FnMut() -> Result<String, RenderError>,
    ) -> Result<(), RenderError>;

    /// The files given since the last `keep`/`discard` stand: the Service rendered completely.
    fn keep(&mut self);

    /// The files given since the last `keep`/`discard` are void: the Service failed to render and
    /// keeps whatever it has in the repo.
    fn discard(&mut self);

    /// `svc` was read: `clean` when it is exposed without any warning, or not ours. A sink that
    /// decides incrementally looks at Services that were not clean again every time.
    fn classified(&mut self, svc: &crate::model::ServiceInput, clean: bool) {
        let _ = (svc, clean);
    }

    /// The nodes that carry `key` out of `candidates` (whose fingerprint is `candidates_fp`), at
    /// most `max`: rendezvous hashing over every candidate, which a sink may remember.
    /// `all` is the decision's eligible nodes, which `candidates` are taken from.
    fn chosen_nodes(
        &mut self,
        key: &ServiceKey,
        all: &std::sync::Arc<[Node]>,
        candidates: &[&Node],
        candidates_fp: u64,
        max: usize,
    ) -> Chosen {
        let _ = candidates_fp;
        Chosen::new(NodeSet::new(all, &nodes::choose(key, candidates, Some(max))))
    }
}

/// The nodes chosen for a Service, with their fingerprint (computed once per choice: a Service's
/// files depend on the nodes it got, not on every candidate, so a node flap re-renders only the
/// Services whose choice changed).
#[derive(Debug, Clone)]
pub struct Chosen {
    pub nodes: NodeSet,
    pub fingerprint: u64,
}

impl Chosen {
    pub fn new(nodes: NodeSet) -> Self {
        let fingerprint = fingerprint(&nodes);
        Self { nodes, fingerprint }
    }
}

/// Every file's text, by path.
#[derive(Debug, Default)]
pub struct TextFiles {
    pub files: BTreeMap<String, String>,
    pending: Vec<(String, String)>,
}

impl FileSink for TextFiles {
    fn file(
        &mut self,
        path: String,
        _fingerprint: u64,
        render: &mut dyn FnMut() -> Result<String, RenderError>,
    ) -> Result<(), RenderError> {
        let text = render()?;
        self.pending.push((path, text));
        Ok(())
    }

    fn keep(&mut self) {
        self.files.extend(self.pending.drain(..));
    }

    fn discard(&mut self) {
        self.pending.clear();
    }
}

/// A fingerprint of `value` (in-process only: sinks compare fingerprints from the same build).
pub fn fingerprint<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}
