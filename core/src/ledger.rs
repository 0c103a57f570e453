//! `ledger.yaml`: who holds which address on which LB host. It is the truth the generator rebuilds
//! from on every start, so it is strict to load (a hand-broken ledger is an error, never silently
//! "repaired" by reallocating) and byte-stable to write (sorted maps, no incidental fields).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::exposure::{Protocol, ServicePort};
use crate::host_addresses::HostAddresses;
use crate::names::{LbHostName, ServiceKey};

pub const VERSION: u32 = 1;

const HEADER: &str = "# Flipbit address ledger: which Service holds which address on which LB host.\n\
# Written by flipbit-generator; the generator rebuilds its state from this file.\n";

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger.yaml: {0}")]
    Syntax(String),
    #[error("ledger.yaml: {0}")]
    Invalid(String),
}

/// The entries by Service: a persistent map, so a decision's copy of a ledger of 50,000 entries
/// costs nothing until an entry changes, and then only that entry's path.
pub type Services = imbl::OrdMap<ServiceKey, Entry>;

#[derive(Debug, Clone, PartialEq, Eq, Default, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ledger {
    pub version: u32,
    #[serde(default)]
    pub services: Services,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Entry {
    /// One address per LB host (IPv4, or IPv6 on hosts with only IPv6 pools).
    pub addresses: HostAddresses,
    /// Dual-stack Services: their IPv6 address per LB host that has IPv6 pools.
    #[serde(default, rename = "addressesV6", skip_serializing_if = "HostAddresses::is_empty")]
    pub addresses_v6: HostAddresses,
    /// The ports served on those addresses, for review (and for sharing checks).
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// Set when the Service stopped being exposed: its addresses are held until this time plus
    /// `releaseGraceSeconds`, and come back to it if it returns before then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<Timestamp>,
    /// `flipbit.io/shared-ip-key`: entries of one namespace with the same key may hold the same
    /// addresses (their ports never clash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_key: Option<String>,
}

impl Entry {
    /// The group whose members may share this entry's addresses.
    pub fn share_group(&self, key: &ServiceKey) -> Option<(String, String)> {
        self.shared_key.as_ref().map(|k| (key.namespace.to_string(), k.clone()))
    }
}

/// `TCP/80`: a port as the ledger writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortSpec {
    pub protocol: Protocol,
    pub port: u16,
}

impl From<&ServicePort> for PortSpec {
    fn from(p: &ServicePort) -> Self {
        Self {
            protocol: p.protocol,
            port: p.port,
        }
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.protocol, self.port)
    }
}

impl Serialize for PortSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        let bad = || serde::de::Error::custom(format!("{raw:?} is not a port such as TCP/80"));
        let (proto, port) = raw.split_once('/').ok_or_else(bad)?;
        let protocol = match proto {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            _ => return Err(bad()),
        };
        let port: u16 = port.parse().map_err(|_| bad())?;
        Ok(Self { protocol, port })
    }
}

impl Ledger {
    pub fn empty() -> Self {
        Self {
            version: VERSION,
            services: Services::new(),
        }
    }

    pub fn parse(text: &str) -> Result<Self, LedgerError> {
        let ledger: Ledger = serde_norway::from_str(text).map_err(|e| LedgerError::Syntax(e.to_string()))?;
        if ledger.version != VERSION {
            return Err(LedgerError::Invalid(format!(
                "version: {} is not supported (this generator writes version {VERSION})",
                ledger.version
            )));
        }
        type Holder<'a> = (&'a ServiceKey, Option<(String, String)>);
        let mut holders: BTreeMap<(&LbHostName, IpAddr), Holder<'_>> = BTreeMap::new();
        for (key, entry) in &ledger.services {
            let group = entry.share_group(key);
            for (host, ip) in entry.addresses.iter().chain(&entry.addresses_v6) {
                if let Some((other, other_group)) = holders.insert((host, *ip), (key, group.clone()))
                    && (group.is_none() || group != other_group)
                {
                    return Err(LedgerError::Invalid(format!(
                        "services.{key}.addresses.{host}: {ip} is also held by {other}"
                    )));
                }
            }
        }
        Ok(ledger)
    }

    /// Deterministic text: same ledger, same bytes.
    pub fn to_yaml(&self) -> String {
        // Serialising plain maps, strings and numbers cannot fail.
        let body = serde_norway::to_string(self).unwrap_or_default();
        format!("{HEADER}{body}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Ledger {
        let mut l = Ledger::empty();
        l.services.insert(
            "blog/frontend".parse().unwrap(),
            Entry {
                addresses: HostAddresses::from([
                    ("lb-2".parse().unwrap(), "127.1.5.1".parse().unwrap()),
                    ("lb-1".parse().unwrap(), "127.1.1.1".parse().unwrap()),
                ]),
                ports: vec![PortSpec {
                    protocol: Protocol::Tcp,
                    port: 80,
                }],
                released_at: None,
                shared_key: None,
                addresses_v6: HostAddresses::new(),
            },
        );
        l
    }

    #[test]
    fn round_trips_byte_for_byte() {
        let text = sample().to_yaml();
        let back = Ledger::parse(&text).unwrap();
        assert_eq!(back, sample());
        assert_eq!(back.to_yaml(), text);
        assert!(text.find("lb-1").unwrap() < text.find("lb-2").unwrap(), "{text}");
        assert!(text.contains("- TCP/80"), "{text}");
    }

    #[test]
    fn a_doubly_held_address_is_refused_not_repaired() {
        let text = sample().to_yaml() + "  blog/other:\n    addresses:\n      lb-1: 127.1.1.1\n";
        let err = Ledger::parse(&text).unwrap_err().to_string();
        assert!(err.contains("127.1.1.1 is also held by blog/frontend"), "{err}");
    }

    #[test]
    fn broken_fields_are_named() {
        let err = Ledger::parse("version: 1\nservices:\n  blog/x:\n    addresses:\n      lb-1: nope\n").unwrap_err();
        assert!(err.to_string().contains("line"), "{err}");
        let err = Ledger::parse("version: 7\n").unwrap_err();
        assert!(err.to_string().contains("version: 7"), "{err}");
        let err = Ledger::parse("version: 1\nservices:\n  Blog/x: {addresses: {}}\n").unwrap_err();
        assert!(err.to_string().contains("Blog"), "{err}");
    }
}
