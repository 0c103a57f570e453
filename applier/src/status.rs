//! `flipbit-applier status`: the fleet as its hosts published it (docs/design.md §5.6).

use crate::cli::StatusArgs;

/// Prints the fleet's status.
pub fn run(args: &StatusArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("flipbit-applier status is not built yet")
}
