//! Why a Git server was refused, in one line that names the host and port, what it offered, and
//! what to do: add an unknown SSH host key with `ssh-keyscan` (after checking its fingerprint),
//! never a changed one blindly; give a private server's CA with `--git-ca-bundle`.

use std::fmt;
use std::path::PathBuf;

use flipbit_core::text::escaped;

use super::known_hosts::{self, Place, Verdict};
use super::x509::Leaf;
use super::{GLOBAL_KNOWN_HOSTS, ServerTrust, user_known_hosts};

/// How the known_hosts file is set.
const FLAG: &str = "--git-known-hosts / FLIPBIT_GIT_KNOWN_HOSTS";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The server's SSH host key is not known, changed, or revoked.
    HostKey {
        host: String,
        port: u16,
        key_type: String,
        fingerprint: String,
        verdict: Verdict,
        /// The file set with `--git-known-hosts`; `None`: the defaults were read.
        named_file: Option<PathBuf>,
    },
    /// libssh2 handed over no host key.
    NoHostKey { host: String, port: u16 },
    /// The known_hosts file set could not be read (or no longer parses).
    KnownHostsUnreadable { host: String, port: u16, error: String },
    /// OpenSSL refused the server's certificate.
    Certificate {
        host: String,
        port: u16,
        /// The server's certificate, when it could be read.
        leaf: Option<Leaf>,
        /// libgit2's message.
        reason: String,
        ca_bundle: Option<PathBuf>,
    },
}

impl Refusal {
    pub(super) fn host_key(host: &str, port: u16, blob: &[u8], verdict: Verdict, trust: &ServerTrust) -> Self {
        Refusal::HostKey {
            host: host.to_owned(),
            port,
            key_type: known_hosts::blob_type(blob).unwrap_or_else(|| "(unknown type)".into()),
            fingerprint: known_hosts::fingerprint(blob),
            verdict,
            named_file: trust.known_hosts.clone(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::HostKey {
                host,
                port,
                key_type,
                fingerprint,
                verdict,
                named_file,
            } => host_key(
                f,
                host,
                *port,
                &format!("{key_type} {fingerprint}"),
                verdict,
                named_file.as_ref(),
            ),
            Refusal::NoHostKey { host, port } => {
                write!(
                    f,
                    "host {} port {port} sent no SSH host key to check: refused",
                    escaped(host)
                )
            }
            Refusal::KnownHostsUnreadable { host, port, error } => write!(
                f,
                "cannot check the SSH host key of host {} port {port}: {error}",
                escaped(host)
            ),
            Refusal::Certificate {
                host,
                port,
                leaf,
                reason,
                ca_bundle,
            } => certificate(f, host, *port, leaf.as_ref(), reason, ca_bundle.as_ref()),
        }
    }
}

fn host_key(
    f: &mut fmt::Formatter<'_>,
    host: &str,
    port: u16,
    offered: &str,
    verdict: &Verdict,
    named_file: Option<&PathBuf>,
) -> fmt::Result {
    let host = escaped(host);
    let at = |p: &Place| format!("{} line {}", p.file.display(), p.line);
    match verdict {
        Verdict::Known => write!(f, "host {host} port {port}: the SSH host key {offered} is known"),
        Verdict::Revoked(place) => write!(
            f,
            "host {host} port {port} offered the SSH host key {offered}, which {} marks @revoked: refused",
            at(place)
        ),
        Verdict::Changed(known) => {
            let listed: Vec<String> = known
                .iter()
                .map(|p| format!("{} {} ({})", p.key_type, p.fingerprint, at(p)))
                .collect();
            write!(
                f,
                "the SSH host key of host {host} port {port} CHANGED: it offered {offered}, but the known hosts list {} for it; \
                 refused: someone may be intercepting the connection, or the server's key was replaced; confirm the new \
                 fingerprint with the Git server's admin before replacing the old line",
                listed.join(", ")
            )
        }
        Verdict::Unknown {
            other_types,
            authorities,
        } => {
            // Where to look and where to add: the file named, else the defaults.
            let user = user_known_hosts();
            let (files, append_to, or_else) = match (named_file, &user) {
                (Some(path), _) => (path.display().to_string(), path.display().to_string(), ""),
                (None, Some(home)) => (
                    format!("{} or {GLOBAL_KNOWN_HOSTS} (no {FLAG} is set)", home.display()),
                    home.display().to_string(),
                    " or give a file with ",
                ),
                (None, None) => (
                    format!("~/.ssh/known_hosts ($HOME is not set) or {GLOBAL_KNOWN_HOSTS} (no {FLAG} is set)"),
                    "FILE".into(),
                    " and give FILE with ",
                ),
            };
            write!(
                f,
                "host {host} port {port} offered the SSH host key {offered}, which is not in {files}"
            )?;
            if !other_types.is_empty() {
                let types: Vec<String> = other_types
                    .iter()
                    .map(|p| format!("{} ({})", p.key_type, at(p)))
                    .collect();
                write!(f, " (the host has only {} there)", types.join(", "))?;
            }
            if let Some(ca) = authorities.first() {
                write!(
                    f,
                    " ({} is a @cert-authority line for it: host certificates are not supported, list the server's own keys)",
                    at(ca)
                )?;
            }
            write!(
                f,
                ": if it is the Git server's key (check the fingerprint with its admin), add it with \
                 `ssh-keyscan -p {port} {host} >> {append_to}`"
            )?;
            if !or_else.is_empty() {
                write!(f, "{or_else}{FLAG}")?;
            }
            Ok(())
        }
    }
}

fn certificate(
    f: &mut fmt::Formatter<'_>,
    host: &str,
    port: u16,
    leaf: Option<&Leaf>,
    reason: &str,
    ca_bundle: Option<&PathBuf>,
) -> fmt::Result {
    write!(f, "refusing the TLS certificate of host {} port {port}", escaped(host))?;
    let Some(leaf) = leaf else {
        return write!(f, ": {reason}");
    };
    let (subject, issuer) = (escaped(&leaf.subject), escaped(&leaf.issuer));
    write!(f, " ({subject}, issued by {issuer}): ")?;
    let now = jiff::Timestamp::now();
    let trusted = match ca_bundle {
        Some(bundle) => format!("{} or the system's CAs", bundle.display()),
        None => "the system's CAs (no --git-ca-bundle / FLIPBIT_GIT_CA_BUNDLE is set)".into(),
    };
    if reason.contains("hostname") {
        let names = leaf.names.join(", ");
        write!(
            f,
            "it is not issued for {} (it names {})",
            escaped(host),
            escaped(&names)
        )
    } else if let Some(end) = leaf.not_after.filter(|end| *end < now) {
        write!(f, "it expired at {end}")
    } else if let Some(start) = leaf.not_before.filter(|start| *start > now) {
        write!(f, "it is not valid before {start}")
    } else if leaf.subject == leaf.issuer {
        write!(
            f,
            "it is self-signed and not in {trusted}; give it (PEM) with --git-ca-bundle / FLIPBIT_GIT_CA_BUNDLE if it is the Git server's"
        )
    } else {
        write!(f, "{issuer} is not a CA in {trusted}")?;
        match ca_bundle {
            Some(_) => write!(f, "; add the CA that signed the server's certificate to the bundle"),
            None => write!(
                f,
                "; for a private Git server, give its CA (PEM) with --git-ca-bundle / FLIPBIT_GIT_CA_BUNDLE"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf() -> Leaf {
        Leaf {
            subject: "CN=git.example.test".into(),
            issuer: "CN=Example CA".into(),
            not_before: Some("2020-01-01T00:00:00Z".parse().unwrap()),
            not_after: Some("2099-01-01T00:00:00Z".parse().unwrap()),
            names: vec!["DNS:git.example.test".into(), "IP:10.0.0.1".into()],
        }
    }

    fn certificate(leaf: Leaf, reason: &str, bundle: Option<&str>) -> String {
        Refusal::Certificate {
            host: "10.0.0.2".into(),
            port: 443,
            leaf: Some(leaf),
            reason: reason.into(),
            ca_bundle: bundle.map(PathBuf::from),
        }
        .to_string()
    }

    #[test]
    fn certificates_say_why() {
        let invalid = "the SSL certificate is invalid";
        let shown = certificate(leaf(), "hostname does not match certificate", None);
        assert!(
            shown.ends_with("(CN=git.example.test, issued by CN=Example CA): it is not issued for 10.0.0.2 (it names DNS:git.example.test, IP:10.0.0.1)"),
            "{shown}"
        );
        let expired = Leaf {
            not_after: Some("2021-01-01T00:00:00Z".parse().unwrap()),
            ..leaf()
        };
        assert!(certificate(expired, invalid, None).ends_with("it expired at 2021-01-01T00:00:00Z"));
        let self_signed = Leaf {
            issuer: "CN=git.example.test".into(),
            ..leaf()
        };
        let shown = certificate(self_signed, invalid, Some("/etc/flipbit/ca.pem"));
        assert!(
            shown.contains("it is self-signed and not in /etc/flipbit/ca.pem or the system's CAs"),
            "{shown}"
        );
        let shown = certificate(leaf(), invalid, Some("/etc/flipbit/ca.pem"));
        assert!(
            shown.contains("CN=Example CA is not a CA in /etc/flipbit/ca.pem or the system's CAs; add the CA"),
            "{shown}"
        );
        let forged = Leaf {
            subject: "CN=x\nerror: forged".into(),
            ..leaf()
        };
        assert!(
            !certificate(forged, invalid, None).contains('\n'),
            "one line, whatever the server says"
        );
    }

    fn host_key(verdict: Verdict, named: Option<&str>) -> String {
        Refusal::HostKey {
            host: "git.example.test".into(),
            port: 22,
            key_type: "ssh-ed25519".into(),
            fingerprint: "SHA256:new".into(),
            verdict,
            named_file: named.map(PathBuf::from),
        }
        .to_string()
    }

    fn place(line: usize, key_type: &str) -> Place {
        Place {
            file: "/etc/flipbit/known_hosts".into(),
            line,
            key_type: key_type.into(),
            fingerprint: "SHA256:old".into(),
        }
    }

    #[test]
    fn host_keys_say_what_to_do() {
        let unknown = Verdict::Unknown {
            other_types: vec![place(3, "ssh-rsa")],
            authorities: vec![place(4, "ssh-ed25519")],
        };
        let shown = host_key(unknown, Some("/etc/flipbit/known_hosts"));
        for part in [
            "host git.example.test port 22 offered the SSH host key ssh-ed25519 SHA256:new, which is not in /etc/flipbit/known_hosts",
            "(the host has only ssh-rsa (/etc/flipbit/known_hosts line 3) there)",
            "(/etc/flipbit/known_hosts line 4 is a @cert-authority line for it: host certificates are not supported",
            "`ssh-keyscan -p 22 git.example.test >> /etc/flipbit/known_hosts`",
        ] {
            assert!(shown.contains(part), "{part:?} missing from {shown}");
        }
        assert!(!shown.contains("--git-known-hosts"), "the file was named: {shown}");
        let changed = host_key(Verdict::Changed(vec![place(1, "ssh-ed25519")]), None);
        assert!(changed.contains("CHANGED: it offered ssh-ed25519 SHA256:new, but the known hosts list ssh-ed25519 SHA256:old (/etc/flipbit/known_hosts line 1)"), "{changed}");
        assert!(!changed.contains("ssh-keyscan"), "{changed}");
    }
}
