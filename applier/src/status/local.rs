//! The text of this host's last failure (`<state>/last-failure`), kept beside the journal: the
//! published state carries only a cause code (the zone may be public), so `status` run on the host
//! itself reads the words from here. Written after every run that failed, removed after every
//! run that did not, whole (temporary file, rename) like the journal.
//!
//! ```text
//! flipbit-applier last-failure 1
//! <unix seconds it was first seen> <step: lb|dns> <cause code>
//! <the error, escaped to one line>
//! ```

use std::path::Path;

use flipbit_core::text::escaped;

use crate::apply::{Failure, Run};
use crate::journal::write_durably;

const FILE: &str = "last-failure";
const HEADER: &str = "flipbit-applier last-failure 1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastFailure {
    /// When this failure was first seen (runs that repeat it keep the time).
    pub at: u64,
    pub step: String,
    pub cause: String,
    pub text: String,
}

/// The first failure of `run` (the load-balancer step's, else the DNS step's), by step.
pub fn failure_of(run: &Run) -> Option<(&'static str, &Failure)> {
    match (&run.lb, &run.dns) {
        (Err(f), _) => Some(("lb", f)),
        (Ok(_), Some(Err(f))) => Some(("dns", f)),
        _ => None,
    }
}

/// Records the outcome of a run in `state_dir`: its failure's text (see [`failure_of`]), or
/// nothing.
pub fn record(state_dir: &Path, failure: Option<(&str, &Failure)>, now: u64) -> std::io::Result<()> {
    match failure {
        Some((step, failure)) => {
            let (cause, text) = (
                failure.cause.code(),
                escaped(&format!("{:#}", failure.error)).to_string(),
            );
            // The same failure again keeps the time it was first seen.
            if read(state_dir).is_some_and(|f| f.step == step && f.cause == cause && f.text == text) {
                return Ok(());
            }
            write_durably(
                state_dir,
                FILE,
                format!("{HEADER}\n{now} {step} {cause}\n{text}\n").as_bytes(),
            )
        }
        None => match std::fs::remove_file(state_dir.join(FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
}

/// The last failure recorded in `state_dir`, if any reads back.
pub fn read(state_dir: &Path) -> Option<LastFailure> {
    parse(&std::fs::read_to_string(state_dir.join(FILE)).ok()?)
}

fn parse(text: &str) -> Option<LastFailure> {
    let mut lines = text.lines();
    if lines.next()? != HEADER {
        return None;
    }
    let mut words = lines.next()?.split(' ');
    let at = words.next()?.parse().ok()?;
    let step = words.next()?.to_owned();
    let cause = words.next()?.to_owned();
    let text = lines.next()?.to_owned();
    (words.next().is_none() && lines.next().is_none()).then_some(LastFailure { at, step, cause, text })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_kept_until_a_good_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let failure = Failure {
            cause: flipbit_core::fleet::Cause::Reload,
            error: anyhow::anyhow!("nginx reload failed:\nbind() to 127.1.1.1:80 failed"),
        };
        record(dir.path(), Some(("lb", &failure)), 1_700_000_000).expect("write");
        assert_eq!(
            read(dir.path()),
            Some(LastFailure {
                at: 1_700_000_000,
                step: "lb".into(),
                cause: "reload".into(),
                text: "nginx reload failed:\\nbind() to 127.1.1.1:80 failed".into(),
            })
        );
        record(dir.path(), Some(("lb", &failure)), 1_700_000_001).expect("again");
        assert_eq!(read(dir.path()).map(|f| f.at), Some(1_700_000_000), "first seen");
        record(dir.path(), None, 1_700_000_001).expect("remove");
        assert_eq!(read(dir.path()), None);
        record(dir.path(), None, 1_700_000_002).expect("nothing to remove");
        assert_eq!(parse("flipbit-applier last-failure 1\n5 lb reload\ntext\nmore\n"), None);
    }
}
