//! How the store checks the Git server it talks to (the other direction from [`Credentials`]):
//! an `ssh://` server's host key against OpenSSH known_hosts files, an `https://` server's
//! certificate against the system's CAs plus an optional CA bundle. A server that cannot be
//! checked is refused, with one line that says which host offered what and how to fix it.
//!
//! Known hosts are read here ([`known_hosts`]), in libgit2's certificate callback, because
//! libgit2 1.9 only ever reads `~/.ssh/known_hosts` and turns any refusal into "invalid or
//! unknown remote ssh hostkey". The file is re-read at every connection, so an updated ConfigMap
//! or a line added with `ssh-keyscan` counts from the next fetch. Certificates are verified by
//! OpenSSL inside libgit2 (the chain, the dates, the name): the callback only sees the server's
//! own certificate, without the intermediates a chain check needs, so it records it to explain a
//! refusal ([`x509`]). The CA bundle joins libgit2's trust store, which is process-wide.
//!
//! [`Credentials`]: crate::Credentials

mod known_hosts;
mod refusal;
mod x509;

pub use refusal::Refusal;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use git2::cert::Cert;
use git2::{CertificateCheckStatus, ErrorClass, RemoteCallbacks};

use known_hosts::KnownHosts;

/// The system-wide known_hosts file OpenSSH reads after the user's.
pub const GLOBAL_KNOWN_HOSTS: &str = "/etc/ssh/ssh_known_hosts";

/// How this process trusts Git servers. The binaries install it once from
/// `--git-known-hosts`/`FLIPBIT_GIT_KNOWN_HOSTS` and `--git-ca-bundle`/`FLIPBIT_GIT_CA_BUNDLE`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerTrust {
    /// The known_hosts file for `ssh://` remotes, and the only one read. `None`: the user's
    /// `$HOME/.ssh/known_hosts` and the system's [`GLOBAL_KNOWN_HOSTS`], those that exist.
    pub known_hosts: Option<PathBuf>,
    /// PEM certificates of CAs trusted for `https://` remotes, besides the system's.
    pub ca_bundle: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("known_hosts file {} (--git-known-hosts, FLIPBIT_GIT_KNOWN_HOSTS): {message}", path.display())]
    KnownHosts { path: PathBuf, message: String },
    #[error("CA bundle {} (--git-ca-bundle, FLIPBIT_GIT_CA_BUNDLE): {message}", path.display())]
    CaBundle { path: PathBuf, message: String },
    #[error("this process already trusts Git servers as {was:?}")]
    Installed { was: ServerTrust },
}

static INSTALLED: OnceLock<ServerTrust> = OnceLock::new();

impl ServerTrust {
    /// Checks the files (so a wrong path fails at start, not at the first fetch), adds the CA
    /// bundle to libgit2's trust store, and makes this the trust of every store opened from now
    /// on. Once per process; installing the same again is harmless.
    pub fn install(self) -> Result<(), TrustError> {
        self.prepare()?;
        let installed = INSTALLED.get_or_init(|| self.clone());
        if *installed != self {
            return Err(TrustError::Installed { was: installed.clone() });
        }
        Ok(())
    }

    /// The installed trust, or the defaults.
    pub(crate) fn installed() -> Self {
        INSTALLED.get().cloned().unwrap_or_default()
    }

    /// Reads the known_hosts file and loads the CA bundle, as [`Self::install`] does.
    pub(crate) fn prepare(&self) -> Result<(), TrustError> {
        if let Some(path) = &self.known_hosts {
            KnownHosts::default()
                .read(path, true)
                .map_err(|message| TrustError::KnownHosts {
                    path: path.clone(),
                    message,
                })?;
        }
        if let Some(path) = &self.ca_bundle {
            load_ca_bundle(path)?;
        }
        Ok(())
    }

    /// The known_hosts files to read: the one set, or the defaults that exist.
    fn known_hosts_files(&self) -> Vec<PathBuf> {
        match &self.known_hosts {
            Some(path) => vec![path.clone()],
            None => [user_known_hosts(), Some(PathBuf::from(GLOBAL_KNOWN_HOSTS))]
                .into_iter()
                .flatten()
                .filter(|p| p.exists())
                .collect(),
        }
    }

    fn read_known_hosts(&self) -> Result<KnownHosts, TrustError> {
        let mut hosts = KnownHosts::default();
        for path in self.known_hosts_files() {
            let strict = self.known_hosts.is_some();
            hosts.read(&path, strict).map_err(|message| TrustError::KnownHosts {
                path: path.clone(),
                message,
            })?;
        }
        Ok(hosts)
    }
}

/// `$HOME/.ssh/known_hosts`, as OpenSSH's `~/.ssh/known_hosts`.
pub(crate) fn user_known_hosts() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(Path::new(&home).join(".ssh/known_hosts"))
}

/// Adds the certificates of `path` to libgit2's (OpenSSL's) trust store, once per path: the
/// store is process-wide and only grows.
fn load_ca_bundle(path: &Path) -> Result<(), TrustError> {
    static LOADED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let err = |message: String| TrustError::CaBundle {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    if !text.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(err("no PEM certificate in it (-----BEGIN CERTIFICATE-----)".into()));
    }
    let mut loaded = LOADED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if loaded.iter().any(|p| p == path) {
        return Ok(());
    }
    // SAFETY: libgit2's SSL context is shared by the process; this adds to it under the lock
    // above, before the stores that rely on it connect (the binaries install their trust first).
    unsafe { git2::opts::set_ssl_cert_file(path) }.map_err(|e| err(e.message().to_owned()))?;
    loaded.push(path.to_owned());
    Ok(())
}

/// What one fetch or push learned about the server's identity, to explain a refusal afterwards:
/// libgit2 replaces the message of a refused host key with its own, and gives no reason for a
/// refused certificate.
#[derive(Default)]
struct Seen {
    refusal: Option<Refusal>,
    /// The host and DER certificate an `https://` server presented.
    certificate: Option<(String, Vec<u8>)>,
}

/// Checks the server of one fetch or push of `url` as `trust` says.
pub(crate) struct ServerCheck<'a> {
    trust: &'a ServerTrust,
    url: &'a str,
    seen: RefCell<Seen>,
}

impl<'a> ServerCheck<'a> {
    pub(crate) fn new(trust: &'a ServerTrust, url: &'a str) -> Self {
        Self {
            trust,
            url,
            seen: RefCell::default(),
        }
    }

    /// Makes `callbacks` check the server through this.
    pub(crate) fn attach<'b>(&'b self, callbacks: &mut RemoteCallbacks<'b>) {
        callbacks.certificate_check(move |cert, host| self.check(cert, host));
    }

    fn check(&self, cert: &Cert<'_>, host: &str) -> Result<CertificateCheckStatus, git2::Error> {
        if let Some(x509) = cert.as_x509() {
            self.seen.borrow_mut().certificate = Some((host.to_owned(), x509.data().to_vec()));
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        }
        let Some(hostkey) = cert.as_hostkey() else {
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let port = port_of(self.url, host).unwrap_or(22);
        let refusal = match (hostkey.hostkey(), self.trust.read_known_hosts()) {
            (None, _) => Refusal::NoHostKey {
                host: host.to_owned(),
                port,
            },
            (Some(_), Err(e)) => Refusal::KnownHostsUnreadable {
                host: host.to_owned(),
                port,
                error: e.to_string(),
            },
            (Some(blob), Ok(files)) => match files.check(host, port, blob) {
                known_hosts::Verdict::Known => return Ok(CertificateCheckStatus::CertificateOk),
                verdict => Refusal::host_key(host, port, blob, verdict, self.trust),
            },
        };
        let message = refusal.to_string();
        self.seen.borrow_mut().refusal = Some(refusal);
        Err(git2::Error::from_str(&message))
    }

    /// The refusal that made `error` happen, when the server's identity did.
    pub(crate) fn refusal(&self, error: &git2::Error) -> Option<Refusal> {
        let seen = self.seen.take();
        if let Some(refusal) = seen.refusal {
            return Some(refusal);
        }
        let (host, der) = seen.certificate?;
        if error.class() != ErrorClass::Ssl || !error.message().contains("certificate") {
            return None;
        }
        Some(Refusal::Certificate {
            port: port_of(self.url, &host).unwrap_or(443),
            host,
            leaf: x509::parse(&der),
            reason: error.message().to_owned(),
            ca_bundle: self.trust.ca_bundle.clone(),
        })
    }
}

/// The port in `url` (`scheme://[user@]host[:port]/...`) when its host is `host`; `None` for
/// no port or for scp-like `user@host:path`.
fn port_of(url: &str, host: &str) -> Option<u16> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (named, port) = match hostport.strip_prefix('[') {
        Some(v6) => {
            let (named, after) = v6.split_once(']')?;
            (named, after.strip_prefix(':'))
        }
        None => match hostport.rsplit_once(':') {
            Some((named, port)) => (named, Some(port)),
            None => (hostport, None),
        },
    };
    if !named.eq_ignore_ascii_case(host) {
        return None;
    }
    port?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_from_urls() {
        assert_eq!(
            port_of("ssh://git@127.0.0.1:22001/srv/state.git", "127.0.0.1"),
            Some(22001)
        );
        assert_eq!(port_of("ssh://127.0.0.1/srv/state.git", "127.0.0.1"), None);
        assert_eq!(port_of("ssh://git@[::1]:2222/state.git", "::1"), Some(2222));
        assert_eq!(port_of("ssh://[::1]/state.git", "::1"), None);
        assert_eq!(
            port_of("https://u:p@git.example.test:8443/state.git", "git.example.test"),
            Some(8443)
        );
        assert_eq!(
            port_of("git@git.example.test:state.git", "git.example.test"),
            None,
            "scp-like"
        );
        assert_eq!(port_of("ssh://git@a.test:22001/x", "b.test"), None, "another host");
    }

    #[test]
    fn a_named_known_hosts_file_is_checked_at_install() {
        let dir = tempfile::tempdir().unwrap();
        let missing = ServerTrust {
            known_hosts: Some(dir.path().join("nope")),
            ca_bundle: None,
        };
        let err = missing.prepare().unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains("FLIPBIT_GIT_KNOWN_HOSTS"), "{err}");
        let broken = dir.path().join("known_hosts");
        std::fs::write(&broken, "host ssh-ed25519 AAAA!\n").unwrap();
        let err = ServerTrust {
            known_hosts: Some(broken),
            ca_bundle: None,
        }
        .prepare()
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 1: ") && err.contains("base64"), "{err}");
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "hello\n").unwrap();
        let err = ServerTrust {
            known_hosts: None,
            ca_bundle: Some(not_pem),
        }
        .prepare()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("no PEM certificate") && err.contains("FLIPBIT_GIT_CA_BUNDLE"),
            "{err}"
        );
    }
}
