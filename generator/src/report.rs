//! What the offline commands print: one line per problem on stderr, a summary on stdout.

use std::fmt::Write as _;

use crate::cycle::{Outcome, Proposal};
use crate::offline::Plan;

/// The plan: the commit message that would be made, a summary table, and a unified diff of every
/// changed file (coloured when `color`).
pub fn plan(plan: &Plan, color: bool) -> String {
    let outcome = &plan.outcome;
    let mut out = String::new();
    let (Some(_), Some(msg)) = (&outcome.committed, &outcome.message) else {
        let _ = writeln!(out, "no change: {} is up to date", short(&outcome.base.to_string()));
        return out;
    };
    let _ = writeln!(out, "would commit on top of {}:\n", short(&outcome.base.to_string()));
    for line in msg.lines() {
        let _ = writeln!(out, "    {line}");
    }
    let _ = writeln!(out);
    for (label, n) in summary(plan) {
        let _ = writeln!(out, "{label:<22}{n:>6}");
    }
    for path in plan.before.keys() {
        let old = plan.before.get(path).cloned().flatten().unwrap_or_default();
        let new = plan.after.get(path).cloned().flatten().unwrap_or_default();
        let diff = similar::TextDiff::from_lines(&old, &new);
        let text = diff
            .unified_diff()
            .context_radius(3)
            .header(&format!("a/{path}"), &format!("b/{path}"))
            .to_string();
        let _ = writeln!(out);
        for line in text.lines() {
            let paint = match line.chars().next() {
                _ if !color => "",
                Some('+') => "\x1b[32m",
                Some('-') => "\x1b[31m",
                Some('@') => "\x1b[36m",
                _ => "",
            };
            let reset = if paint.is_empty() { "" } else { "\x1b[0m" };
            let _ = writeln!(out, "{paint}{line}{reset}");
        }
    }
    out
}

/// Counts for the plan's table.
fn summary(plan: &Plan) -> Vec<(&'static str, usize)> {
    use flipbit_core::allocate::AddressEvent as E;
    use std::collections::BTreeSet;
    let events = &plan.outcome.decision.events;
    let keys = |f: &dyn Fn(&E) -> Option<&flipbit_core::names::ServiceKey>| {
        events.iter().filter_map(f).collect::<BTreeSet<_>>()
    };
    let exposed = keys(&|e| match e {
        E::Allocated { key, .. } | E::Reclaimed { key } | E::Requested { key, from: None, .. } => Some(key),
        _ => None,
    });
    let withdrawn = keys(&|e| match e {
        E::Withdrawn { key } => Some(key),
        _ => None,
    });
    let touched: BTreeSet<_> = plan
        .before
        .keys()
        .filter_map(|p| flipbit_core::repo_paths::service_of(p))
        .collect();
    let changed = touched
        .iter()
        .filter(|k| !exposed.contains(k) && !withdrawn.contains(k))
        .count();
    let allocated = events
        .iter()
        .filter(|e| matches!(e, E::Allocated { .. } | E::Requested { .. } | E::Moved { .. }))
        .count();
    let released = events
        .iter()
        .filter(|e| matches!(e, E::Dropped { .. } | E::Moved { .. } | E::Freed { .. }))
        .count();
    let names = |text: Option<&String>| -> BTreeSet<String> {
        text.map(|t| {
            t.lines()
                .filter(|l| !l.trim_start().starts_with(';'))
                .filter_map(|l| l.split_whitespace().next())
                .map(|n| n.trim_end_matches('.').to_owned())
                .collect()
        })
        .unwrap_or_default()
    };
    let (mut added, mut removed) = (0, 0);
    for path in plan
        .before
        .keys()
        .filter(|p| flipbit_core::repo_paths::parse_dns_path(p).is_some())
    {
        let old = names(plan.before.get(path).and_then(Option::as_ref));
        let new = names(plan.after.get(path).and_then(Option::as_ref));
        added += new.difference(&old).count();
        removed += old.difference(&new).count();
    }
    vec![
        ("Services exposed", exposed.len()),
        ("Services changed", changed),
        ("Services withdrawn", withdrawn.len()),
        ("Addresses allocated", allocated),
        ("Addresses released", released),
        ("DNS names added", added),
        ("DNS names removed", removed),
    ]
}

pub fn rendered(outcome: &Outcome) -> String {
    let base = short(&outcome.base.to_string()).to_owned();
    let subject = outcome
        .message
        .as_deref()
        .and_then(|m| m.lines().next())
        .unwrap_or_default();
    match (&outcome.proposal, &outcome.committed) {
        (Some(Proposal::Proposed { branch }), Some(c)) => {
            return format!(
                "proposed {} on {branch} (on top of {base}; merge it to apply): {subject}",
                short(&c.id.to_string())
            );
        }
        (Some(Proposal::Unchanged { branch }), _) => {
            return format!("no change: {branch} already proposes this on top of {base}: {subject}");
        }
        (Some(Proposal::Withdrawn { branch }), _) => {
            return format!("no change: {base} is up to date; deleted the unmerged {branch}");
        }
        _ => {}
    }
    match (&outcome.committed, &outcome.message) {
        (Some(c), Some(msg)) => format!(
            "committed {} ({} files): {}",
            short(&c.id.to_string()),
            c.files,
            msg.lines().next().unwrap_or_default()
        ),
        _ => up_to_date(outcome.base),
    }
}

/// What `render` prints when the head needed no change.
pub fn up_to_date(head: flipbit_store::CommitId) -> String {
    format!("no change: {} is up to date", short(&head.to_string()))
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
