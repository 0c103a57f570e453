//! Every file of an LB host and of the zone, from what was decided: per Service its snippet on
//! each host it has an address on (nginx per-service, a shared-listeners map entry, or HAProxy, by
//! the host's flavour and layout) and its zone fragment; per shared-listeners host its listeners
//! and nodes files; and the state repo's `format.yaml`. The full decision ([`crate::decide`]) and
//! the fast path ([`crate::settled`]) both hand their Services here, so a file is rendered one way.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::config::{Config, Flavor, Layout};
use crate::decide::{ExposedMap, ExposedSummary};
use crate::endpoints::{self, SlicesByService};
use crate::exposure::ExposedService;
use crate::host_addresses::HostAddresses;
use crate::ledger::Ledger;
use crate::names::{LbHostName, ServiceKey};
use crate::nodes::{self, Node};
use crate::problem::{Problem, Severity, Subject};
use crate::render::{self, Upstreams, map::Listener};
use crate::repo_paths;
use crate::sink::{FileSink, fingerprint};

/// TTL of a Service's records unless `flipbit.io/dns-ttl` says otherwise.
pub const DEFAULT_TTL: u32 = 300;

/// Hands `sink` the state repo's `format.yaml` (see [`crate::format`]). Every decision, the full
/// one and the shortcut alike, gives it, so every commit the generator makes records the format
/// of the files beside it, and it is never among the generated files a decision drops. (The
/// generator commits it only together with another change: on its own it changes nothing an LB
/// host serves.)
///
/// The format written is the newest any exposed Service's files need, so an applier that reads
/// only older formats keeps applying until a Service uses what only a newer one can say. (A
/// Service kept as it is, held or invalid, is not counted: its files are what they were.)
pub(crate) fn format_file(sink: &mut dyn FileSink, exposed: &ExposedMap) {
    let version = exposed
        .values()
        .map(|s| s.format)
        .max()
        .unwrap_or(crate::format::UNRECORDED_FORMAT)
        .max(crate::format::UNRECORDED_FORMAT);
    let fp = fingerprint(&(crate::format::FORMAT_FILE, version));
    let mut render = || Ok(crate::format::render(version));
    // Rendering a constant cannot fail.
    let _ = sink.file(crate::format::FORMAT_FILE.to_owned(), fp, &mut render);
    sink.keep();
}

/// What every Service's upstreams are chosen from in one decision: the eligible nodes and, for
/// pod-backed Services, their EndpointSlices.
pub(crate) struct Backends<'a> {
    eligible: &'a std::sync::Arc<[Node]>,
    all: Vec<&'a Node>,
    all_fp: u64,
    /// Nodes with a ready endpoint, by Service (for `externalTrafficPolicy: Local`).
    ready: &'a BTreeMap<(String, String), BTreeSet<String>>,
    /// The slices of the pod-backed Services being decided.
    slices: &'a SlicesByService<'a>,
    /// The port names of the pod-backed Services being decided, in the order of their ports
    /// (an exposed Service keeps none, and names are what map a port to its endpoints' port).
    pod_ports: BTreeMap<ServiceKey, Vec<Option<String>>>,
}

impl<'a> Backends<'a> {
    pub(crate) fn new(
        eligible: &'a std::sync::Arc<[Node]>,
        ready: &'a BTreeMap<(String, String), BTreeSet<String>>,
        slices: &'a SlicesByService<'a>,
        pod_ports: BTreeMap<ServiceKey, Vec<Option<String>>>,
    ) -> Self {
        Self {
            eligible,
            all: eligible.iter().collect(),
            all_fp: fingerprint(&**eligible),
            ready,
            slices,
            pod_ports,
        }
    }

    /// Every eligible node.
    pub(crate) fn all(&self) -> &[&'a Node] {
        &self.all
    }

    /// The ready endpoints of each of `svc`'s ports (see [`crate::endpoints`]).
    fn pods(&self, svc: &ExposedService) -> Upstreams {
        let names = self.pod_ports.get(&svc.key).map_or(&[][..], Vec::as_slice);
        endpoints::upstreams(svc, names, self.slices.get(&svc.key))
    }
}

/// What one Service was given: its addresses on each LB host (both families) and its DNS names.
pub(crate) struct Given {
    pub(crate) addresses: HostAddresses,
    pub(crate) addresses_v6: HostAddresses,
    pub(crate) names: BTreeSet<String>,
}

/// Where what each Service got is recorded: a decision's summaries, kept Services and problems,
/// and the listeners of shared-listeners hosts.
pub(crate) struct Recorded<'a> {
    pub(crate) exposed: &'a mut ExposedMap,
    pub(crate) kept: &'a mut BTreeSet<ServiceKey>,
    pub(crate) problems: &'a mut Vec<Problem>,
    pub(crate) listeners: BTreeMap<LbHostName, BTreeSet<Listener>>,
}

impl<'a> Recorded<'a> {
    pub(crate) fn new(
        exposed: &'a mut ExposedMap,
        kept: &'a mut BTreeSet<ServiceKey>,
        problems: &'a mut Vec<Problem>,
    ) -> Self {
        Self {
            exposed,
            kept,
            problems,
            listeners: BTreeMap::new(),
        }
    }
}

/// The files of every Service in `exposed` that was `given` addresses (see [`service`]).
pub(crate) fn services(
    exposed: &[ExposedService],
    mut given: impl FnMut(&ServiceKey) -> Option<Given>,
    config: &Config,
    backends: &Backends<'_>,
    sink: &mut dyn FileSink,
    out: &mut Recorded<'_>,
) {
    for svc in exposed {
        if let Some(given) = given(&svc.key) {
            service(svc, given, config, backends, sink, out);
        }
    }
}

/// Hands the files of one exposed Service to `sink` and records what it got: its summary and its
/// files, or, on a render error, a problem, its files discarded and the Service kept exactly as
/// it is.
fn service(
    svc: &ExposedService,
    given: Given,
    config: &Config,
    backends: &Backends<'_>,
    sink: &mut dyn FileSink,
    out: &mut Recorded<'_>,
) {
    match service_files(svc, given, config, backends, sink, &mut out.listeners) {
        Ok(summary) => {
            sink.keep();
            out.exposed.insert(svc.key.clone(), summary);
        }
        Err(e) => {
            out.problems.push(Problem::service_error(&svc.key, "", e.to_string()));
            sink.discard();
            out.kept.insert(svc.key.clone());
        }
    }
}

/// Hands the files of one exposed Service to `sink` (its snippet on every host it has an address
/// on, its zone fragment) and returns what it got. On an error the caller discards the files.
fn service_files(
    svc: &ExposedService,
    given: Given,
    config: &Config,
    backends: &Backends<'_>,
    sink: &mut dyn FileSink,
    listeners: &mut BTreeMap<LbHostName, BTreeSet<Listener>>,
) -> Result<ExposedSummary, crate::render::RenderError> {
    let Given {
        addresses,
        addresses_v6,
        names,
    } = given;
    let pods = endpoints::pod_backed(svc).then(|| backends.pods(svc));
    let (chosen, service_fp) = match &pods {
        // Pods are dialled directly: no node carries the Service.
        Some(upstreams) => (
            nodes::NodeSet::new(backends.eligible, &[]),
            fingerprint(&(svc, &upstreams.0)),
        ),
        None => {
            let chosen = chosen_nodes(svc, config, backends, sink);
            (chosen.nodes, fingerprint(&(svc, chosen.fingerprint)))
        }
    };
    let chosen_refs: Vec<&Node> = chosen.iter().collect();
    // Each port's servers: the pods, or the chosen nodes at the port's node port (built only
    // when a file is rendered: most decisions render nothing).
    let upstreams = || match &pods {
        Some(upstreams) => std::borrow::Cow::Borrowed(upstreams),
        None => std::borrow::Cow::Owned(Upstreams::of_nodes(svc, &chosen_refs)),
    };
    let hosts: BTreeSet<&LbHostName> = addresses.keys().chain(addresses_v6.keys()).collect();
    let mut failed = None;
    for host in hosts {
        let ips: Vec<IpAddr> = addresses
            .get(host)
            .into_iter()
            .chain(addresses_v6.get(host))
            .copied()
            .collect();
        let host_config = config.host(host);
        let shared = host_config.is_some_and(|h| h.layout == Layout::SharedListeners);
        let result = if host_config.is_some_and(|h| h.flavor == Flavor::Haproxy) {
            let fp = fingerprint(&(service_fp, host, &ips, Flavor::Haproxy));
            let mut render = || render::haproxy::service(svc, host, &ips, &upstreams());
            sink.file(repo_paths::lb_service_cfg_path(host, &svc.key), fp, &mut render)
        } else if shared && render::map::per_service_reason(svc).is_none() {
            // Map entries depend on the Service and its addresses only: node churn goes to
            // the host's nodes file, not to every Service.
            listeners
                .entry(host.clone())
                .or_default()
                .extend(render::map::listeners_of(svc, &ips));
            let fp = fingerprint(&(svc, host, &ips));
            let mut render = || render::map::service_entries(svc, host, &ips);
            sink.file(repo_paths::lb_service_map_path(host, &svc.key), fp, &mut render)
        } else {
            if shared {
                listeners
                    .entry(host.clone())
                    .or_default()
                    .extend(render::map::listeners_of(svc, &ips));
            }
            let fp = fingerprint(&(service_fp, host, &ips));
            let mut render = || render::nginx::service(svc, host, &ips, &upstreams());
            sink.file(repo_paths::lb_service_path(host, &svc.key), fp, &mut render)
        };
        if let Err(e) = result {
            failed = Some(e);
        }
    }
    if !names.is_empty() {
        let ttl = svc.settings.dns_ttl.unwrap_or(DEFAULT_TTL);
        let all: Vec<IpAddr> = addresses.values().chain(addresses_v6.values()).copied().collect();
        let fp = fingerprint(&(&svc.key, &config.zone, &names, ttl, &all));
        let mut render = || render::zone::fragment(svc, &config.zone, &names, ttl, &all);
        if let Err(e) = sink.file(repo_paths::dns_service_path(&config.zone, &svc.key), fp, &mut render) {
            failed = Some(e);
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(ExposedSummary {
            ports: svc.ports.clone(),
            addresses,
            addresses_v6,
            nodes: chosen,
            pods: pods.as_ref().map(endpoints::addresses),
            dns_names: names.into_iter().collect(),
            format: match &pods {
                Some(upstreams) if !endpoints::alike_per_port(upstreams) => {
                    crate::format::needed(svc).max(endpoints::PER_PORT_UPSTREAMS_FORMAT)
                }
                _ => crate::format::needed(svc),
            },
        }),
    }
}

/// The nodes that carry `svc`: the eligible ones (with `externalTrafficPolicy: Local`, those
/// holding a ready endpoint), at most `max-nodes` of them.
fn chosen_nodes(
    svc: &ExposedService,
    config: &Config,
    backends: &Backends<'_>,
    sink: &mut dyn FileSink,
) -> crate::sink::Chosen {
    let none = BTreeSet::new();
    let local: Vec<&Node>;
    let (candidates, candidates_fp) = if svc.local_traffic {
        let holders = backends
            .ready
            .get(&(svc.key.namespace.to_string(), svc.key.name.to_string()))
            .unwrap_or(&none);
        local = backends
            .eligible
            .iter()
            .filter(|n| holders.contains(&*n.name))
            .collect();
        (&local, fingerprint(&local))
    } else {
        (&backends.all, backends.all_fp)
    };
    let max = svc.settings.max_nodes.unwrap_or(config.max_nodes_per_service);
    sink.chosen_nodes(&svc.key, backends.eligible, candidates, candidates_fp, max)
}

/// The host-level files of every shared-listeners host: a wildcard listener for every port a
/// Service uses there (Services served through the map, per-service ones on the same host, and
/// Services kept as they are, from their ledger entries, so their committed entries stay
/// reachable), and the node set every map entry sends to.
pub(crate) fn shared_host_files(
    config: &Config,
    previous: &Ledger,
    kept: &BTreeSet<ServiceKey>,
    mut listeners: BTreeMap<LbHostName, BTreeSet<Listener>>,
    nodes: &[&Node],
    sink: &mut dyn FileSink,
    problems: &mut Vec<Problem>,
) {
    for host in config.lb_hosts.iter().filter(|h| h.layout == Layout::SharedListeners) {
        let set = listeners.entry(host.name.clone()).or_default();
        for key in kept {
            let Some(entry) = previous.services.get(key) else {
                continue;
            };
            let ips = entry
                .addresses
                .get(&host.name)
                .into_iter()
                .chain(entry.addresses_v6.get(&host.name));
            for ip in ips {
                set.extend(entry.ports.iter().map(|p| Listener {
                    protocol: p.protocol,
                    port: p.port,
                    ipv6: ip.is_ipv6(),
                }));
            }
        }
        let fp = fingerprint(&(&host.name, &*set, nodes));
        let rendered = render::map::host_files(&host.name, set, nodes);
        match rendered {
            Ok(files) => {
                for (path, text) in files {
                    let mut render = || Ok(text.clone());
                    let _ = sink.file(path, fp, &mut render);
                }
                sink.keep();
            }
            Err(e) => problems.push(Problem {
                severity: Severity::Error,
                object: Subject::LbHost(host.name.clone()),
                field: String::new(),
                message: format!("{e}; its listeners and nodes files stay as they are"),
            }),
        }
    }
}
