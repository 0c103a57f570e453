//! Checking the state repo's history against an allowed signers file, for appliers that accept
//! only signed commits. Everything a new head brings in is checked, not only the head: otherwise
//! an unsigned commit could slip through under a signed one, and a signed revert could not be
//! told from a signed commit on top of a forged one.

use git2::{ErrorCode, Oid, Sort};
use ssh_key::{HashAlg, PublicKey, SshSig};

use super::GIT_NAMESPACE;
use super::allowed::AllowedSigners;
use crate::Store;

/// A commit as people recognise it in a message: short id and subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitLabel {
    pub id: Oid,
    pub subject: String,
}

impl std::fmt::Display for CommitLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = self.id.to_string();
        write!(f, "{} \"{}\"", id.get(..7).unwrap_or(&id), self.subject)
    }
}

/// A commit whose signature checked out, and who made it.
#[derive(Debug, Clone)]
pub struct GoodSignature {
    pub commit: CommitLabel,
    /// The principals field of the allowed signers line that accepted the key.
    pub principals: String,
    pub fingerprint: String,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("commit {commit} is not signed")]
    Unsigned { commit: CommitLabel },
    #[error("commit {commit} has an {kind} signature, and only SSH signatures (git's gpg.format=ssh) are accepted")]
    NotSsh { commit: CommitLabel, kind: &'static str },
    #[error("commit {commit} has an unreadable SSH signature ({message})")]
    Malformed { commit: CommitLabel, message: String },
    #[error("commit {commit} is signed by {fingerprint} in namespace \"{namespace}\", not \"git\"")]
    WrongNamespace {
        commit: CommitLabel,
        fingerprint: String,
        namespace: String,
    },
    #[error("commit {commit} is signed by an unknown key {fingerprint}")]
    UnknownKey { commit: CommitLabel, fingerprint: String },
    /// `signer` is the key's fingerprint and its principals.
    #[error("commit {commit} has a bad signature by {signer}: {reason}")]
    BadSignature {
        commit: CommitLabel,
        signer: String,
        reason: String,
    },
    /// `reason` names the line of the allowed signers file and what it restricts.
    #[error("commit {commit} is signed by {signer}, but {reason}")]
    NotAllowed {
        commit: CommitLabel,
        signer: String,
        reason: String,
    },
    #[error("no commit {spec} in the state repo ({source})")]
    UnknownCommit { spec: String, source: git2::Error },
    #[error("reading the history of commit {commit}: {source}")]
    Git { commit: Oid, source: git2::Error },
}

impl VerifyError {
    /// True when the commit itself is refused (as opposed to the repo being unreadable).
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Self::UnknownCommit { .. } | Self::Git { .. })
    }
}

impl Store {
    /// Commits reachable from `head` but from none of `trusted` (the last applied commit, a trust
    /// anchor), oldest first: what must be checked before `head` is applied. Merges and both sides
    /// of a merge are included. A trusted commit missing from the cache is skipped, which only
    /// widens the check.
    pub fn commits_to_verify(&self, head: Oid, trusted: &[Oid]) -> Result<Vec<Oid>, VerifyError> {
        let err = |source| VerifyError::Git { commit: head, source };
        let mut walk = self.repo.revwalk().map_err(err)?;
        walk.set_sorting(Sort::TOPOLOGICAL | Sort::REVERSE).map_err(err)?;
        walk.push(head).map_err(err)?;
        for id in trusted {
            match self.repo.find_commit(*id) {
                Ok(_) => walk.hide(*id).map_err(err)?,
                Err(e) if e.code() == ErrorCode::NotFound => {
                    tracing::warn!(commit = %id, "trusted commit not in the cache repo; checking past it")
                }
                Err(e) => return Err(err(e)),
            }
        }
        walk.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    /// A full or abbreviated commit id. Not a ref name: a trust anchor must not move.
    pub fn find_commit_id(&self, spec: &str) -> Result<Oid, VerifyError> {
        let err = |source| VerifyError::UnknownCommit {
            spec: spec.to_owned(),
            source,
        };
        if spec.len() < 4 || !spec.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err(git2::Error::from_str("expected a commit id (4 to 40 hex digits)")));
        }
        self.repo.find_commit_by_prefix(spec).map(|c| c.id()).map_err(err)
    }

    /// Checks that `id` carries a good SSH signature, in namespace `git`, by a key that `signers`
    /// allows at the commit's committer date.
    pub fn verify_commit(&self, id: Oid, signers: &AllowedSigners) -> Result<GoodSignature, VerifyError> {
        let git_err = |source| VerifyError::Git { commit: id, source };
        let found = self.repo.find_commit(id).map_err(git_err)?;
        let commit = CommitLabel {
            id,
            subject: String::from_utf8_lossy(found.summary_bytes().unwrap_or_default()).into_owned(),
        };
        let time = found.committer().when().seconds();
        let (armored, signed) = match self.repo.extract_signature(&id, Some("gpgsig")) {
            Ok(pair) => pair,
            Err(e) if e.code() == ErrorCode::NotFound => return Err(VerifyError::Unsigned { commit }),
            Err(e) => return Err(git_err(e)),
        };
        if armored.starts_with(b"-----BEGIN PGP SIGNATURE-----") {
            return Err(VerifyError::NotSsh {
                commit,
                kind: "OpenPGP",
            });
        }
        if armored.starts_with(b"-----BEGIN SIGNED MESSAGE-----") {
            return Err(VerifyError::NotSsh { commit, kind: "X.509" });
        }
        let sig = SshSig::from_pem(&*armored).map_err(|e| VerifyError::Malformed {
            commit: commit.clone(),
            message: e.to_string(),
        })?;
        let fingerprint = sig.public_key().fingerprint(HashAlg::Sha256).to_string();
        if sig.namespace() != GIT_NAMESPACE {
            return Err(VerifyError::WrongNamespace {
                commit,
                fingerprint,
                namespace: sig.namespace().to_owned(),
            });
        }
        let lines: Vec<_> = signers.for_key(sig.public_key()).collect();
        let Some(first) = lines.first() else {
            return Err(VerifyError::UnknownKey { commit, fingerprint });
        };
        // The cryptography first: a forged signature is reported as such, whatever the options say.
        let key = PublicKey::new(sig.public_key().clone(), "");
        if let Err(e) = key.verify(GIT_NAMESPACE, &signed, &sig) {
            let reason = match e {
                ssh_key::Error::Crypto => "it does not match the commit's content (changed after signing?)".into(),
                other => other.to_string(),
            };
            return Err(VerifyError::BadSignature {
                commit,
                signer: format!("{fingerprint} ({})", first.principals),
                reason,
            });
        }
        // Any line for this key that allows the signature is enough, as with ssh-keygen.
        match lines.iter().find(|s| s.refusal(GIT_NAMESPACE, time).is_none()) {
            Some(line) => Ok(GoodSignature {
                commit,
                principals: line.principals.clone(),
                fingerprint,
            }),
            None => Err(VerifyError::NotAllowed {
                commit,
                signer: format!("{fingerprint} ({})", first.principals),
                reason: format!(
                    "line {} of the allowed signers file does not allow it: {}",
                    first.line,
                    first.refusal(GIT_NAMESPACE, time).unwrap_or_default()
                ),
            }),
        }
    }
}
