//! Keeping a zone's address records in step with the LB addresses, by RFC 2136 DNS UPDATE
//! signed with TSIG: the way BIND (and most authoritative servers) accept changes from a program,
//! or with GSS-TSIG, the way Active Directory's DNS accepts them.

pub mod auth;
pub mod client;
mod error;
pub mod gss;
pub mod key;
pub mod lookup;
pub(crate) mod message;
pub mod records;
mod transport;
