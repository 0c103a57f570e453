//! What the offline commands print: one line per problem on stderr, a summary on stdout.

use std::fmt::Write as _;

use crate::cycle::Outcome;

/// The plan: the commit message that would be made and the paths it would change.
pub fn plan(outcome: &Outcome) -> String {
    let mut out = String::new();
    match (&outcome.committed, &outcome.message) {
        (Some(c), Some(msg)) => {
            let _ = writeln!(out, "would commit on top of {}:\n", short(&outcome.base.to_string()));
            for line in msg.lines() {
                let _ = writeln!(out, "    {line}");
            }
            let _ = writeln!(out, "\nchanged files:");
            for path in &c.changed {
                let _ = writeln!(out, "    {path}");
            }
        }
        _ => {
            let _ = writeln!(out, "no change: {} is up to date", short(&outcome.base.to_string()));
        }
    }
    out
}

pub fn rendered(outcome: &Outcome) -> String {
    match (&outcome.committed, &outcome.message) {
        (Some(c), Some(msg)) => format!(
            "committed {} ({} files): {}",
            short(&c.id.to_string()),
            c.changed.len(),
            msg.lines().next().unwrap_or_default()
        ),
        _ => format!("no change: {} is up to date", short(&outcome.base.to_string())),
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
