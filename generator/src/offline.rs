//! `render` and `plan`: one decision cycle from a folder of manifests.

use anyhow::Result;
use jiff::Timestamp;

use crate::cycle::{self, Outcome, RepoTarget};
use crate::manifests;
use crate::render_cache;

/// What `render` did.
pub enum Rendered {
    /// It decided, and committed and pushed what changed.
    Decided(Box<Outcome>),
    /// The manifests and the fetched head are exactly those of a run that left the head up to
    /// date (`render_cache::answer`): nothing to decide.
    UpToDate(flipbit_store::CommitId),
}

/// Decides from the manifests in `dir`, then commits and pushes what changed.
pub fn run(target: &RepoTarget, dir: &std::path::Path, now: Timestamp) -> Result<Rendered> {
    if let Some(cache) = &target.cache_dir
        && let Some(matched) = render_cache::answer::matching(cache, target, dir, now)
    {
        let t = std::time::Instant::now();
        let (store, _temp) = cycle::open_store(target)?;
        let head = store.fetch()?;
        tracing::debug!(ms = t.elapsed().as_millis() as u64, "fetched");
        if head == Some(matched.head) {
            let head = matched.head;
            tracing::debug!(target: "flipbit_generator::render_cache", %head, "the manifests and head are those the last run left up to date: nothing to decide");
            matched.keep(cache);
            return Ok(Rendered::UpToDate(head));
        }
    }
    // What the last run kept in the cache dir (render_cache), else nothing: either way the engine
    // writes only what changed and never holds every rendered text at once. The manifests are read
    // while the cache is (see `render_cache::load_with`).
    let t = std::time::Instant::now();
    let read = |cache: manifests::ParseCache| {
        let loaded = manifests::load_dir_cached(dir, cache);
        tracing::debug!(ms = t.elapsed().as_millis() as u64, "manifests loaded");
        loaded
    };
    let (kept, loaded) = match &target.cache_dir {
        Some(cache) => render_cache::load_with(cache, target, &read),
        None => (render_cache::Kept::default(), read(manifests::ParseCache::default())),
    };
    let render_cache::Kept { memory, retained, .. } = kept;
    let (snapshot, load_problems, parsed) = loaded?;
    tracing::debug!(services = snapshot.services.len(), "manifests read");
    let (store, _temp) = cycle::open_store(target)?;
    let mut memory = memory;
    let outcome = cycle::run(&store, target, &snapshot, &load_problems, now, true, Some(&mut memory))?;
    if let Some(cache) = &target.cache_dir {
        render_cache::save(cache, target, &memory, &parsed, retained.as_ref());
        let head = outcome.committed.as_ref().map_or(outcome.base, |c| c.id);
        match repeatable_until(&outcome, &memory) {
            Some(until) => render_cache::answer::record(cache, target, dir, head, until, &parsed),
            None => render_cache::answer::forget(cache),
        }
    }
    // `render` is one process per run: what it built (a few hundred MB at 50,000 Services) goes
    // with the process. Freeing it piece by piece first took ~4% of a warm run.
    std::mem::forget((memory, parsed, snapshot, retained));
    Ok(Rendered::Decided(Box::new(outcome)))
}

/// Until when deciding again on the same manifests and head decides nothing new, when that is
/// plain (`render_cache::answer`): no problem to report again, no hold in play, and a memory of the
/// decision that looks at no Service again unless it changes.
fn repeatable_until(outcome: &Outcome, memory: &cycle::Memory) -> Option<Option<Timestamp>> {
    let holds = &outcome.decision.holds;
    let plain = holds.holds.holds.is_empty() && holds.lifted.is_empty() && outcome.decision.resumed.is_empty();
    if !outcome.problems.is_empty() || !plain || outcome.proposal.is_some() {
        return None;
    }
    memory.engine().unchanged_until()
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
