//! The UPDATE client's errors: one line each that says which server, which zone and what to
//! check, built from the update in flight ([`Ctx`]) and the server's answer.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::tsig::TsigError;

use super::message::FUDGE_SECONDS;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("zone name \"{zone}\" is not a valid DNS name")]
    BadZone { zone: String },
    #[error("record name \"{name}\" is not a valid DNS name (zone {zone})")]
    BadName { name: String, zone: String },
    #[error("record {name} is outside zone {zone}")]
    OutsideZone { name: String, zone: String },
    #[error("TSIG key \"{key}\" cannot sign: {detail}")]
    Signer { key: String, detail: String },
    #[error("cannot encode the update of zone {zone}: {detail}")]
    Encode { zone: String, detail: String },
    #[error("DNS server {server} did not answer the update of zone {zone} (timed out after {})", Human(*after))]
    TimedOut {
        server: SocketAddr,
        zone: String,
        after: Duration,
    },
    #[error("DNS server {server} refused the connection for the update of zone {zone} (is it listening there?)")]
    ConnectionRefused { server: SocketAddr, zone: String },
    #[error("DNS exchange with {server} for the update of zone {zone} failed: {source}")]
    Io {
        server: SocketAddr,
        zone: String,
        source: io::Error,
    },
    #[error("DNS server {server} refused the update of zone {zone} (check its update-policy)")]
    Refused { server: SocketAddr, zone: String },
    #[error(
        "DNS server {server} refused the update of zone {zone}: account {account} lacks the right to change records there (grant it Create all child objects and Write on the zone, or on the records it owns)"
    )]
    RefusedAccount {
        server: SocketAddr,
        zone: String,
        account: String,
    },
    #[error("GSS-TSIG login to DNS server {server} for zone {zone}: {detail}")]
    Kerberos {
        server: SocketAddr,
        zone: String,
        detail: String,
    },
    #[error(
        "GSS-TSIG login to DNS server {server}: the KDC knows no service DNS/{dc_host}; --dns-dc-host must be the DC's own host name as Kerberos knows it{}",
        try_hosts_hint(try_hosts)
    )]
    UnknownService {
        server: SocketAddr,
        dc_host: String,
        try_hosts: Vec<String>,
    },
    #[error(
        "DNS server {server} does not do GSS-TSIG ({detail}): point --dns-server at an Active Directory DNS server, or use --dns-auth tsig"
    )]
    NotGssTsig { server: SocketAddr, detail: String },
    #[error("TSIG key \"{key}\" rejected by {server} for the update of zone {zone} ({reason})")]
    KeyRejected {
        key: String,
        server: SocketAddr,
        zone: String,
        reason: String,
    },
    #[error("zone {zone} is not served by {server} (it answered {rcode})")]
    NotServed {
        server: SocketAddr,
        zone: String,
        rcode: Rcode,
    },
    #[error("DNS server {server} answered {rcode} to the update of zone {zone}")]
    Rcode {
        server: SocketAddr,
        zone: String,
        rcode: Rcode,
    },
    #[error(
        "a prerequisite of the update of zone {zone} on {server} does not hold ({rcode}): the records changed meanwhile"
    )]
    PrerequisiteFailed {
        server: SocketAddr,
        zone: String,
        rcode: Rcode,
    },
    #[error("reply from {server} failed TSIG verification (update of zone {zone}): {detail}")]
    BadReplySignature {
        server: SocketAddr,
        zone: String,
        detail: String,
    },
    #[error("reply from {server} to the update of zone {zone} is malformed: {detail}")]
    Malformed {
        server: SocketAddr,
        zone: String,
        detail: String,
    },
}

fn try_hosts_hint(hosts: &[String]) -> String {
    if hosts.is_empty() {
        " (`samba-tool spn list DC$` or `setspn -L DC` lists them)".to_string()
    } else {
        format!(" (try {}: the zone's name servers)", hosts.join(" or "))
    }
}

/// A response code shown by its RFC mnemonic (`NOTAUTH`), as `dig` and BIND's logs show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rcode(pub ResponseCode);

impl fmt::Display for Rcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            ResponseCode::NoError => "NOERROR",
            ResponseCode::FormErr => "FORMERR",
            ResponseCode::ServFail => "SERVFAIL",
            ResponseCode::NXDomain => "NXDOMAIN",
            ResponseCode::NotImp => "NOTIMP",
            ResponseCode::Refused => "REFUSED",
            ResponseCode::YXDomain => "YXDOMAIN",
            ResponseCode::YXRRSet => "YXRRSET",
            ResponseCode::NXRRSet => "NXRRSET",
            ResponseCode::NotAuth => "NOTAUTH",
            ResponseCode::NotZone => "NOTZONE",
            other => return write!(f, "RCODE {}", u16::from(other)),
        };
        f.write_str(name)
    }
}

/// Durations as a person writes them: `3s`, `500ms`, `1.5s`.
struct Human(Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else if d < Duration::from_secs(1) {
            write!(f, "{}ms", d.as_millis())
        } else {
            write!(f, "{:.1}s", d.as_secs_f64())
        }
    }
}

/// Server and zone of the update in flight, for error messages.
pub(super) struct Ctx<'a> {
    pub(super) server: SocketAddr,
    pub(super) zone: &'a str,
    pub(super) key: &'a str,
    /// GSS-TSIG: a REFUSED names the account.
    pub(super) gss: bool,
}

impl Ctx<'_> {
    pub(super) fn io(&self, source: io::Error, timeout: Duration) -> DnsError {
        let (server, zone) = (self.server, self.zone.to_string());
        match source.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => DnsError::TimedOut {
                server,
                zone,
                after: timeout,
            },
            io::ErrorKind::ConnectionRefused => DnsError::ConnectionRefused { server, zone },
            _ => DnsError::Io { server, zone, source },
        }
    }

    pub(super) fn malformed(&self, detail: impl Into<String>) -> DnsError {
        DnsError::Malformed {
            server: self.server,
            zone: self.zone.to_string(),
            detail: detail.into(),
        }
    }

    pub(super) fn key_rejected(&self, reason: impl Into<String>) -> DnsError {
        DnsError::KeyRejected {
            key: self.key.to_string(),
            server: self.server,
            zone: self.zone.to_string(),
            reason: reason.into(),
        }
    }
}

pub(super) fn eof_as_malformed(ctx: &Ctx<'_>, e: io::Error, timeout: Duration) -> DnsError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        ctx.malformed("connection closed before the whole reply arrived")
    } else {
        ctx.io(e, timeout)
    }
}

pub(super) fn rcode_error(ctx: &Ctx<'_>, rcode: ResponseCode) -> DnsError {
    let (server, zone) = (ctx.server, ctx.zone.to_string());
    match rcode {
        ResponseCode::Refused if ctx.gss => DnsError::RefusedAccount {
            server,
            zone,
            account: ctx.key.to_string(),
        },
        ResponseCode::Refused => DnsError::Refused { server, zone },
        ResponseCode::NXRRSet | ResponseCode::YXRRSet | ResponseCode::NXDomain | ResponseCode::YXDomain => {
            DnsError::PrerequisiteFailed {
                server,
                zone,
                rcode: Rcode(rcode),
            }
        }
        ResponseCode::NotAuth | ResponseCode::NotZone => DnsError::NotServed {
            server,
            zone,
            rcode: Rcode(rcode),
        },
        other => DnsError::Rcode {
            server,
            zone,
            rcode: Rcode(other),
        },
    }
}

pub(super) fn tsig_error_reason(error: TsigError) -> String {
    match error {
        TsigError::BadSig => "BADSIG: the secret differs from the server's".to_string(),
        TsigError::BadKey => "BADKEY: the server has no key of that name and algorithm".to_string(),
        TsigError::BadTime => format!("BADTIME: the clocks differ by more than {FUDGE_SECONDS}s"),
        TsigError::BadTrunc => "BADTRUNC: truncated MAC refused".to_string(),
        TsigError::Unknown(code) => format!("TSIG error {code}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_one_line() {
        let timed_out = DnsError::TimedOut {
            server: "127.0.0.1:53".parse().unwrap(),
            zone: "z".into(),
            after: Duration::from_secs(3),
        };
        assert_eq!(
            timed_out.to_string(),
            "DNS server 127.0.0.1:53 did not answer the update of zone z (timed out after 3s)"
        );
        assert_eq!(Human(Duration::from_millis(250)).to_string(), "250ms");
        assert_eq!(Human(Duration::from_millis(1500)).to_string(), "1.5s");
        assert_eq!(Rcode(ResponseCode::NotAuth).to_string(), "NOTAUTH");
        assert_eq!(Rcode(ResponseCode::BADVERS).to_string(), "RCODE 16");
    }
}
