//! Keeping a zone's address records in step with the LB addresses, by RFC 2136 DNS UPDATE
//! signed with TSIG: the way BIND (and most authoritative servers) accept changes from a program.

pub mod client;
pub mod key;
pub mod lookup;
pub mod records;
