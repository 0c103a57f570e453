//! A human at a terminal: a working clone of the state repo driven by the real `git` CLI, so the
//! tests use exactly the tools an operator would (`git revert`, `git merge`, `git push`).

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Human {
    pub dir: PathBuf,
    name: String,
    email: String,
}

impl Human {
    /// Clones `remote` into `dir` as `name <email>`.
    pub fn clone(remote: &Path, dir: &Path, name: &str, email: &str) -> Self {
        let out = Command::new("git")
            .args(["clone", "-q"])
            .arg(remote)
            .arg(dir)
            .output()
            .expect("git clone");
        assert!(
            out.status.success(),
            "git clone: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            dir: dir.to_path_buf(),
            name: name.to_owned(),
            email: email.to_owned(),
        }
    }

    /// Runs `git <args>` in the clone; panics with git's message when it fails.
    pub fn git(&self, args: &[&str]) -> String {
        let out = self.try_git(args);
        assert!(out.0, "git {}: {}", args.join(" "), out.1);
        out.1
    }

    /// Runs `git <args>`; (success, stdout + stderr).
    pub fn try_git(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.dir)
            .args(["-c", &format!("user.name={}", self.name)])
            .args(["-c", &format!("user.email={}", self.email)])
            .args(args)
            .env("GIT_EDITOR", "true")
            .output()
            .expect("git");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    pub fn pull(&self) {
        self.git(&["pull", "-q", "--ff-only"]);
    }

    pub fn write(&self, path: &str, text: &str) {
        let file = self.dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(file, text).expect("write");
    }

    pub fn read(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(path)).ok()
    }

    /// `git add -A && git commit -m message`; returns the new commit id.
    pub fn commit_all(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.git(&["rev-parse", "HEAD"]).trim().to_owned()
    }
}
