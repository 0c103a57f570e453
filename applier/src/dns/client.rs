//! A small blocking RFC 2136 DNS UPDATE client, signed with TSIG (RFC 8945): an HMAC key, or a
//! Kerberos context (GSS-TSIG, RFC 3645, [`super::gss`]) behind the same [`Signer`].
//!
//! The applier is a synchronous one-shot program, so this speaks DNS over std sockets rather
//! than pulling in an async runtime for a handful of messages; hickory-proto only builds, signs
//! and parses the messages. Updates carry no prerequisites and delete single RRs by value, so
//! re-sending an update that already took (a retry, a second applier run) changes nothing.
//! Failures come back as one line that says which server, which zone and what to check.
//!
//! This file holds the update's plan (which RRs, in which messages, in what order); the
//! messages are built, signed and checked in `dns/message.rs`, carried over UDP or TCP in
//! `dns/transport.rs`, and failures are named in `dns/error.rs`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{DNSClass, Name, Record, RecordType, TSigner};

use super::auth::{Auth, GssConfig};
use super::error::{Ctx, eof_as_malformed};
pub use super::error::{DnsError, Rcode};
use super::gss::{self, GssFailure};
use super::key::KeyAlgorithm;
use super::message::{FUDGE_SECONDS, Signer, absolute_name, check_reply, name_chunks, prepare, update_record};
use super::transport::{TcpPipeline, is_reply_to, read_framed, write_framed};

/// Update RRs per message: keeps each message well inside TCP's 64 KiB while making a big
/// change a few round trips rather than thousands.
pub const MAX_RRS_PER_MESSAGE: usize = 500;

/// UPDATE messages awaiting their replies at once on the TCP connection. BIND applies the
/// updates of a zone one at a time: with 4 in flight a 10k-record change took no less time than
/// with 1 (measured with `flipbit-bench dns-ratio`), so one; the connection is still reused.
pub const TCP_WINDOW: usize = 1;

/// Largest message sent over UDP: the DNS Flag Day 2020 size that avoids IP fragmentation.
pub const MAX_UDP_MESSAGE: usize = 1232;

/// A record as a zone fragment holds it (`flipbit_core::dns`), which the client sends.
pub use flipbit_core::dns::AddressRecord;

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
        let mut tcp = TcpPipeline::new(self, ctx);
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
    pub(super) fn signer(&self, ctx: &Ctx<'_>) -> Result<(Signer, bool), DnsError> {
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
}
