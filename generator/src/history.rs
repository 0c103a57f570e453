//! What humans did to generated files since the generator last looked, read from Git for
//! [`flipbit_core::holds::update`]: each commit the generator did not make, the Services whose
//! files or ledger entry it changed, and the holds it lifted.

use anyhow::Result;

use flipbit_core::holds::{self, CommitHex, Holds, HumanChange};
use flipbit_core::ledger::Ledger;
use flipbit_core::repo_paths;
use flipbit_core::text::escaped;
use flipbit_store::{CommitId, CommitMeta, Store};

/// The changes, oldest first. A repo where no commit is the generator's yet has none: whatever
/// files it holds were put there before Flipbit took over (a migration), not a change to undo.
pub fn human_changes(store: &Store, head: CommitId, generator_email: &str) -> Result<Vec<HumanChange>> {
    let Some(commits) = store.commits_since_ours(head, |c| c.committer_email == generator_email)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for meta in commits {
        let changed: std::collections::BTreeSet<String> = store
            .changed_by(&meta)?
            .into_iter()
            .filter(|p| holds::is_generated_path(p) || p == holds::HOLDS_FILE)
            .collect();
        if changed.is_empty() {
            continue;
        }
        let (after, before) = if changed.contains(repo_paths::LEDGER_FILE) {
            (
                ledger_at(store, &meta, meta.id),
                meta.parents.iter().map(|p| ledger_at(store, &meta, *p)).collect(),
            )
        } else {
            (None, Vec::new())
        };
        let touched = holds::touched(&changed, after.as_ref(), &before);
        let lifted = if changed.contains(holds::HOLDS_FILE) {
            match (
                holds_at(store, &meta, meta.id),
                meta.parents
                    .iter()
                    .map(|p| holds_at(store, &meta, *p))
                    .collect::<Option<Vec<_>>>(),
            ) {
                (Some(after), Some(before)) => holds::lifted(&after, &before),
                _ => Default::default(),
            }
        } else {
            Default::default()
        };
        if touched.is_empty() && lifted.is_empty() {
            continue;
        }
        let commit = CommitHex::try_from(meta.id.to_string()).ok();
        let names = |keys: Vec<String>| keys.join(", ");
        tracing::info!(
            commit = %meta.id,
            summary = %meta.summary,
            touched = %names(touched.keys().map(ToString::to_string).collect()),
            lifted = %names(lifted.keys().map(ToString::to_string).collect()),
            "a commit the generator did not make changed generated files or holds"
        );
        out.push(HumanChange {
            commit,
            touched,
            lifted,
        });
    }
    Ok(out)
}

/// The ledger at `at`, `None` when it does not parse (then the commit is judged by paths alone).
fn ledger_at(store: &Store, meta: &CommitMeta, at: CommitId) -> Option<Ledger> {
    parsed_at(store, meta, at, repo_paths::LEDGER_FILE, Ledger::empty, Ledger::parse)
}

/// `holds.yaml` at `at`, `None` when it does not parse (then no hold counts as lifted there).
fn holds_at(store: &Store, meta: &CommitMeta, at: CommitId) -> Option<Holds> {
    parsed_at(store, meta, at, holds::HOLDS_FILE, Holds::default, Holds::parse)
}

/// `path` at `at` parsed by `parse`; `missing()` when there is no such file; `None` (with a
/// warning) when it cannot be read or parsed.
fn parsed_at<T, E: std::fmt::Display>(
    store: &Store,
    meta: &CommitMeta,
    at: CommitId,
    path: &str,
    missing: impl FnOnce() -> T,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Option<T> {
    match store.read(at, path) {
        Ok(Some(text)) => match parse(&String::from_utf8_lossy(&text)) {
            Ok(value) => Some(value),
            Err(e) => {
                tracing::warn!(commit = %meta.id, at = %at, error = %escaped(&e.to_string()), "{path} does not parse there");
                None
            }
        },
        Ok(None) => Some(missing()),
        Err(_) => None,
    }
}
