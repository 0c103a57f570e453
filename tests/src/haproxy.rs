//! A private HAProxy for one LB host, in master-worker mode as a HAProxy host runs it:
//! `haproxy -W -S <socket> -f <main> -f <state>/current`, its stderr in a log file the applier
//! reads alerts from. Stopped with SIGTERM to the master when dropped (also on panic).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flipbit_applier::haproxy::MasterCli;

pub struct HaproxyInstance {
    pub dir: PathBuf,
    pub conf: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub state_dir: PathBuf,
    child: Child,
}

/// True when `haproxy` runs.
pub fn have_haproxy() -> bool {
    Command::new("haproxy")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success())
}

impl HaproxyInstance {
    /// Writes a main config, points `<state>/current` at an empty release when there is none yet
    /// (as `deploy/systemd/haproxy.service.d/flipbit.conf` does: HAProxy cannot start on a missing
    /// `-f` directory), and starts the master. Nothing listens until the first apply.
    pub fn start(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir.join("state/releases/empty")).map_err(|e| e.to_string())?;
        let dir = dir.canonicalize().map_err(|e| e.to_string())?;
        let state_dir = dir.join("state");
        let current = state_dir.join("current");
        if std::fs::symlink_metadata(&current).is_err() {
            std::os::unix::fs::symlink("releases/empty", &current).map_err(|e| e.to_string())?;
        }
        let conf = dir.join("haproxy.cfg");
        let socket = dir.join("master.sock");
        let log = dir.join("haproxy.log");
        std::fs::write(
            &conf,
            "global\n    nbthread 1\n\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1m\n    timeout server 1m\n",
        )
        .map_err(|e| e.to_string())?;
        let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new("haproxy")
            .arg("-W")
            .arg("-S")
            .arg(&socket)
            .arg("-f")
            .arg(&conf)
            .arg("-f")
            .arg(&current)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("starting haproxy: {e}"))?;
        let instance = Self {
            dir,
            conf,
            socket,
            log,
            state_dir,
            child,
        };
        let cli = instance.cli();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cli.show_proc().is_ok_and(|p| !p.workers.is_empty()) {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&instance.log).unwrap_or_default();
                return Err(format!("haproxy in {} did not start: {log}", instance.dir.display()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(instance)
    }

    pub fn cli(&self) -> MasterCli {
        MasterCli {
            socket: self.socket.clone(),
            timeout: Duration::from_secs(2),
        }
    }

    /// `flipbit-applier apply` arguments for this instance.
    pub fn applier_args(&self, repo: &Path, lb: &str) -> Vec<String> {
        let mut args = crate::cluster::apply_args(repo, lb, &self.state_dir);
        args.extend([
            "--haproxy-conf".into(),
            self.conf.display().to_string(),
            "--haproxy-socket".into(),
            self.socket.display().to_string(),
            "--haproxy-log".into(),
            self.log.display().to_string(),
        ]);
        args
    }
}

impl Drop for HaproxyInstance {
    fn drop(&mut self) {
        // SIGTERM to the master, which stops its workers.
        crate::process::stop(&mut self.child);
    }
}
