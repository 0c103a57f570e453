//! How DNS updates are authenticated: a shared HMAC key (TSIG, RFC 8945: BIND, Knot, PowerDNS)
//! or a Kerberos login (GSS-TSIG, RFC 3645: Active Directory's "secure only" zones). Everything
//! above the signer (batching, ordering, ownership, failure rules) is the same for both.

use std::path::PathBuf;
use std::time::Duration;

use super::key::{self, KeyError, TsigKey};

/// What the command line says; [`AuthConfig::load`] reads the files it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthConfig {
    /// A BIND key file (`tsig-keygen`).
    Tsig(PathBuf),
    /// Kerberos, with the settings of `--dns-auth gss-tsig`.
    Gss(GssConfig),
}

/// The signer the client uses.
#[derive(Debug, Clone)]
pub enum Auth {
    Tsig(TsigKey),
    Gss(GssConfig),
}

impl From<TsigKey> for Auth {
    fn from(key: TsigKey) -> Self {
        Auth::Tsig(key)
    }
}

impl Auth {
    /// What errors name as the one signing: the key's name, or the Kerberos principal.
    pub fn identity(&self) -> &str {
        match self {
            Auth::Tsig(key) => &key.name,
            Auth::Gss(gss) => &gss.principal,
        }
    }
}

impl AuthConfig {
    /// Reads the key file (TSIG). For GSS-TSIG nothing is read here: the keytab is read when a
    /// context is negotiated, so a keytab rotated on disk is picked up without a restart.
    pub fn load(&self) -> Result<Auth, KeyError> {
        match self {
            AuthConfig::Tsig(path) => key::load(path).map(Auth::Tsig),
            AuthConfig::Gss(gss) => Ok(Auth::Gss(gss.clone())),
        }
    }
}

/// A Kerberos login for GSS-TSIG.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GssConfig {
    /// The account's principal, e.g. `flipbit-dns@EXAMPLE.TEST`.
    pub principal: String,
    /// Where the principal's keys come from.
    pub secret: GssSecret,
    /// The DNS server's host name as the KDC knows it: the service is `DNS/<dc_host>`.
    pub dc_host: String,
    /// How the server's reply MACs are laid out (see [`ReplyMac`]).
    pub reply_mac: ReplyMac,
    /// Renegotiate a context older than this even if Kerberos would still accept it (None: use
    /// it until its ticket expires). For tests and figures.
    pub max_context_age: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GssSecret {
    /// A keytab (`ktpass`, `samba-tool domain exportkeytab`): tickets are fetched from it again
    /// whenever they expire, so a long-running applier never needs a `kinit`.
    /// (A password login is not offered: MIT krb5's `gss_acquire_cred_with_password` credentials
    /// are refused by its SPNEGO, and a keytab is what a service should use anyway.)
    Keytab(PathBuf),
}

/// The layout of the data a server's reply MAC covers. RFC 8945 §4.3.3 (and RFC 3645) prefix the
/// request MAC with its 2-byte length; Samba's DNS server leaves the length out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReplyMac {
    /// The first reply of each context that verifies decides: the RFC layout, or Samba's when
    /// only that verifies. From then on only that layout is accepted on the context.
    #[default]
    Detect,
    /// Only the RFC layout (Windows Server, BIND).
    Rfc,
    /// Only Samba's layout.
    Samba,
}
