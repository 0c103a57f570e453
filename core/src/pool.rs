//! Address pools: a CIDR (`127.1.1.0/24`) or an inclusive range (`127.1.1.10-127.1.1.20`),
//! optionally admitting only some Services (the object form, see [`admission`]).
//! Addresses are handled as integers so v4 and v6 share one walk; the lowest free address is the
//! next one at or after a cursor.

pub mod admission;
pub mod selector;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use self::admission::Admission;
use self::selector::LabelSelector;
use crate::names::Namespace;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a pool: {reason}")]
pub struct PoolError {
    pub text: String,
    pub reason: String,
}

/// The most addresses a pool may hold unless its host sets `allowLargePools` (65,536: a /16 of
/// IPv4, a /112 of IPv6). Size costs no time: the allocator walks a pool from its start past the
/// addresses in use and stops at the first free one, so a decision's walk is bounded by the
/// ledger, never by the pool. The limit is against mistakes: every pool address is one the host
/// claims as its own (nginx binds it, the applier publishes and deletes DNS records for it), a
/// host serves at most some 50,000 Services (the scale Flipbit is built for), and a larger pool is
/// most likely a prefix typed short (`/8` for `/24`, `0.0.0.0/0`, an IPv6 `/64` copied from the
/// host's own prefix), which would hand out addresses the host does not have.
pub const MAX_POOL_ADDRESSES: u128 = 1 << 16;

/// Address blocks no host can serve as a load-balancer address, and what they are. Loopback is
/// not among them: tests and the runnable example serve on 127.0.0.0/8.
const UNSERVABLE: &[(&str, &str, &str)] = &[
    ("0.0.0.0", "0.0.0.0", "the unspecified address 0.0.0.0"),
    (
        "169.254.0.0",
        "169.254.255.255",
        "link-local addresses (169.254.0.0/16)",
    ),
    ("224.0.0.0", "239.255.255.255", "multicast addresses (224.0.0.0/4)"),
    (
        "255.255.255.255",
        "255.255.255.255",
        "the broadcast address 255.255.255.255",
    ),
    ("::", "::", "the unspecified address ::"),
    (
        "fe80::",
        "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "link-local addresses (fe80::/10)",
    ),
    (
        "ff00::",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "multicast addresses (ff00::/8)",
    ),
];

/// A contiguous block of assignable addresses of one family, and which Services may take them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    text: String,
    first: u128,
    last: u128,
    v6: bool,
    admission: Admission,
}

fn to_int(ip: IpAddr) -> (u128, bool) {
    match ip {
        IpAddr::V4(a) => (u32::from(a) as u128, false),
        IpAddr::V6(a) => (u128::from(a), true),
    }
}

fn from_int(value: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(value.into())
    } else {
        // A v4 pool's bounds come from v4 addresses, so the value fits in 32 bits.
        IpAddr::V4((value as u32).into())
    }
}

impl Pool {
    pub fn parse(text: &str) -> Result<Self, PoolError> {
        let fail = |reason: String| PoolError {
            text: text.to_owned(),
            reason,
        };
        let trimmed = text.trim();
        if let Some((a, b)) = trimmed.split_once('-') {
            let a: IpAddr = a.trim().parse().map_err(|_| fail(format!("{a:?} is not an address")))?;
            let b: IpAddr = b.trim().parse().map_err(|_| fail(format!("{b:?} is not an address")))?;
            let (first, v6a) = to_int(a);
            let (last, v6b) = to_int(b);
            if v6a != v6b {
                return Err(fail("the range mixes IPv4 and IPv6".into()));
            }
            if first > last {
                return Err(fail("the range's first address is above its last".into()));
            }
            return Ok(Self {
                text: trimmed.to_owned(),
                first,
                last,
                v6: v6a,
                admission: Admission::default(),
            });
        }
        let net: IpNet = trimmed
            .parse()
            .map_err(|_| fail("expected a CIDR such as 127.1.1.0/24 or a range a-b".into()))?;
        if net.trunc() != net {
            return Err(fail(format!("host bits are set; did you mean {}?", net.trunc())));
        }
        let (mut first, v6) = to_int(net.network());
        let (mut last, _) = to_int(net.broadcast());
        // The network and broadcast addresses of a v4 subnet wider than /31 are not usable hosts,
        // nor is the subnet-router anycast address (the first) of a v6 subnet wider than /127.
        match net {
            IpNet::V4(v4) if v4.prefix_len() < 31 => {
                first += 1;
                last -= 1;
            }
            IpNet::V6(v6) if v6.prefix_len() < 127 => first += 1,
            _ => {}
        }
        Ok(Self {
            text: trimmed.to_owned(),
            first,
            last,
            v6,
            admission: Admission::default(),
        })
    }

    /// The same addresses, admitting only the Services `admission` admits.
    pub fn with_admission(self, admission: Admission) -> Self {
        Self { admission, ..self }
    }

    /// Which Services may take its addresses.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// True when a Service of `namespace` with `labels` may take its addresses.
    pub fn admits(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.admission.admits(namespace, labels)
    }

    /// True when it was written as a range `a-b` (else a CIDR).
    fn is_range(&self) -> bool {
        self.text.contains('-')
    }

    pub fn is_v6(&self) -> bool {
        self.v6
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (value, v6) = to_int(ip);
        v6 == self.v6 && (self.first..=self.last).contains(&value)
    }

    pub fn overlaps(&self, other: &Pool) -> bool {
        self.v6 == other.v6 && self.first <= other.last && other.first <= self.last
    }

    /// The lowest address of the pool at or after `from`, if any.
    pub fn first_at_or_after(&self, from: Option<IpAddr>) -> Option<IpAddr> {
        let start = match from {
            None => self.first,
            Some(ip) => {
                let (value, v6) = to_int(ip);
                if v6 != self.v6 {
                    return None;
                }
                value.max(self.first)
            }
        };
        (start <= self.last).then(|| from_int(start, self.v6))
    }

    /// The address after `ip` inside this pool.
    pub fn next_after(&self, ip: IpAddr) -> Option<IpAddr> {
        let (value, v6) = to_int(ip);
        if v6 != self.v6 || value >= self.last {
            return None;
        }
        let next = if value < self.first { self.first } else { value + 1 };
        Some(from_int(next, self.v6))
    }

    pub fn size(&self) -> u128 {
        self.last - self.first + 1
    }

    /// Why no host can serve this pool's addresses (it holds unspecified, link-local, multicast or
    /// broadcast ones: nginx cannot bind them, or clients cannot reach them through a router);
    /// `None` for a pool of ordinary addresses.
    pub fn unservable(&self) -> Option<String> {
        let held: Vec<&str> = UNSERVABLE
            .iter()
            .filter_map(|(first, last, what)| {
                let (first, v6) = to_int(first.parse().ok()?);
                let (last, _) = to_int(last.parse().ok()?);
                (v6 == self.v6 && first <= self.last && self.first <= last).then_some(*what)
            })
            .collect();
        if held.is_empty() {
            return None;
        }
        Some(format!(
            "it holds {}, which no host can serve to clients; list only addresses the LB host has",
            held.join(" and ")
        ))
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The string form for a pool that admits every Service, the object form otherwise.
impl Serialize for Pool {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.admission.is_open() {
            return s.serialize_str(&self.text);
        }
        let (cidr, range) = match self.is_range() {
            true => (None, Some(self.text.clone())),
            false => (Some(self.text.clone()), None),
        };
        PoolObject {
            cidr,
            range,
            namespaces: self.admission.namespaces.clone(),
            service_selector: self.admission.service_selector.clone(),
        }
        .serialize(s)
    }
}

/// A pool's object form: `{cidr: 127.1.2.0/24, namespaces: [team-a], serviceSelector: {...}}`,
/// or `range: a-b` instead of `cidr`. Strict like the rest of `flipbit.yaml`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PoolObject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cidr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    range: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    namespaces: Option<Vec<Namespace>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    service_selector: Option<LabelSelector>,
}

impl PoolObject {
    /// The pool it describes: exactly one of `cidr` (a CIDR) and `range` (a range `a-b`), each
    /// as its key says, so a typo cannot turn one into the other. (What `namespaces` and
    /// `serviceSelector` hold is checked with the rest of the config, which names the host.)
    fn into_pool(self) -> Result<Pool, String> {
        let pool = match (self.cidr, self.range) {
            (Some(_), Some(_)) => return Err("a pool has cidr or range, not both".into()),
            (None, None) => {
                return Err("a pool object needs cidr (127.1.2.0/24) or range (127.1.2.10-127.1.2.20)".into());
            }
            (Some(cidr), None) if cidr.contains('-') => {
                return Err(format!("cidr: {cidr:?} is a range; write it as range: {cidr}"));
            }
            (None, Some(range)) if !range.contains('-') => {
                return Err(format!(
                    "range: {range:?} is not a range a-b; write a CIDR as cidr: {range}"
                ));
            }
            (Some(text), None) | (None, Some(text)) => Pool::parse(&text).map_err(|e| e.to_string())?,
        };
        Ok(pool.with_admission(Admission {
            namespaces: self.namespaces,
            // An empty selector selects everything (as in Kubernetes): the same as none.
            service_selector: self.service_selector.filter(|s| !s.is_empty()),
        }))
    }
}

impl<'de> Deserialize<'de> for Pool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PoolVisitor)
    }
}

/// Reads either form: a string (`127.1.1.0/24`, `a-b`) or an object ([`PoolObject`]).
struct PoolVisitor;

impl<'de> Visitor<'de> for PoolVisitor {
    type Value = Pool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a CIDR, a range a-b, or a pool object {cidr or range, namespaces, serviceSelector}")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Pool, E> {
        Pool::parse(text).map_err(E::custom)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Pool, A::Error> {
        let object = PoolObject::deserialize(de::value::MapAccessDeserializer::new(map))?;
        object.into_pool().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v4_cidr_skips_network_and_broadcast() {
        let pool = Pool::parse("127.1.1.0/24").unwrap();
        assert_eq!(pool.first_at_or_after(None), Some(ip("127.1.1.1")));
        assert!(!pool.contains(ip("127.1.1.0")));
        assert!(!pool.contains(ip("127.1.1.255")));
        assert!(pool.contains(ip("127.1.1.254")));
        assert_eq!(pool.size(), 254);
        assert_eq!(pool.next_after(ip("127.1.1.254")), None);
    }

    #[test]
    fn slash_31_and_32_keep_every_address() {
        assert_eq!(Pool::parse("127.1.1.4/31").unwrap().size(), 2);
        assert_eq!(Pool::parse("127.1.1.4/32").unwrap().size(), 1);
    }

    #[test]
    fn ranges_are_taken_as_written() {
        let pool = Pool::parse("127.1.1.0-127.1.1.2").unwrap();
        assert_eq!(pool.size(), 3);
        assert!(pool.contains(ip("127.1.1.0")));
        assert!(Pool::parse("127.1.1.9-127.1.1.2").is_err());
        assert!(Pool::parse("127.1.1.1-::1").is_err());
    }

    #[test]
    fn malformed_pools_are_refused() {
        for bad in ["127.1.1.0", "127.1.1.1/24", "nonsense", "127.1.1.0/33"] {
            assert!(Pool::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn pools_a_host_cannot_serve_say_why() {
        for (pool, why) in [
            (
                "0.0.0.0/0",
                "link-local addresses (169.254.0.0/16) and multicast addresses (224.0.0.0/4)",
            ),
            ("0.0.0.0-0.0.0.3", "the unspecified address 0.0.0.0"),
            ("169.254.10.0/24", "link-local addresses (169.254.0.0/16)"),
            ("239.1.1.0/24", "multicast addresses (224.0.0.0/4)"),
            ("255.255.255.255/32", "the broadcast address 255.255.255.255"),
            ("::/127", "the unspecified address ::"),
            ("fe80::/120", "link-local addresses (fe80::/10)"),
            ("ff02::/120", "multicast addresses (ff00::/8)"),
        ] {
            let reason = Pool::parse(pool).unwrap().unservable();
            assert!(reason.as_deref().is_some_and(|r| r.contains(why)), "{pool}: {reason:?}");
        }
        for fine in [
            "127.1.1.0/24",
            "10.0.0.0/16",
            "fd00:1::/120",
            "::1/128",
            "223.255.255.0/24",
            "169.253.0.0/16",
        ] {
            assert_eq!(Pool::parse(fine).unwrap().unservable(), None, "{fine}");
        }
    }

    #[test]
    fn overlap_is_detected_per_family() {
        let a = Pool::parse("127.1.1.0/24").unwrap();
        assert!(a.overlaps(&Pool::parse("127.1.1.128/25").unwrap()));
        assert!(!a.overlaps(&Pool::parse("127.1.2.0/24").unwrap()));
        assert!(!a.overlaps(&Pool::parse("::1/128").unwrap()));
    }
}
