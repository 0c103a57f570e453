//! SSH signatures on commits, in the format git itself writes and checks (`gpg.format=ssh`): an
//! `SSHSIG` over the commit object without its `gpgsig` header, namespace `git`, SHA-512, armored
//! as `-----BEGIN SSH SIGNATURE-----`. So `git log --show-signature` with an allowed signers file
//! verifies the generator's commits, and appliers can verify human commits signed by `git commit -S`.
//! Appliers check against git's allowed signers file (`allowed`, `options`) commit by commit
//! (`verify`).

mod allowed;
mod options;
#[cfg(test)]
mod tests;
mod verify;

pub use allowed::{AllowedSigner, AllowedSigners, AllowedSignersError};
pub use options::Options as SignerOptions;
pub use verify::{CommitLabel, GoodSignature, VerifyError};

use std::path::{Path, PathBuf};

use ssh_key::{HashAlg, LineEnding, PrivateKey};

/// The namespace git signs commits in (`ssh-keygen -Y sign -n git`).
pub const GIT_NAMESPACE: &str = "git";

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("signing key {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("signing a commit with {path}: {message}")]
    Sign { path: PathBuf, message: String },
}

/// An OpenSSH private key that signs commits.
pub struct SshSigner {
    key: PrivateKey,
    path: PathBuf,
}

impl std::fmt::Debug for SshSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshSigner")
            .field("path", &self.path)
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

impl SshSigner {
    /// Reads an unencrypted OpenSSH private key (`ssh-keygen -t ed25519 -N ''`).
    pub fn load(path: &Path) -> Result<Self, SigningError> {
        let key_err = |message: String| SigningError::Key {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| key_err(e.to_string()))?;
        let key = PrivateKey::from_openssh(&text).map_err(|e| key_err(format!("not an OpenSSH private key: {e}")))?;
        if key.is_encrypted() {
            return Err(key_err(
                "the key is passphrase-protected; the generator needs an unencrypted key (mount it as a Secret)".into(),
            ));
        }
        Ok(Self {
            key,
            path: path.to_owned(),
        })
    }

    /// `SHA256:...`, as `ssh-keygen -l` and `git log --show-signature` print it.
    pub fn fingerprint(&self) -> String {
        self.key.public_key().fingerprint(HashAlg::Sha256).to_string()
    }

    /// The armored signature of `commit_object` (the commit as `git cat-file commit` prints it,
    /// without a `gpgsig` header).
    pub fn sign(&self, commit_object: &[u8]) -> Result<String, SigningError> {
        let err = |message: String| SigningError::Sign {
            path: self.path.clone(),
            message,
        };
        let sig = self
            .key
            .sign(GIT_NAMESPACE, HashAlg::Sha512, commit_object)
            .map_err(|e| err(e.to_string()))?;
        sig.to_pem(LineEnding::LF).map_err(|e| err(e.to_string()))
    }
}
