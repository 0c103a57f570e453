//! The releases on this host: `<state>/releases/<commit>/<namespace>/<service>.conf`, and
//! `<state>/current`, a symlink swapped by an atomic rename so nginx only ever sees a whole release.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct ReleaseError {
    pub path: String,
    pub source: std::io::Error,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ReleaseError + '_ {
    move |source| ReleaseError {
        path: path.display().to_string(),
        source,
    }
}

/// Where a release file comes from.
#[derive(Debug, Clone)]
pub enum FileSource {
    /// The same file of the running release (same blob): hard-linked.
    Link(PathBuf),
    /// New content.
    Content(Vec<u8>),
}

#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: PathBuf) -> Result<Self, ReleaseError> {
        std::fs::create_dir_all(root.join("releases")).map_err(io_err(&root))?;
        let root = root.canonicalize().map_err(io_err(&root))?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn current_link(&self) -> PathBuf {
        self.root.join("current")
    }

    pub fn cache_repo(&self) -> PathBuf {
        self.root.join("repo.git")
    }

    pub fn release_dir(&self, id: &str) -> PathBuf {
        self.root.join("releases").join(id)
    }

    /// The release `current` points at, by id.
    pub fn current(&self) -> Option<String> {
        let target = std::fs::read_link(self.current_link()).ok()?;
        Some(target.file_name()?.to_str()?.to_owned())
    }

    /// Writes a release from `files` (relative path → source) under `id`, replacing any partial
    /// one left by an earlier attempt.
    pub fn write_release(&self, id: &str, files: &BTreeMap<String, FileSource>) -> Result<PathBuf, ReleaseError> {
        let dir = self.release_dir(id);
        let tmp = self.root.join("releases").join(format!(".tmp-{id}"));
        for stale in [&tmp, &dir] {
            if stale.exists() {
                std::fs::remove_dir_all(stale).map_err(io_err(stale))?;
            }
        }
        std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        for (rel, content) in files {
            let path = tmp.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            match content {
                FileSource::Link(from) if std::fs::hard_link(from, &path).is_ok() => {}
                FileSource::Link(from) => {
                    // The running release lost the file (a hand edit?): copy what is there, if anything.
                    std::fs::copy(from, &path).map_err(io_err(from))?;
                }
                FileSource::Content(bytes) => std::fs::write(&path, bytes).map_err(io_err(&path))?,
            }
        }
        std::fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
        Ok(dir)
    }

    /// Points `current` at release `id` (or at nothing) with one atomic rename.
    pub fn switch_to(&self, id: Option<&str>) -> Result<(), ReleaseError> {
        let link = self.current_link();
        match id {
            Some(id) => {
                let tmp = self.root.join(".current.new");
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(Path::new("releases").join(id), &tmp).map_err(io_err(&tmp))?;
                std::fs::rename(&tmp, &link).map_err(io_err(&link))
            }
            None => match std::fs::remove_file(&link) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&link)(e)),
                _ => Ok(()),
            },
        }
    }

    pub fn remove_release(&self, id: &str) {
        let _ = std::fs::remove_dir_all(self.release_dir(id));
    }

    /// Deletes releases other than `keep`.
    pub fn prune(&self, keep: &[&str]) {
        let Ok(entries) = std::fs::read_dir(self.root.join("releases")) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name.as_str()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    /// The commit last applied to nginx on this host.
    pub fn applied(&self, step: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.root.join(format!("applied-{step}"))).ok()?;
        let id = text.trim();
        (!id.is_empty()).then(|| id.to_owned())
    }

    pub fn record_applied(&self, step: &str, id: &str) -> Result<(), ReleaseError> {
        let path = self.root.join(format!("applied-{step}"));
        let tmp = self.root.join(format!(".applied-{step}.new"));
        std::fs::write(&tmp, format!("{id}\n")).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))
    }
}

/// An exclusive lock on the state dir, held for one apply, so a timer run and a manual run
/// cannot interleave.
pub struct Lock {
    _file: std::fs::File,
}

impl Lock {
    pub fn take(state: &StateDir) -> Result<Self, ReleaseError> {
        use std::os::fd::AsRawFd;
        let path = state.root().join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        // SAFETY: flock on a file descriptor we own; released when the file is closed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err(&path)(std::io::Error::last_os_error()));
        }
        Ok(Self { _file: file })
    }
}
