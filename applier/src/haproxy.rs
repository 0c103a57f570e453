//! The HAProxy on a LB host whose `flavor` is `haproxy`, in master-worker mode:
//! `haproxy -W -S <socket> -f <main config> -f <state>/current`. HAProxy reads `*.cfg` from a
//! directory given with `-f` but not below it, and a reload re-executes the master with the same
//! arguments, so a release is one flat directory whatever namespaces exist: the repo's
//! `lb/<host>/<namespace>/<service>.cfg` is staged as `<namespace>.<service>.cfg` (Kubernetes
//! names hold no dots, so the flat names cannot collide).
//!
//! Validation is `haproxy -c` on the candidate through `<state>/staging`; the reload is the master
//! CLI's `reload` (or a configured command), confirmed in `show proc`: a new worker serves, or
//! the master counts a failed reload and keeps its old workers, which go on serving. Listening
//! sockets pass from the old worker to the new one, so a reload drops no connection.

mod master;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};

use flipbit_core::grammar::LbFile;

pub use master::{MasterCli, Procs, parse_show_proc};

use crate::balancer::{Draining, LoadBalancer};
use crate::release::StateDir;

#[derive(Debug, Clone)]
pub struct Haproxy {
    pub bin: PathBuf,
    /// The main config (global, defaults); the master also loads `-f <state>/current`.
    pub conf: PathBuf,
    /// The master CLI socket (`-S`).
    pub master_socket: PathBuf,
    /// Where the master's stderr goes, if to a file: a failed reload's `[ALERT]`s are read there.
    pub log: Option<PathBuf>,
    /// Run this instead of the master CLI's `reload` (e.g. `systemctl reload haproxy`).
    pub reload_command: Option<String>,
    /// How long a reload may take to show a new worker.
    pub reload_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum HaproxyError {
    #[error("haproxy -c failed: {0}")]
    Invalid(String),
    #[error("cannot run {bin}: {source}")]
    Spawn { bin: String, source: std::io::Error },
    #[error(
        "haproxy is not running in master-worker mode with the master CLI on {socket} ({why}); start it as `haproxy -W -S {socket} -f <main config> -f <state-dir>/current`"
    )]
    NotRunning { socket: String, why: String },
    #[error(
        "the haproxy master (pid {pid}) was not started with `-f {current}`, so Flipbit's files would never be used"
    )]
    NotReadingCurrent { pid: i32, current: String },
    #[error("haproxy reload failed: {0}")]
    Reload(String),
}

impl Haproxy {
    fn cli(&self) -> MasterCli {
        MasterCli {
            socket: self.master_socket.clone(),
            timeout: Duration::from_secs(2),
        }
    }

    fn master(&self) -> Result<Procs, HaproxyError> {
        self.cli().show_proc().map_err(|why| HaproxyError::NotRunning {
            socket: self.master_socket.display().to_string(),
            why,
        })
    }

    /// `haproxy -c -f <main> -f <dir>`. A directory with no Service (nothing to listen on) is
    /// valid: HAProxy exits 2 for "no listener", but a master-worker instance runs fine on it.
    pub fn check(&self, dir: &Path) -> Result<(), HaproxyError> {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg("-f")
            .arg(&self.conf)
            .arg("-f")
            .arg(dir)
            .output()
            .map_err(|source| HaproxyError::Spawn {
                bin: self.bin.display().to_string(),
                source,
            })?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let no_listener = out.status.code() == Some(2) && stdout.contains("no listener");
        if out.status.success() || no_listener {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let alerts: Vec<String> = stderr
            .lines()
            .filter(|l| l.contains("[ALERT]"))
            .map(strip_level)
            // The summary lines repeat what the lines before them say.
            .filter(|l| !l.contains("Fatal errors found") && !l.contains("Error(s) found in configuration file"))
            .map(crate::quote::redact)
            .collect();
        Err(HaproxyError::Invalid(if alerts.is_empty() {
            crate::quote::redact(&format!("{}{}", stdout.trim(), stderr.trim()))
        } else {
            alerts.join("; ")
        }))
    }

    /// Fails unless one of the master's `-f` arguments is `<state>/current`.
    fn check_reads_current(&self, pid: i32, state: &StateDir) -> Result<(), HaproxyError> {
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            tracing::debug!(pid, "cannot read the haproxy master's command line; not checked");
            return Ok(());
        };
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let reads_current = args.windows(2).any(|pair| {
            let path = cwd.join(&pair[1]);
            pair[0] == "-f"
                && path.file_name().is_some_and(|n| n == "current")
                && path.parent().and_then(|p| p.canonicalize().ok()).as_deref() == Some(state.root())
        });
        if reads_current {
            Ok(())
        } else {
            Err(HaproxyError::NotReadingCurrent {
                pid,
                current: state.current_link().display().to_string(),
            })
        }
    }

    /// Reloads and waits until `show proc` shows a worker that was not there before, or the
    /// master counts the reload as failed (it then keeps the old workers serving).
    pub fn start_reload(&self) -> Result<(), HaproxyError> {
        let cli = self.cli();
        let before = self.master()?;
        let log_offset = crate::logtail::len(self.log.as_deref());
        match &self.reload_command {
            Some(cmd) => crate::balancer::run_reload_command(
                cmd,
                |source| HaproxyError::Spawn {
                    bin: cmd.clone(),
                    source,
                },
                HaproxyError::Reload,
            )?,
            None => cli.reload().map_err(HaproxyError::Reload)?,
        }
        let deadline = Instant::now() + self.reload_timeout;
        loop {
            std::thread::sleep(Duration::from_millis(5));
            // While the master re-executes, its socket does not answer.
            if let Ok(now) = cli.show_proc() {
                let new_worker = now
                    .workers
                    .iter()
                    .any(|pid| !before.workers.contains(pid) && !before.old_workers.contains(pid));
                if new_worker {
                    tracing::debug!(workers = ?now.workers, "new haproxy worker is running");
                    return Ok(());
                }
                if now.reloads > before.reloads && now.failed > 0 {
                    let why = match self.log.as_deref() {
                        Some(log) => {
                            let alerts = crate::logtail::lines_since(log, log_offset, "[ALERT]");
                            let alerts: Vec<String> =
                                alerts.iter().map(|l| crate::quote::redact(strip_level(l))).collect();
                            if alerts.is_empty() {
                                format!("no alert in {}", log.display())
                            } else {
                                alerts.join("; ")
                            }
                        }
                        None => "see the master's log (journalctl -u haproxy)".to_owned(),
                    };
                    return Err(HaproxyError::Reload(format!(
                        "the master kept its old workers ({} failed reloads in a row): {why}",
                        now.failed
                    )));
                }
            }
            if Instant::now() >= deadline {
                return Err(HaproxyError::Reload(format!(
                    "no new worker within {:?} of the reload",
                    self.reload_timeout
                )));
            }
        }
    }
}

/// `[ALERT]    (8894) : config : parsing [...]` → `config : parsing [...]`.
fn strip_level(line: &str) -> &str {
    match line.find(") : ") {
        Some(i) if line.starts_with('[') => &line[i + 4..],
        _ => line,
    }
}

impl LoadBalancer for Haproxy {
    fn name(&self) -> &'static str {
        "haproxy"
    }

    /// `lb/<host>/<namespace>/<service>.cfg` → `<namespace>.<service>.cfg`; nothing else.
    fn release_path(&self, path: &str) -> Option<String> {
        match crate::balancer::lb_file(path)? {
            LbFile::Haproxy(key) => Some(format!("{}.{}.cfg", key.namespace, key.name)),
            _ => None,
        }
    }

    /// `haproxy -c` on the main config and the candidate, reached through `<state>/staging` so a
    /// message names a path as the running config would.
    fn validate(&self, state: &StateDir, release: &Path) -> anyhow::Result<()> {
        let id = release
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("{}: not a release directory", release.display()))?;
        let staging = state.point_staging(id)?;
        let result = self.check(&staging);
        state.remove_staging();
        Ok(result?)
    }

    fn check_running(&self, state: &StateDir) -> anyhow::Result<()> {
        let procs = self.master()?;
        self.check_reads_current(procs.master, state)
            .with_context(|| format!("checking the haproxy master on {}", self.master_socket.display()))
    }

    fn reload(&self) -> anyhow::Result<Box<dyn Draining>> {
        self.start_reload()?;
        Ok(Box::new(Handed))
    }

    fn processes(&self) -> Vec<i32> {
        match self.master() {
            Ok(procs) => std::iter::once(procs.master).chain(procs.workers).collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// A HAProxy reload needs no wait for the old workers: the new worker took over their listening
/// sockets and the master told them to stop accepting (they finish their open connections in
/// their own time, listed as old workers in `show proc`).
struct Handed;

impl Draining for Handed {
    fn finish(self: Box<Self>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn haproxy() -> Haproxy {
        Haproxy {
            bin: "haproxy".into(),
            conf: "/etc/haproxy/haproxy.cfg".into(),
            master_socket: "/nonexistent/master.sock".into(),
            log: None,
            reload_command: None,
            reload_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn releases_are_flat_and_hold_only_cfg_files() {
        let h = haproxy();
        assert_eq!(
            h.release_path("lb/lb-3/blog/frontend.cfg").as_deref(),
            Some("blog.frontend.cfg")
        );
        assert_eq!(h.release_path("lb/lb-3/blog/frontend.conf"), None);
        assert_eq!(h.release_path("lb/lb-3/_flipbit/listeners.conf"), None);
        assert_eq!(h.release_path("lb/lb-3/Bad_Ns/x.cfg"), None);
    }

    #[test]
    fn a_missing_master_is_a_clear_error() {
        let err = haproxy().master().unwrap_err().to_string();
        assert!(
            err.contains("haproxy is not running") && err.contains("/nonexistent/master.sock"),
            "{err}"
        );
    }

    #[test]
    fn alert_lines_lose_their_prefix() {
        assert_eq!(
            strip_level("[ALERT]    (8894) : config : parsing [/x/a.b.cfg:4] : unknown keyword"),
            "config : parsing [/x/a.b.cfg:4] : unknown keyword"
        );
        assert_eq!(strip_level("plain"), "plain");
    }
}
