//! Bare state repos for tests and the demo, and a human's commits to them (through git2, so no
//! Git identity has to be configured on the machine).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use git2::{Oid, Repository, Signature};

/// Creates a bare repo at `path` whose `main` holds `files` (e.g. `flipbit.yaml`).
pub fn create(path: &Path, files: &BTreeMap<&str, String>) -> Result<PathBuf, git2::Error> {
    let repo = Repository::init_bare(path)?;
    repo.set_head("refs/heads/main")?;
    commit_files(&repo, None, files, &[], "add flipbit.yaml")?;
    Ok(path.to_path_buf())
}

/// A human commit on `main` that writes `files` and deletes `deletes`.
pub fn human_commit(
    path: &Path,
    files: &BTreeMap<&str, String>,
    deletes: &[&str],
    message: &str,
) -> Result<Oid, git2::Error> {
    let repo = Repository::open_bare(path)?;
    let head = repo.refname_to_id("refs/heads/main")?;
    commit_files(&repo, Some(head), files, deletes, message)
}

fn commit_files(
    repo: &Repository,
    parent: Option<Oid>,
    files: &BTreeMap<&str, String>,
    deletes: &[&str],
    message: &str,
) -> Result<Oid, git2::Error> {
    let mut index = git2::Index::new()?;
    if let Some(p) = parent {
        index.read_tree(&repo.find_commit(p)?.tree()?)?;
    }
    for (path, text) in files {
        let blob = repo.blob(text.as_bytes())?;
        let entry = git2::IndexEntry {
            ctime: git2::IndexTime::new(0, 0),
            mtime: git2::IndexTime::new(0, 0),
            dev: 0,
            ino: 0,
            mode: 0o100644,
            uid: 0,
            gid: 0,
            file_size: text.len() as u32,
            id: blob,
            flags: 0,
            flags_extended: 0,
            path: path.as_bytes().to_vec(),
        };
        index.add(&entry)?;
    }
    for path in deletes {
        index.remove_path(Path::new(path))?;
    }
    let tree = repo.find_tree(index.write_tree_to(repo)?)?;
    let sig = Signature::now("Operator", "operator@example.test")?;
    let parents: Vec<git2::Commit<'_>> = parent.map(|p| repo.find_commit(p)).transpose()?.into_iter().collect();
    let refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
    repo.commit(Some("refs/heads/main"), &sig, &sig, message, &tree, &refs)
}

/// A hand-pushed commit on `main` of raw tree entries: (path as bytes, content, mode), so a test
/// can push what no generator writes (a symbolic link, mode 0o120000; a path holding a newline).
pub fn raw_commit(path: &Path, entries: &[(&[u8], &[u8], u32)], message: &str) -> Result<Oid, git2::Error> {
    let repo = Repository::open_bare(path)?;
    let head = repo.refname_to_id("refs/heads/main")?;
    let mut index = git2::Index::new()?;
    index.read_tree(&repo.find_commit(head)?.tree()?)?;
    for (file, content, mode) in entries {
        let blob = repo.blob(content)?;
        index.add(&git2::IndexEntry {
            ctime: git2::IndexTime::new(0, 0),
            mtime: git2::IndexTime::new(0, 0),
            dev: 0,
            ino: 0,
            mode: *mode,
            uid: 0,
            gid: 0,
            file_size: content.len() as u32,
            id: blob,
            flags: 0,
            flags_extended: 0,
            path: file.to_vec(),
        })?;
    }
    let tree = repo.find_tree(index.write_tree_to(&repo)?)?;
    let sig = Signature::now("Intruder", "intruder@example.test")?;
    let parent = repo.find_commit(head)?;
    repo.commit(Some("refs/heads/main"), &sig, &sig, message, &tree, &[&parent])
}

/// The content of `path` at the head of `main`.
pub fn read(path: &Path, file: &str) -> Option<String> {
    let repo = Repository::open_bare(path).ok()?;
    let tree = repo.find_reference("refs/heads/main").ok()?.peel_to_tree().ok()?;
    let blob = tree
        .get_path(Path::new(file))
        .ok()?
        .to_object(&repo)
        .ok()?
        .into_blob()
        .ok()?;
    Some(String::from_utf8_lossy(blob.content()).into_owned())
}

/// The head commit of `main`.
pub fn head(path: &Path) -> Option<Oid> {
    Repository::open_bare(path).ok()?.refname_to_id("refs/heads/main").ok()
}

/// Number of commits on `main`.
pub fn commit_count(path: &Path) -> usize {
    let Ok(repo) = Repository::open_bare(path) else {
        return 0;
    };
    let Ok(mut walk) = repo.revwalk() else {
        return 0;
    };
    if walk.push_ref("refs/heads/main").is_err() {
        return 0;
    }
    walk.count()
}

/// Every file path on `main` under `dir`.
pub fn files_under(path: &Path, dir: &str) -> Vec<String> {
    let Ok(repo) = Repository::open_bare(path) else {
        return Vec::new();
    };
    let Ok(tree) = repo.find_reference("refs/heads/main").and_then(|r| r.peel_to_tree()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let _ = tree.walk(git2::TreeWalkMode::PreOrder, |parent, entry| {
        if entry.kind() == Some(git2::ObjectType::Blob) {
            let p = format!("{parent}{}", entry.name().unwrap_or_default());
            if p.starts_with(dir) {
                out.push(p);
            }
        }
        git2::TreeWalkResult::Ok
    });
    out
}

/// The message of the head commit of `main`.
pub fn head_message(path: &Path) -> String {
    let Ok(repo) = Repository::open_bare(path) else {
        return String::new();
    };
    let Ok(commit) = repo.find_reference("refs/heads/main").and_then(|r| r.peel_to_commit()) else {
        return String::new();
    };
    commit.message().unwrap_or_default().to_owned()
}

/// A bare repo at `<dir>/state.git` whose flipbit.yaml has LB hosts lb-a and lb-b with one pool each.
pub fn two_hosts(dir: &Path, pool_a: &str, pool_b: &str) -> PathBuf {
    let config = crate::cluster::flipbit_yaml(&[("lb-a", pool_a), ("lb-b", pool_b)]);
    create(&dir.join("state.git"), &BTreeMap::from([("flipbit.yaml", config)])).expect("creating the state repo")
}

/// The paths the head commit of `main` changed against its first parent.
pub fn head_changed(path: &Path) -> Vec<String> {
    let Ok(repo) = Repository::open_bare(path) else {
        return Vec::new();
    };
    let Ok(commit) = repo.find_reference("refs/heads/main").and_then(|r| r.peel_to_commit()) else {
        return Vec::new();
    };
    let (Ok(tree), Ok(parent)) = (commit.tree(), commit.parent(0).and_then(|p| p.tree())) else {
        return Vec::new();
    };
    let Ok(diff) = repo.diff_tree_to_tree(Some(&parent), Some(&tree), None) else {
        return Vec::new();
    };
    diff.deltas()
        .filter_map(|d| d.new_file().path().or_else(|| d.old_file().path()))
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}
