//! A small blocking RFC 2136 DNS UPDATE client, signed with TSIG (RFC 8945): an HMAC key, or a
//! Kerberos context (GSS-TSIG, RFC 3645, [`super::gss`]) behind the same [`Signer`].
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

use super::auth::{Auth, GssConfig};
use super::gss::{self, GssFailure};
use super::key::KeyAlgorithm;

/// Update RRs per message: keeps each message well inside TCP's 64 KiB while making a big
/// change a few round trips rather than thousands.
pub const MAX_RRS_PER_MESSAGE: usize = 500;

/// UPDATE messages awaiting their replies at once on the TCP connection. BIND applies the
/// updates of a zone one at a time: with 4 in flight a 10k-record change took no less time than
/// with 1 (measured with `flipbit-bench dns-ratio`), so one; the connection is still reused.
pub const TCP_WINDOW: usize = 1;

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
    pub auth: Auth,
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
    /// GSS-TSIG contexts negotiated for it (0 when one in use was reused, and with TSIG).
    pub negotiations: usize,
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
struct Ctx<'a> {
    server: SocketAddr,
    zone: &'a str,
    key: &'a str,
    /// GSS-TSIG: a REFUSED names the account.
    gss: bool,
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
    /// Applies `update` to its zone in messages of at most [`MAX_RRS_PER_MESSAGE`] RRs. A name's
    /// deletes and adds travel together, deletes first, in one message, so no query ever sees a
    /// name half changed (a TTL change is a delete and an add of the same address); messages
    /// therefore touch disjoint names and may be processed in any order. Small messages go over
    /// UDP; the others share one TCP connection, [`TCP_WINDOW`] of them in flight, each signed
    /// just before it goes. Stops at the first failure: the messages before it (and, with a
    /// window above one, possibly some sent after it) have taken effect, and sending the whole
    /// update again is safe.
    pub fn send(&self, update: &ZoneUpdate) -> Result<UpdateStats, DnsError> {
        let zone_text = update.zone.trim_end_matches('.');
        let zone = absolute_name(zone_text).ok_or_else(|| DnsError::BadZone {
            zone: update.zone.clone(),
        })?;
        let ctx = Ctx {
            server: self.server,
            zone: zone_text,
            key: self.auth.identity(),
            gss: matches!(self.auth, Auth::Gss(_)),
        };

        // A delete whose address an add puts back under the same name (a TTL change) is left
        // out: an added RR with the RDATA of one in the zone replaces it, TTL included (RFC 2136
        // §3.4.2.2; an RRset has one TTL, RFC 2181 §5.2), so the add alone does the change, in
        // half the RRs for the server to apply.
        let readded: std::collections::HashSet<(&str, IpAddr)> =
            update.adds.iter().map(|r| (r.name.as_str(), r.addr)).collect();
        let mut ops: Vec<(&AddressRecord, bool)> = update
            .deletes
            .iter()
            .filter(|r| !readded.contains(&(r.name.as_str(), r.addr)))
            .map(|r| (r, true))
            .chain(update.adds.iter().map(|r| (r, false)))
            .collect();
        // By name, deletes (true) before adds; stable, so each side keeps its given order.
        ops.sort_by(|a, b| a.0.name.cmp(&b.0.name).then(b.1.cmp(&a.1)));
        let records = ops
            .iter()
            .map(|(record, delete)| update_record(&zone, zone_text, record, *delete))
            .collect::<Result<Vec<_>, _>>()?;
        let names: Vec<&str> = ops.iter().map(|(r, _)| r.name.as_str()).collect();
        tracing::debug!(records = records.len(), "update records built");

        let (signer, fresh) = self.signer(&ctx)?;
        match self.send_signed(&ctx, &signer, &zone, &records, &names) {
            // A server restarted or out of memory forgets GSS contexts: it answers BADKEY. Once
            // more with a new one (safe: the update is idempotent).
            Err(DnsError::KeyRejected { .. }) if !fresh && matches!(self.auth, Auth::Gss(_)) => {
                tracing::info!(server = %self.server, "the DNS server no longer knows the GSS-TSIG context; negotiating a new one");
                signer.forget(self.server);
                let (signer, _) = self.signer(&ctx)?;
                let mut stats = self.send_signed(&ctx, &signer, &zone, &records, &names)?;
                stats.negotiations += 1;
                Ok(stats)
            }
            Ok(mut stats) => {
                stats.negotiations += usize::from(fresh);
                Ok(stats)
            }
            Err(e) => Err(e),
        }
    }

    /// [`Self::send`] with a signer in hand.
    fn send_signed(
        &self,
        ctx: &Ctx<'_>,
        signer: &Signer,
        zone: &Name,
        records: &[Record],
        names: &[&str],
    ) -> Result<UpdateStats, DnsError> {
        let mut stats = UpdateStats::default();
        let mut tcp = TcpPipeline {
            client: self,
            ctx,
            stream: None,
            pending: Vec::new(),
            reconnected: false,
        };
        // Replies are matched by id: the messages of one update take consecutive ids from a
        // random start (random per update, as RFC 5452 would have it).
        let mut next_id = Message::query().metadata.id;
        for range in name_chunks(names, MAX_RRS_PER_MESSAGE) {
            let mut messages = Vec::new();
            prepare(
                ctx,
                signer,
                zone,
                &records[range.clone()],
                &names[range],
                &mut next_id,
                &mut messages,
            )?;
            for message in messages {
                if message.wire.len() <= MAX_UDP_MESSAGE {
                    let reply = self.udp(ctx, &message.wire, message.id)?;
                    // TC: the server could not fit its answer; ask again over TCP (RFC 1035 §4.2.1).
                    if reply[2] & 0x02 == 0 {
                        check_reply(ctx, &reply, message.verifier)?;
                        stats.messages += 1;
                        stats.records += message.records;
                        continue;
                    }
                }
                tcp.push(message, &mut stats)?;
            }
        }
        tcp.finish(&mut stats)?;
        tracing::debug!(messages = stats.messages, over_tcp = stats.over_tcp, "update applied");
        Ok(stats)
    }

    /// Sends one UPDATE of zone `zone` with `prerequisites` and `updates` (RFC 2136 records as
    /// [`super::records`] builds them), over TCP: all of it takes effect, or nothing does (a
    /// prerequisite that does not hold is [`DnsError::PrerequisiteFailed`]).
    pub fn send_records(&self, zone: &str, prerequisites: &[Record], updates: &[Record]) -> Result<(), DnsError> {
        let zone_text = zone.trim_end_matches('.');
        let zone_name = absolute_name(zone_text).ok_or_else(|| DnsError::BadZone { zone: zone.to_owned() })?;
        let ctx = Ctx {
            server: self.server,
            zone: zone_text,
            key: self.auth.identity(),
            gss: matches!(self.auth, Auth::Gss(_)),
        };
        let (signer, _) = self.signer(&ctx)?;
        let encode_error = |detail: String| DnsError::Encode {
            zone: zone_text.to_string(),
            detail,
        };
        let mut message = Message::query();
        let id = message.metadata.id;
        message.metadata.message_type = MessageType::Query;
        message.metadata.op_code = OpCode::Update;
        message.metadata.recursion_desired = false;
        let mut zone_query = Query::query(zone_name, RecordType::SOA);
        zone_query.set_query_class(DNSClass::IN);
        message.add_query(zone_query);
        message.add_answers(prerequisites.iter().cloned());
        message.add_authorities(updates.iter().cloned());
        let (wire, verifier) = signer.sign(message, id).map_err(encode_error)?;
        let mut stream = self.tcp_connect(&ctx)?;
        write_framed(&mut stream, &wire).map_err(|e| ctx.io(e, self.timeout))?;
        let reply = read_framed(&mut stream).map_err(|e| eof_as_malformed(&ctx, e, self.timeout))?;
        if !is_reply_to(&reply, id) {
            return Err(ctx.malformed("the reply does not match the request id"));
        }
        check_reply(&ctx, &reply, verifier)
    }

    /// The signer for this client: the HMAC key, or the GSS-TSIG context in use (negotiated now
    /// if there is none with time left; the flag says so).
    fn signer(&self, ctx: &Ctx<'_>) -> Result<(Signer, bool), DnsError> {
        match &self.auth {
            Auth::Tsig(key) => {
                let signer_error = |detail: String| DnsError::Signer {
                    key: key.name.clone(),
                    detail,
                };
                let name = absolute_name(&key.name).ok_or_else(|| signer_error("not a valid DNS name".to_string()))?;
                let algorithm = match key.algorithm {
                    KeyAlgorithm::HmacSha256 => TsigAlgorithm::HmacSha256,
                    KeyAlgorithm::HmacSha384 => TsigAlgorithm::HmacSha384,
                    KeyAlgorithm::HmacSha512 => TsigAlgorithm::HmacSha512,
                };
                let signer = TSigner::new(key.secret.clone(), algorithm, name, FUDGE_SECONDS)
                    .map_err(|e| signer_error(e.to_string()))?;
                Ok((Signer::Hmac(signer), false))
            }
            Auth::Gss(config) => {
                let (session, fresh) = gss::session(self.server, config, self.timeout)
                    .map_err(|failure| self.gss_error(ctx, config, failure))?;
                Ok((Signer::Gss(session, config.clone()), fresh))
            }
        }
    }

    fn gss_error(&self, ctx: &Ctx<'_>, config: &GssConfig, failure: GssFailure) -> DnsError {
        let server = self.server;
        match failure {
            GssFailure::Kerberos(detail) => DnsError::Kerberos {
                server,
                zone: ctx.zone.to_string(),
                detail,
            },
            GssFailure::UnknownService { dc_host } => {
                // The zone's own name servers are the host names most likely to be right.
                let lookup = super::lookup::Lookup {
                    server,
                    timeout: self.timeout,
                };
                let try_hosts = lookup
                    .infrastructure(ctx.zone)
                    .map(|names| {
                        names
                            .into_iter()
                            .filter(|n| !n.eq_ignore_ascii_case(&config.dc_host))
                            .collect()
                    })
                    .unwrap_or_default();
                DnsError::UnknownService {
                    server,
                    dc_host,
                    try_hosts,
                }
            }
            GssFailure::NotGssTsig(detail) => DnsError::NotGssTsig { server, detail },
            GssFailure::Io(kind, detail) => ctx.io(io::Error::new(kind, detail), self.timeout),
        }
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

    fn tcp_connect(&self, ctx: &Ctx<'_>) -> Result<TcpStream, DnsError> {
        let io_err = |e| ctx.io(e, self.timeout);
        let stream = TcpStream::connect_timeout(&self.server, self.timeout).map_err(io_err)?;
        stream.set_read_timeout(Some(self.timeout)).map_err(io_err)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io_err)?;
        stream.set_nodelay(true).map_err(io_err)?;
        Ok(stream)
    }
}

/// UPDATE messages on one TCP connection, opened at the first, up to [`TCP_WINDOW`] of them
/// awaiting their replies, which are matched by id. A connection that fails (the server closed
/// it, say, on an idle timeout between two updates) is opened again once, and every unanswered
/// message sent again on it (safe: updates carry no prerequisites).
struct TcpPipeline<'a> {
    client: &'a UpdateClient,
    ctx: &'a Ctx<'a>,
    stream: Option<TcpStream>,
    pending: Vec<Prepared>,
    reconnected: bool,
}

impl TcpPipeline<'_> {
    fn push(&mut self, message: Prepared, stats: &mut UpdateStats) -> Result<(), DnsError> {
        while self.pending.len() >= TCP_WINDOW {
            self.receive(stats)?;
        }
        let stream = match self.stream.as_mut() {
            Some(stream) => stream,
            None => self.stream.insert(self.client.tcp_connect(self.ctx)?),
        };
        let sent = write_framed(stream, &message.wire);
        self.pending.push(message);
        match sent {
            Ok(()) => Ok(()),
            Err(e) => self.reconnect(self.ctx.io(e, self.client.timeout)),
        }
    }

    /// Waits for every reply still due.
    fn finish(&mut self, stats: &mut UpdateStats) -> Result<(), DnsError> {
        while !self.pending.is_empty() {
            self.receive(stats)?;
        }
        Ok(())
    }

    /// Reads one reply and checks it against its request.
    fn receive(&mut self, stats: &mut UpdateStats) -> Result<(), DnsError> {
        let (ctx, timeout) = (self.ctx, self.client.timeout);
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return Err(ctx.malformed("no connection for the replies due"));
            };
            let reply = match read_framed(stream) {
                Ok(reply) => reply,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::UnexpectedEof
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    self.reconnect(eof_as_malformed(ctx, e, timeout))?;
                    continue;
                }
                Err(e) => return Err(eof_as_malformed(ctx, e, timeout)),
            };
            let Some(at) = self.pending.iter().position(|m| is_reply_to(&reply, m.id)) else {
                return Err(ctx.malformed("TCP reply does not match any request id"));
            };
            let message = self.pending.swap_remove(at);
            check_reply(ctx, &reply, message.verifier)?;
            stats.messages += 1;
            stats.records += message.records;
            stats.over_tcp += 1;
            return Ok(());
        }
    }

    /// After `error` on the connection: the first time, a new connection carrying every
    /// unanswered message again; after that, `error`.
    fn reconnect(&mut self, error: DnsError) -> Result<(), DnsError> {
        if self.reconnected {
            return Err(error);
        }
        self.reconnected = true;
        let mut stream = self.client.tcp_connect(self.ctx)?;
        for message in &self.pending {
            write_framed(&mut stream, &message.wire).map_err(|e| self.ctx.io(e, self.client.timeout))?;
        }
        self.stream = Some(stream);
        Ok(())
    }
}

pub(crate) fn write_framed(stream: &mut TcpStream, wire: &[u8]) -> io::Result<()> {
    let len =
        u16::try_from(wire.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "request exceeds 64 KiB"))?;
    let mut framed = Vec::with_capacity(wire.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(wire);
    stream.write_all(&framed)
}

pub(crate) fn read_framed(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut len_buf = [0u8; 2];
    stream.read_exact(&mut len_buf)?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len_buf))];
    stream.read_exact(&mut reply)?;
    Ok(reply)
}

/// One signed UPDATE, ready to send.
struct Prepared {
    wire: Vec<u8>,
    id: u16,
    verifier: Verifier,
    /// RRs in its update section.
    records: usize,
}

/// Ranges of `names` (sorted, one entry per RR) of at most `max` RRs that never split a name,
/// unless one name alone has more than `max` RRs.
fn name_chunks(names: &[&str], max: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < names.len() {
        let mut end = i + 1;
        while end < names.len() && names[end] == names[i] {
            end += 1;
        }
        if end - start > max && i > start {
            out.push(start..i);
            start = i;
        }
        while end - start > max {
            out.push(start..start + max);
            start += max;
        }
        i = end;
    }
    if start < names.len() {
        out.push(start..names.len());
    }
    out
}

/// Signs `records` as one UPDATE (ids from `next_id` on), or as several when the message would not fit in 64 KiB
/// (halved at a name boundary where there is one), and appends them to `out`.
fn prepare(
    ctx: &Ctx<'_>,
    signer: &Signer,
    zone: &Name,
    records: &[Record],
    names: &[&str],
    next_id: &mut u16,
    out: &mut Vec<Prepared>,
) -> Result<(), DnsError> {
    let id = *next_id;
    let (wire, verifier) = sign(ctx, signer, zone, records, id)?;
    if wire.len() > usize::from(u16::MAX) && records.len() > 1 {
        let half = records.len() / 2;
        let at = (1..records.len())
            .filter(|&i| names[i] != names[i - 1])
            .min_by_key(|&i| i.abs_diff(half))
            .unwrap_or(half);
        prepare(ctx, signer, zone, &records[..at], &names[..at], next_id, out)?;
        return prepare(ctx, signer, zone, &records[at..], &names[at..], next_id, out);
    }
    *next_id = id.wrapping_add(1);
    out.push(Prepared {
        wire,
        id,
        verifier,
        records: records.len(),
    });
    Ok(())
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

pub(crate) fn absolute_name(text: &str) -> Option<Name> {
    let text = text.trim_end_matches('.');
    if text.is_empty() {
        return None;
    }
    let mut name = Name::from_ascii(text).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// The update-section RR deleting exactly `record` from `zone` (class NONE, TTL 0).
pub fn delete_record(zone: &str, record: &AddressRecord) -> Result<Record, DnsError> {
    let zone_text = zone.trim_end_matches('.');
    let zone_name = absolute_name(zone_text).ok_or_else(|| DnsError::BadZone { zone: zone.to_owned() })?;
    update_record(&zone_name, zone_text, record, true)
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

/// Builds and signs one UPDATE with message id `id`; returns its wire form and the verifier for
/// the reply.
fn sign(
    ctx: &Ctx<'_>,
    signer: &Signer,
    zone: &Name,
    records: &[Record],
    id: u16,
) -> Result<(Vec<u8>, Verifier), DnsError> {
    let mut message = Message::query();
    message.metadata.id = id;
    message.metadata.message_type = MessageType::Query;
    message.metadata.op_code = OpCode::Update;
    message.metadata.recursion_desired = false;
    let mut zone_query = Query::query(zone.clone(), RecordType::SOA);
    zone_query.set_query_class(DNSClass::IN);
    message.add_zone(zone_query);
    message.add_updates(records.iter().cloned());
    signer.sign(message, id).map_err(|detail| DnsError::Encode {
        zone: ctx.zone.to_string(),
        detail,
    })
}

/// What signs the UPDATEs: the one point where HMAC TSIG and GSS-TSIG differ.
pub(crate) enum Signer {
    Hmac(TSigner),
    Gss(gss::Shared, GssConfig),
}

/// What checks a reply against its request.
pub(crate) enum Verifier {
    Hmac(Box<TSigVerifier>),
    /// The context, and the request's MAC (the reply's MAC covers it).
    Gss(gss::Shared, Vec<u8>),
}

impl Signer {
    /// The wire form of `message` (message id `id`) with its TSIG record.
    fn sign(&self, mut message: Message, id: u16) -> Result<(Vec<u8>, Verifier), String> {
        match self {
            Signer::Hmac(signer) => {
                let verifier = message
                    .finalize(signer, unix_now())
                    .map_err(|e| format!("signing failed: {e}"))?
                    .ok_or_else(|| "the signer returned no reply verifier".to_string())?;
                let wire = message.to_vec().map_err(|e| e.to_string())?;
                Ok((wire, Verifier::Hmac(Box::new(verifier))))
            }
            Signer::Gss(session, _) => {
                let mut wire = message.to_vec().map_err(|e| e.to_string())?;
                let mac = gss::sign(session, &mut wire, id, unix_now())?;
                Ok((wire, Verifier::Gss(session.clone(), mac)))
            }
        }
    }

    /// The server no longer knows this signer's context.
    fn forget(&self, server: SocketAddr) {
        if let Signer::Gss(_, config) = self {
            gss::forget(server, config);
        }
    }
}

impl Verifier {
    fn verify(&mut self, raw: &[u8]) -> Result<(), String> {
        match self {
            Verifier::Hmac(verifier) => verifier.verify(raw).map(|_| ()).map_err(|e| e.to_string()),
            Verifier::Gss(session, request_mac) => gss::verify(session, raw, request_mac, unix_now()),
        }
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Turns the reply into success or the error that tells the operator what to fix.
///
/// A server that cannot authenticate a request answers NOTAUTH with an unsigned TSIG record
/// whose error field says why (BADSIG, BADKEY, BADTIME; RFC 8945 §5.2); that is checked before
/// any signature verification, which would only fail on the empty MAC. Every other reply to a
/// signed request is signed, so a NOTAUTH/NOTZONE that verifies means the key was fine and the
/// zone is not served there, while an unsigned NOTAUTH means the key was not accepted.
fn check_reply(ctx: &Ctx<'_>, raw: &[u8], mut verifier: Verifier) -> Result<(), DnsError> {
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
    if let Err(detail) = verifier.verify(raw) {
        // Samba answers an update its access checks refuse with SERVFAIL under a MAC that does
        // not verify: a failure either way, reported by its code (nothing is taken as applied).
        if ctx.gss && rcode != ResponseCode::NoError {
            return Err(rcode_error(ctx, rcode));
        }
        return Err(DnsError::BadReplySignature {
            server: ctx.server,
            zone: ctx.zone.to_string(),
            detail,
        });
    }
    match rcode {
        ResponseCode::NoError => Ok(()),
        other => Err(rcode_error(ctx, other)),
    }
}

fn rcode_error(ctx: &Ctx<'_>, rcode: ResponseCode) -> DnsError {
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

    fn key() -> Auth {
        Auth::Tsig(super::super::key::TsigKey {
            name: "k".into(),
            algorithm: KeyAlgorithm::HmacSha256,
            secret: vec![7; 32],
        })
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
            gss: false,
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
            auth: key(),
            timeout: Duration::from_secs(1),
        };
        let (signer, _) = client.signer(&ctx()).unwrap();
        let zone = absolute_name("example.test").unwrap();
        let rr = update_record(&zone, "example.test", &rec("a.example.test", "127.93.0.1"), false).unwrap();
        let (wire, _) = sign(&ctx(), &signer, &zone, &[rr], 4711).unwrap();
        let parsed = Message::from_vec(&wire).unwrap();
        assert_eq!(parsed.metadata.id, 4711);
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
            auth: key(),
            timeout: Duration::from_secs(1),
        };
        let (signer, _) = client.signer(&ctx()).unwrap();
        let zone = absolute_name("example.test").unwrap();
        let (_, verifier) = sign(&ctx(), &signer, &zone, &[], 9).unwrap();
        let err = check_reply(&ctx(), &reply.to_vec().unwrap(), verifier).unwrap_err();
        assert!(
            err.to_string().starts_with("TSIG key \"k\" rejected by 127.0.0.1:53"),
            "{err}"
        );
    }

    #[test]
    fn chunks_never_split_a_name_unless_it_alone_is_too_big() {
        let names = ["a", "a", "b", "b", "c", "d", "d", "d", "d", "d", "e"];
        let chunks = name_chunks(&names, 3);
        assert_eq!(chunks, vec![0..2, 2..5, 5..8, 8..11]);
        assert_eq!(name_chunks(&["x"; 4], 4), vec![0..4]);
        assert!(name_chunks(&[], 4).is_empty());
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
