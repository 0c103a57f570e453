//! What a zone already holds at the names this host is about to publish, read with plain
//! queries (A or AAAA, as about to be added; pipelined on one TCP connection): an address record must never silently
//! join an RRset that holds addresses Flipbit did not write, or sit beside a CNAME (where a
//! server drops it without a word). Also the zone's own infrastructure names (its NS targets and
//! the SOA's primary), which no Service may take. Queries are not signed: they read what anyone
//! may read, and a server that refuses them is reported.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use super::message::absolute_name;
use super::transport::{read_framed, write_framed};

/// Queries awaiting their answers at once on the connection.
const WINDOW: usize = 64;

/// What a name holds, as far as an address record joining it is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    pub addresses: BTreeSet<IpAddr>,
    /// A CNAME (or DNAME) owns the name: no other data may sit beside it.
    pub alias: bool,
}

/// The address families about to be published at a name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Families {
    pub v4: bool,
    pub v6: bool,
}

pub struct Lookup {
    pub server: SocketAddr,
    pub timeout: Duration,
}

impl Lookup {
    /// What each of `names` holds in the RRsets an address would join: `names` maps a name to
    /// the families about to be added there (IPv4: the A RRset, IPv6: AAAA). A CNAME shows in
    /// either answer. Names holding nothing are left out.
    pub fn held(&self, names: &BTreeMap<String, Families>) -> Result<BTreeMap<String, Held>> {
        let mut queries = Vec::new();
        for (name, families) in names {
            let qname = absolute_name(name).ok_or_else(|| anyhow!("{name:?} is not a DNS name"))?;
            if families.v4 {
                queries.push((qname.clone(), RecordType::A));
            }
            if families.v6 {
                queries.push((qname, RecordType::AAAA));
            }
        }
        let mut out: BTreeMap<String, Held> = BTreeMap::new();
        for (qname, reply) in self.ask(&queries)? {
            let owner = qname.to_ascii().trim_end_matches('.').to_ascii_lowercase();
            for record in &reply.answers {
                if record.name != qname {
                    continue;
                }
                let held = out.entry(owner.clone()).or_default();
                match &record.data {
                    RData::A(a) => {
                        held.addresses.insert(IpAddr::V4(a.0));
                    }
                    RData::AAAA(a) => {
                        held.addresses.insert(IpAddr::V6(a.0));
                    }
                    RData::CNAME(_) => held.alias = true,
                    _ if record.record_type() == RecordType::DNAME => held.alias = true,
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// The TXT RRset at `name`, as records (a host's published state is one).
    pub fn txt(&self, name: &str) -> Result<Vec<hickory_proto::rr::Record>> {
        let qname = absolute_name(name).ok_or_else(|| anyhow!("{name:?} is not a DNS name"))?;
        let mut out = Vec::new();
        for (qname, reply) in self.ask(&[(qname, RecordType::TXT)])? {
            out.extend(
                reply
                    .answers
                    .into_iter()
                    .filter(|r| r.name == qname && r.record_type() == RecordType::TXT),
            );
        }
        Ok(out)
    }

    /// The names the zone's own records need: its NS targets and the SOA's primary server.
    pub fn infrastructure(&self, zone: &str) -> Result<BTreeSet<String>> {
        let apex = absolute_name(zone).ok_or_else(|| anyhow!("{zone:?} is not a DNS name"))?;
        let mut out = BTreeSet::new();
        for (_, reply) in self.ask(&[(apex.clone(), RecordType::NS), (apex, RecordType::SOA)])? {
            for record in &reply.answers {
                let target = match &record.data {
                    RData::NS(ns) => &ns.0,
                    RData::SOA(soa) => &soa.mname,
                    _ => continue,
                };
                out.insert(target.to_ascii().trim_end_matches('.').to_ascii_lowercase());
            }
        }
        Ok(out)
    }

    /// Sends `queries` over one TCP connection, [`WINDOW`] in flight; the answers by query.
    fn ask(&self, queries: &[(Name, RecordType)]) -> Result<Vec<(Name, Message)>> {
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        let server = self.server;
        let io_err = |e: io::Error| anyhow!("DNS queries to {server}: {e}");
        let mut stream = TcpStream::connect_timeout(&server, self.timeout).map_err(io_err)?;
        stream.set_read_timeout(Some(self.timeout)).map_err(io_err)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io_err)?;
        stream.set_nodelay(true).map_err(io_err)?;
        let first = Message::query().metadata.id;
        let mut pending: BTreeMap<u16, &Name> = BTreeMap::new();
        let mut out = Vec::with_capacity(queries.len());
        let mut sent = 0;
        while out.len() < queries.len() {
            while sent < queries.len() && pending.len() < WINDOW {
                let (name, rtype) = &queries[sent];
                let id = first.wrapping_add(sent as u16);
                let mut message = Message::query();
                message.metadata.id = id;
                message.metadata.message_type = MessageType::Query;
                message.metadata.op_code = OpCode::Query;
                message.metadata.recursion_desired = false;
                message.add_query(Query::query(name.clone(), *rtype));
                let wire = message
                    .to_vec()
                    .map_err(|e| anyhow!("encoding a query for {name}: {e}"))?;
                write_framed(&mut stream, &wire).map_err(io_err)?;
                pending.insert(id, name);
                sent += 1;
            }
            let raw = read_framed(&mut stream).map_err(io_err)?;
            let reply = Message::from_vec(&raw).map_err(|e| anyhow!("a malformed answer from {server}: {e}"))?;
            let name = pending
                .remove(&reply.metadata.id)
                .ok_or_else(|| anyhow!("an answer from {server} matches no query"))?;
            match reply.metadata.response_code {
                ResponseCode::NoError | ResponseCode::NXDomain => {}
                ResponseCode::Refused => bail!(
                    "DNS server {server} refused to answer queries for {name} (allow queries from this host: the applier reads what a name holds before it adds an address there)"
                ),
                other => bail!("DNS server {server} answered {other:?} to a query for {name}"),
            }
            out.push((name.clone(), reply));
        }
        Ok(out)
    }
}

/// The names of `held` that an address of this fleet must not join: a CNAME owns them, or they
/// hold an address outside every LB host's pools (`ours`), with why.
pub fn foreign(held: &BTreeMap<String, Held>, ours: impl Fn(IpAddr) -> bool) -> BTreeMap<String, String> {
    held.iter()
        .filter_map(|(name, h)| {
            if h.alias {
                return Some((name.clone(), "a CNAME owns it".to_owned()));
            }
            let theirs: Vec<String> = h
                .addresses
                .iter()
                .filter(|a| !ours(**a))
                .map(ToString::to_string)
                .collect();
            (!theirs.is_empty()).then(|| {
                (
                    name.clone(),
                    format!("it holds {} not written by Flipbit", theirs.join(", ")),
                )
            })
        })
        .collect()
}
