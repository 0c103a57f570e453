//! Credentials for remote state repos: an SSH key file (or the SSH agent) for `ssh://` URLs, a
//! user name and token for `https://` URLs. Read from the environment by the binaries, so a
//! Kubernetes Secret mount or a systemd credential file both work.

use std::path::PathBuf;

use git2::{Cred, CredentialType, RemoteCallbacks};

#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// Private key for SSH remotes; without it the SSH agent is asked.
    pub ssh_key: Option<PathBuf>,
    /// User name and password or token for HTTPS remotes.
    pub username: Option<String>,
    pub password: Option<String>,
}

impl Credentials {
    /// `FLIPBIT_GIT_SSH_KEY`, `FLIPBIT_GIT_USERNAME`, `FLIPBIT_GIT_PASSWORD`.
    pub fn from_env() -> Self {
        Self {
            ssh_key: std::env::var_os("FLIPBIT_GIT_SSH_KEY").map(PathBuf::from),
            username: std::env::var("FLIPBIT_GIT_USERNAME").ok(),
            password: std::env::var("FLIPBIT_GIT_PASSWORD").ok(),
        }
    }

    /// Callbacks that answer libgit2's credential requests; each kind is offered once, so a
    /// rejected credential fails instead of looping.
    pub fn callbacks(&self) -> RemoteCallbacks<'_> {
        let mut callbacks = RemoteCallbacks::new();
        let mut tried = CredentialType::empty();
        callbacks.credentials(move |_url, username_from_url, allowed| {
            let user = username_from_url.or(self.username.as_deref()).unwrap_or("git");
            if allowed.contains(CredentialType::SSH_KEY) && !tried.contains(CredentialType::SSH_KEY) {
                tried |= CredentialType::SSH_KEY;
                return match &self.ssh_key {
                    Some(key) => Cred::ssh_key(user, None, key, None),
                    None => Cred::ssh_key_from_agent(user),
                };
            }
            if allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
                && !tried.contains(CredentialType::USER_PASS_PLAINTEXT)
                && let (Some(name), Some(password)) = (&self.username, &self.password)
            {
                tried |= CredentialType::USER_PASS_PLAINTEXT;
                return Cred::userpass_plaintext(name, password);
            }
            if allowed.contains(CredentialType::USERNAME) && !tried.contains(CredentialType::USERNAME) {
                tried |= CredentialType::USERNAME;
                return Cred::username(user);
            }
            Err(git2::Error::from_str("no (more) credentials for this remote; set FLIPBIT_GIT_SSH_KEY or FLIPBIT_GIT_USERNAME/FLIPBIT_GIT_PASSWORD"))
        });
        callbacks
    }
}
