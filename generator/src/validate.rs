//! `flipbit-generator validate`: the state repo's pre-merge check (the decision is
//! `flipbit_core::validate`). It reads `flipbit.yaml`, `holds.yaml` and `ledger.yaml` from the
//! head of a branch (`--repo`, as every other command) or from a checkout (`--dir`: a CI job's
//! work tree, or a pre-commit hook's), and prints one line per finding.

use std::path::Path;

use anyhow::{Context, Result, anyhow};

use flipbit_core::holds::HOLDS_FILE;
use flipbit_core::repo_paths::{CONFIG_FILE, LEDGER_FILE};
use flipbit_core::text::escaped;
use flipbit_core::validate::{self, Finding, RepoFiles};

use crate::cycle::{RepoTarget, open_store};

/// Where the files are read.
pub enum Source<'a> {
    /// The head of `target.branch` in `target.url`.
    Repo(&'a RepoTarget),
    /// A directory holding the repo's files (a checkout).
    Dir(&'a Path),
}

/// What the check found, and where it looked.
pub struct Report {
    pub checked: String,
    pub findings: Vec<Finding>,
    /// Findings that move addresses are accepted (`--allow-moves`).
    pub allow_moves: bool,
}

impl Report {
    /// True when the repo may be merged: nothing refused, and no move unless allowed.
    pub fn passed(&self) -> bool {
        self.findings
            .iter()
            .all(|f| matches!(f, Finding::Moves(_)) && self.allow_moves)
    }

    /// One line per finding (`error:`, or `moves:` / `allowed move:`), then a summary line.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for finding in &self.findings {
            let label = match finding {
                Finding::Refused(_) => "error",
                Finding::Moves(_) if self.allow_moves => "allowed move",
                Finding::Moves(_) => "error (moves an address; --allow-moves accepts it)",
            };
            out.push_str(&format!("{label}: {}\n", escaped(finding.text())));
        }
        let verdict = if self.passed() { "ok" } else { "failed" };
        out.push_str(&format!(
            "{verdict}: {} ({} finding{})\n",
            self.checked,
            self.findings.len(),
            if self.findings.len() == 1 { "" } else { "s" }
        ));
        out
    }
}

/// Reads the files from `source` and checks them.
pub fn run(source: Source<'_>, allow_moves: bool) -> Result<Report> {
    let (checked, config, ledger, holds) = match source {
        Source::Repo(target) => {
            let (store, _temp) = open_store(target)?;
            let head = store.fetch()?.ok_or_else(|| {
                anyhow!(
                    "branch {} not found in {}",
                    escaped(&target.branch),
                    escaped(&target.url)
                )
            })?;
            let read = |path: &str| -> Result<Option<String>> {
                Ok(store
                    .read(head, path)?
                    .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
            };
            (
                format!("{} at {head}", escaped(&target.url)),
                read(CONFIG_FILE)?,
                read(LEDGER_FILE)?,
                read(HOLDS_FILE)?,
            )
        }
        Source::Dir(dir) => {
            let read = |name: &str| -> Result<Option<String>> {
                let path = dir.join(name);
                match std::fs::read(&path) {
                    Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
                }
            };
            (
                dir.display().to_string(),
                read(CONFIG_FILE)?,
                read(LEDGER_FILE)?,
                read(HOLDS_FILE)?,
            )
        }
    };
    let findings = validate::check(&RepoFiles {
        config: config.as_deref(),
        ledger: ledger.as_deref(),
        holds: holds.as_deref(),
    });
    Ok(Report {
        checked,
        findings,
        allow_moves,
    })
}
