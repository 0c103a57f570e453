//! When to act, decided from elapsed times only (docs/design.md §4.2 and §5.8): the generator's
//! quiet period, and when `flipbit-applier watch` next runs or checks the branch head. The
//! callers measure the times and sleep; these functions only choose, so their tests need no clock.

use std::time::Duration;

/// What the generator does with a change that just arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnChange {
    /// The cluster was quiet: decide and commit at once (the leading edge). A lone change, the
    /// everyday case, waits for nothing.
    AtOnce,
    /// Another change came less than the quiet period ago: this is a burst, so wait until changes
    /// stop for the quiet period (or the longest delay passes) and commit them together.
    Settle,
}

/// The leading edge of the quiet period: `since_last` is the time since the change before this
/// one (`None`: none since the process started). A burst of N changes thus costs two commits (its
/// first change, then the rest once they settle) rather than N, and a change after a quiet spell
/// costs no waiting at all.
pub fn on_change(since_last: Option<Duration>, quiet: Duration) -> OnChange {
    match since_last {
        Some(since) if since < quiet => OnChange::Settle,
        _ => OnChange::AtOnce,
    }
}

/// How often `flipbit-applier watch` talks to the Git server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchSchedule {
    /// A full run (fetch, apply, publish this host's state, watch the peers) starts at least
    /// this often.
    pub interval: Duration,
    /// Between runs, the branch head the server advertises is checked this often (one ref
    /// listing, no fetch); `None`: never, only full runs. No check is made less than this after
    /// the last request to the server (a check or a run's fetch), so a Git host that limits
    /// request rates is asked at most about once per `check`.
    pub check: Option<Duration>,
}

/// What `watch` does next, and after how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchStep {
    /// Sleep this long, then run.
    Run(Duration),
    /// Sleep this long, then check the advertised head (a run follows at once if it moved).
    Check(Duration),
}

impl WatchSchedule {
    /// The next step, `since_run` after the last run started and `since_request` after the last
    /// request to the Git server.
    pub fn next(&self, since_run: Duration, since_request: Duration) -> WatchStep {
        let run_in = self.interval.saturating_sub(since_run);
        match self.check {
            Some(check) if check < self.interval => {
                let check_in = check.saturating_sub(since_request);
                if check_in < run_in {
                    WatchStep::Check(check_in)
                } else {
                    WatchStep::Run(run_in)
                }
            }
            _ => WatchStep::Run(run_in),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_change_after_quiet_goes_at_once_and_a_burst_settles() {
        let quiet = ms(200);
        assert_eq!(on_change(None, quiet), OnChange::AtOnce);
        assert_eq!(on_change(Some(ms(5_000)), quiet), OnChange::AtOnce);
        assert_eq!(on_change(Some(ms(200)), quiet), OnChange::AtOnce);
        assert_eq!(on_change(Some(ms(199)), quiet), OnChange::Settle);
        assert_eq!(on_change(Some(Duration::ZERO), quiet), OnChange::Settle);
        // A quiet period of zero never settles: every change goes at once.
        assert_eq!(on_change(Some(Duration::ZERO), Duration::ZERO), OnChange::AtOnce);
    }

    #[test]
    fn checks_fill_the_time_between_runs_and_keep_their_spacing() {
        let s = WatchSchedule {
            interval: ms(1_000),
            check: Some(ms(100)),
        };
        // Just after a run's fetch: the first check comes one check period later.
        assert_eq!(s.next(ms(30), ms(30)), WatchStep::Check(ms(70)));
        // Just after a check: the next one is a full period later, whatever the run's age.
        assert_eq!(s.next(ms(550), ms(0)), WatchStep::Check(ms(100)));
        // A check that would land after the run is due: the run comes first.
        assert_eq!(s.next(ms(950), ms(0)), WatchStep::Run(ms(50)));
        // Overdue: both at once, the run wins (it fetches anyway).
        assert_eq!(s.next(ms(1_200), ms(1_200)), WatchStep::Run(Duration::ZERO));
        // A run that took longer than the check period: a check is due at once.
        assert_eq!(s.next(ms(400), ms(400)), WatchStep::Check(Duration::ZERO));
    }

    #[test]
    fn no_checks_when_off_or_not_shorter_than_the_interval() {
        for check in [None, Some(ms(1_000)), Some(ms(5_000))] {
            let s = WatchSchedule {
                interval: ms(1_000),
                check,
            };
            assert_eq!(s.next(ms(10), ms(10)), WatchStep::Run(ms(990)));
            assert_eq!(s.next(ms(990), ms(0)), WatchStep::Run(ms(10)));
        }
    }
}
