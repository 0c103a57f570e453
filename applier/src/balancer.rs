//! The load balancer on this LB host, as the one apply pipeline sees it: which of the host's files
//! it reads and where they go in a release, how a candidate release is validated without touching
//! the running one, that it runs, and a reload that is confirmed rather than trusted. nginx and
//! HAProxy sit behind it; `flipbit.yaml`'s `lbHosts[].flavor` picks one per commit.

use std::path::Path;

use anyhow::Result;

use flipbit_core::grammar::LbFile;

use crate::release::StateDir;

pub trait LoadBalancer {
    /// `nginx` or `haproxy`, for messages.
    fn name(&self) -> &'static str;

    /// Where the repo file `path` (`lb/<host>/...`) goes inside a release, or `None` when this
    /// flavour does not read it (another flavour's files, anything not generated).
    fn release_path(&self, path: &str) -> Option<String>;

    /// Checks the candidate `release` (a directory of the state dir) as the load balancer would
    /// load it, through `<state>/staging`, leaving the running release alone.
    fn validate(&self, state: &StateDir, release: &Path) -> Result<()>;

    /// Fails, naming what is missing, when the load balancer is not running or would not read
    /// `<state>/current`: checked before anything is swapped.
    fn check_running(&self, state: &StateDir) -> Result<()>;

    /// Reloads onto the release `current` now points at and returns once the new configuration
    /// serves (new workers run); an error means the old configuration is still the one serving.
    fn reload(&self) -> Result<Box<dyn Draining>>;

    /// The processes whose sockets the load balancer keeps across a reload (none when it is not
    /// running): a socket one of them holds is no obstacle to a release that listens on it.
    fn processes(&self) -> Vec<i32>;
}

/// A reload whose new workers serve while the previous ones may still wind down.
pub trait Draining {
    /// Waits, within the reload's deadline, until the previous workers stopped accepting.
    fn finish(self: Box<Self>);
}

/// Runs `cmd` with `sh -c`, the reload step of either flavour when `--reload-command` is set;
/// `spawn` and `failed` make the flavour's own errors (the latter from `"<cmd>" exited with ..`).
pub fn run_reload_command<E>(
    cmd: &str,
    spawn: impl FnOnce(std::io::Error) -> E,
    failed: impl FnOnce(String) -> E,
) -> Result<(), E> {
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .map_err(spawn)?;
    if status.success() {
        Ok(())
    } else {
        Err(failed(format!("{cmd:?} exited with {status}")))
    }
}

/// The kind of generated file at repo path `path` (`lb/<host>/...`), for the host it names.
pub fn lb_file(path: &str) -> Option<LbFile> {
    let host = path.strip_prefix("lb/")?.split('/').next()?.parse().ok()?;
    LbFile::of_path(path, &host)
}

/// `path` without its leading `lb/<host>/`: where a file goes in a release that keeps the repo's
/// own layout.
pub fn inside_host(path: &str) -> Option<String> {
    let mut parts = path.splitn(3, '/');
    let (_, _, rest) = (parts.next()?, parts.next()?, parts.next()?);
    Some(rest.to_owned())
}
