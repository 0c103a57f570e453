//! Staged rollout (`rollout:` in flipbit.yaml, docs/design.md §5.6): the LB hosts apply a new head
//! wave after wave, so a commit that breaks a load balancer breaks the first wave only. A host of
//! a later wave applies a head once every host of the earlier waves publishes (in its
//! [`HostState`] record) that it has served that head healthy for `soakSeconds`; a failure of the
//! head on an earlier host halts the later waves on it. The decision is a pure function of the
//! config, the head and the states read from DNS, so every case is a plain test here and the
//! applier only reads records and prints the answer.
//!
//! Hosts that no wave lists form one last, implicit wave: `waves: [[lb-1]]` is a canary, then
//! everyone. So a host added to `lbHosts` and forgotten in `waves` waits for all the listed ones
//! instead of stopping the generator and every applier over a missing line.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{Config, LbHost};
use crate::fleet::{Cause, HostState, StepState};
use crate::names::LbHostName;

/// `rollout:` in flipbit.yaml.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rollout {
    /// The waves in order, each a list of LB hosts; hosts listed nowhere make one last wave.
    pub waves: Vec<Vec<LbHostName>>,
    /// How long each host of the earlier waves must have served a head healthy (as its own
    /// published record shows: from `since` to its last run) before the next wave applies it.
    /// 0: as soon as they all serve it.
    #[serde(default)]
    pub soak_seconds: u64,
}

impl Rollout {
    /// Checks what the types cannot: at least one wave, no empty wave, every host in `hosts`,
    /// none twice. `text` is flipbit.yaml, for the line of the offending entry.
    pub fn check(&self, hosts: &[LbHost], text: &str) -> Result<(), String> {
        if self.waves.is_empty() {
            return Err(format!(
                "rollout.waves: at least one wave is needed{}",
                line_of(text, "rollout", "waves", 0)
            ));
        }
        let mut seen: BTreeMap<&LbHostName, (usize, usize)> = BTreeMap::new();
        for (i, wave) in self.waves.iter().enumerate() {
            if wave.is_empty() {
                return Err(format!(
                    "rollout.waves[{i}]: a wave lists at least one LB host{}",
                    line_of(text, "rollout", "[]", 0)
                ));
            }
            for (j, host) in wave.iter().enumerate() {
                let here = format!("rollout.waves[{i}][{j}]");
                if !hosts.iter().any(|h| &h.name == host) {
                    return Err(format!(
                        "{here}: {host} is not in lbHosts{}",
                        line_of(text, "rollout", host.as_str(), 0)
                    ));
                }
                if let Some((fi, fj)) = seen.insert(host, (i, j)) {
                    return Err(format!(
                        "{here}: {host} is already in rollout.waves[{fi}][{fj}]; a host belongs to one wave{}",
                        line_of(text, "rollout", host.as_str(), 1)
                    ));
                }
            }
        }
        Ok(())
    }

    /// The index of `host`'s wave: its listed wave, or `waves.len()` (the implicit last wave)
    /// for a host no wave lists.
    pub fn wave_of(&self, host: &LbHostName) -> usize {
        self.waves
            .iter()
            .position(|wave| wave.contains(host))
            .unwrap_or(self.waves.len())
    }

    /// The hosts of the waves before `host`'s, in wave order: those whose state gates it.
    pub fn earlier(&self, host: &LbHostName) -> Vec<&LbHostName> {
        self.waves[..self.wave_of(host)].iter().flatten().collect()
    }
}

/// What a host of a rollout may do with a head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Apply it: no earlier wave, or every earlier host served it healthy for the soak.
    Apply,
    /// Not yet: an earlier host has not applied it, or not for long enough.
    Wait { why: String },
    /// An earlier host failed it: the later waves keep their commit until a new head.
    Halted { at: String, host: LbHostName, cause: Cause },
}

impl Gate {
    /// Why the head is held, in one line (`halted at <commit12> on <host>: <cause>`), or `None`
    /// for [`Gate::Apply`].
    pub fn why(&self) -> Option<String> {
        match self {
            Gate::Apply => None,
            Gate::Wait { why } => Some(why.clone()),
            Gate::Halted { at, host, cause } => Some(format!("halted at {} on {host}: {}", short(at), cause.code())),
        }
    }
}

/// The published states of the earlier hosts: a host missing from the map has published
/// nothing; `Err` says why its record does not read.
pub type Published = BTreeMap<LbHostName, Result<HostState, String>>;

/// Whether `host` may apply `head` (40 hex digits) under `config`'s rollout, given what the
/// earlier waves' hosts published and `now` (unix seconds). Looks at the current head only: a
/// host that failed an older head holds nothing once a newer one comes.
///
/// A halt wins over a wait (any earlier host that failed the head stops the rollout, whatever
/// the others do). A failure halts when it is about the head (`h` is the head, or the host
/// serves the head) and says the head is bad: refused, invalid, reload, probe. A fetch failure
/// or another error is the host's own trouble, not the head's: the later waves wait for it.
pub fn gate(config: &Config, host: &LbHostName, head: &str, published: &Published, now: u64) -> Gate {
    let Some(rollout) = &config.rollout else {
        return Gate::Apply;
    };
    let earlier = rollout.earlier(host);
    for peer in &earlier {
        if let Some(Ok(state)) = published.get(*peer)
            && let StepState::Failed(cause) = state.lb
            && halts(cause)
            && (state.head.as_deref() == Some(head) || state.commit.as_deref() == Some(head))
        {
            return Gate::Halted {
                at: head.to_owned(),
                host: (*peer).clone(),
                cause,
            };
        }
    }
    for peer in earlier {
        let wait = |why: String| Gate::Wait {
            why: format!("waiting for {peer}: {why}"),
        };
        let state = match published.get(peer) {
            None => return wait("it has published no state".into()),
            Some(Err(e)) => return wait(format!("its state record does not read ({e})")),
            Some(Ok(state)) => state,
        };
        if state.commit.as_deref() != Some(head) {
            let serves = state.commit.as_deref().map_or("nothing yet", short);
            return wait(format!("it serves {serves}, not {}", short(head)));
        }
        if let StepState::Failed(cause) = state.lb {
            return wait(format!("its last run failed ({})", cause.code()));
        }
        // What the host itself saw: healthy from `since` to its last run (never past now, so
        // a clock ahead of ours proves nothing extra).
        let healthy = state.at.min(now).saturating_sub(state.since);
        if healthy < rollout.soak_seconds {
            return wait(format!(
                "it has served {} healthy for {healthy} s of the {} s soak",
                short(head),
                rollout.soak_seconds
            ));
        }
    }
    Gate::Apply
}

/// True for the causes that say the head itself is bad.
fn halts(cause: Cause) -> bool {
    matches!(cause, Cause::Refused | Cause::Invalid | Cause::Reload | Cause::Probe)
}

/// The first 12 digits of a commit id, as messages print it.
pub fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// ` (line N)` for the line holding `needle` as a word for the `nth` time (from 0) at or after
/// the first line holding `anchor`, or nothing (a host name `lb-1` is not found inside `lb-10`).
fn line_of(text: &str, anchor: &str, needle: &str, nth: usize) -> String {
    let start = text.lines().position(|l| l.contains(anchor)).unwrap_or(0);
    let word = |l: &str| {
        l.match_indices(needle).any(|(at, _)| {
            let before = l[..at].chars().next_back();
            let after = l[at + needle.len()..].chars().next();
            let part = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            !part(before) && !part(after)
        })
    };
    text.lines()
        .enumerate()
        .skip(start)
        .filter(|(_, l)| word(l))
        .nth(nth)
        .map_or(String::new(), |(n, _)| format!(" (line {})", n + 1))
}

#[cfg(test)]
mod tests;
