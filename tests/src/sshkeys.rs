//! Real `ssh-keygen` keys for tests of signed commits, git's allowed signers file, and the real
//! git's view of a signature (`git log --show-signature`), so the generator and the applier are
//! checked against what OpenSSH and git really write and accept.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cluster::text;
use crate::human::Human;

/// An ed25519 key pair made by `ssh-keygen -t ed25519 -N ''`.
pub struct SshKey {
    pub private: PathBuf,
    /// `ssh-ed25519 AAAA... comment`, as in the `.pub` file.
    pub public: String,
    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
}

impl SshKey {
    pub fn generate(dir: &Path, name: &str) -> Self {
        let private = dir.join(name);
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&private)
            .output()
            .unwrap_or_else(|e| panic!("running ssh-keygen (openssh-client): {e}"));
        assert!(out.status.success(), "ssh-keygen: {}", text(&out));
        let pub_file = private.with_extension("pub");
        let public = std::fs::read_to_string(&pub_file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", pub_file.display()))
            .trim()
            .to_owned();
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(&pub_file)
            .output()
            .unwrap_or_else(|e| panic!("running ssh-keygen -l: {e}"));
        let listing = String::from_utf8_lossy(&out.stdout).into_owned();
        let fingerprint = listing
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("ssh-keygen -l printed {listing:?}"))
            .to_owned();
        Self {
            private,
            public,
            fingerprint,
        }
    }

    /// `git commit -S` with this key (gpg.format=ssh) of everything in `human`'s clone; returns
    /// the new commit id.
    pub fn commit_all(&self, human: &Human, message: &str) -> String {
        let signing_key = format!("user.signingkey={}", self.private.display());
        human.git(&["add", "-A"]);
        human.git(&[
            "-c",
            "gpg.format=ssh",
            "-c",
            &signing_key,
            "commit",
            "-q",
            "-S",
            "-m",
            message,
        ]);
        human.git(&["rev-parse", "HEAD"]).trim().to_owned()
    }
}

/// Writes an allowed signers file: one `principal key` line per signer, under a comment.
pub fn write_allowed_signers(path: &Path, signers: &[(&str, &SshKey)]) {
    let mut text = String::from("# principals [options] keytype base64-key [comment]\n");
    for (principal, key) in signers {
        text.push_str(&format!("{principal} {}\n", key.public));
    }
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// What the real `git log --show-signature -1` says about the head of the bare `repo`, trusting
/// the keys in `allowed_signers`.
pub fn show_signature(repo: &Path, allowed_signers: &Path) -> String {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .arg("-c")
        .arg(format!("gpg.ssh.allowedSignersFile={}", allowed_signers.display()))
        .args(["log", "--show-signature", "-1"])
        .output()
        .unwrap_or_else(|e| panic!("running git log: {e}"));
    text(&out)
}
