//! `render` and `plan`: one decision cycle from a folder of manifests.

use anyhow::Result;
use jiff::Timestamp;

use crate::cycle::{self, Outcome, RepoTarget};
use crate::manifests;

/// Decides from the manifests in `dir`; commits and pushes when `push`, else only reports.
pub fn run(target: &RepoTarget, dir: &std::path::Path, now: Timestamp, push: bool) -> Result<Outcome> {
    let t = std::time::Instant::now();
    let (snapshot, load_problems) = manifests::load_dir(dir)?;
    tracing::debug!(
        ms = t.elapsed().as_millis() as u64,
        services = snapshot.services.len(),
        "manifests loaded"
    );
    let (store, _temp) = cycle::open_store(target)?;
    cycle::run(&store, target, &snapshot, &load_problems, now, push)
}
