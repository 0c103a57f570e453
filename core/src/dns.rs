//! DNS names as Flipbit accepts them: lowercase LDH labels, so they are safe in zone text; and
//! the records of a zone fragment.

pub mod fragment;

use std::net::IpAddr;

/// One A or AAAA record (type follows the address family). `name` is an absolute name without
/// the trailing dot, e.g. "frontend.blog.k8s.example.test".
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressRecord {
    pub name: String,
    pub ttl: u32,
    pub addr: IpAddr,
}

/// Checks a DNS name (no trailing dot): dot-separated RFC 1123 labels, at most 253 characters.
pub fn check_dns_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err(format!("{name:?} is not a DNS name: it must have 1 to 253 characters"));
    }
    for label in name.split('.') {
        crate::names::check_dns_label("DNS label", label).map_err(|e| format!("{name:?} is not a DNS name: {e}"))?;
    }
    Ok(())
}

/// True when `name` is `zone` itself or a name under it (both without a trailing dot).
pub fn in_zone(name: &str, zone: &str) -> bool {
    name.strip_suffix(zone)
        .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
}

/// `<service>.<namespace>.<zone>`: the name a Service gets without `flipbit.io/hostname`. It is
/// always that Service's own: no other Service can claim it (see `decide`).
pub fn default_name(key: &crate::names::ServiceKey, zone: &str) -> String {
    format!("{}.{}.{zone}", key.name, key.namespace)
}
