//! Where things live in the state repo (docs/design.md §3): the repo paths of every generated file.
//! Paths are built only from validated names. (Not to be confused with `config::Layout`, the nginx
//! layout of an LB host.)

use crate::names::{LbHostName, ServiceKey};

pub const CONFIG_FILE: &str = "flipbit.yaml";
pub const LEDGER_FILE: &str = "ledger.yaml";
/// Directory of the per-host nginx snippets.
pub const LB_DIR: &str = "lb";
/// Directory of the per-Service zone fragments.
pub const DNS_DIR: &str = "dns";
/// Directory, inside `lb/<host>/`, of a shared-listeners host's own files (listeners, nodes). A
/// namespace name cannot contain `_`, so no Service path can ever land in it.
pub const HOST_FILES_DIR: &str = "_flipbit";

/// `lb/<host>/<namespace>/<service>.conf`
pub fn lb_service_path(host: &LbHostName, key: &ServiceKey) -> String {
    format!("{LB_DIR}/{host}/{}/{}.conf", key.namespace, key.name)
}

/// Every path a Service's files can have under `config`: its snippet, map entries and HAProxy
/// file on each LB host, and its zone fragment.
pub fn service_paths(config: &crate::config::Config, key: &ServiceKey) -> Vec<String> {
    let mut paths: Vec<String> = config
        .lb_hosts
        .iter()
        .flat_map(|h| {
            [
                lb_service_path(&h.name, key),
                lb_service_map_path(&h.name, key),
                lb_service_cfg_path(&h.name, key),
            ]
        })
        .collect();
    paths.push(dns_service_path(&config.zone, key));
    paths
}

/// `lb/<host>/<namespace>/<service>.cfg`: a Service's `frontend`s and `backend`s on a HAProxy
/// host. Its own extension, so neither flavour ever loads the other's files.
pub fn lb_service_cfg_path(host: &LbHostName, key: &ServiceKey) -> String {
    format!("{LB_DIR}/{host}/{}/{}.cfg", key.namespace, key.name)
}

/// `lb/<host>/<namespace>/<service>.map`: a Service's map entries on a shared-listeners host. Not
/// `.conf`, so nginx's `*/*.conf` include skips it; the host's map block includes it instead.
pub fn lb_service_map_path(host: &LbHostName, key: &ServiceKey) -> String {
    format!("{LB_DIR}/{host}/{}/{}.map", key.namespace, key.name)
}

/// `lb/<host>/_flipbit/<name>.conf`: a file of the host, not of one Service. `name` is one of
/// the fixed names the renderer uses.
pub fn lb_host_file_path(host: &LbHostName, name: &str) -> String {
    format!("{LB_DIR}/{host}/{HOST_FILES_DIR}/{name}.conf")
}

/// The host and file name of a host-level file (`lb/<host>/_flipbit/<name>.conf`, `name` a DNS
/// label); `None` for anything else.
pub fn parse_lb_host_path(path: &str) -> Option<(LbHostName, String)> {
    let rest = path.strip_prefix(LB_DIR)?.strip_prefix('/')?;
    let mut parts = rest.split('/');
    let (host, dir, file) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || dir != HOST_FILES_DIR {
        return None;
    }
    let name = file.strip_suffix(".conf")?;
    crate::names::check_dns_label("host file name", name).ok()?;
    Some((host.parse().ok()?, name.to_owned()))
}

/// True for a release-relative path of a host-level file (`_flipbit/<name>.conf`). Its text names
/// the release it sits in (see `render::map::bind_release`), so the applier writes it fresh into
/// every release and never hard-links it from another.
pub fn binds_release(rel: &str) -> bool {
    rel.starts_with(HOST_FILES_DIR) && rel.as_bytes().get(HOST_FILES_DIR.len()) == Some(&b'/')
}

/// `lb/<host>`: the subtree an applier on that host reads.
pub fn lb_host_dir(host: &LbHostName) -> String {
    format!("{LB_DIR}/{host}")
}

/// The host and Service a generated per-Service path (`.conf` snippet, on a shared-listeners
/// host `.map` entries, on a HAProxy host `.cfg`) belongs to; `None` for anything else.
pub fn parse_lb_path(path: &str) -> Option<(LbHostName, ServiceKey)> {
    let rest = path.strip_prefix(LB_DIR)?.strip_prefix('/')?;
    let mut parts = rest.split('/');
    let (host, ns, file) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let name = [".conf", ".map", ".cfg"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))?;
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
        assert_eq!(parse_lb_path(&path), Some((host.clone(), key.clone())));
        assert_eq!(parse_lb_path("lb/lb-1/blog/frontend.txt"), None);
        assert_eq!(parse_lb_path("lb/lb-1/x/y/z.conf"), None);
        assert_eq!(parse_lb_path("dns/lb-1/blog/frontend.conf"), None);
        let dns = dns_service_path("k8s.example.test", &key);
        assert_eq!(dns, "dns/k8s.example.test/blog/frontend.zone");
        assert_eq!(parse_dns_path(&dns), Some(("k8s.example.test".to_owned(), key.clone())));
        assert_eq!(service_of(&dns), Some(key.clone()));
        assert_eq!(parse_dns_path("dns/Bad_Zone/blog/frontend.zone"), None);
        let cfg = lb_service_cfg_path(&host, &key);
        assert_eq!(cfg, "lb/lb-1/blog/frontend.cfg");
        assert_eq!(parse_lb_path(&cfg), Some((host, key)));
    }

    #[test]
    fn shared_listener_paths_never_collide_with_service_paths() {
        let host: LbHostName = "lb-1".parse().unwrap();
        let key: ServiceKey = "blog/frontend".parse().unwrap();
        let map = lb_service_map_path(&host, &key);
        assert_eq!(map, "lb/lb-1/blog/frontend.map");
        assert_eq!(parse_lb_path(&map), Some((host.clone(), key.clone())));
        assert_eq!(service_of(&map), Some(key));
        let listeners = lb_host_file_path(&host, "listeners");
        assert_eq!(listeners, "lb/lb-1/_flipbit/listeners.conf");
        assert_eq!(parse_lb_path(&listeners), None, "_flipbit is not a namespace");
        assert_eq!(service_of(&listeners), None);
        assert_eq!(parse_lb_host_path(&listeners), Some((host, "listeners".to_owned())));
        for other in [
            "lb/lb-1/_flipbit/x.map",
            "lb/lb-1/_flipbit/a/b.conf",
            "lb/lb-1/_other/x.conf",
            "lb/lb-1/blog/frontend.conf",
            "lb/lb-1/_flipbit/X_Y.conf",
        ] {
            assert_eq!(parse_lb_host_path(other), None, "{other}");
        }
        assert!(binds_release("_flipbit/listeners.conf"));
        assert!(!binds_release("_flipbitx/listeners.conf"));
        assert!(!binds_release("blog/frontend.conf"));
    }
}
