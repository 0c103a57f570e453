//! The quiet period with a leading edge (docs/design.md §4.2): the first change after a quiet
//! spell starts a cycle at once; a change that follows another within `--debounce-ms` is part of
//! a burst, and the burst is committed once changes stop for that long (or `--debounce-max-ms`
//! after it was noticed). The choice itself is `flipbit_core::timing::on_change`.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use flipbit_core::timing::{OnChange, on_change};

/// How a change was let through to the next cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// At once: the change came after a quiet spell (the leading edge).
    AtOnce,
    /// After the burst it belongs to settled (or the longest delay passed).
    AfterBurst,
}

/// The quiet period's memory: when the last change was seen.
pub struct Quiet {
    quiet: Duration,
    max: Duration,
    last_change: Option<Instant>,
}

impl Quiet {
    pub fn new(quiet: Duration, max: Duration) -> Self {
        Self {
            quiet,
            max,
            last_change: None,
        }
    }

    /// Called when `changes` has just changed: returns when the next cycle should run.
    pub async fn wait(&mut self, changes: &mut watch::Receiver<u64>) -> Settled {
        changes.borrow_and_update();
        let now = Instant::now();
        let since = self.last_change.map(|t| now.saturating_duration_since(t));
        self.last_change = Some(now);
        if on_change(since, self.quiet) == OnChange::AtOnce {
            tracing::debug!("a change after a quiet spell: deciding at once");
            return Settled::AtOnce;
        }
        let deadline = now + self.max;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Settled::AfterBurst;
            }
            match tokio::time::timeout(self.quiet.min(left), changes.changed()).await {
                Ok(Ok(())) => {
                    changes.borrow_and_update();
                    self.last_change = Some(Instant::now());
                }
                _ => return Settled::AfterBurst,
            }
        }
    }
}
