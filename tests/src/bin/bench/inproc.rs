//! The generator in process, as `flipbit-generator run` works (the cluster in memory, a warm
//! cache repo, every commit pushed): what the `scale` and `pods-rollout` figures share, so both
//! time the same cycle.

use std::path::Path;

use flipbit_core::model::Snapshot;
use flipbit_generator::cycle::{self, Memory, Outcome, RepoTarget};
use flipbit_store::Store;

/// With `RUST_LOG` set, the generator's log on stderr: `RUST_LOG=flipbit_generator=debug` shows
/// where each cycle's time goes.
pub fn log_from_env() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// The generator's target: branch `main` of the repo at `url`, its cache repo `dir/cache.git`
/// (kept between cycles, as the generator's `--cache-dir`), unsigned commits straight to `main`.
pub fn target(url: String, dir: &Path) -> RepoTarget {
    RepoTarget {
        url,
        branch: "main".into(),
        cache_dir: Some(dir.join("cache.git")),
        author_name: "flipbit-generator".into(),
        author_email: "flipbit-generator@localhost".into(),
        signing_key: None,
        propose_branch: None,
    }
}

/// One decision cycle on `snapshot` as of now, committed and pushed, with what the earlier
/// cycles left in `memory`.
pub fn run(store: &Store, target: &RepoTarget, snapshot: &Snapshot, memory: &mut Memory) -> anyhow::Result<Outcome> {
    cycle::run(store, target, snapshot, &[], jiff::Timestamp::now(), true, Some(memory))
}
