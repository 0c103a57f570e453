//! Update-section and prerequisite records beyond the address records of the DNS step (RFC 2136
//! §2.4, §2.5): the TXT of a host's published state, replacing an RRset whole, and the
//! prerequisite "this RRset is exactly this" that makes a peer's withdrawal race-free.

use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::message::absolute_name;

/// The TXT record `name` → `text` (one character-string), class IN.
pub fn txt(name: &Name, ttl: u32, text: &str) -> Record {
    Record::from_rdata(name.clone(), ttl, RData::TXT(TXT::new(vec![text.to_owned()])))
}

/// Update: delete every record of type `rtype` at `name` (class ANY, TTL 0, no RDATA).
pub fn delete_rrset(name: &Name, rtype: RecordType) -> Record {
    let mut rr = Record::update0(name.clone(), 0, rtype).into_record_of_rdata();
    rr.dns_class = DNSClass::ANY;
    rr
}

/// Prerequisite: the RRset of `record`'s name and type is exactly `record` (value dependent, TTL
/// 0, class IN: RFC 2136 §2.4.2).
pub fn exactly(record: &Record) -> Record {
    let mut rr = record.clone();
    rr.ttl = 0;
    rr.dns_class = DNSClass::IN;
    rr
}

/// Prerequisite: no RRset of type `rtype` at `name` (class NONE, RFC 2136 §2.4.3).
pub fn absent(name: &Name, rtype: RecordType) -> Record {
    let mut rr = Record::update0(name.clone(), 0, rtype).into_record_of_rdata();
    rr.dns_class = DNSClass::NONE;
    rr
}

/// `text` as an absolute name, or an error naming it.
pub fn name(text: &str) -> Result<Name, String> {
    absolute_name(text).ok_or_else(|| format!("{text:?} is not a DNS name"))
}

/// The text of a TXT record (its character-strings joined).
pub fn txt_text(record: &Record) -> Option<String> {
    match &record.data {
        RData::TXT(txt) => Some(
            txt.txt_data
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join(""),
        ),
        _ => None,
    }
}
