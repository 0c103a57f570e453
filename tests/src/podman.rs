//! Podman with a store of its own: its storage, run state, locks, events and temporary files all
//! live in one temporary directory, with a containers.conf of its own, so a test loads and runs
//! an image without touching the machine's container storage or another test's. Containers run
//! the way podman runs on these machines (FIELD-NOTES, "Containers"): Debian's runc, the cgroupfs
//! manager, and no default ulimits. Storage is `vfs` (plain directories, no mounts), so dropping
//! the directory leaves nothing mounted behind; the images tests load are small.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

/// Why podman cannot run containers here (a missing tool or not root), if it cannot.
pub fn unavailable() -> Option<String> {
    if !crate::is_root() {
        return Some("podman needs root here (rootless podman has no subordinate ids on these machines)".into());
    }
    for tool in ["podman", "runc"] {
        if Command::new(tool).arg("--version").output().is_err() {
            return Some(format!("{tool} is not installed (apt-get install podman runc)"));
        }
    }
    None
}

pub struct Podman {
    dir: TempDir,
}

impl Podman {
    /// A fresh, empty store. Panics when its directory cannot be written (a broken test machine).
    pub fn private_store() -> Podman {
        let dir = tempfile::tempdir().expect("podman's temporary directory");
        for sub in ["tmp", "net", "libpod"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("podman's directories");
        }
        let p = |sub: &str| dir.path().join(sub).display().to_string();
        let conf = format!(
            "[containers]\ndefault_ulimits = []\n\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
             events_logfile_path = \"{events}\"\nlock_type = \"file\"\ntmp_dir = \"{libpod}\"\n\
             image_copy_tmp_dir = \"{tmp}\"\n\n\
             [network]\nnetwork_config_dir = \"{net}\"\n",
            events = p("events.log"),
            libpod = p("libpod"),
            tmp = p("tmp"),
            net = p("net"),
        );
        std::fs::write(dir.path().join("containers.conf"), conf).expect("writing containers.conf");
        let storage = format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            p("storage"),
            p("run")
        );
        std::fs::write(dir.path().join("storage.conf"), storage).expect("writing storage.conf");
        Podman { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `podman` with this store's configuration; add the subcommand and its arguments.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", self.dir.path().join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.path().join("storage.conf"))
            .env("TMPDIR", self.dir.path().join("tmp"));
        cmd
    }

    /// Runs `podman ARGS` and returns what it did (it fails only when podman cannot be started).
    pub fn run(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running podman {args:?}: {e}"))
    }

    /// Runs `podman ARGS` and returns its stdout; panics with its output when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A path inside the store's directory, for the test's own files.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Containers a failed test left behind, so their run state goes with the directory.
        let _ = self.command().args(["rm", "--all", "--force"]).output();
    }
}
