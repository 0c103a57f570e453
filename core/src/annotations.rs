//! The `flipbit.io/*` annotations a Service may carry, parsed into typed settings. A value that
//! does not parse is an error for that Service alone; nothing from an annotation reaches a config
//! file except through these types.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{Config, HostnamePolicy};
use crate::names::{LbHostName, ServiceKey};
use crate::problem::Problem;

pub const EXPOSE: &str = "flipbit.io/expose";
pub const LOAD_BALANCERS: &str = "flipbit.io/load-balancers";
pub const IPS: &str = "flipbit.io/ips";
pub const SHARED_IP_KEY: &str = "flipbit.io/shared-ip-key";
pub const HOSTNAME: &str = "flipbit.io/hostname";
pub const DNS_TTL: &str = "flipbit.io/dns-ttl";
pub const BALANCE: &str = "flipbit.io/balance";
pub const PROXY_PROTOCOL: &str = "flipbit.io/proxy-protocol";
pub const MAX_NODES: &str = "flipbit.io/max-nodes";

/// Annotations this version reads.
const KNOWN: &[&str] = &[
    crate::traffic::BACKENDS,
    crate::traffic::CONNECT_TIMEOUT,
    crate::traffic::IDLE_TIMEOUT,
    crate::traffic::UDP_RESPONSES,
    EXPOSE,
    LOAD_BALANCERS,
    IPS,
    SHARED_IP_KEY,
    HOSTNAME,
    DNS_TTL,
    BALANCE,
    PROXY_PROTOCOL,
    MAX_NODES,
];
/// Annotations whose behaviour is not built yet: refusing them is better than ignoring a request.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastConn,
    /// Consistent hashing of the client address.
    Hash,
}

/// Per-Service settings from annotations.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Settings {
    pub balance: Balance,
    pub proxy_protocol: bool,
    pub max_nodes: Option<usize>,
    /// `None`: every LB host in `flipbit.yaml`.
    pub lb_hosts: Option<BTreeSet<LbHostName>>,
    /// `flipbit.io/shared-ip-key`: Services of one namespace with the same key share addresses.
    pub shared_key: Option<String>,
    /// `flipbit.io/ips`: a requested address per LB host (the host is the one whose pools hold it).
    pub requested: BTreeMap<LbHostName, std::net::IpAddr>,
    /// `None`: `<service>.<namespace>.<zone>`. Validated names inside the zone, lowercase, sorted.
    pub hostnames: Option<BTreeSet<String>>,
    /// `None`: the default TTL.
    pub dns_ttl: Option<u32>,
    /// Source ranges, timeouts, UDP sessions, backends (see [`crate::traffic`]); shared, as most
    /// Services set none of them and settings are copied into every summary.
    pub traffic: std::sync::Arc<crate::traffic::Traffic>,
}

/// The largest TTL RFC 2181 allows.
pub const MAX_TTL: u32 = 2_147_483_647;

/// Parses `flipbit.io/ips`: addresses, each inside exactly one LB host's pools (pools never
/// overlap), at most one per host, and only on hosts the Service uses. Whether that pool admits
/// the Service (tenant pools) is checked where addresses are placed (`allocate`): a refusal there
/// costs the Service that host alone, where an error here would leave the whole Service as it was.
fn requested(
    value: &str,
    config: &Config,
    hosts: Option<&BTreeSet<LbHostName>>,
) -> Result<BTreeMap<LbHostName, std::net::IpAddr>, String> {
    let mut out = BTreeMap::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let ip: std::net::IpAddr = part.parse().map_err(|_| format!("{part:?} is not an address"))?;
        let host = config
            .lb_hosts
            .iter()
            .find(|h| h.in_pools(ip))
            .ok_or_else(|| format!("{ip} is not in the pools of any LB host"))?;
        if ip.is_ipv6() && host.pools.iter().any(|p| !p.is_v6()) {
            return Err(format!(
                "{ip}: only the primary (IPv4) address can be requested on LB host {}",
                host.name
            ));
        }
        if hosts.is_some_and(|set| !set.contains(&host.name)) {
            return Err(format!(
                "{ip} belongs to LB host {}, which the Service does not use",
                host.name
            ));
        }
        if let Some(other) = out.insert(host.name.clone(), ip) {
            return Err(format!(
                "{other} and {ip} are both on LB host {}; at most one per host",
                host.name
            ));
        }
    }
    if out.is_empty() {
        return Err("names no address".into());
    }
    Ok(out)
}

/// Parses `flipbit.io/hostname`: a comma list of DNS names (a trailing dot allowed), each inside
/// the zone and none of them one the zone keeps for itself (the apex, `reservedNames`: a tenant's
/// Service must never answer for the zone's name servers or mail hosts); under
/// `hostnamePolicy: namespace`, each also one of the Service's namespace's names.
fn hostnames(value: &str, key: &ServiceKey, config: &Config) -> Result<BTreeSet<String>, String> {
    let reserved = config.reserved_names();
    let mut out = BTreeSet::new();
    let mut refusals = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let name = part.strip_suffix('.').unwrap_or(part).to_ascii_lowercase();
        match refusal(&name, key, config, &reserved) {
            Some(why) => refusals.push(why),
            None => {
                out.insert(name);
            }
        }
    }
    if !refusals.is_empty() {
        return Err(refusals.join("; "));
    }
    if out.is_empty() {
        return Err("names no DNS name".into());
    }
    Ok(out)
}

/// Why `key` may not have the DNS name `name` (lowercase, no trailing dot), if it may not.
fn refusal(name: &str, key: &ServiceKey, config: &Config, reserved: &BTreeSet<String>) -> Option<String> {
    let zone = &config.zone;
    if let Err(e) = crate::dns::check_dns_name(name) {
        return Some(e);
    }
    if !crate::dns::in_zone(name, zone) {
        return Some(format!("{name:?} is not inside the zone {zone}"));
    }
    if name == zone {
        return Some(format!(
            "{name:?} is the zone apex, whose records (SOA, NS) belong to the zone itself"
        ));
    }
    if reserved.contains(name) {
        return Some(format!(
            "{name:?} is reserved for the zone's own hosts (reservedNames in flipbit.yaml)"
        ));
    }
    if config.hostname_policy == HostnamePolicy::Namespace && !in_namespace(name, key, zone) {
        let ns = &key.namespace;
        return Some(format!(
            "{name:?} is not a name of namespace {ns}: flipbit.yaml sets hostnamePolicy: namespace, which allows only {ns}.{zone} and names ending in .{ns}.{zone}"
        ));
    }
    None
}

/// True when `name` is `<namespace>.<zone>` or a name under it, for `key`'s namespace.
fn in_namespace(name: &str, key: &ServiceKey, zone: &str) -> bool {
    crate::dns::in_zone(name, &format!("{}.{zone}", key.namespace))
}

/// The error for a Service without `flipbit.io/hostname` whose default name the operator reserved
/// (a two-label `reservedNames` entry such as `ns1.infra` is Service `infra/ns1`'s default name).
fn reserved_default_name(key: &ServiceKey, config: &Config) -> Option<Problem> {
    let name = crate::dns::default_name(key, &config.zone);
    config.reserved_names().contains(&name).then(|| {
        Problem::service_error(
            key,
            "metadata.name",
            format!(
                "its DNS name {name} is reserved for the zone's own hosts (reservedNames in flipbit.yaml); give it another one in {HOSTNAME}"
            ),
        )
    })
}

pub fn field(annotation: &str) -> String {
    format!("metadata.annotations[\"{annotation}\"]")
}

/// The value among `choices` that `text` names (space around it ignored), or the sentence that says
/// what it may be: every keyword annotation answers a wrong value the same way.
pub(crate) fn keyword<T: Copy>(text: &str, choices: &[(&str, T)]) -> Result<T, String> {
    let text = text.trim();
    if let Some((_, value)) = choices.iter().find(|(word, _)| *word == text) {
        return Ok(*value);
    }
    let words: Vec<&str> = choices.iter().map(|(word, _)| *word).collect();
    Err(match words.as_slice() {
        [a, b] => format!("{text:?} is not {a:?} or {b:?}"),
        _ => format!("{text:?} is not one of {}", words.join(", ")),
    })
}

/// The words of a yes/no annotation.
const BOOLEAN: [(&str, bool); 2] = [("true", true), ("false", false)];

/// Reads `flipbit.io/expose`: `Some(true)`, `Some(false)` or absent.
pub fn expose(key: &ServiceKey, annotations: &BTreeMap<String, String>) -> Result<Option<bool>, Problem> {
    let Some(value) = annotations.get(EXPOSE) else {
        return Ok(None);
    };
    keyword(value, &BOOLEAN)
        .map(Some)
        .map_err(|message| Problem::service_error(key, field(EXPOSE), message))
}

/// Parses every Flipbit annotation; returns the settings, or every error found, plus warnings.
pub fn settings(
    key: &ServiceKey,
    annotations: &BTreeMap<String, String>,
    config: &Config,
) -> (Result<Settings, Vec<Problem>>, Vec<Problem>) {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut out = Settings::default();
    let ours = annotations.keys().skip_while(|k| k.as_str() < "flipbit.io/");
    for name in ours {
        if !name.starts_with("flipbit.io/") {
            break;
        }
        if !KNOWN.contains(&name.as_str()) {
            warnings.push(Problem::service_warning(
                key,
                field(name),
                "unknown Flipbit annotation, ignored",
            ));
        }
    }
    if let Some(v) = annotations.get(BALANCE) {
        let choices = [
            ("round-robin", Balance::RoundRobin),
            ("least-conn", Balance::LeastConn),
            ("hash", Balance::Hash),
        ];
        match keyword(v, &choices) {
            Ok(balance) => out.balance = balance,
            Err(message) => errors.push(Problem::service_error(key, field(BALANCE), message)),
        }
    }
    if let Some(v) = annotations.get(PROXY_PROTOCOL) {
        match keyword(v, &BOOLEAN) {
            Ok(on) => out.proxy_protocol = on,
            Err(message) => errors.push(Problem::service_error(key, field(PROXY_PROTOCOL), message)),
        }
    }
    if let Some(v) = annotations.get(MAX_NODES) {
        match v.trim().parse::<usize>() {
            Ok(n) if n >= 1 => out.max_nodes = Some(n),
            _ => errors.push(Problem::service_error(
                key,
                field(MAX_NODES),
                format!("{v:?} is not a whole number of at least 1"),
            )),
        }
    }
    if let Some(v) = annotations.get(LOAD_BALANCERS) {
        let mut hosts = BTreeSet::new();
        for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match LbHostName::new(part) {
                Ok(name) if config.host(&name).is_some() => {
                    hosts.insert(name);
                }
                Ok(name) => errors.push(Problem::service_error(
                    key,
                    field(LOAD_BALANCERS),
                    format!("LB host {name} is not in flipbit.yaml"),
                )),
                Err(e) => errors.push(Problem::service_error(key, field(LOAD_BALANCERS), e.to_string())),
            }
        }
        if hosts.is_empty() && errors.is_empty() {
            errors.push(Problem::service_error(key, field(LOAD_BALANCERS), "names no LB host"));
        }
        out.lb_hosts = Some(hosts);
    }
    if let Some(v) = annotations.get(IPS) {
        match requested(v, config, out.lb_hosts.as_ref()) {
            Ok(map) => out.requested = map,
            Err(e) => errors.push(Problem::service_error(key, field(IPS), e)),
        }
    }
    if let Some(v) = annotations.get(SHARED_IP_KEY) {
        let v = v.trim();
        let valid = !v.is_empty()
            && v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            errors.push(Problem::service_error(
                key,
                field(SHARED_IP_KEY),
                format!("{v:?} is not a key of 1 to 63 letters, digits, '-', '_' or '.'"),
            ));
        } else if annotations.contains_key(IPS) {
            errors.push(Problem::service_error(
                key,
                field(SHARED_IP_KEY),
                "cannot be combined with flipbit.io/ips yet; request the address without sharing",
            ));
        } else {
            out.shared_key = Some(v.to_owned());
        }
    }
    if let Some(v) = annotations.get(DNS_TTL) {
        match v.trim().parse::<u32>() {
            Ok(n) if (1..=MAX_TTL).contains(&n) => out.dns_ttl = Some(n),
            _ => errors.push(Problem::service_error(
                key,
                field(DNS_TTL),
                format!("{v:?} is not a TTL in seconds from 1 to {MAX_TTL}"),
            )),
        }
    }
    match annotations.get(HOSTNAME) {
        Some(v) => match hostnames(v, key, config) {
            Ok(names) => out.hostnames = Some(names),
            Err(e) => errors.push(Problem::service_error(key, field(HOSTNAME), e)),
        },
        None => errors.extend(reserved_default_name(key, config)),
    }
    if errors.is_empty() {
        (Ok(out), warnings)
    } else {
        (Err(errors), warnings)
    }
}
