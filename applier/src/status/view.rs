//! The fleet's status as `flipbit-applier status` shows it: one row per LB host, judged from what
//! the host published, rendered as a table for people or as JSON for scripts. Pure: the command
//! gathers the facts (DNS, Git, the local failure text), this decides what they say.
//!
//! The JSON shape (stable; fields are only ever added):
//!
//! ```text
//! {"branch": "main", "head": "<commit>", "zone": "<zone of the state records>", "at": <unix s>,
//!  "hosts": [{"host": "lb-a", "flavor": "nginx", "state": "serving|failed|withdrawn|unknown",
//!             "cause": "<cause code>"|null, "error": "<failure text, on the host itself>"|null,
//!             "commit": "<applied commit>"|null, "behind": <commits>|null,
//!             "since": <unix s>|null, "head_tried": "<commit>"|null, "last_run": <unix s>|null,
//!             "age_seconds": <s>|null, "lb": "<step code>"|null, "dns": "<step code>"|null,
//!             "interval_seconds": <s>|null, "records": <count>|null,
//!             "problem": "<why the state is unknown>"|null}],
//!  "rollout": {"state": "halted|waiting|open", "wave": <n>|null, "why": "<reason>"|null}|null}
//! ```

use serde::Serialize;

use flipbit_core::fleet::{Cause, StepState};

use super::published::Published;

/// What a host's published state says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Its last run applied or kept its commit without a failure.
    Serving,
    /// Its last run failed (the cause says which step and why).
    Failed,
    /// A peer took its address records out of DNS: it looked down.
    Withdrawn,
    /// Nothing published, or nothing readable.
    Unknown,
}

/// The facts the command gathered about one host beside its record.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Commits on the branch since the host's applied commit (`None`: not known here).
    pub behind: Option<usize>,
    /// Its address records at its applied commit, by its pools.
    pub records: Option<usize>,
    /// The text of its last failure, when run on the host itself.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostStatus {
    pub host: String,
    pub flavor: String,
    pub state: State,
    pub cause: Option<&'static str>,
    pub error: Option<String>,
    pub commit: Option<String>,
    pub behind: Option<usize>,
    pub since: Option<u64>,
    pub head_tried: Option<String>,
    pub last_run: Option<u64>,
    pub age_seconds: Option<u64>,
    pub lb: Option<String>,
    pub dns: Option<String>,
    pub interval_seconds: Option<u32>,
    pub records: Option<usize>,
    pub problem: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetStatus {
    pub branch: String,
    pub head: String,
    pub zone: String,
    pub at: u64,
    pub hosts: Vec<HostStatus>,
    /// Where the head stands in flipbit.yaml's staged rollout; `None` without one.
    pub rollout: Option<super::rollout::RolloutStatus>,
}

/// The state a record says, with its cause code, or why it says nothing.
pub fn judge(published: &Published) -> (State, Option<Cause>, Option<String>) {
    let s = match published {
        Published::Missing => return (State::Unknown, None, Some("no state published".into())),
        Published::Unreadable(why) => return (State::Unknown, None, Some(why.clone())),
        Published::State(s) => s,
    };
    if s.withdrawn {
        return (State::Withdrawn, None, None);
    }
    for step in [s.lb, s.dns] {
        if let StepState::Failed(cause) = step {
            return (State::Failed, Some(cause), None);
        }
    }
    if s.serving() {
        (State::Serving, None, None)
    } else {
        (State::Unknown, None, Some("no commit applied yet".into()))
    }
}

impl HostStatus {
    pub fn new(host: &str, flavor: &str, published: &Published, now: u64, facts: Facts) -> Self {
        let (state, cause, problem) = judge(published);
        let s = published.state();
        HostStatus {
            host: host.to_owned(),
            flavor: flavor.to_owned(),
            state,
            cause: cause.map(Cause::code),
            // The local text only explains a failure the record shows.
            error: facts.error.filter(|_| state == State::Failed),
            commit: s.and_then(|s| s.commit.clone()),
            behind: facts.behind.filter(|_| s.is_some_and(|s| s.commit.is_some())),
            since: s.map(|s| s.since),
            head_tried: s.and_then(|s| s.head.clone()),
            last_run: s.map(|s| s.at),
            age_seconds: s.map(|s| now.saturating_sub(s.at)),
            lb: s.map(|s| s.lb.to_string()),
            dns: s.map(|s| s.dns.to_string()),
            interval_seconds: s.map(|s| s.interval),
            records: match state {
                State::Withdrawn => Some(0),
                State::Unknown => None,
                _ => facts.records,
            },
            problem,
        }
    }

    /// The STATE cell: `failed: <cause>` for a failure.
    fn state_cell(&self) -> String {
        match (self.state, self.cause) {
            (State::Failed, Some(cause)) => format!("failed: {cause}"),
            (State::Serving, _) => "serving".into(),
            (State::Failed, None) => "failed".into(),
            (State::Withdrawn, _) => "withdrawn".into(),
            (State::Unknown, _) => "unknown".into(),
        }
    }
}

/// `12s`, `4m`, `3h`, `2d`: the age of a run, at the precision an operator reads it.
pub fn age(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

impl FleetStatus {
    /// The table: a line naming the branch head and zone, a header, a row per host, the rollout's
    /// line when flipbit.yaml has one; then, after an empty line, the failure text of this host when the command runs on it and why a host's
    /// state is unknown.
    pub fn table(&self) -> String {
        let short = |c: &str| c.chars().take(12).collect::<String>();
        let dash = || "-".to_owned();
        let mut rows = vec![["HOST", "FLAVOR", "COMMIT", "BEHIND", "LAST RUN", "STATE", "RECORDS"].map(str::to_owned)];
        for h in &self.hosts {
            rows.push([
                h.host.clone(),
                h.flavor.clone(),
                h.commit.as_deref().map_or_else(dash, short),
                h.behind.map_or_else(dash, |b| b.to_string()),
                h.age_seconds.map_or_else(dash, |a| format!("{} ago", age(a))),
                h.state_cell(),
                h.records.map_or_else(dash, |r| r.to_string()),
            ]);
        }
        let mut widths = [0usize; 7];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = format!("branch {} at {}, zone {}\n", self.branch, short(&self.head), self.zone);
        for row in &rows {
            let line: Vec<String> = row.iter().zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        if let Some(rollout) = &self.rollout {
            out.push_str(&rollout.line());
        }
        let notes: Vec<String> = self
            .hosts
            .iter()
            .flat_map(|h| {
                let unknown = (h.state == State::Unknown).then_some(h.problem.as_ref()).flatten();
                h.error
                    .iter()
                    .chain(unknown)
                    .map(|note| format!("{}: {}\n", h.host, flipbit_core::text::escaped(note)))
            })
            .collect();
        if !notes.is_empty() {
            out.push('\n');
            out.extend(notes);
        }
        out
    }

    pub fn json(&self) -> String {
        // Plain strings, numbers and options: serialising cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}

#[cfg(test)]
mod tests;
