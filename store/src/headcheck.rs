//! The head a remote advertises for one branch, read the way `git ls-remote` reads it: connect,
//! take the list of refs the server sends first, disconnect. No objects are negotiated or sent,
//! so it costs one round trip (a local path: a few file reads) where a fetch costs two or more
//! plus packing. `flipbit-applier watch` checks it between its runs and fetches only when it
//! moved (docs/design.md §5.8).
//!
//! It needs no cache repo (a detached remote), so it can run while another process holds the
//! state dir's lock, and it never writes anything: what it returns is only a hint that a fetch
//! is due. What gets applied is always what a fetch brought and the run verified.

use git2::{Direction, Oid, Remote};

use crate::trust::{ServerCheck, ServerTrust};
use crate::{Credentials, StoreError};

/// Reads the advertised head of `branch` at `url`, checking the server and offering
/// credentials exactly as a fetch of the same store does.
#[derive(Debug, Clone)]
pub struct HeadCheck {
    url: String,
    branch: String,
    credentials: Credentials,
    trust: ServerTrust,
}

impl HeadCheck {
    /// A check of `branch` at `url`, with the process's installed server trust and the
    /// credentials from the environment (as [`crate::Store::open`] takes them).
    pub fn new(url: &str, branch: &str) -> Self {
        Self {
            url: url.to_owned(),
            branch: branch.to_owned(),
            credentials: Credentials::from_env(),
            trust: ServerTrust::installed(),
        }
    }

    /// The commit `refs/heads/<branch>` points at on the server, or `None` when the server has
    /// no such branch. Connect and read timeouts are libgit2's process-wide ones, which
    /// [`crate::Store::limit_fetches`] sets.
    pub fn head(&self) -> Result<Option<Oid>, StoreError> {
        let err = |error| StoreError::Fetch {
            url: self.url.clone(),
            branch: self.branch.clone(),
            error,
        };
        let mut remote = Remote::create_detached(self.url.as_str()).map_err(err)?;
        let check = ServerCheck::new(&self.trust, &self.url);
        let mut callbacks = self.credentials.callbacks();
        check.attach(&mut callbacks);
        let listed = remote
            .connect_auth(Direction::Fetch, Some(callbacks), None)
            .and_then(|connection| {
                let wanted = format!("refs/heads/{}", self.branch);
                let head = connection.list()?.iter().find(|h| h.name() == wanted).map(|h| h.oid());
                Ok(head)
            });
        match listed {
            Ok(head) => Ok(head),
            Err(e) => match check.refusal(&e) {
                Some(refusal) => Err(StoreError::Untrusted {
                    what: format!("checking the head of {} at {}", self.branch, self.url),
                    refusal: Box::new(refusal),
                }),
                None => Err(err(e)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Moves `main` of the bare `repo` to a new commit on top of its head.
    fn advance(repo: &git2::Repository, text: &str) -> Oid {
        let sig = git2::Signature::now("t", "t@localhost").expect("signature");
        let parent = repo
            .find_reference("refs/heads/main")
            .and_then(|r| r.peel_to_commit())
            .expect("head");
        let blob = repo.blob(text.as_bytes()).expect("blob");
        let mut builder = repo.treebuilder(None).expect("tree builder");
        builder.insert("flipbit.yaml", blob, 0o100644).expect("insert");
        let tree = repo.find_tree(builder.write().expect("tree")).expect("find tree");
        repo.commit(Some("refs/heads/main"), &sig, &sig, text, &tree, &[&parent])
            .expect("commit")
    }

    #[test]
    fn reads_the_advertised_head_and_follows_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bare = dir.path().join("state.git");
        let repo = crate::tests::remote(&bare);
        let url = bare.display().to_string();
        let check = HeadCheck::new(&url, "main");
        let first = repo.refname_to_id("refs/heads/main").expect("main");
        assert_eq!(check.head().expect("lists"), Some(first));
        let second = advance(&repo, "zone: example.org\n");
        assert_ne!(first, second);
        assert_eq!(check.head().expect("lists"), Some(second));
        assert_eq!(HeadCheck::new(&url, "review").head().expect("lists"), None);
    }

    #[test]
    fn a_missing_repo_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nowhere.git").display().to_string();
        let e = HeadCheck::new(&missing, "main").head().expect_err("no repo there");
        assert!(e.to_string().contains("nowhere.git"), "{e}");
    }
}
