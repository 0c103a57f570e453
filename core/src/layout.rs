//! Where things live in the state repo (DESIGN.md §3). Paths are built only from validated names.

use crate::names::{LbHostName, ServiceKey};

pub const CONFIG_FILE: &str = "flipbit.yaml";
pub const LEDGER_FILE: &str = "ledger.yaml";
/// Directory of the per-host nginx snippets.
pub const LB_DIR: &str = "lb";
/// Directory of the per-Service zone fragments.
pub const DNS_DIR: &str = "dns";

/// `lb/<host>/<namespace>/<service>.conf`
pub fn lb_service_path(host: &LbHostName, key: &ServiceKey) -> String {
    format!("{LB_DIR}/{host}/{}/{}.conf", key.namespace, key.name)
}

/// `lb/<host>`: the subtree an applier on that host reads.
pub fn lb_host_dir(host: &LbHostName) -> String {
    format!("{LB_DIR}/{host}")
}

/// The host and Service a generated path belongs to; `None` for anything else.
pub fn parse_lb_path(path: &str) -> Option<(LbHostName, ServiceKey)> {
    let rest = path.strip_prefix(LB_DIR)?.strip_prefix('/')?;
    let mut parts = rest.split('/');
    let (host, ns, file) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let name = file.strip_suffix(".conf")?;
    Some((host.parse().ok()?, ServiceKey::new(ns, name).ok()?))
}

/// `dns/<zone>/<namespace>/<service>.zone`
pub fn dns_service_path(zone: &str, key: &ServiceKey) -> String {
    format!("{DNS_DIR}/{zone}/{}/{}.zone", key.namespace, key.name)
}

/// The zone and Service a zone fragment path belongs to; `None` for anything else.
pub fn parse_dns_path(path: &str) -> Option<(String, ServiceKey)> {
    let rest = path.strip_prefix(DNS_DIR)?.strip_prefix('/')?;
    let mut parts = rest.split('/');
    let (zone, ns, file) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || crate::dns::check_dns_name(zone).is_err() {
        return None;
    }
    let name = file.strip_suffix(".zone")?;
    Some((zone.to_owned(), ServiceKey::new(ns, name).ok()?))
}

/// The Service a generated path (nginx snippet or zone fragment) belongs to.
pub fn service_of(path: &str) -> Option<ServiceKey> {
    parse_lb_path(path)
        .map(|(_, k)| k)
        .or_else(|| parse_dns_path(path).map(|(_, k)| k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip() {
        let host: LbHostName = "lb-1".parse().unwrap();
        let key: ServiceKey = "blog/frontend".parse().unwrap();
        let path = lb_service_path(&host, &key);
        assert_eq!(path, "lb/lb-1/blog/frontend.conf");
        assert_eq!(parse_lb_path(&path), Some((host, key.clone())));
        assert_eq!(parse_lb_path("lb/lb-1/blog/frontend.txt"), None);
        assert_eq!(parse_lb_path("lb/lb-1/x/y/z.conf"), None);
        assert_eq!(parse_lb_path("dns/lb-1/blog/frontend.conf"), None);
        let dns = dns_service_path("k8s.example.test", &key);
        assert_eq!(dns, "dns/k8s.example.test/blog/frontend.zone");
        assert_eq!(parse_dns_path(&dns), Some(("k8s.example.test".to_owned(), key.clone())));
        assert_eq!(service_of(&dns), Some(key));
        assert_eq!(parse_dns_path("dns/Bad_Zone/blog/frontend.zone"), None);
    }
}
