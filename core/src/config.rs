//! `flipbit.yaml`, the one human-owned file of the state repo: LB hosts and their pools, the DNS
//! zone, which nodes carry traffic and which Services are ours. Parsed strictly (unknown fields are
//! errors) and checked as a whole, so a typo stops the generator instead of changing the fleet.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::names::LbHostName;
use crate::pool::{MAX_POOL_ADDRESSES, Pool};
use crate::rollout::Rollout;

pub const DEFAULT_CLASS: &str = "flipbit.io/nginx";
pub const DEFAULT_NODE_LABEL: &str = "flipbit.io/lb-backend";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("flipbit.yaml: {0}")]
    Syntax(String),
    #[error("flipbit.yaml: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// DNS zone under which `<service>.<namespace>` names are published.
    pub zone: String,
    /// `spec.loadBalancerClass` that marks a LoadBalancer Service as ours.
    #[serde(default = "default_class")]
    pub load_balancer_class: String,
    /// Also take LoadBalancer Services that name no class (as MetalLB does by default).
    #[serde(default)]
    pub manage_classless_load_balancers: bool,
    /// Labels a node must carry to receive traffic.
    #[serde(default = "default_node_selector")]
    pub node_selector: BTreeMap<String, String>,
    /// How long a withdrawn Service's addresses are held before another Service may take them.
    #[serde(default = "default_grace")]
    pub release_grace_seconds: u64,
    /// At most this many eligible nodes carry one Service (chosen by rendezvous hashing, so a node
    /// coming or going moves only the Services that had it): with 500 nodes, one upstream of 500
    /// servers per Service port would make configs of gigabytes. Cloud load balancers subset the
    /// same way (GKE's L4 subsetting uses 25). `flipbit.io/max-nodes` overrides it per Service.
    #[serde(default = "default_max_nodes")]
    pub max_nodes_per_service: usize,
    /// Names inside the zone that no Service may take through `flipbit.io/hostname`, besides the
    /// zone apex (always refused): each a full name inside the zone or one relative to it (`ns1`
    /// is `ns1.<zone>`). See [`DEFAULT_RESERVED_NAMES`] for the default; `[]` reserves the apex
    /// alone. [`Config::reserved_names`] gives them as absolute names.
    #[serde(default = "default_reserved_names", rename = "reservedNames")]
    pub reserved_name_entries: Vec<String>,
    /// Which custom names a Service may claim; see [`HostnamePolicy`].
    #[serde(default, skip_serializing_if = "HostnamePolicy::is_default")]
    pub hostname_policy: HostnamePolicy,
    pub lb_hosts: Vec<LbHost>,
    /// Staged rollout: the waves in which the LB hosts apply a new head; see
    /// [`crate::rollout`]. Without it every host applies a head as soon as it fetches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

/// The relative names reserved when `flipbit.yaml` has no `reservedNames`: the names zones
/// commonly give their in-zone name servers and mail hosts. A Service that took one would answer
/// for the zone's own NS targets (its delegation glue) or catch its mail; an operator whose zone
/// uses other names lists its real NS targets instead.
pub const DEFAULT_RESERVED_NAMES: &[&str] = &["ns", "ns1", "ns2", "ns3", "ns4", "mail", "mx", "smtp"];

/// Which names a Service may claim through `flipbit.io/hostname` (the apex and `reservedNames`
/// are refused under either). `any` (the default): any name inside the zone, first come first
/// served. `namespace`: only `<namespace>.<zone>` and names under it, for clusters whose
/// namespaces belong to different tenants, so one tenant cannot publish a name another
/// tenant's users would trust.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostnamePolicy {
    #[default]
    Any,
    Namespace,
}

impl HostnamePolicy {
    pub fn is_default(&self) -> bool {
        *self == HostnamePolicy::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LbHost {
    pub name: LbHostName,
    /// Its addresses, each pool a string (`127.1.1.0/24`, `a-b`: every Service may take them) or
    /// an object that also says which Services may (`{cidr: ..., namespaces: [...],
    /// serviceSelector: {...}}`, see [`crate::pool::admission`]).
    pub pools: Vec<Pool>,
    /// How this host's nginx routes connections; see [`Layout`].
    #[serde(default, skip_serializing_if = "Layout::is_default")]
    pub layout: Layout,
    /// Which load balancer runs on this host; see [`Flavor`].
    #[serde(default, skip_serializing_if = "Flavor::is_default")]
    pub flavor: Flavor,
    /// Accept pools of more than [`MAX_POOL_ADDRESSES`] addresses on this host.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_large_pools: bool,
}

/// The load balancer an LB host runs, so one fleet can mix them. `nginx` (the default) serves TCP
/// and UDP in either [`Layout`]; `haproxy` serves TCP only, per Service (its UDP ports are skipped
/// with a warning, and a Service with no TCP port gets no address on such a host).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flavor {
    #[default]
    Nginx,
    Haproxy,
}

impl Flavor {
    pub fn is_default(&self) -> bool {
        *self == Flavor::default()
    }
}

impl std::fmt::Display for Flavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Flavor::Nginx => "nginx",
            Flavor::Haproxy => "haproxy",
        })
    }
}

/// The nginx layout of one LB host. `per-service` (the default) gives every Service port its own
/// `listen <address>:<port>` and `upstream`: every nginx feature per Service, but `nginx -t` and
/// reloads grow quadratically with the Services (seconds at 10k). `shared-listeners` gives each
/// port one wildcard listener and routes by a `map` of per-Service entries: linear, for hosts with
/// thousands of Services, at the price listed in `render::map`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    #[default]
    PerService,
    SharedListeners,
}

impl Layout {
    pub fn is_default(&self) -> bool {
        *self == Layout::default()
    }
}

fn default_class() -> String {
    DEFAULT_CLASS.to_owned()
}

fn default_node_selector() -> BTreeMap<String, String> {
    BTreeMap::from([(DEFAULT_NODE_LABEL.to_owned(), "true".to_owned())])
}

fn default_grace() -> u64 {
    3600
}

/// The default of `maxNodesPerService`.
pub const DEFAULT_MAX_NODES: usize = 25;

fn default_max_nodes() -> usize {
    DEFAULT_MAX_NODES
}

fn default_reserved_names() -> Vec<String> {
    DEFAULT_RESERVED_NAMES.iter().map(|n| (*n).to_owned()).collect()
}

impl Config {
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config =
            serde_norway::from_str(text).map_err(|e| ConfigError::Syntax(with_host_name(text, e.to_string())))?;
        config.check(text)?;
        Ok(config)
    }

    /// Checks what the types cannot; errors name the field and, where the value can be found in
    /// `text`, its line.
    fn check(&self, text: &str) -> Result<(), ConfigError> {
        let line = |needle: &str| {
            text.lines()
                .position(|l| l.contains(needle))
                .map_or(String::new(), |n| format!(" (line {})", n + 1))
        };
        // The first line holding `needle` after the first one holding `anchor` (a host's name).
        let line_after = |anchor: &str, needle: &str| {
            let start = text.lines().position(|l| l.contains(anchor)).unwrap_or(0);
            text.lines()
                .enumerate()
                .skip(start)
                .find(|(_, l)| l.contains(needle))
                .map_or(String::new(), |(n, _)| format!(" (line {})", n + 1))
        };
        crate::dns::check_dns_name(&self.zone).map_err(|e| ConfigError::Invalid(format!("zone: {e}")))?;
        for (i, entry) in self.reserved_name_entries.iter().enumerate() {
            absolute_reserved_name(entry, &self.zone).map_err(|e| {
                ConfigError::Invalid(format!("reservedNames[{i}]: {e}{}", line_after("reservedNames", entry)))
            })?;
        }
        if self.max_nodes_per_service == 0 {
            return Err(ConfigError::Invalid(format!(
                "maxNodesPerService: must be at least 1{}",
                line("maxNodesPerService")
            )));
        }
        if self.lb_hosts.is_empty() {
            return Err(ConfigError::Invalid("lbHosts: at least one LB host is needed".into()));
        }
        let mut seen: BTreeMap<&LbHostName, usize> = BTreeMap::new();
        let mut pools: Vec<(String, &Pool)> = Vec::new();
        for (i, host) in self.lb_hosts.iter().enumerate() {
            if let Some(first) = seen.insert(&host.name, i) {
                return Err(ConfigError::Invalid(format!(
                    "lbHosts[{i}].name: {} is already used by lbHosts[{first}]{}",
                    host.name,
                    text.lines()
                        .enumerate()
                        .filter(|(_, l)| l.contains(host.name.as_str()))
                        .nth(1)
                        .map_or(String::new(), |(n, _)| format!(" (line {})", n + 1))
                )));
            }
            if host.flavor == Flavor::Haproxy && host.layout == Layout::SharedListeners {
                return Err(ConfigError::Invalid(format!(
                    "lbHosts[{i}] ({}).layout: shared-listeners is an nginx layout; a haproxy host renders per Service (remove layout or set flavor: nginx){}",
                    host.name,
                    line_after(host.name.as_str(), "shared-listeners")
                )));
            }
            if host.pools.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "lbHosts[{i}] ({}).pools: at least one pool is needed",
                    host.name
                )));
            }
            for (j, pool) in host.pools.iter().enumerate() {
                let here = format!(
                    "lbHosts[{i}] ({}).pools[{j}] {pool}{}",
                    host.name,
                    line(&pool.to_string())
                );
                if let Some(why) = pool.unservable() {
                    return Err(ConfigError::Invalid(format!("{here}: {why}")));
                }
                if let Err(why) = pool.admission().check() {
                    return Err(ConfigError::Invalid(format!("{here}: {why}")));
                }
                if !host.allow_large_pools && pool.size() > MAX_POOL_ADDRESSES {
                    return Err(ConfigError::Invalid(format!(
                        "{here}: {} addresses, more than the {MAX_POOL_ADDRESSES} a pool may hold; a pool lists addresses this host serves, so a wider one is most likely a typo for a longer prefix (set allowLargePools: true on the host if it is meant)",
                        pool.size()
                    )));
                }
                if let Some((there, _)) = pools.iter().find(|(_, p)| p.overlaps(pool)) {
                    return Err(ConfigError::Invalid(format!("{here} overlaps {there}")));
                }
                pools.push((here, pool));
            }
        }
        if let Some(rollout) = &self.rollout {
            rollout.check(&self.lb_hosts, text).map_err(ConfigError::Invalid)?;
        }
        Ok(())
    }

    pub fn host(&self, name: &LbHostName) -> Option<&LbHost> {
        self.lb_hosts.iter().find(|h| &h.name == name)
    }

    /// Every name no Service may claim, absolute (lowercase, no trailing dot): the zone apex and
    /// each `reservedNames` entry. The generator refuses them in `flipbit.io/hostname`; the
    /// applier refuses zone fragments that name them, whoever wrote the commit. (Entries that do
    /// not resolve to a name in the zone are left out: [`Config::parse`] refuses them.)
    pub fn reserved_names(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::from([self.zone.clone()]);
        names.extend(
            self.reserved_name_entries
                .iter()
                .filter_map(|entry| absolute_reserved_name(entry, &self.zone).ok()),
        );
        names
    }
}

/// A parse error about one LB host (`lbHosts[1].pools[0]: unknown field ...`) with the host's
/// name beside its index, as the checks after parsing write it (`lbHosts[1] (lb-2).pools[0]`), when
/// the name can be read from `text` and is one.
fn with_host_name(text: &str, message: String) -> String {
    let Some(index) = message
        .strip_prefix("lbHosts[")
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(i, _)| i.parse::<usize>().ok())
    else {
        return message;
    };
    let name = serde_norway::from_str::<serde_norway::Value>(text)
        .ok()
        .and_then(|doc| doc.get("lbHosts")?.get(index)?.get("name")?.as_str().map(str::to_owned))
        .filter(|name| LbHostName::new(name).is_ok());
    match name {
        Some(name) => message.replacen(&format!("lbHosts[{index}]"), &format!("lbHosts[{index}] ({name})"), 1),
        None => message,
    }
}

/// The absolute name a `reservedNames` entry stands for: an entry ending in a dot, or equal to
/// the zone or under it, is absolute; any other is relative to the zone (`ns1` is `ns1.<zone>`).
/// `Err` says why it is no DNS name inside the zone.
fn absolute_reserved_name(entry: &str, zone: &str) -> Result<String, String> {
    let (name, absolute) = match entry.strip_suffix('.') {
        Some(name) => (name, true),
        None => (entry, false),
    };
    let full = if absolute || crate::dns::in_zone(name, zone) {
        name.to_owned()
    } else {
        format!("{name}.{zone}")
    };
    crate::dns::check_dns_name(&full)?;
    if !crate::dns::in_zone(&full, zone) {
        return Err(format!("{entry:?} is not inside the zone {zone}"));
    }
    Ok(full)
}

impl LbHost {
    pub fn in_pools(&self, ip: IpAddr) -> bool {
        self.pools.iter().any(|p| p.contains(ip))
    }

    /// The pool holding `ip` and its index in `pools`, if any (pools never overlap).
    pub fn pool_of(&self, ip: IpAddr) -> Option<(usize, &Pool)> {
        self.pools.iter().enumerate().find(|(_, p)| p.contains(ip))
    }
}

impl Config {
    /// `lbHosts[i] (name).pools[j] <cidr>`: how messages name a pool, as the config errors do.
    pub fn pool_path(&self, host: &LbHostName, j: usize) -> String {
        let i = self.lb_hosts.iter().position(|h| &h.name == host).unwrap_or_default();
        let pool = self.host(host).and_then(|h| h.pools.get(j));
        let pool = pool.map_or(String::new(), |p| format!(" {p}"));
        format!("lbHosts[{i}] ({host}).pools[{j}]{pool}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "zone: k8s.example.test\nlbHosts:\n  - name: lb-1\n    pools: [127.1.1.0/24]\n  - name: lb-2\n    pools: [127.1.5.0/24]\n";

    #[test]
    fn defaults_fill_in() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.load_balancer_class, "flipbit.io/nginx");
        assert_eq!(
            c.node_selector.get("flipbit.io/lb-backend").map(String::as_str),
            Some("true")
        );
        assert_eq!(c.release_grace_seconds, 3600);
        assert_eq!(c.max_nodes_per_service, 25);
        let err = Config::parse(&format!("{GOOD}maxNodesPerService: 0\n")).unwrap_err();
        assert!(
            err.to_string()
                .contains("maxNodesPerService: must be at least 1 (line 7)"),
            "{err}"
        );
        assert_eq!(c.lb_hosts.len(), 2);
    }

    #[test]
    fn unknown_fields_are_errors_with_a_line() {
        let err = Config::parse(&format!("{GOOD}poolz: []\n")).unwrap_err().to_string();
        assert!(err.contains("poolz") && err.contains("line"), "{err}");
    }

    #[test]
    fn overlapping_pools_are_named() {
        let text = GOOD.replace("127.1.5.0/24", "127.1.1.128/25");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("lbHosts[1] (lb-2).pools[0] 127.1.1.128/25 (line 6) overlaps lbHosts[0] (lb-1).pools[0] 127.1.1.0/24 (line 4)"),
            "{err}"
        );
    }

    #[test]
    fn bad_pool_and_duplicate_host_are_refused() {
        let err = Config::parse(&GOOD.replace("127.1.5.0/24", "127.1.5.0/99")).unwrap_err();
        assert!(err.to_string().contains("127.1.5.0/99"), "{err}");
        let err = Config::parse(&GOOD.replace("lb-2", "lb-1")).unwrap_err();
        assert!(err.to_string().contains("lbHosts[1].name"), "{err}");
        let err = Config::parse(&GOOD.replace("lb-2", "LB_2")).unwrap_err();
        assert!(err.to_string().contains("LB_2"), "{err}");
    }

    #[test]
    fn layout_defaults_to_per_service_and_is_strict() {
        let c = Config::parse(GOOD).unwrap();
        assert!(c.lb_hosts.iter().all(|h| h.layout == Layout::PerService));
        let text = GOOD.replace("  - name: lb-2\n", "  - name: lb-2\n    layout: shared-listeners\n");
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.lb_hosts[1].layout, Layout::SharedListeners);
        assert_eq!(c.lb_hosts[0].layout, Layout::PerService);
        let err = Config::parse(&text.replace("shared-listeners", "shared"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lbHosts[1] (lb-2).layout") && err.contains("per-service") && err.contains("line"),
            "{err}"
        );
    }

    #[test]
    fn flavor_defaults_to_nginx_and_is_strict() {
        let c = Config::parse(GOOD).unwrap();
        assert!(c.lb_hosts.iter().all(|h| h.flavor == Flavor::Nginx));
        let text = GOOD.replace("  - name: lb-2\n", "  - name: lb-2\n    flavor: haproxy\n");
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.lb_hosts[1].flavor, Flavor::Haproxy);
        assert_eq!(c.lb_hosts[0].flavor, Flavor::Nginx);
        let err = Config::parse(&text.replace("flavor: haproxy", "flavor: envoy"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lbHosts[1] (lb-2).flavor") && err.contains("haproxy") && err.contains("line 6"),
            "{err}"
        );
    }

    #[test]
    fn shared_listeners_is_refused_on_a_haproxy_host() {
        let text = GOOD.replace(
            "  - name: lb-2\n",
            "  - name: lb-2\n    flavor: haproxy\n    layout: shared-listeners\n",
        );
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("lbHosts[1] (lb-2).layout: shared-listeners is an nginx layout") && err.contains("(line 7)"),
            "{err}"
        );
    }

    #[test]
    fn reserved_names_default_to_name_servers_and_mail_hosts() {
        let c = Config::parse(GOOD).unwrap();
        let names: Vec<String> = c.reserved_names().into_iter().collect();
        assert_eq!(
            names,
            [
                "k8s.example.test",
                "mail.k8s.example.test",
                "mx.k8s.example.test",
                "ns.k8s.example.test",
                "ns1.k8s.example.test",
                "ns2.k8s.example.test",
                "ns3.k8s.example.test",
                "ns4.k8s.example.test",
                "smtp.k8s.example.test",
            ]
        );
        let none = Config::parse(&format!("{GOOD}reservedNames: []\n")).unwrap();
        assert_eq!(none.reserved_names(), BTreeSet::from(["k8s.example.test".to_owned()]));
    }

    #[test]
    fn reserved_names_are_relative_or_absolute_and_strict() {
        let text = format!("{GOOD}reservedNames:\n  - dns1\n  - a.ns.k8s.example.test\n  - b.k8s.example.test.\n");
        let c = Config::parse(&text).unwrap();
        assert_eq!(
            c.reserved_names(),
            BTreeSet::from(
                [
                    "k8s.example.test",
                    "dns1.k8s.example.test",
                    "a.ns.k8s.example.test",
                    "b.k8s.example.test"
                ]
                .map(String::from)
            )
        );
        let err = Config::parse(&text.replace("dns1", "Dns_1")).unwrap_err().to_string();
        assert!(
            err.contains("reservedNames[0]: \"Dns_1.k8s.example.test\" is not a DNS name") && err.contains("(line 8)"),
            "{err}"
        );
        let err = Config::parse(&text.replace("b.k8s.example.test.", "ns1.example.org."))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("reservedNames[2]: \"ns1.example.org.\" is not inside the zone k8s.example.test (line 10)"),
            "{err}"
        );
        let err = Config::parse(&format!("{GOOD}reservedNames: ns1\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("reservedNames") && err.contains("line 7"), "{err}");
    }

    #[test]
    fn hostname_policy_defaults_to_any_and_is_strict() {
        assert_eq!(Config::parse(GOOD).unwrap().hostname_policy, HostnamePolicy::Any);
        let c = Config::parse(&format!("{GOOD}hostnamePolicy: namespace\n")).unwrap();
        assert_eq!(c.hostname_policy, HostnamePolicy::Namespace);
        let err = Config::parse(&format!("{GOOD}hostnamePolicy: tenant\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("hostnamePolicy") && err.contains("namespace") && err.contains("line 7"),
            "{err}"
        );
    }

    #[test]
    fn pools_a_host_cannot_serve_are_refused_with_the_reason() {
        let err = Config::parse(&GOOD.replace("127.1.5.0/24", "0.0.0.0/0"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lbHosts[1] (lb-2).pools[0] 0.0.0.0/0 (line 6): it holds link-local addresses (169.254.0.0/16) and multicast addresses (224.0.0.0/4)"),
            "{err}"
        );
        let err = Config::parse(&GOOD.replace("127.1.5.0/24", "\"fe80::/64\""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lbHosts[1] (lb-2).pools[0] fe80::/64 (line 6): it holds link-local addresses (fe80::/10)"),
            "{err}"
        );
        let err = Config::parse(&GOOD.replace("127.1.5.0/24", "224.1.1.0/24"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("multicast addresses (224.0.0.0/4)"), "{err}");
        assert!(
            Config::parse(&GOOD.replace("127.1.5.0/24", "127.2.0.0/16")).is_ok(),
            "loopback stays allowed"
        );
    }

    #[test]
    fn pools_past_the_maximum_need_allow_large_pools() {
        let wide = GOOD.replace("127.1.5.0/24", "10.0.0.0/15");
        let err = Config::parse(&wide).unwrap_err().to_string();
        assert!(
            err.contains("lbHosts[1] (lb-2).pools[0] 10.0.0.0/15 (line 6): 131070 addresses, more than the 65536")
                && err.contains("allowLargePools: true"),
            "{err}"
        );
        let v6 = GOOD.replace("127.1.5.0/24", "\"fd00:1::/64\"");
        assert!(Config::parse(&v6).unwrap_err().to_string().contains("allowLargePools"));
        assert!(
            Config::parse(&GOOD.replace("127.1.5.0/24", "10.0.0.0/16")).is_ok(),
            "a /16 fits"
        );
        assert!(
            Config::parse(&GOOD.replace("127.1.5.0/24", "\"fd00:1::/112\"")).is_ok(),
            "a /112 fits"
        );
        let allowed = wide.replace("  - name: lb-2\n", "  - name: lb-2\n    allowLargePools: true\n");
        let c = Config::parse(&allowed).unwrap();
        assert!(c.lb_hosts[1].allow_large_pools && !c.lb_hosts[0].allow_large_pools);
    }

    const TENANTS: &str = "zone: k.test\nlbHosts:\n  - name: lb-1\n    pools:\n      - 127.1.1.0/24\n      - cidr: 127.1.2.0/24\n        namespaces: [team-a, team-b]\n      - range: 127.1.3.10-127.1.3.20\n        serviceSelector:\n          matchLabels: {tier: web}\n          matchExpressions:\n            - {key: env, operator: In, values: [prod]}\n  - name: lb-2\n    pools: [{cidr: 127.1.4.0/24, namespaces: [team-c]}, 127.1.5.0/24]\n";

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn pools_take_the_object_form_beside_the_string_form() {
        let c = Config::parse(TENANTS).unwrap();
        let pools = &c.lb_hosts[0].pools;
        assert_eq!(
            pools.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["127.1.1.0/24", "127.1.2.0/24", "127.1.3.10-127.1.3.20"]
        );
        let web_prod = labels(&[("tier", "web"), ("env", "prod")]);
        assert!(
            pools[0].admits("anyone", &BTreeMap::new()),
            "the string form admits every Service"
        );
        assert!(pools[1].admits("team-b", &BTreeMap::new()) && !pools[1].admits("team-c", &web_prod));
        assert!(pools[2].admits("anyone", &web_prod));
        assert!(!pools[2].admits("anyone", &labels(&[("tier", "web"), ("env", "dev")])));
        assert_eq!(pools[2].size(), 11, "a range is taken as written");
        assert!(c.lb_hosts[1].pools[0].admits("team-c", &BTreeMap::new()));
        // Written back, each pool keeps its form.
        let again = serde_norway::to_string(&c).unwrap();
        assert_eq!(Config::parse(&again).unwrap(), c, "{again}");
        assert!(
            again.contains("- 127.1.1.0/24") && again.contains("range: 127.1.3.10-127.1.3.20"),
            "{again}"
        );
        // An object without a rule admits every Service, like the string form.
        let open =
            Config::parse(&GOOD.replace("[127.1.1.0/24]", "[{cidr: 127.1.1.0/24, serviceSelector: {}}]")).unwrap();
        assert_eq!(open, Config::parse(GOOD).unwrap());
    }

    #[test]
    fn malformed_pool_objects_name_the_host_pool_and_line() {
        for (from, to, why) in [
            (
                "namespaces: [team-a, team-b]",
                "namespace: [team-a]",
                "lbHosts[0] (lb-1).pools[1]: unknown field `namespace`, expected one of `cidr`, `range`, `namespaces`, `serviceSelector` at line 7",
            ),
            (
                "operator: In",
                "operator: Equals",
                "lbHosts[0] (lb-1).pools[2].serviceSelector.matchExpressions[0].operator: unknown variant `Equals`",
            ),
            (
                "cidr: 127.1.2.0/24",
                "cidr: 127.1.2.0-127.1.2.9",
                "lbHosts[0] (lb-1).pools[1]: cidr: \"127.1.2.0-127.1.2.9\" is a range; write it as range: 127.1.2.0-127.1.2.9 at line 6",
            ),
            (
                "range: 127.1.3.10-127.1.3.20",
                "range: 127.1.3.0/24",
                "lbHosts[0] (lb-1).pools[2]: range: \"127.1.3.0/24\" is not a range a-b; write a CIDR as cidr: 127.1.3.0/24 at line 8",
            ),
            (
                "cidr: 127.1.2.0/24",
                "cidr: 127.1.2.0/24\n        range: 127.1.2.1-127.1.2.2",
                "lbHosts[0] (lb-1).pools[1]: a pool has cidr or range, not both",
            ),
            (
                "      - cidr: 127.1.2.0/24\n        namespaces",
                "      - namespaces",
                "lbHosts[0] (lb-1).pools[1]: a pool object needs cidr (127.1.2.0/24) or range",
            ),
            (
                "[team-a, team-b]",
                "[Team_A]",
                "lbHosts[0] (lb-1).pools[1].namespaces: \"Team_A\" is not a valid namespace name",
            ),
            (
                "[team-a, team-b]",
                "[]",
                "lbHosts[0] (lb-1).pools[1] 127.1.2.0/24 (line 6): namespaces: an empty list admits no Service",
            ),
            (
                ", values: [prod]",
                "",
                "lbHosts[0] (lb-1).pools[2] 127.1.3.10-127.1.3.20 (line 8): serviceSelector.matchExpressions[0]: operator In needs values",
            ),
            (
                "{tier: web}",
                "{tier: \"we b\"}",
                "lbHosts[0] (lb-1).pools[2] 127.1.3.10-127.1.3.20 (line 8): serviceSelector.matchLabels.tier: \"we b\" is not a label value",
            ),
            (
                "cidr: 127.1.4.0/24",
                "cidr: 127.1.2.128/25",
                "lbHosts[1] (lb-2).pools[0] 127.1.2.128/25 (line 14) overlaps lbHosts[0] (lb-1).pools[1] 127.1.2.0/24 (line 6)",
            ),
            (
                "cidr: 127.1.4.0/24",
                "cidr: 224.1.4.0/24",
                "lbHosts[1] (lb-2).pools[0] 224.1.4.0/24 (line 14): it holds multicast addresses",
            ),
        ] {
            assert!(TENANTS.contains(from), "{from}");
            let err = Config::parse(&TENANTS.replace(from, to)).unwrap_err().to_string();
            assert!(err.contains(why), "{to}:\n{err}");
        }
    }
}
