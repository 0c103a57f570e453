//! What every run of `apply` or `watch` leaves besides the command's output: the metrics (the
//! textfile, the listener's text) and the text of its failure for `status` on this host. Kept
//! out of `main` so the binary stays wiring.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::SystemTime;

use flipbit_store::{CommitId, Store};

use super::{Metrics, Observed, http, textfile};
use crate::apply::{ApplyOptions, Run};
use crate::release::StateDir;
use crate::status;

pub struct Observer {
    pub metrics: Metrics,
    file: Option<PathBuf>,
    served: Option<http::Shared>,
    /// The failure text last recorded in the state dir (`Some(None)`: none), so a failure that
    /// repeats every poll of a `watch` is written once.
    recorded: Option<Option<String>>,
}

impl Observer {
    /// Counters start from `metrics_file`'s, when it holds ours.
    pub fn new(metrics_file: Option<PathBuf>) -> Self {
        let previous = metrics_file.as_deref().and_then(textfile::read);
        Observer {
            metrics: Metrics::resume(previous.as_deref()),
            file: metrics_file,
            served: None,
            recorded: None,
        }
    }

    /// Serves the metrics at `http://<addr>/metrics` from now on; the bound address.
    pub fn serve(&mut self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let served = http::Shared::default();
        *served.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = self.metrics.render();
        let bound = http::serve(addr, served.clone())?;
        self.served = Some(served);
        Ok(bound)
    }

    /// Takes in one run (or one that could not start).
    pub fn observe(&mut self, opts: &ApplyOptions, run: &anyhow::Result<Run>) {
        let now = SystemTime::now();
        match run {
            Ok(run) => {
                let observed = Observed::of(run);
                self.metrics.record_run(&observed, now);
                self.metrics.record_applied(observed.applied, |c| commit_time(opts, c));
                if let Some(peers) = &run.peers {
                    self.metrics.record_peers_down(peers.down.len());
                    self.metrics.record_withdrawals(peers.withdrawn.len());
                }
                self.record_failure(opts, run);
            }
            Err(_) => self.metrics.record_run(&Observed::not_started(), now),
        }
        let text = self.metrics.render();
        if let Some(file) = &self.file
            && let Err(e) = textfile::write(file, &text)
        {
            tracing::warn!(file = %file.display(), error = %e, "metrics file not written");
        }
        if let Some(served) = &self.served {
            *served.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = text;
        }
    }

    /// Takes in one head check of `watch` (its result label). Only the served text follows at
    /// once: the textfile is written after runs, not ten times a second.
    pub fn observe_check(&mut self, result: &'static str) {
        self.metrics.record_head_check(result);
        if let Some(served) = &self.served {
            *served.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = self.metrics.render();
        }
    }

    fn record_failure(&mut self, opts: &ApplyOptions, run: &Run) {
        let failure = status::local::failure_of(run);
        let key = failure.map(|(step, f)| format!("{step} {} {:#}", f.cause.code(), f.error));
        if self.recorded.as_ref() == Some(&key) {
            return;
        }
        match status::local::record(&opts.state_dir, failure, status::unix_now()) {
            Ok(()) => self.recorded = Some(key),
            Err(e) => tracing::warn!(error = %e, "the last failure's text was not recorded for `status`"),
        }
    }
}

/// The commit time of `commit`, read from the applier's cache repo.
fn commit_time(opts: &ApplyOptions, commit: CommitId) -> Option<i64> {
    let state = StateDir::new(opts.state_dir.clone()).ok()?;
    let store = Store::open(&state.cache_repo(), &opts.repo, &opts.branch).ok()?;
    store.commit_time(commit).ok()
}
