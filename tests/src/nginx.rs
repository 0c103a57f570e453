//! A private nginx instance for one LB host: its own prefix, pid file, error log and state dir,
//! started in the foreground and stopped with SIGTERM when dropped (also on panic).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// `nginx -p <prefix> -c <conf> -e <error_log>`: an nginx that reads and writes nothing outside
/// the test's directory (not even the default error log, which nginx opens before its config).
pub fn command(prefix: &Path, conf: &Path, error_log: &Path) -> Command {
    let mut cmd = Command::new("nginx");
    cmd.arg("-p").arg(prefix).arg("-c").arg(conf).arg("-e").arg(error_log);
    cmd
}

pub struct NginxInstance {
    pub dir: PathBuf,
    pub conf: PathBuf,
    pub pid_file: PathBuf,
    pub error_log: PathBuf,
    pub state_dir: PathBuf,
    child: Child,
}

impl NginxInstance {
    /// Writes a main config whose `stream {}` includes the applier's current release, and starts
    /// nginx on it. Nothing listens until the first apply.
    pub fn start(dir: &Path) -> Result<Self, String> {
        Self::start_with_connections(dir, 1024)
    }

    /// The same with `worker_connections` set: every listening socket takes one in each worker,
    /// so thousands of Services need more than the default.
    pub fn start_with_connections(dir: &Path, worker_connections: usize) -> Result<Self, String> {
        std::fs::create_dir_all(dir.join("state")).map_err(|e| e.to_string())?;
        let dir = dir.canonicalize().map_err(|e| e.to_string())?;
        let conf = dir.join("nginx.conf");
        let pid_file = dir.join("nginx.pid");
        let error_log = dir.join("error.log");
        let state_dir = dir.join("state");
        let text = format!(
            "load_module {STREAM_MODULE};\n\
             pid {pid};\nerror_log {log} notice;\ndaemon off;\nworker_processes 1;\n\
             events {{ worker_connections {worker_connections}; }}\n\
             stream {{\n    include {state}/current/*/*.conf;\n}}\n",
            pid = pid_file.display(),
            log = error_log.display(),
            state = state_dir.display(),
        );
        std::fs::write(&conf, text).map_err(|e| e.to_string())?;
        let child = command(&dir, &conf, &error_log)
            .spawn()
            .map_err(|e| format!("starting nginx: {e}"))?;
        let instance = Self {
            dir,
            conf,
            pid_file,
            error_log,
            state_dir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !instance.pid_file.exists() {
            if Instant::now() > deadline {
                return Err(format!("nginx in {} did not start", instance.dir.display()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(instance)
    }

    /// `flipbit-applier apply` arguments for this instance.
    pub fn applier_args(&self, repo: &Path, lb: &str) -> Vec<String> {
        let mut args = crate::cluster::apply_args(repo, lb, &self.state_dir);
        args.extend([
            "--nginx-conf".into(),
            self.conf.display().to_string(),
            "--nginx-prefix".into(),
            self.dir.display().to_string(),
            "--nginx-error-log".into(),
            self.error_log.display().to_string(),
            "--nginx-pid".into(),
            self.pid_file.display().to_string(),
        ]);
        args
    }
}

impl NginxInstance {
    /// The pid of the nginx master this instance started.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The master's pid as its pid file names it (what the applier signals).
    pub fn master_pid(&self) -> Option<i32> {
        std::fs::read_to_string(&self.pid_file).ok()?.trim().parse().ok()
    }

    /// A reload by hand: SIGHUP to the master the pid file names.
    pub fn sighup(&self) -> Result<(), String> {
        let pid = self
            .master_pid()
            .ok_or_else(|| format!("no pid in {}", self.pid_file.display()))?;
        // SAFETY: plain signal delivery to the nginx master this instance started.
        if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
            return Err(format!("SIGHUP to nginx {pid}: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

impl Drop for NginxInstance {
    fn drop(&mut self) {
        // SIGTERM: a fast stop (SIGQUIT would wait for UDP sessions to time out); the master
        // stops its workers. Then any other master this instance's pid file names.
        crate::process::stop(&mut self.child);
        crate::process::stop_pid_file(&self.pid_file, self.child.id(), "nginx");
    }
}
