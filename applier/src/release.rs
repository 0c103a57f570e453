//! The releases on this host: `<state>/releases/<id>/` with this host's files (nginx:
//! `<namespace>/<service>.conf`; HAProxy: flat `<namespace>.<service>.cfg`), and `<state>/current`,
//! a symlink swapped by an atomic rename so the load balancer only ever sees a whole release.
//!
//! A release is written under a temporary name and renamed into place whole, its marker
//! ([`MARKER`]: the commit and the withheld Services) written last before the rename: a directory
//! with a marker that reads back is a complete release of what the marker says, and anything
//! else (a half-written directory, one a run left behind in an older layout) is not used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use flipbit_store::CommitId;

use crate::journal::Release;

/// The marker file of a release. Neither nginx's `*/*.conf` include nor HAProxy's `*.cfg`
/// directory read ever loads it.
pub const MARKER: &str = ".flipbit-release";

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

    /// Writes `release` from `files` (relative path → source), replacing any partial one left
    /// by an earlier attempt.
    pub fn write_release(
        &self,
        release: &Release,
        files: &BTreeMap<String, FileSource>,
    ) -> Result<PathBuf, ReleaseError> {
        let id = release.id();
        let dir = self.release_dir(&id);
        let tmp = self.root.join("releases").join(format!(".tmp-{id}"));
        for stale in [&tmp, &dir] {
            if stale.exists() {
                std::fs::remove_dir_all(stale).map_err(io_err(stale))?;
            }
        }
        std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        for (rel, content) in files {
            put(&tmp.join(rel), content)?;
        }
        write_marker(&tmp, release)?;
        std::fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
        Ok(dir)
    }

    /// Turns the release `spare` (one nginx no longer runs) into release `id` in place of writing
    /// a whole new one: its directory is renamed aside, `removes` are deleted and `writes` put in,
    /// and it is renamed to `id`. The work follows the change, not the number of files, which
    /// matters when a host carries thousands of Services (a full release of 10k files costs
    /// ~0.2 s to link and ~0.1 s to delete again on this kind of machine).
    ///
    /// Files of one release are hard links shared with others (the running one included), so an
    /// existing file is never opened for writing: it is unlinked and a new one created.
    pub fn update_release(
        &self,
        spare: &str,
        release: &Release,
        removes: &[String],
        writes: &BTreeMap<String, FileSource>,
    ) -> Result<PathBuf, ReleaseError> {
        let id = release.id();
        let from = self.release_dir(spare);
        let dir = self.release_dir(&id);
        let tmp = self.root.join("releases").join(format!(".tmp-{id}"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
        }
        std::fs::rename(&from, &tmp).map_err(io_err(&from))?;
        for rel in removes {
            let path = tmp.join(rel);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(&path)(e)),
                _ => {}
            }
            // A namespace whose last Service went: its directory goes too (nginx globs `*/*.conf`).
            if let Some(parent) = path.parent().filter(|p| *p != tmp) {
                let _ = std::fs::remove_dir(parent);
            }
        }
        for (rel, content) in writes {
            let path = tmp.join(rel);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(&path)(e)),
                _ => {}
            }
            put(&path, content)?;
        }
        write_marker(&tmp, release)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
        }
        std::fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
        Ok(dir)
    }

    /// The release `id` as its marker describes it: `None` when it is missing, incomplete or
    /// not the release its name says.
    pub fn release_of(&self, id: &str) -> Option<Release> {
        let text = std::fs::read_to_string(self.release_dir(id).join(MARKER)).ok()?;
        let release = parse_marker(&text)?;
        (release.id() == id).then_some(release)
    }

    /// The release `current` points at, when it is a complete one.
    pub fn current_release(&self) -> Option<Release> {
        self.release_of(&self.current()?)
    }

    /// Release ids on disk, other than partial ones being written.
    pub fn releases(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.root.join("releases")) else {
            return Vec::new();
        };
        let mut out: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with('.'))
            .collect();
        out.sort();
        out
    }

    /// Points `current` at release `id` (or at nothing) with one atomic rename.
    pub fn switch_to(&self, id: Option<&str>) -> Result<(), ReleaseError> {
        let link = self.current_link();
        match id {
            Some(id) => self.point("current", id),
            None => match std::fs::remove_file(&link) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&link)(e)),
                _ => Ok(()),
            },
        }
    }

    /// `<state>/staging`: the release being validated, reached by a path of the same shape and
    /// length as through `current` (why that matters: `apply::validate`).
    pub fn staging_link(&self) -> PathBuf {
        self.root.join("staging")
    }

    /// Points `staging` at release `id`; returns the link.
    pub fn point_staging(&self, id: &str) -> Result<PathBuf, ReleaseError> {
        self.point("staging", id)?;
        Ok(self.staging_link())
    }

    pub fn remove_staging(&self) {
        let _ = std::fs::remove_file(self.staging_link());
    }

    /// Points the link `<state>/<name>` at release `id` with one atomic rename.
    fn point(&self, name: &str, id: &str) -> Result<(), ReleaseError> {
        let link = self.root.join(name);
        let tmp = self.root.join(format!(".{name}.new"));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(Path::new("releases").join(id), &tmp).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &link).map_err(io_err(&link))
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
}

fn write_marker(dir: &Path, release: &Release) -> Result<(), ReleaseError> {
    let path = dir.join(MARKER);
    let withheld: Vec<String> = release.withheld.iter().map(ToString::to_string).collect();
    let text = format!("commit {}\nwithheld {}\n", release.commit, withheld.join(","));
    // The spare a release is made from carries the spare's marker: replaced, never rewritten.
    let _ = std::fs::remove_file(&path);
    std::fs::write(&path, text).map_err(io_err(&path))
}

fn parse_marker(text: &str) -> Option<Release> {
    let mut lines = text.lines();
    let commit = CommitId::from_str(lines.next()?.strip_prefix("commit ")?).ok()?;
    let withheld = lines
        .next()?
        .strip_prefix("withheld ")?
        .split(',')
        .filter(|k| !k.is_empty())
        .map(|k| k.parse().ok())
        .collect::<Option<_>>()?;
    lines.next().is_none().then_some(Release { commit, withheld })
}

/// Creates the file at `path` (which must not exist) from `content`, and its directory.
fn put(path: &Path, content: &FileSource) -> Result<(), ReleaseError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    match content {
        FileSource::Link(from) if std::fs::hard_link(from, path).is_ok() => Ok(()),
        FileSource::Link(from) => {
            // The running release lost the file (a hand edit?): copy what is there, if anything.
            std::fs::copy(from, path).map(drop).map_err(io_err(from))
        }
        FileSource::Content(bytes) => std::fs::write(path, bytes).map_err(io_err(path)),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> BTreeMap<String, FileSource> {
        list.iter()
            .map(|(p, t)| ((*p).to_owned(), FileSource::Content(t.as_bytes().to_vec())))
            .collect()
    }

    fn read(dir: &Path, rel: &str) -> Option<String> {
        std::fs::read_to_string(dir.join(rel)).ok()
    }

    fn release(c: char) -> Release {
        Release::whole(CommitId::from_str(&c.to_string().repeat(40)).unwrap())
    }

    #[test]
    fn updating_a_spare_release_never_touches_the_files_it_shares() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::new(tmp.path().join("state")).unwrap();
        let a = state
            .write_release(
                &release('a'),
                &files(&[("ns1/x.conf", "x1"), ("ns1/y.conf", "y1"), ("ns2/z.conf", "z1")]),
            )
            .unwrap();
        // b shares every file of a but x through hard links, as a one-Service change stages it.
        let mut b_files: BTreeMap<String, FileSource> = ["ns1/y.conf", "ns2/z.conf"]
            .iter()
            .map(|p| ((*p).to_owned(), FileSource::Link(a.join(p))))
            .collect();
        b_files.extend(files(&[("ns1/x.conf", "x2")]));
        let b = state.write_release(&release('b'), &b_files).unwrap();

        // c from the spare a: y changes, z goes (and its namespace), w comes.
        let c = state
            .update_release(
                &release('a').id(),
                &release('c'),
                &["ns2/z.conf".to_owned()],
                &files(&[("ns1/y.conf", "y3"), ("ns3/w.conf", "w3"), ("ns1/x.conf", "x2")]),
            )
            .unwrap();
        assert!(!a.exists());
        assert_eq!(state.releases(), vec![release('b').id(), release('c').id()]);
        assert_eq!(
            state.release_of(&release('c').id()),
            Some(release('c')),
            "c's marker is c's"
        );
        assert_eq!(state.release_of(&release('a').id()), None);
        assert_eq!(read(&c, "ns1/x.conf").as_deref(), Some("x2"));
        assert_eq!(read(&c, "ns1/y.conf").as_deref(), Some("y3"));
        assert_eq!(read(&c, "ns3/w.conf").as_deref(), Some("w3"));
        assert!(!c.join("ns2").exists(), "an emptied namespace directory stays behind");
        // b still holds exactly what it was written with.
        assert_eq!(read(&b, "ns1/x.conf").as_deref(), Some("x2"));
        assert_eq!(read(&b, "ns1/y.conf").as_deref(), Some("y1"));
        assert_eq!(read(&b, "ns2/z.conf").as_deref(), Some("z1"));
    }

    #[test]
    fn only_a_release_with_its_own_marker_counts() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::new(tmp.path().join("state")).unwrap();
        let mut partial = release('a');
        partial.withheld.insert("web/x".parse().unwrap());
        let dir = state.write_release(&partial, &files(&[("ns1/x.conf", "x1")])).unwrap();
        assert_eq!(state.release_of(&partial.id()), Some(partial.clone()));
        // A directory under another release's name, or without a marker, is no release.
        std::fs::rename(&dir, state.release_dir(&release('a').id())).unwrap();
        assert_eq!(state.release_of(&release('a').id()), None);
        std::fs::remove_file(state.release_dir(&release('a').id()).join(MARKER)).unwrap();
        assert_eq!(state.release_of(&release('a').id()), None);
        state.switch_to(Some(&release('a').id())).unwrap();
        assert_eq!(
            state.current_release(),
            None,
            "a dangling or unmarked current is no release"
        );
    }
}
