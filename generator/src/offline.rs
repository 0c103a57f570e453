//! `render` and `plan`: one decision cycle from a folder of manifests.

use anyhow::Result;
use jiff::Timestamp;

use crate::cycle::{self, Outcome, RepoTarget};
use crate::manifests;
use crate::render_cache;

/// Decides from the manifests in `dir`; commits and pushes when `push`, else only reports.
pub fn run(target: &RepoTarget, dir: &std::path::Path, now: Timestamp, push: bool) -> Result<Outcome> {
    // What the last run kept in the cache dir (render_cache), else nothing: either way the engine
    // writes only what changed and never holds every rendered text at once.
    let kept = match &target.cache_dir {
        Some(cache) => render_cache::load(cache, target),
        None => render_cache::Kept::default(),
    };
    let t = std::time::Instant::now();
    let render_cache::Kept {
        memory,
        manifests: parse_cache,
        retained,
    } = kept;
    let (snapshot, load_problems, parsed) = manifests::load_dir_cached(dir, parse_cache)?;
    tracing::debug!(
        ms = t.elapsed().as_millis() as u64,
        services = snapshot.services.len(),
        "manifests loaded"
    );
    let (store, _temp) = cycle::open_store(target)?;
    let mut memory = memory;
    let outcome = cycle::run(&store, target, &snapshot, &load_problems, now, push, Some(&mut memory))?;
    if let Some(cache) = &target.cache_dir {
        render_cache::save(cache, target, &memory, &parsed, retained.as_ref());
    }
    Ok(outcome)
}

/// What `plan` shows: the outcome, and the content before and after the change of every changed
/// path (`None` for a file that does not exist on that side).
pub struct Plan {
    pub outcome: Outcome,
    pub before: std::collections::BTreeMap<String, Option<String>>,
    /// Read from the commit the plan made in the cache repo (the engine hands no texts back).
    pub after: std::collections::BTreeMap<String, Option<String>>,
}

/// Decides without committing anything visible (the commit is made in the cache repo and never
/// pushed), and reads the current content of each path the decision would change. The same engine
/// as `render`, from a fresh memory: `plan` leaves the render cache as it is.
pub fn plan(target: &RepoTarget, dir: &std::path::Path, now: Timestamp) -> Result<Plan> {
    let (snapshot, load_problems) = manifests::load_dir(dir)?;
    let (store, _temp) = cycle::open_store(target)?;
    let outcome = cycle::run(&store, target, &snapshot, &load_problems, now, false, None)?;
    let (mut before, mut after) = (std::collections::BTreeMap::new(), std::collections::BTreeMap::new());
    if let Some(c) = &outcome.committed {
        let text = |commit, path: &str| -> Result<Option<String>> {
            let bytes = store.read(commit, path)?;
            Ok(bytes.map(|b| String::from_utf8_lossy(&b).into_owned()))
        };
        for path in store.changed_paths(outcome.base, c.id)? {
            before.insert(path.clone(), text(outcome.base, &path)?);
            after.insert(path.clone(), text(c.id, &path)?);
        }
    }
    Ok(Plan { outcome, before, after })
}
