//! The nginx on this LB host, driven as an operator would: `nginx -t` on a candidate config,
//! SIGHUP to the master, and proof that the reload took (a new generation of workers, no
//! `[emerg]` in the error log) rather than trust in the signal. A release keeps the repo's layout
//! (`<namespace>/<service>.conf`), which the main config includes as `current/*/*.conf`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

use flipbit_core::grammar::LbFile;

use crate::balancer::{self, Draining, LoadBalancer};
use crate::release::StateDir;

/// How long the error log must stay unchanged before a failed reload is reported.
const QUIET: Duration = Duration::from_millis(700);

#[derive(Debug, Clone)]
pub struct Nginx {
    pub bin: PathBuf,
    /// The real main config; it includes `<state-dir>/current/*/*.conf` inside `stream {}`.
    pub conf: PathBuf,
    /// `-p PREFIX`, when nginx runs with a private prefix.
    pub prefix: Option<PathBuf>,
    /// `-e FILE`; also where reload errors are looked for. Without it they are looked for where
    /// the main config says ([`crate::nginx_log`]).
    pub error_log: Option<PathBuf>,
    pub pid_file: PathBuf,
    /// Run this instead of sending SIGHUP (e.g. `systemctl reload nginx`).
    pub reload_command: Option<String>,
    /// How long a reload may take to show a new worker generation.
    pub reload_timeout: Duration,
    /// The log found from the main config when `error_log` is not given: looked up at the first
    /// reload, once per process.
    pub found_log: std::sync::OnceLock<Option<crate::nginx_log::ErrorLog>>,
}

#[derive(Debug, thiserror::Error)]
pub enum NginxError {
    #[error("nginx -t failed: {0}")]
    Invalid(String),
    #[error("cannot run {bin}: {source}")]
    Spawn { bin: String, source: std::io::Error },
    #[error("nginx is not running (no live master in pid file {0})")]
    NotRunning(String),
    #[error("nginx reload failed: {0}")]
    Reload(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl Nginx {
    fn base_command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        if let Some(p) = &self.prefix {
            cmd.arg("-p").arg(p);
        }
        if let Some(e) = &self.error_log {
            cmd.arg("-e").arg(e);
        }
        cmd
    }

    /// `nginx -t` against `conf` (a copy of the main config pointing at a candidate release).
    pub fn test(&self, conf: &Path) -> Result<(), NginxError> {
        let out = self
            .base_command()
            .arg("-t")
            .arg("-q")
            .arg("-c")
            .arg(conf)
            .output()
            .map_err(|source| NginxError::Spawn {
                bin: self.bin.display().to_string(),
                source,
            })?;
        if out.status.success() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<String> = text
            .lines()
            .map(|l| l.trim_start_matches("nginx: "))
            .filter(|l| !l.contains("configuration file") || l.contains("[emerg]"))
            .map(crate::quote::redact)
            .collect();
        Err(NginxError::Invalid(if lines.is_empty() {
            crate::quote::redact(text.trim())
        } else {
            lines.join("; ")
        }))
    }

    /// The master's pid, when one is alive.
    pub fn master(&self) -> Result<i32, NginxError> {
        let not_running = || NginxError::NotRunning(self.pid_file.display().to_string());
        let text = std::fs::read_to_string(&self.pid_file).map_err(|_| not_running())?;
        let pid: i32 = text.trim().parse().map_err(|_| not_running())?;
        // SAFETY: signal 0 only checks that the process exists; no signal is delivered.
        if pid > 0 && unsafe { libc::kill(pid, 0) } == 0 {
            Ok(pid)
        } else {
            Err(not_running())
        }
    }

    /// Reloads and waits until a new worker generation runs and the old one stopped accepting;
    /// an `[emerg]` logged since the reload, or no new workers by the deadline, is a failure
    /// (nginx then keeps its old config).
    pub fn reload(&self) -> Result<(), NginxError> {
        self.start_reload().map(Reloaded::finish)
    }

    /// [`Nginx::reload`] up to the new worker generation running: the new config serves, every
    /// new listener answers, and the caller may do what needs only that (publish DNS for new
    /// addresses) before [`Reloaded::finish`] waits out the old generation.
    pub fn start_reload(&self) -> Result<Reloaded, NginxError> {
        let master = self.master()?;
        let before = all_children(master);
        let log_offset = self.error_log_len();
        match &self.reload_command {
            Some(cmd) => crate::balancer::run_reload_command(
                cmd,
                |source| NginxError::Spawn {
                    bin: cmd.clone(),
                    source,
                },
                NginxError::Reload,
            )?,
            None => {
                // SAFETY: plain signal delivery to the pid nginx wrote.
                if unsafe { libc::kill(master, libc::SIGHUP) } != 0 {
                    return Err(NginxError::Reload(format!("cannot signal master {master}")));
                }
            }
        }
        crate::failpoint::reached("reload-sent");
        let deadline = Instant::now() + self.reload_timeout;
        let mut failure: Option<(String, u64)> = None;
        loop {
            let log_len = self.error_log_len();
            if let Some(emerg) = self.errors_since(log_offset) {
                // nginx retries a failed bind for ~2.5 s and logs each try: report once the log
                // has gone quiet, so the master is done and the next reload starts clean.
                match &failure {
                    Some((_, len)) if *len == log_len => {}
                    _ => failure = Some((emerg, log_len)),
                }
            }
            let now = children(master);
            if failure.is_none() && now.iter().any(|pid| !before.contains(pid)) {
                tracing::debug!("new worker generation is running");
                return Ok(Reloaded { old: before, deadline });
            }
            if let Some((emerg, len)) = &failure {
                std::thread::sleep(QUIET);
                if self.error_log_len() == *len || Instant::now() >= deadline {
                    return Err(NginxError::Reload(emerg.clone()));
                }
                continue;
            }
            if Instant::now() >= deadline {
                let look = self.log_file().map_or_else(
                    || "its error log was not found: set --nginx-error-log".to_owned(),
                    |log| format!("nothing in {}", log.display()),
                );
                return Err(NginxError::Reload(format!(
                    "no new worker processes within {:?} of the reload ({look})",
                    self.reload_timeout
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The file a failed reload is reported in: `--nginx-error-log`, else the one the main config
    /// names; `None` when nginx logs elsewhere (syslog, stderr).
    fn log_file(&self) -> Option<&Path> {
        if let Some(given) = &self.error_log {
            return Some(given);
        }
        let found = self.found_log.get_or_init(|| {
            let found = crate::nginx_log::find(&self.bin, &self.conf, self.prefix.as_deref());
            match &found {
                Some(crate::nginx_log::ErrorLog::File(path)) => {
                    tracing::debug!(log = %path.display(), "nginx's error log, from its config")
                }
                Some(crate::nginx_log::ErrorLog::NotAFile(target)) => tracing::warn!(
                    target = %crate::quote::redact(target),
                    "nginx logs its errors to no file: a failed reload's cause cannot be quoted (set --nginx-error-log)"
                ),
                None => tracing::warn!("nginx's error log is not named in its config: set --nginx-error-log"),
            }
            found
        });
        match found {
            Some(crate::nginx_log::ErrorLog::File(path)) => Some(path),
            _ => None,
        }
    }

    fn error_log_len(&self) -> u64 {
        crate::logtail::len(self.log_file())
    }

    /// `[emerg]` lines written to the error log past `offset`, redacted.
    fn errors_since(&self, offset: u64) -> Option<String> {
        let errors = crate::logtail::lines_since(self.log_file()?, offset, "[emerg]");
        let errors: Vec<String> = errors.iter().map(|l| crate::quote::redact(l)).collect();
        (!errors.is_empty()).then(|| errors.join("; "))
    }
}

impl LoadBalancer for Nginx {
    fn name(&self) -> &'static str {
        "nginx"
    }

    /// Per-Service snippets and map entries and a shared-listeners host's own files, in the
    /// repo's layout; not HAProxy's `.cfg` files, nor any name the generator never writes (the
    /// applier checks exactly the files it stages).
    fn release_path(&self, path: &str) -> Option<String> {
        match balancer::lb_file(path)? {
            LbFile::Haproxy(_) => None,
            _ => balancer::inside_host(path),
        }
    }

    /// `nginx -t` on a copy of the main config whose include points at the candidate release. The
    /// copy sits beside the main config so its relative includes resolve the same way.
    fn validate(&self, state: &StateDir, release: &Path) -> anyhow::Result<()> {
        let main = &self.conf;
        let text = std::fs::read_to_string(main).with_context(|| format!("reading {}", main.display()))?;
        let current = format!("{}/", state.current_link().display());
        if !text.contains(&current) {
            bail!(
                "{} does not include {current}*/*.conf inside its stream {{}} block, so Flipbit's files would never be used",
                main.display()
            );
        }
        // nginx reads the candidate through `<state>/staging`, a link as long as `current`, rather
        // than through `releases/<commit>/`: with 10k Services in the per-Service layout, `nginx -t`
        // took up to ~50% more CPU on other path lengths (its quadratic upstream lookup walks
        // structures whose spacing in memory follows the file names' lengths). Through a path of the
        // same length it works as the reload will, in the same time.
        let id = release
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("{}: not a release directory", release.display()))?;
        let staging = state.point_staging(id)?;
        let candidate = text.replace(&current, &format!("{}/", staging.display()));
        let dir = main.parent().unwrap_or(Path::new("."));
        remove_stale_test_configs(dir);
        let test_conf = dir.join(format!("{TEST_CONF_PREFIX}{}.conf", std::process::id()));
        std::fs::write(&test_conf, candidate).with_context(|| format!("writing {}", test_conf.display()))?;
        let result = self.test(&test_conf);
        let _ = std::fs::remove_file(&test_conf);
        state.remove_staging();
        Ok(result?)
    }

    fn check_running(&self, _state: &StateDir) -> anyhow::Result<()> {
        self.master()?;
        Ok(())
    }

    /// The master and its workers (the master holds the listening sockets).
    fn processes(&self) -> Vec<i32> {
        match self.master() {
            Ok(master) => std::iter::once(master).chain(all_children(master)).collect(),
            Err(_) => Vec::new(),
        }
    }

    fn reload(&self) -> anyhow::Result<Box<dyn Draining>> {
        Ok(Box::new(self.start_reload()?))
    }
}

impl Draining for Reloaded {
    fn finish(self: Box<Self>) {
        Reloaded::finish(*self);
    }
}

/// The test configs `validate` writes beside the main config are named so.
const TEST_CONF_PREFIX: &str = ".flipbit-test-";

/// Removes the test configs of runs that were killed before they could (their process is gone),
/// so they do not pile up beside the main config.
fn remove_stale_test_configs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(TEST_CONF_PREFIX))
            .and_then(|n| n.strip_suffix(".conf"))
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let alive = pid > 0 && unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A reload whose new workers run while the old ones may still accept connections for the old
/// config: nginx's master sleeps ~100 ms after starting the new generation before it tells the
/// old one to stop. Dropping it without [`Reloaded::finish`] skips that wait.
#[must_use = "finish() waits until the old workers stopped accepting"]
#[derive(Debug)]
pub struct Reloaded {
    old: BTreeSet<i32>,
    deadline: Instant,
}

impl Reloaded {
    /// Waits until each old worker has exited or begun its graceful shutdown, in which it closes
    /// its listening sockets; until then it may still accept connections for the old config.
    /// Workers draining long connections are left to finish in their own time.
    pub fn finish(self) {
        while Instant::now() < self.deadline {
            if stopped_accepting(&self.old) {
                tracing::debug!("old worker generation stopped accepting");
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// True once none of `workers` still accepts: each has exited or is shutting down (nginx has then
/// closed its listening sockets). Public so `flipbit-bench` measures its floor with the same test.
pub fn stopped_accepting(workers: &BTreeSet<i32>) -> bool {
    !workers.iter().any(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| !String::from_utf8_lossy(&c).contains("shutting down"))
    })
}

/// Pids whose parent is `parent` (single-threaded, as nginx's master is), for polling: one small
/// read of `/proc/<pid>/task/<pid>/children` where the kernel offers it, so the reload is watched
/// finely without taking CPU from the nginx it waits for. The kernel may miss a child that comes
/// or goes during the read, which a poll only sees one round later; the generation before the
/// reload is taken with [`all_children`], which cannot miss one.
fn children(parent: i32) -> BTreeSet<i32> {
    match std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")) {
        Ok(text) => text.split_whitespace().filter_map(|s| s.parse().ok()).collect(),
        Err(_) => all_children(parent),
    }
}

/// Pids whose parent is `parent`, from a scan of every process in `/proc`. Public so
/// `flipbit-bench` finds nginx's workers as the applier does.
pub fn all_children(parent: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses, so split after the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let ppid = rest.split_whitespace().nth(1).and_then(|s| s.parse::<i32>().ok());
        if ppid == Some(parent) {
            out.insert(pid);
        }
    }
    out
}
