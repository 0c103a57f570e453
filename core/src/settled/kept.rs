//! [`Settled`] as bytes, for `flipbit-generator render`, where every run is a fresh process: with
//! it kept in the cache dir, a warm run looks at the Services that changed, as `run` does in
//! process, instead of classifying, allocating and fingerprinting all 50,000 of them again.
//!
//! Only what cannot be derived cheaply is written (the inputs as last seen, what each Service got,
//! the problems). What follows from the decision's own inputs is rebuilt when read: the eligible
//! nodes and node states from the snapshot's nodes (the same nodes: their hash is checked first),
//! ready nodes from the snapshot's EndpointSlices (what the shortcut would refresh them to), the
//! addresses in use from the ledger, and listener counts and custom names from what each Service
//! got. Anything that does not fit the decision about to be made (another `flipbit.yaml`, other
//! nodes, another ledger, a damaged record) refuses the bytes: the decision is then a full one.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use super::*;
use crate::exposure::ServicePort;
use crate::host_addresses::HostAddresses;
use crate::problem::{Severity, Subject};

/// Bumped whenever the layout below changes (2: a problem's object is typed, not text; 3: maps
/// written in sorted order and inputs' generations as ages, so the same content gives the same
/// bytes).
const VERSION: u8 = 3;

impl Settled {
    /// The bytes [`Settled::decode`] reads back. `beside` is the ledger the caller keeps next to
    /// them (the cache's): when it is this memory's, only its hash is written.
    pub(crate) fn encode(&self, beside: Option<&Ledger>) -> Option<Vec<u8>> {
        let mut w = Vec::with_capacity(64 + self.inputs.len() * 96 + self.exposed.len() * 96);
        w.push(VERSION);
        put_u64(&mut w, config_hash(&self.config));
        put_u64(&mut w, self.context);
        put_u64(&mut w, self.generation);
        put_timestamp(&mut w, self.next_expiry);
        put_u64(&mut w, hash_of(&self.ledger));
        match beside {
            Some(ledger) if ledger.services.ptr_eq(&self.ledger.services) || *ledger == self.ledger => w.push(0),
            _ => {
                w.push(1);
                put_str(&mut w, &self.ledger.to_yaml());
            }
        }
        // Hash maps in a fixed order (theirs changes with each process's seed): two runs that
        // changed one Service write the same bytes but for that Service's, which is what lets
        // `render` keep only the parts that changed.
        let mut slices: Vec<_> = self.slices.iter().collect();
        slices.sort_unstable();
        put_u64(&mut w, slices.len() as u64);
        for (k, sum) in slices {
            put_u64(&mut w, *k);
            put_u64(&mut w, *sum);
        }
        let mut inputs: Vec<_> = self.inputs.iter().collect();
        inputs.sort_unstable_by_key(|(hash, _)| **hash);
        put_u64(&mut w, inputs.len() as u64);
        for (hash, seen) in inputs {
            put_u64(&mut w, *hash);
            put_str(&mut w, &seen.key.0);
            put_str(&mut w, &seen.key.1);
            put_u64(&mut w, seen.fingerprint);
            // How many decisions ago it was last seen (0 for every input after a decision), not
            // the counter itself, which every decision moves: the bytes of unchanged inputs stay
            // the same from one run to the next.
            put_u64(&mut w, self.generation.wrapping_sub(seen.generation));
        }
        let mut troubled: Vec<_> = self.troubled.iter().collect();
        troubled.sort_unstable();
        put_u64(&mut w, troubled.len() as u64);
        for (ns, name) in troubled {
            put_str(&mut w, ns);
            put_str(&mut w, name);
        }
        put_u64(&mut w, self.exposed.len() as u64);
        // Positions index the decision's eligible nodes, which is all a read can rebuild: the
        // nodes of every summary must be those (one shared copy, compared once).
        let mut same_nodes: Option<*const Node> = None;
        for (key, summary) in self.exposed.iter() {
            let all = summary.nodes.all();
            let checked = same_nodes.is_some_and(|p| std::ptr::eq(p, all.as_ptr()));
            if !checked && !summary.nodes.is_empty() {
                if **all != *self.eligible {
                    return None;
                }
                same_nodes = Some(all.as_ptr());
            }
            put_key(&mut w, key);
            put_u64(&mut w, summary.ports.len() as u64);
            for p in &summary.ports {
                w.push(match p.protocol {
                    Protocol::Tcp => 0,
                    Protocol::Udp => 1,
                });
                w.extend_from_slice(&p.port.to_le_bytes());
                w.extend_from_slice(&p.node_port.to_le_bytes());
            }
            for addresses in [&summary.addresses, &summary.addresses_v6] {
                put_u64(&mut w, addresses.len() as u64);
                for (host, ip) in addresses {
                    put_str(&mut w, host.as_str());
                    put_ip(&mut w, ip);
                }
            }
            put_u64(&mut w, summary.nodes.len() as u64);
            for p in summary.nodes.positions() {
                w.extend_from_slice(&p.to_le_bytes());
            }
            match &summary.pods {
                None => w.push(0),
                Some(pods) => {
                    w.push(1);
                    put_u64(&mut w, pods.len() as u64);
                    for pod in pods.iter() {
                        put_ip(&mut w, &pod.ip());
                        w.extend_from_slice(&pod.port().to_le_bytes());
                    }
                }
            }
            put_u64(&mut w, summary.dns_names.len() as u64);
            for name in &summary.dns_names {
                put_str(&mut w, name);
            }
            w.extend_from_slice(&summary.format.to_le_bytes());
        }
        for keys in [&self.kept, &self.unreadable] {
            put_u64(&mut w, keys.len() as u64);
            for key in keys {
                put_key(&mut w, key);
            }
        }
        put_u64(&mut w, self.context_problems.len() as u64);
        for p in &self.context_problems {
            w.push(match p.severity {
                Severity::Error => 0,
                Severity::Warning => 1,
            });
            put_subject(&mut w, &p.object);
            for text in [&p.field, &p.message] {
                put_str(&mut w, text);
            }
        }
        // Its own check, whatever the caller keeps it in: a damaged memory would decide wrongly.
        let sum = checksum(&w);
        put_u64(&mut w, sum);
        Some(w)
    }

    /// The memory `bytes` hold, fitted to the decision about to be made on `snapshot`, `config`
    /// and `previous` (the ledger decided on); `Err` says why it does not fit or is damaged.
    pub(crate) fn decode(
        bytes: &[u8],
        snapshot: &Snapshot,
        config: &Config,
        previous: &Ledger,
    ) -> Result<Self, String> {
        let body = bytes.len().checked_sub(8).ok_or("shorter than its checksum")?;
        let (bytes, sum) = bytes.split_at(body);
        if sum != checksum(bytes).to_le_bytes() {
            return Err("checksum mismatch (truncated or damaged)".into());
        }
        let mut r = Reader { bytes, at: 0 };
        let version = r.u8()?;
        if version != VERSION {
            return Err(format!("layout {version}, not {VERSION}"));
        }
        if r.u64()? != config_hash(config) {
            return Err("flipbit.yaml changed".into());
        }
        let context = r.u64()?;
        if context != context_of(snapshot) {
            return Err("nodes or unreadable Services changed".into());
        }
        let generation = r.u64()?;
        let next_expiry = r.timestamp()?;
        let ledger_hash = r.u64()?;
        // Hashing 50,000 ledger entries takes a while: the previous ledger's hash is the kept
        // ledger's too when the memory kept it by hash only.
        let previous_hash = hash_of(previous);
        let (ledger, hash) = match r.u8()? {
            0 => (previous.clone(), previous_hash),
            1 => {
                let ledger = Ledger::parse(r.str()?).map_err(|e| format!("its ledger: {e}"))?;
                let hash = hash_of(&ledger);
                (ledger, hash)
            }
            _ => return Err("a bad ledger flag".into()),
        };
        if hash != ledger_hash || previous_hash != ledger_hash {
            return Err("another ledger".into());
        }
        // The addresses in use are the ledger's alone: worked out on another thread while this one
        // reads the rest (~3% of a warm `render` at 50,000 Services).
        std::thread::scope(|scope| {
            let used = scope.spawn(|| allocate::used_addresses(&ledger));
            let read = Self::decode_rest(&mut r, snapshot, config, context, generation, next_expiry);
            let used = used
                .join()
                .map_err(|_| "working out the addresses in use failed".to_owned())?;
            let mut settled = read?;
            settled.used = used;
            settled.ledger = ledger.clone();
            settled.derive(config);
            Ok(settled)
        })
    }

    /// The part of [`Settled::decode`] after the ledger; `used` and `ledger` are left empty.
    fn decode_rest(
        r: &mut Reader<'_>,
        snapshot: &Snapshot,
        config: &Config,
        context: u64,
        generation: u64,
        next_expiry: Option<Timestamp>,
    ) -> Result<Self, String> {
        let bytes_len = r.bytes.len();
        let mut slices = HashMap::default();
        for _ in 0..r.count(16)? {
            slices.insert(r.u64()?, r.u64()?);
        }
        let mut inputs = HashMap::default();
        for _ in 0..r.count(32)? {
            let hash = r.u64()?;
            let key = (r.str()?.to_owned(), r.str()?.to_owned());
            let (fingerprint, age) = (r.u64()?, r.u64()?);
            let generation = generation.wrapping_sub(age);
            if key_hash(&key.0, &key.1) != hash {
                return Err("an input under another key".into());
            }
            inputs.insert(
                hash,
                Seen {
                    key,
                    fingerprint,
                    generation,
                },
            );
        }
        let mut troubled = HashSet::default();
        for _ in 0..r.count(8)? {
            troubled.insert((r.str()?.to_owned(), r.str()?.to_owned()));
        }
        let eligible: std::sync::Arc<[Node]> = nodes::eligible(&snapshot.nodes, config).0.into();
        let mut exposed = ExposedMap::new();
        for _ in 0..r.count(32)? {
            let key = r.key()?;
            let mut ports = Vec::new();
            for _ in 0..r.count(5)? {
                let protocol = match r.u8()? {
                    0 => Protocol::Tcp,
                    1 => Protocol::Udp,
                    _ => return Err("a bad protocol".into()),
                };
                let port = u16::from_le_bytes(r.array()?);
                let node_port = u16::from_le_bytes(r.array()?);
                ports.push(ServicePort {
                    protocol,
                    port,
                    node_port,
                });
            }
            let mut both = [HostAddresses::new(), HostAddresses::new()];
            for addresses in &mut both {
                for _ in 0..r.count(8)? {
                    let host = LbHostName::new(r.str()?).map_err(|e| e.to_string())?;
                    addresses.insert(host, r.ip()?);
                }
            }
            let [addresses, addresses_v6] = both;
            let mut positions = Vec::new();
            for _ in 0..r.count(4)? {
                positions.push(u32::from_le_bytes(r.array()?));
            }
            let nodes = nodes::NodeSet::at_positions(&eligible, &positions).ok_or("a node position out of range")?;
            let pods = match r.u8()? {
                0 => None,
                1 => {
                    let mut pods = Vec::new();
                    for _ in 0..r.count(7)? {
                        let ip = r.ip()?;
                        pods.push(SocketAddr::new(ip, u16::from_le_bytes(r.array()?)));
                    }
                    Some(pods.into())
                }
                _ => return Err("a bad pods flag".into()),
            };
            let mut dns_names = Vec::new();
            for _ in 0..r.count(4)? {
                dns_names.push(r.str()?.to_owned());
            }
            let format = u32::from_le_bytes(r.array()?);
            let summary = ExposedSummary {
                ports,
                addresses,
                addresses_v6,
                nodes,
                pods,
                dns_names,
                format,
            };
            exposed.insert(key, summary);
        }
        let mut keys = [BTreeSet::new(), BTreeSet::new()];
        for set in &mut keys {
            for _ in 0..r.count(4)? {
                set.insert(r.key()?);
            }
        }
        let [kept, unreadable] = keys;
        let mut context_problems = Vec::new();
        for _ in 0..r.count(13)? {
            let severity = match r.u8()? {
                0 => Severity::Error,
                1 => Severity::Warning,
                _ => return Err("a bad severity".into()),
            };
            let (object, field, message) = (r.subject()?, r.str()?.to_owned(), r.str()?.to_owned());
            context_problems.push(Problem {
                severity,
                object,
                field,
                message,
            });
        }
        if r.at != bytes_len {
            return Err("bytes after the end".into());
        }
        Ok(Settled {
            config: config.clone(),
            context,
            slices,
            inputs,
            troubled,
            generation,
            used: Used::default(),
            ledger: Ledger::empty(),
            exposed,
            kept,
            unreadable,
            context_problems,
            node_states: nodes::states(&snapshot.nodes, config),
            eligible,
            ready: nodes::ready_nodes_by_service(&snapshot.endpoint_slices),
            listeners: BTreeMap::new(),
            custom_names: HashSet::default(),
            next_expiry,
        })
    }
}

fn checksum(bytes: &[u8]) -> u64 {
    use std::hash::BuildHasher as _;
    foldhash::quality::FixedState::with_seed(0x7365_7474_6c65_6400).hash_one(bytes)
}

/// `flipbit.yaml` as decided on, by its serialized form (the memory holds the parsed config).
fn config_hash(config: &Config) -> u64 {
    hash_of(&serde_norway::to_string(config).unwrap_or_default())
}

fn put_u64(w: &mut Vec<u8>, n: u64) {
    w.extend_from_slice(&n.to_le_bytes());
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    put_u64(w, s.len() as u64);
    w.extend_from_slice(s.as_bytes());
}

fn put_key(w: &mut Vec<u8>, key: &ServiceKey) {
    put_str(w, key.namespace.as_str());
    put_str(w, key.name.as_str());
}

/// A problem's object: its kind and at most two texts (the second empty when it has one).
fn put_subject(w: &mut Vec<u8>, subject: &Subject) {
    let (tag, first, second) = match subject {
        Subject::Service(key) => (0, key.namespace.as_str(), key.name.as_str()),
        Subject::UnkeyedService { namespace, name } => (1, namespace.as_str(), name.as_str()),
        Subject::Node(name) => (2, name.as_str(), ""),
        Subject::EndpointSlice { namespace, name } => (3, namespace.as_str(), name.as_str()),
        Subject::LbHost(host) => (4, host.as_str(), ""),
    };
    w.push(tag);
    put_str(w, first);
    put_str(w, second);
}

fn put_ip(w: &mut Vec<u8>, ip: &IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            w.push(4);
            w.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            w.push(6);
            w.extend_from_slice(&v6.octets());
        }
    }
}

fn put_timestamp(w: &mut Vec<u8>, at: Option<Timestamp>) {
    match at {
        None => w.push(0),
        Some(at) => {
            w.push(1);
            w.extend_from_slice(&at.as_nanosecond().to_le_bytes());
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.bytes.len());
        let end = end.ok_or_else(|| format!("truncated at byte {}", self.at))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        self.take(N)?.try_into().map_err(|_| "short read".to_owned())
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A count of records of at least `min` bytes each, refused when the bytes left cannot hold
    /// them (so a damaged count never reserves or loops for long).
    fn count(&mut self, min: usize) -> Result<usize, String> {
        let n = usize::try_from(self.u64()?).map_err(|_| "a count out of range")?;
        let left = self.bytes.len() - self.at;
        if n.checked_mul(min.max(1)).is_none_or(|need| need > left) {
            return Err(format!("a count of {n} at byte {} with {left} bytes left", self.at));
        }
        Ok(n)
    }

    fn str(&mut self) -> Result<&'a str, String> {
        let n = self.count(1)?;
        std::str::from_utf8(self.take(n)?).map_err(|_| "text that is not UTF-8".to_owned())
    }

    fn key(&mut self) -> Result<ServiceKey, String> {
        let (ns, name) = (self.str()?, self.str()?);
        ServiceKey::new(ns, name).map_err(|e| e.to_string())
    }

    fn subject(&mut self) -> Result<Subject, String> {
        let (tag, first, second) = (self.u8()?, self.str()?, self.str()?);
        let (first, second) = (first.to_owned(), second.to_owned());
        Ok(match tag {
            0 => Subject::Service(ServiceKey::new(&first, &second).map_err(|e| e.to_string())?),
            1 => Subject::UnkeyedService {
                namespace: first,
                name: second,
            },
            2 => Subject::Node(first),
            3 => Subject::EndpointSlice {
                namespace: first,
                name: second,
            },
            4 => Subject::LbHost(LbHostName::new(&first).map_err(|e| e.to_string())?),
            _ => return Err("a bad problem object".into()),
        })
    }

    fn ip(&mut self) -> Result<IpAddr, String> {
        match self.u8()? {
            4 => Ok(IpAddr::from(self.array::<4>()?)),
            6 => Ok(IpAddr::from(self.array::<16>()?)),
            _ => Err("a bad address".into()),
        }
    }

    fn timestamp(&mut self) -> Result<Option<Timestamp>, String> {
        match self.u8()? {
            0 => Ok(None),
            1 => {
                let nanos = i128::from_le_bytes(self.array()?);
                Timestamp::from_nanosecond(nanos).map(Some).map_err(|e| e.to_string())
            }
            _ => Err("a bad timestamp flag".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_problem_object_reads_back_as_written() {
        let subjects = [
            Subject::Service(ServiceKey::new("team", "web").expect("key")),
            Subject::UnkeyedService {
                namespace: "Team".into(),
                name: "web site".into(),
            },
            Subject::Node("worker-1".into()),
            Subject::EndpointSlice {
                namespace: "team".into(),
                name: "web-abc12".into(),
            },
            Subject::LbHost(LbHostName::new("lb-1").expect("host")),
        ];
        let mut w = Vec::new();
        for s in &subjects {
            put_subject(&mut w, s);
        }
        let mut r = Reader { bytes: &w, at: 0 };
        for s in &subjects {
            assert_eq!(&r.subject().expect("a subject"), s);
        }
        assert_eq!(r.at, w.len());
    }
}
