//! One address per LB host, the shape of a ledger entry's addresses and of an exposed Service's.
//! A `BTreeMap` of three hosts is a 380-byte tree node, and a Service held two (its ledger entry's
//! and its summary's): 38 MB at 50,000 Services. This is a sorted slice behind an `Arc`, 136 bytes
//! for three hosts, and a summary shares its ledger entry's: copies cost a reference count.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::names::LbHostName;

/// Addresses by LB host, sorted by host, at most one per host. Empty holds no allocation.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostAddresses(Option<Arc<[(LbHostName, IpAddr)]>>);

/// `(host, address)` pairs in host order.
pub type Iter<'a> = std::iter::Map<
    std::slice::Iter<'a, (LbHostName, IpAddr)>,
    fn(&'a (LbHostName, IpAddr)) -> (&'a LbHostName, &'a IpAddr),
>;

impl HostAddresses {
    pub fn new() -> Self {
        Self(None)
    }

    /// From pairs already sorted by host, without repeats.
    fn from_sorted(pairs: Vec<(LbHostName, IpAddr)>) -> Self {
        if pairs.is_empty() {
            Self(None)
        } else {
            Self(Some(pairs.into()))
        }
    }

    fn pairs(&self) -> &[(LbHostName, IpAddr)] {
        self.0.as_deref().unwrap_or(&[])
    }

    fn position(&self, host: &LbHostName) -> Result<usize, usize> {
        self.pairs().binary_search_by(|(h, _)| h.cmp(host))
    }

    pub fn get(&self, host: &LbHostName) -> Option<&IpAddr> {
        self.position(host).ok().map(|i| &self.pairs()[i].1)
    }

    pub fn contains_key(&self, host: &LbHostName) -> bool {
        self.position(host).is_ok()
    }

    /// Sets `host`'s address; returns the one it replaced.
    pub fn insert(&mut self, host: LbHostName, ip: IpAddr) -> Option<IpAddr> {
        let mut pairs = self.pairs().to_vec();
        let old = match self.position(&host) {
            Ok(i) if pairs[i].1 == ip => return Some(ip),
            Ok(i) => Some(std::mem::replace(&mut pairs[i].1, ip)),
            Err(i) => {
                pairs.insert(i, (host, ip));
                None
            }
        };
        *self = Self::from_sorted(pairs);
        old
    }

    /// Removes `host`'s address and returns it.
    pub fn remove(&mut self, host: &LbHostName) -> Option<IpAddr> {
        let i = self.position(host).ok()?;
        let mut pairs = self.pairs().to_vec();
        let (_, ip) = pairs.remove(i);
        *self = Self::from_sorted(pairs);
        Some(ip)
    }

    /// Keeps the hosts `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&LbHostName, &IpAddr) -> bool) {
        if self.iter().all(|(h, ip)| keep(h, ip)) {
            return;
        }
        let pairs = self.pairs().iter().filter(|(h, ip)| keep(h, ip)).cloned().collect();
        *self = Self::from_sorted(pairs);
    }

    pub fn iter(&self) -> Iter<'_> {
        self.pairs().iter().map(|(h, ip)| (h, ip))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &LbHostName> + Clone {
        self.pairs().iter().map(|(h, _)| h)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &IpAddr> + Clone {
        self.pairs().iter().map(|(_, ip)| ip)
    }

    pub fn len(&self) -> usize {
        self.pairs().len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

impl FromIterator<(LbHostName, IpAddr)> for HostAddresses {
    /// A later address for the same host wins, as in a map.
    fn from_iter<I: IntoIterator<Item = (LbHostName, IpAddr)>>(iter: I) -> Self {
        iter.into_iter().collect::<BTreeMap<_, _>>().into()
    }
}

impl From<BTreeMap<LbHostName, IpAddr>> for HostAddresses {
    fn from(map: BTreeMap<LbHostName, IpAddr>) -> Self {
        Self::from_sorted(map.into_iter().collect())
    }
}

impl<const N: usize> From<[(LbHostName, IpAddr); N]> for HostAddresses {
    fn from(pairs: [(LbHostName, IpAddr); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl<'a> IntoIterator for &'a HostAddresses {
    type Item = (&'a LbHostName, &'a IpAddr);
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl fmt::Debug for HostAddresses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Written and read as a map, `lb-a: 127.1.1.1`, as the ledger always had it.
impl Serialize for HostAddresses {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for HostAddresses {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::<LbHostName, IpAddr>::deserialize(d).map(Self::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str) -> LbHostName {
        name.parse().expect("a valid host name")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn behaves_as_a_sorted_map() {
        let mut a = HostAddresses::new();
        assert!(a.is_empty());
        assert_eq!(a.insert(host("lb-c"), ip("127.1.1.3")), None);
        assert_eq!(a.insert(host("lb-a"), ip("127.1.1.1")), None);
        assert_eq!(a.insert(host("lb-b"), ip("127.1.1.9")), None);
        assert_eq!(a.insert(host("lb-b"), ip("127.1.1.2")), Some(ip("127.1.1.9")));
        let hosts: Vec<&str> = a.keys().map(|h| h.as_str()).collect();
        assert_eq!(hosts, ["lb-a", "lb-b", "lb-c"]);
        assert_eq!(a.get(&host("lb-b")), Some(&ip("127.1.1.2")));
        assert_eq!(a.get(&host("lb-d")), None);
        assert_eq!(a.remove(&host("lb-a")), Some(ip("127.1.1.1")));
        assert_eq!(a.remove(&host("lb-a")), None);
        a.retain(|h, _| h.as_str() != "lb-c");
        assert_eq!(format!("{a:?}"), r#"{LbHostName("lb-b"): 127.1.1.2}"#);
        a.remove(&host("lb-b"));
        assert!(a.is_empty());
        assert_eq!(a, HostAddresses::default());
    }

    #[test]
    fn equals_and_orders_by_content_and_shares_on_clone() {
        let a: HostAddresses = [(host("lb-b"), ip("127.1.1.2")), (host("lb-a"), ip("127.1.1.1"))]
            .into_iter()
            .collect();
        let b: HostAddresses =
            BTreeMap::from([(host("lb-a"), ip("127.1.1.1")), (host("lb-b"), ip("127.1.1.2"))]).into();
        assert_eq!(a, b);
        let c = a.clone();
        assert!(matches!((&a.0, &c.0), (Some(x), Some(y)) if Arc::ptr_eq(x, y)));
        let mut d = a.clone();
        d.insert(host("lb-a"), ip("127.1.1.5"));
        assert!(a < d);
        assert_eq!(a.get(&host("lb-a")), Some(&ip("127.1.1.1")));
    }

    #[test]
    fn reads_and_writes_the_ledger_map() {
        let a: HostAddresses = serde_norway::from_str("lb-b: 127.1.1.2\nlb-a: 127.1.1.1\n").expect("a map");
        assert_eq!(a.keys().map(|h| h.as_str()).collect::<Vec<_>>(), ["lb-a", "lb-b"]);
        assert_eq!(
            serde_norway::to_string(&a).expect("serialises"),
            "lb-a: 127.1.1.1\nlb-b: 127.1.1.2\n"
        );
        assert!(serde_norway::from_str::<HostAddresses>("lb-a: not-an-address\n").is_err());
        assert!(serde_norway::from_str::<HostAddresses>("LB_A: 127.1.1.1\n").is_err());
    }
}
