//! Building, signing and checking UPDATE messages: the update-section RRs of RFC 2136, the
//! split into messages that never divide a name, the one [`Signer`] behind which HMAC TSIG and
//! GSS-TSIG differ, and the check of a reply that turns it into success or a [`DnsError`].

use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigVerifier, TSigner};

use super::auth::GssConfig;
use super::client::AddressRecord;
use super::error::{Ctx, DnsError, rcode_error, tsig_error_reason};
use super::gss;

/// Allowed clock difference with the server, in seconds (BIND's default too).
pub(super) const FUDGE_SECONDS: u16 = 300;

/// One signed UPDATE, ready to send.
pub(super) struct Prepared {
    pub(super) wire: Vec<u8>,
    pub(super) id: u16,
    pub(super) verifier: Verifier,
    /// RRs in its update section.
    pub(super) records: usize,
}

/// Ranges of `names` (sorted, one entry per RR) of at most `max` RRs that never split a name,
/// unless one name alone has more than `max` RRs.
pub(super) fn name_chunks(names: &[&str], max: usize) -> Vec<std::ops::Range<usize>> {
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
pub(super) fn prepare(
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
pub(super) fn update_record(
    zone: &Name,
    zone_text: &str,
    record: &AddressRecord,
    delete: bool,
) -> Result<Record, DnsError> {
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
pub(super) fn sign(
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
    pub(super) fn sign(&self, mut message: Message, id: u16) -> Result<(Vec<u8>, Verifier), String> {
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
    pub(super) fn forget(&self, server: SocketAddr) {
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
pub(super) fn check_reply(ctx: &Ctx<'_>, raw: &[u8], mut verifier: Verifier) -> Result<(), DnsError> {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hickory_proto::op::{MessageType, OpCode, ResponseCode};

    use super::*;
    use crate::dns::auth::Auth;
    use crate::dns::client::{MAX_UDP_MESSAGE, UpdateClient};
    use crate::dns::key::{KeyAlgorithm, TsigKey};

    fn key() -> Auth {
        Auth::Tsig(TsigKey {
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

    /// The HMAC signer of [`key`] and the zone `example.test`.
    fn hmac_signer() -> (Signer, Name) {
        let client = UpdateClient {
            server: ctx().server,
            auth: key(),
            timeout: Duration::from_secs(1),
        };
        let (signer, _) = client.signer(&ctx()).unwrap();
        (signer, absolute_name("example.test").unwrap())
    }

    #[test]
    fn signed_message_is_an_update_with_zone_section() {
        let (signer, zone) = hmac_signer();
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
        let (signer, zone) = hmac_signer();
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
}
