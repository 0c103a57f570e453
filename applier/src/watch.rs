//! `flipbit-applier watch` between two runs (docs/design.md §5.8): a full run every `--interval`,
//! and in between a check of the head the Git server advertises every `--check-interval` (one
//! ref listing, `flipbit_store::HeadCheck`), which starts the next run at once when the head is
//! not the one the last run fetched. A check costs one round trip and no fetch, so a commit is
//! picked up within about one check interval instead of one run interval.
//!
//! The check is only a hint: a run still fetches the branch and checks what it fetched exactly as
//! any other run does, so nothing reaches the load balancer that did not come from the repo.
//! When to check or run is `flipbit_core::timing::WatchSchedule`'s choice.

use std::time::{Duration, Instant};

use flipbit_core::text::escaped;
use flipbit_core::timing::{WatchSchedule, WatchStep};
use flipbit_store::{CommitId, HeadCheck};

use crate::metrics::observer::Observer;

/// Why the next run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// `--interval` after the last one.
    Due,
    /// A check saw the branch move.
    HeadMoved,
}

/// What a head check found (`flipbit_applier_head_checks_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    Unchanged,
    Moved,
    Failed,
}

impl Checked {
    pub fn label(self) -> &'static str {
        match self {
            Checked::Unchanged => "unchanged",
            Checked::Moved => "moved",
            Checked::Failed => "failed",
        }
    }
}

/// The time between runs, and what it remembers across them.
pub struct Between {
    schedule: WatchSchedule,
    check: HeadCheck,
    /// The last request to the Git server: a run's fetch or a check.
    last_request: Option<Instant>,
    /// The last check failed (logged once, until one succeeds again).
    failing: bool,
}

impl Between {
    pub fn new(repo: &str, branch: &str, schedule: WatchSchedule) -> Self {
        Self {
            schedule,
            check: HeadCheck::new(repo, branch),
            last_request: None,
            failing: false,
        }
    }

    /// Sleeps until the next run is due, after a run that started at `run_started` and fetched
    /// `fetched` (`None`: its fetch failed; no check then, so a failing server is asked once per
    /// run interval, not once per check interval). Checks in the meantime are counted in
    /// `observer`.
    pub fn wait(&mut self, run_started: Instant, fetched: Option<CommitId>, observer: &mut Observer) -> Wake {
        // The run's fetch was a request to the server.
        self.last_request = Some(self.last_request.map_or(run_started, |t| t.max(run_started)));
        let schedule = match fetched {
            Some(_) => self.schedule,
            None => WatchSchedule {
                check: None,
                ..self.schedule
            },
        };
        loop {
            let since_request = self.last_request.map_or(Duration::MAX, |t| t.elapsed());
            match schedule.next(run_started.elapsed(), since_request) {
                WatchStep::Run(after) => {
                    std::thread::sleep(after);
                    return Wake::Due;
                }
                WatchStep::Check(after) => {
                    std::thread::sleep(after);
                    self.last_request = Some(Instant::now());
                    let checked = self.check_once(fetched);
                    observer.observe_check(checked.label());
                    if checked == Checked::Moved {
                        return Wake::HeadMoved;
                    }
                }
            }
        }
    }

    fn check_once(&mut self, fetched: Option<CommitId>) -> Checked {
        match self.check.head() {
            Ok(head) => {
                if self.failing {
                    tracing::info!("the branch head can be checked again");
                    self.failing = false;
                }
                if head == fetched {
                    Checked::Unchanged
                } else {
                    tracing::debug!(
                        head = %head.map_or("none".to_owned(), |h| h.to_string()),
                        "the branch moved: running now"
                    );
                    Checked::Moved
                }
            }
            Err(e) => {
                if !self.failing {
                    // The next full run fetches and says what is wrong, in its own words.
                    tracing::warn!(error = %escaped(&e.to_string()), "checking the branch head failed; runs go on every --interval");
                    self.failing = true;
                }
                Checked::Failed
            }
        }
    }
}
