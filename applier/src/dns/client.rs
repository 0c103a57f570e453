//! A small blocking RFC 2136 DNS UPDATE client, signed with TSIG (RFC 8945).
//!
//! The applier is a synchronous one-shot program, so this speaks DNS over std sockets rather
//! than pulling in an async runtime for a handful of messages; hickory-proto only builds, signs
//! and parses the messages. Updates carry no prerequisites and delete single RRs by value, so
//! re-sending an update that already took (a retry, a second applier run) changes nothing.
//! Failures come back as one line that says which server, which zone and what to check.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::tsig::{TsigAlgorithm, TsigError};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigVerifier, TSigner};

use super::key::{KeyAlgorithm, TsigKey};

/// Update RRs per message: keeps each message well inside TCP's 64 KiB while making a big
/// change a few round trips rather than thousands.
pub const MAX_RRS_PER_MESSAGE: usize = 500;

/// Largest message sent over UDP: the DNS Flag Day 2020 size that avoids IP fragmentation.
pub const MAX_UDP_MESSAGE: usize = 1232;

/// Allowed clock difference with the server, in seconds (BIND's default too).
const FUDGE_SECONDS: u16 = 300;

/// UDP sends per message before giving up (the timeout is shared between them).
const UDP_TRIES: u32 = 3;

/// One A or AAAA record (type follows the address family). `name` is an absolute name without
/// the trailing dot, e.g. "frontend.blog.k8s.example.test".
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressRecord {
    pub name: String,
    pub ttl: u32,
    pub addr: IpAddr,
}

/// The changes for one zone: every delete removes exactly that one RR (class NONE, RFC 2136
/// §2.5.4), every add adds one RR.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZoneUpdate {
    pub zone: String,
    pub deletes: Vec<AddressRecord>,
    pub adds: Vec<AddressRecord>,
}

/// Where updates go and how they are signed.
#[derive(Debug, Clone)]
pub struct UpdateClient {
    pub server: SocketAddr,
    pub key: TsigKey,
    /// Per exchange: UDP reply wait (all tries together), TCP connect, each TCP read and write.
    pub timeout: Duration,
}

/// What one [`UpdateClient::send`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdateStats {
    /// UPDATE messages answered with NOERROR.
    pub messages: usize,
    /// RRs in the update sections of those messages (deletes plus adds).
    pub records: usize,
    /// Messages that went over TCP (too big for UDP, or a truncated UDP reply).
    pub over_tcp: usize,
}

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
struct Ctx<'a> {
    server: SocketAddr,
    zone: &'a str,
    key: &'a str,
}

impl Ctx<'_> {
    fn io(&self, source: io::Error, timeout: Duration) -> DnsError {
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

    fn malformed(&self, detail: impl Into<String>) -> DnsError {
        DnsError::Malformed {
            server: self.server,
            zone: self.zone.to_string(),
            detail: detail.into(),
        }
    }

    fn key_rejected(&self, reason: impl Into<String>) -> DnsError {
        DnsError::KeyRejected {
            key: self.key.to_string(),
            server: self.server,
            zone: self.zone.to_string(),
            reason: reason.into(),
        }
    }
}

impl UpdateClient {
    /// Applies `update` to its zone: all deletes, then all adds, in messages of at most
    /// [`MAX_RRS_PER_MESSAGE`] RRs sent one after the other; stops at the first failure (the
    /// messages before it have taken effect, and sending the whole update again is safe).
    pub fn send(&self, update: &ZoneUpdate) -> Result<UpdateStats, DnsError> {
        let zone_text = update.zone.trim_end_matches('.');
        let zone = absolute_name(zone_text).ok_or_else(|| DnsError::BadZone {
            zone: update.zone.clone(),
        })?;
        let ctx = Ctx {
            server: self.server,
            zone: zone_text,
            key: &self.key.name,
        };

        let deletes = update.deletes.iter().map(|r| (r, true));
        let adds = update.adds.iter().map(|r| (r, false));
        let records = deletes
            .chain(adds)
            .map(|(record, delete)| update_record(&zone, zone_text, record, delete))
            .collect::<Result<Vec<_>, _>>()?;

        let signer = self.signer()?;
        let mut stats = UpdateStats::default();
        for chunk in records.chunks(MAX_RRS_PER_MESSAGE) {
            self.send_chunk(&ctx, &signer, &zone, chunk, &mut stats)?;
        }
        Ok(stats)
    }

    fn signer(&self) -> Result<TSigner, DnsError> {
        let signer_error = |detail: String| DnsError::Signer {
            key: self.key.name.clone(),
            detail,
        };
        let name = absolute_name(&self.key.name).ok_or_else(|| signer_error("not a valid DNS name".to_string()))?;
        let algorithm = match self.key.algorithm {
            KeyAlgorithm::HmacSha256 => TsigAlgorithm::HmacSha256,
            KeyAlgorithm::HmacSha384 => TsigAlgorithm::HmacSha384,
            KeyAlgorithm::HmacSha512 => TsigAlgorithm::HmacSha512,
        };
        TSigner::new(self.key.secret.clone(), algorithm, name, FUDGE_SECONDS).map_err(|e| signer_error(e.to_string()))
    }

    /// Sends one message holding `records`; halves it when it would not fit in 64 KiB.
    fn send_chunk(
        &self,
        ctx: &Ctx<'_>,
        signer: &TSigner,
        zone: &Name,
        records: &[Record],
        stats: &mut UpdateStats,
    ) -> Result<(), DnsError> {
        let (wire, id, verifier) = sign(ctx, signer, zone, records)?;
        if wire.len() > usize::from(u16::MAX) && records.len() > 1 {
            let (first, second) = records.split_at(records.len() / 2);
            self.send_chunk(ctx, signer, zone, first, stats)?;
            return self.send_chunk(ctx, signer, zone, second, stats);
        }
        let (reply, over_tcp) = self.exchange(ctx, &wire, id)?;
        check_reply(ctx, &reply, verifier)?;
        stats.messages += 1;
        stats.records += records.len();
        stats.over_tcp += usize::from(over_tcp);
        Ok(())
    }

    /// One request/reply; returns the reply and whether it came over TCP.
    fn exchange(&self, ctx: &Ctx<'_>, wire: &[u8], id: u16) -> Result<(Vec<u8>, bool), DnsError> {
        if wire.len() <= MAX_UDP_MESSAGE {
            let reply = self.udp(ctx, wire, id)?;
            // TC: the server could not fit its answer; ask again over TCP (RFC 1035 §4.2.1).
            if reply[2] & 0x02 == 0 {
                return Ok((reply, false));
            }
        }
        Ok((self.tcp(ctx, wire, id)?, true))
    }

    fn udp(&self, ctx: &Ctx<'_>, wire: &[u8], id: u16) -> Result<Vec<u8>, DnsError> {
        let io_err = |e| ctx.io(e, self.timeout);
        let local: SocketAddr = match self.server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local).map_err(io_err)?;
        socket.connect(self.server).map_err(io_err)?;
        let start = Instant::now();
        let mut buf = vec![0u8; 65535];
        for attempt in 1..=UDP_TRIES {
            socket.send(wire).map_err(io_err)?;
            let deadline = start + self.timeout * attempt / UDP_TRIES;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                socket.set_read_timeout(Some(left)).map_err(io_err)?;
                match socket.recv(&mut buf) {
                    Ok(n) if is_reply_to(&buf[..n], id) => return Ok(buf[..n].to_vec()),
                    Ok(_) => continue, // a stray or late datagram: keep waiting for ours
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break,
                    Err(e) => return Err(io_err(e)),
                }
            }
        }
        Err(DnsError::TimedOut {
            server: self.server,
            zone: ctx.zone.to_string(),
            after: self.timeout,
        })
    }

    fn tcp(&self, ctx: &Ctx<'_>, wire: &[u8], id: u16) -> Result<Vec<u8>, DnsError> {
        let io_err = |e| ctx.io(e, self.timeout);
        let len = u16::try_from(wire.len()).map_err(|_| ctx.malformed("request exceeds 64 KiB"))?;
        let mut stream = TcpStream::connect_timeout(&self.server, self.timeout).map_err(io_err)?;
        stream.set_read_timeout(Some(self.timeout)).map_err(io_err)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io_err)?;
        stream.set_nodelay(true).map_err(io_err)?;
        let mut framed = Vec::with_capacity(wire.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(wire);
        stream.write_all(&framed).map_err(io_err)?;
        let mut len_buf = [0u8; 2];
        stream
            .read_exact(&mut len_buf)
            .map_err(|e| eof_as_malformed(ctx, e, self.timeout))?;
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len_buf))];
        stream
            .read_exact(&mut reply)
            .map_err(|e| eof_as_malformed(ctx, e, self.timeout))?;
        if !is_reply_to(&reply, id) {
            return Err(ctx.malformed("TCP reply does not match the request id"));
        }
        Ok(reply)
    }
}

fn eof_as_malformed(ctx: &Ctx<'_>, e: io::Error, timeout: Duration) -> DnsError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        ctx.malformed("connection closed before the whole reply arrived")
    } else {
        ctx.io(e, timeout)
    }
}

/// A DNS header with our id and QR set.
fn is_reply_to(bytes: &[u8], id: u16) -> bool {
    bytes.len() >= 12 && u16::from_be_bytes([bytes[0], bytes[1]]) == id && bytes[2] & 0x80 != 0
}

fn absolute_name(text: &str) -> Option<Name> {
    let text = text.trim_end_matches('.');
    if text.is_empty() {
        return None;
    }
    let mut name = Name::from_ascii(text).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// The update-section RR for one record: class IN to add, class NONE with TTL 0 to delete.
fn update_record(zone: &Name, zone_text: &str, record: &AddressRecord, delete: bool) -> Result<Record, DnsError> {
    let name = absolute_name(&record.name).ok_or_else(|| DnsError::BadName {
        name: record.name.clone(),
        zone: zone_text.to_string(),
    })?;
    if !zone.zone_of(&name) {
        return Err(DnsError::OutsideZone {
            name: record.name.clone(),
            zone: zone_text.to_string(),
        });
    }
    let rdata = match record.addr {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    let mut rr = Record::from_rdata(name, if delete { 0 } else { record.ttl }, rdata);
    rr.dns_class = if delete { DNSClass::NONE } else { DNSClass::IN };
    Ok(rr)
}

/// Builds and signs one UPDATE; returns its wire form, id and the verifier for the reply.
fn sign(
    ctx: &Ctx<'_>,
    signer: &TSigner,
    zone: &Name,
    records: &[Record],
) -> Result<(Vec<u8>, u16, TSigVerifier), DnsError> {
    let encode_error = |detail: String| DnsError::Encode {
        zone: ctx.zone.to_string(),
        detail,
    };
    let mut message = Message::query();
    message.metadata.message_type = MessageType::Query;
    message.metadata.op_code = OpCode::Update;
    message.metadata.recursion_desired = false;
    let mut zone_query = Query::query(zone.clone(), RecordType::SOA);
    zone_query.set_query_class(DNSClass::IN);
    message.add_zone(zone_query);
    message.add_updates(records.iter().cloned());
    let verifier = message
        .finalize(signer, unix_now())
        .map_err(|e| encode_error(format!("signing failed: {e}")))?
        .ok_or_else(|| encode_error("the signer returned no reply verifier".to_string()))?;
    let wire = message.to_vec().map_err(|e| encode_error(e.to_string()))?;
    Ok((wire, message.metadata.id, verifier))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Turns the reply into success or the error that tells the operator what to fix.
///
/// A server that cannot authenticate a request answers NOTAUTH with an unsigned TSIG record
/// whose error field says why (BADSIG, BADKEY, BADTIME; RFC 8945 §5.2); that is checked before
/// any signature verification, which would only fail on the empty MAC. Every other reply to a
/// signed request is signed, so a NOTAUTH/NOTZONE that verifies means the key was fine and the
/// zone is not served there, while an unsigned NOTAUTH means the key was not accepted.
fn check_reply(ctx: &Ctx<'_>, raw: &[u8], mut verifier: TSigVerifier) -> Result<(), DnsError> {
    let reply = Message::from_vec(raw).map_err(|e| ctx.malformed(e.to_string()))?;
    if reply.metadata.op_code != OpCode::Update {
        return Err(ctx.malformed(format!("reply opcode is {:?}, not UPDATE", reply.metadata.op_code)));
    }
    let rcode = reply.metadata.response_code;
    if let Some(error) = reply.signature().and_then(|sig| sig.data.error) {
        return Err(ctx.key_rejected(tsig_error_reason(error)));
    }
    if reply.signature().is_none() {
        return Err(match rcode {
            ResponseCode::NotAuth => ctx.key_rejected("unsigned NOTAUTH: the server did not accept the signature"),
            ResponseCode::NoError => DnsError::BadReplySignature {
                server: ctx.server,
                zone: ctx.zone.to_string(),
                detail: "the reply is not signed".to_string(),
            },
            other => rcode_error(ctx, other),
        });
    }
    verifier.verify(raw).map_err(|e| DnsError::BadReplySignature {
        server: ctx.server,
        zone: ctx.zone.to_string(),
        detail: e.to_string(),
    })?;
    match rcode {
        ResponseCode::NoError => Ok(()),
        other => Err(rcode_error(ctx, other)),
    }
}

fn rcode_error(ctx: &Ctx<'_>, rcode: ResponseCode) -> DnsError {
    let (server, zone) = (ctx.server, ctx.zone.to_string());
    match rcode {
        ResponseCode::Refused => DnsError::Refused { server, zone },
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

fn tsig_error_reason(error: TsigError) -> String {
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

    fn key() -> TsigKey {
        TsigKey {
            name: "k".into(),
            algorithm: KeyAlgorithm::HmacSha256,
            secret: vec![7; 32],
        }
    }

    fn rec(name: &str, addr: &str) -> AddressRecord {
        AddressRecord {
            name: name.into(),
            ttl: 60,
            addr: addr.parse().unwrap(),
        }
    }

    fn ctx() -> Ctx<'static> {
        Ctx {
            server: "127.0.0.1:53".parse().unwrap(),
            zone: "example.test",
            key: "k",
        }
    }

    #[test]
    fn update_section_follows_rfc_2136() {
        let zone = absolute_name("example.test").unwrap();
        let add = update_record(&zone, "example.test", &rec("a.example.test", "127.93.0.1"), false).unwrap();
        assert_eq!(
            (add.dns_class, add.ttl, add.record_type()),
            (DNSClass::IN, 60, RecordType::A)
        );
        let del = update_record(&zone, "example.test", &rec("a.example.test", "::1"), true).unwrap();
        assert_eq!(
            (del.dns_class, del.ttl, del.record_type()),
            (DNSClass::NONE, 0, RecordType::AAAA)
        );
        let err = update_record(&zone, "example.test", &rec("a.example.org", "127.93.0.1"), false).unwrap_err();
        assert_eq!(err.to_string(), "record a.example.org is outside zone example.test");
    }

    #[test]
    fn signed_message_is_an_update_with_zone_section() {
        let client = UpdateClient {
            server: ctx().server,
            key: key(),
            timeout: Duration::from_secs(1),
        };
        let signer = client.signer().unwrap();
        let zone = absolute_name("example.test").unwrap();
        let rr = update_record(&zone, "example.test", &rec("a.example.test", "127.93.0.1"), false).unwrap();
        let (wire, id, _) = sign(&ctx(), &signer, &zone, &[rr]).unwrap();
        let parsed = Message::from_vec(&wire).unwrap();
        assert_eq!(parsed.metadata.id, id);
        assert_eq!(parsed.metadata.op_code, OpCode::Update);
        assert_eq!(parsed.queries[0].query_type(), RecordType::SOA);
        assert_eq!(parsed.authorities.len(), 1);
        assert!(parsed.signature().is_some());
        assert!(wire.len() <= MAX_UDP_MESSAGE);
    }

    #[test]
    fn unsigned_badsig_reply_is_a_key_rejection() {
        let mut reply = Message::new(9, MessageType::Response, OpCode::Update);
        reply.metadata.response_code = ResponseCode::NotAuth;
        let client = UpdateClient {
            server: ctx().server,
            key: key(),
            timeout: Duration::from_secs(1),
        };
        let signer = client.signer().unwrap();
        let zone = absolute_name("example.test").unwrap();
        let (_, _, verifier) = sign(&ctx(), &signer, &zone, &[]).unwrap();
        let err = check_reply(&ctx(), &reply.to_vec().unwrap(), verifier).unwrap_err();
        assert!(
            err.to_string().starts_with("TSIG key \"k\" rejected by 127.0.0.1:53"),
            "{err}"
        );
    }

    #[test]
    fn errors_read_as_one_line() {
        let timed_out = DnsError::TimedOut {
            server: ctx().server,
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
