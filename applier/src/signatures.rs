//! Signed commits on the LB host (docs/design.md §3: appliers may accept only commits signed by the
//! generator's key). Before anything is staged, every commit the fetched head brings in since the
//! last applied one must carry a good SSH signature by a key in the operator's allowed signers
//! file, git's own format, so `git log --show-signature` and the applier agree. Checking the whole
//! range, not only the head, keeps an unsigned commit from riding in under a signed one. Such a
//! commit blocks the host until it leaves the branch (reset and force push: it was never applied,
//! so no --allow-rewind is needed) or an operator vouches for it with `--signed-since <it>`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Result, anyhow};

use flipbit_store::signing::AllowedSigners;
use flipbit_store::{CommitId, Store};

/// `--allowed-signers` and `--signed-since`.
#[derive(Debug, Clone)]
pub struct SignaturePolicy {
    pub allowed_signers: PathBuf,
    /// A trust anchor: this commit and everything reachable from it are not checked, for a repo
    /// whose history from before signing was turned on is unsigned.
    pub signed_since: Option<String>,
}

/// The policy with its file read for this apply.
pub struct Verifier<'a> {
    policy: &'a SignaturePolicy,
    signers: AllowedSigners,
}

impl SignaturePolicy {
    /// Reads the allowed signers file. Done on every apply, also when up to date, so a rotated key
    /// counts from the next run and a missing or broken file fails loudly instead of accepting all.
    pub fn load(&self) -> Result<Verifier<'_>> {
        let signers = AllowedSigners::load(&self.allowed_signers).map_err(|e| anyhow!("{e}"))?;
        Ok(Verifier { policy: self, signers })
    }
}

impl Verifier<'_> {
    /// Refuses `head` unless every commit reachable from it, and from neither `applied` nor the
    /// trust anchor, is signed by an allowed key. On a host with nothing applied yet that is the
    /// whole history up to the anchor.
    pub fn check(&self, store: &Store, applied: Option<CommitId>, head: CommitId) -> Result<()> {
        let mut trusted: Vec<CommitId> = applied.into_iter().collect();
        if let Some(spec) = &self.policy.signed_since {
            trusted.push(store.find_commit_id(spec).map_err(|e| anyhow!("--signed-since: {e}"))?);
        }
        let file = self.signers.path().display();
        let refuse = |e: flipbit_store::signing::VerifyError| {
            if e.is_refusal() {
                crate::outcome::refused(format!(
                    "refusing commit {head}: {e} (every commit must be signed by a key in {file})"
                ))
            } else {
                crate::outcome::refused(format!("refusing commit {head}: {e}"))
            }
        };
        let commits = store.commits_to_verify(head, &trusted).map_err(refuse)?;
        let mut signers = BTreeSet::new();
        for id in &commits {
            let good = store.verify_commit(*id, &self.signers).map_err(refuse)?;
            tracing::debug!(commit = %good.commit, principal = %good.principals, key = %good.fingerprint, "good signature");
            signers.insert(format!("{} ({})", good.principals, good.fingerprint));
        }
        if !commits.is_empty() {
            let signers: Vec<String> = signers.into_iter().collect();
            tracing::info!(commit = %head, commits = commits.len(), signers = %signers.join(", "), "signatures verified");
        }
        Ok(())
    }
}
