//! The whole decision, (cluster snapshot, config, ledger, now) → desired state, with no I/O: which
//! Services are exposed, on which addresses, through which nodes, and the text of every file.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use jiff::Timestamp;

use crate::allocate::{self, AddressEvent};
use crate::config::Config;
use crate::config::{Flavor, Layout};
use crate::endpoints::{self, SlicesByService};
use crate::exposure::{self, ExposedService, Exposure, ServicePort};
use crate::holds::HoldUpdate;
use crate::host_addresses::HostAddresses;
use crate::layout;
use crate::ledger::{Entry, Ledger};
use crate::model::Snapshot;
use crate::names::{LbHostName, ServiceKey};
use crate::nodes::{self, Node};
use crate::problem::{Problem, Severity, Subject};
use crate::render::{self, Upstreams};
use crate::render_haproxy;
use crate::render_map::{self, Listener};
use crate::sink::{FileSink, TextFiles, fingerprint};

/// What one exposed Service got, for tables and messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExposedSummary {
    pub ports: Vec<ServicePort>,
    pub addresses: HostAddresses,
    /// IPv6 addresses of a dual-stack Service.
    pub addresses_v6: HostAddresses,
    /// The nodes it sends to (none for a pod-backed Service).
    pub nodes: nodes::NodeSet,
    /// A pod-backed Service's upstreams: every ready endpoint any of its ports sends to, sorted
    /// (`None` for a Service that sends to nodes).
    pub pods: Option<std::sync::Arc<[SocketAddr]>>,
    /// DNS names that get a record per address.
    /// Sorted, without repeats (a vector: a set of one name would cost a 300-byte tree node, 15 MB
    /// at 50,000 Services).
    pub dns_names: Vec<String>,
    /// The output format its files need ([`crate::format::needed`]).
    pub format: u32,
}

/// What each exposed Service got: a persistent map, shared between decisions until one changes.
pub type ExposedMap = imbl::OrdMap<ServiceKey, ExposedSummary>;

#[derive(Debug, Clone)]
pub struct Decision {
    pub ledger: Ledger,
    /// Every generated file that should exist, by repo path (the ledger and `format.yaml`
    /// included).
    pub files: BTreeMap<String, String>,
    /// Services skipped for errors: whatever files they have stay exactly as they are.
    pub kept: BTreeSet<ServiceKey>,
    pub exposed: ExposedMap,
    pub events: Vec<AddressEvent>,
    pub problems: Vec<Problem>,
    /// Every node of the snapshot by its address: its name and, when it carries no traffic, why.
    pub node_states: BTreeMap<IpAddr, (String, Option<&'static str>)>,
    /// The holds in force after this decision, the ones it placed, and the lifted ones.
    pub holds: HoldUpdate,
    /// Services managed again because a human lifted their hold.
    pub resumed: BTreeSet<ServiceKey>,
}

impl Decision {
    /// Generated paths present now that must go: not rendered, and not owned by a kept Service.
    pub fn deletions<'a>(&self, current_lb_paths: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
        current_lb_paths
            .into_iter()
            .filter(|path| !self.files.contains_key(*path))
            .filter(|path| match layout::service_of(path) {
                Some(key) => !self.kept.contains(&key),
                // Not a path we could have written: remove it, the lb/ and dns/ trees are ours alone.
                None => true,
            })
            .cloned()
            .collect()
    }
}

pub fn decide(snapshot: &Snapshot, config: &Config, previous: &Ledger, now: Timestamp) -> Decision {
    decide_with_holds(snapshot, config, previous, &HoldUpdate::default(), now)
}

/// [`decide`] for a repo where humans changed generated files: held Services are left exactly as
/// they are (files and ledger entry) and their reserved addresses stay out of reach; Services whose
/// hold was lifted get their reserved addresses back when still free.
pub fn decide_with_holds(
    snapshot: &Snapshot,
    config: &Config,
    previous: &Ledger,
    holds: &HoldUpdate,
    now: Timestamp,
) -> Decision {
    let mut sink = TextFiles::default();
    let mut decision = decide_into(snapshot, config, previous, holds, now, &mut sink);
    decision.files = sink.files;
    decision
}

/// The decision, its files handed to `sink` (the returned `files` is empty): the one code path
/// behind [`decide`] and the generator's incremental engine.
pub fn decide_into(
    snapshot: &Snapshot,
    config: &Config,
    previous: &Ledger,
    holds: &HoldUpdate,
    now: Timestamp,
    sink: &mut dyn FileSink,
) -> Decision {
    let mut problems = Vec::new();
    let mut kept = BTreeSet::new();
    for (key, hold) in &holds.holds.holds {
        kept.insert(key.clone());
        problems.push(Problem::service_warning(
            key,
            "",
            format!(
                "on hold: {}; the generator leaves its files and ledger entry as they are. To lift the hold, delete {key} from holds.yaml and commit",
                hold.because()
            ),
        ));
    }
    let mut exposed: Vec<ExposedService> = Vec::new();
    let mut pod_ports = BTreeMap::new();
    for unreadable in &snapshot.unreadable_services {
        kept.insert(unreadable.key.clone());
        problems.push(Problem::service_error(&unreadable.key, "", unreadable.message.clone()));
    }
    for svc in &snapshot.services {
        let exposure = exposure::classify(svc, config);
        sink.classified(
            svc,
            matches!(&exposure, Exposure::Exposed(_, w) if w.is_empty()) || exposure == Exposure::NotManaged,
        );
        match exposure {
            Exposure::NotManaged => {}
            Exposure::Exposed(e, mut warnings) => {
                problems.append(&mut warnings);
                problems.extend(crate::flavor::unserved_ports(&e, config));
                if endpoints::pod_backed(&e) {
                    problems.extend(endpoints::warnings(&e));
                    pod_ports.insert(e.key.clone(), endpoints::port_names(&e, svc));
                }
                exposed.push(*e);
            }
            Exposure::Invalid(key, mut errors) => {
                problems.append(&mut errors);
                kept.insert(key);
            }
            Exposure::Unkeyed(p) => problems.push(p),
        }
    }
    // A Service listed twice (two manifests) is ambiguous: keep its last state.
    exposed.sort_by(|a, b| a.key.cmp(&b.key));
    let mut twice = BTreeSet::new();
    for pair in exposed.windows(2) {
        if pair[0].key == pair[1].key {
            twice.insert(pair[0].key.clone());
        }
    }
    for key in &twice {
        problems.push(Problem::service_error(
            key,
            "metadata.name",
            "the Service appears more than once in the input",
        ));
        kept.insert(key.clone());
    }
    exposed.retain(|e| !kept.contains(&e.key));
    let clashing = shared_port_clashes(&exposed, &mut problems);
    exposed.retain(|e| !clashing.contains(&e.key));

    let (working, phantoms, resumed) = with_reservations(previous, holds, &exposed);
    let refs: Vec<&ExposedService> = exposed.iter().collect();
    let mut alloc = allocate::allocate(config, &working, &refs, &kept, now);
    for key in &phantoms {
        alloc.ledger.services.remove(key);
    }
    problems.extend(alloc.problems);

    let (eligible, mut node_problems) = nodes::eligible(&snapshot.nodes, config);
    let eligible: std::sync::Arc<[Node]> = eligible.into();
    problems.append(&mut node_problems);
    let ready = nodes::ready_nodes_by_service(&snapshot.endpoint_slices);
    let slices = SlicesByService::of_services(&snapshot.endpoint_slices, pod_ports.keys());

    let mut summaries = ExposedMap::new();
    let placed = |key: &ServiceKey| alloc.addresses.contains_key(key);
    let mut names_of = dns_names(snapshot, &exposed, placed, &config.zone, &mut problems);
    let mut listeners: BTreeMap<LbHostName, BTreeSet<Listener>> = BTreeMap::new();
    let backends = Backends::new(&eligible, &ready, &slices, pod_ports);
    for svc in &exposed {
        let Some(addresses) = alloc.addresses.get(&svc.key) else {
            continue;
        };
        let names = names_of.remove(&svc.key).unwrap_or_default();
        let addresses_v6 = alloc.addresses_v6.get(&svc.key).cloned().unwrap_or_default();
        let result = service_files(
            svc,
            addresses.clone(),
            addresses_v6,
            names,
            config,
            &backends,
            sink,
            &mut listeners,
        );
        record_service(result, &svc.key, sink, &mut summaries, &mut kept, &mut problems);
    }
    shared_host_files(config, previous, &kept, listeners, &backends.all, sink, &mut problems);
    let ledger_fp = fingerprint(&alloc.ledger);
    let mut render_ledger = || Ok(alloc.ledger.to_yaml());
    // Serialising the ledger cannot fail.
    let _ = sink.file(layout::LEDGER_FILE.to_owned(), ledger_fp, &mut render_ledger);
    sink.keep();
    format_file(sink, &summaries);
    let node_states = snapshot
        .nodes
        .iter()
        .filter_map(|n| {
            Some((
                nodes::internal_ip(n)?,
                (n.name.clone(), nodes::ineligible_because(n, config)),
            ))
        })
        .collect();
    crate::problem::sort_and_dedup(&mut problems);
    Decision {
        ledger: alloc.ledger,
        files: BTreeMap::new(),
        kept,
        exposed: summaries,
        events: alloc.events,
        problems,
        node_states,
        holds: holds.clone(),
        resumed,
    }
}

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

    /// The ready endpoints of each of `svc`'s ports (see [`crate::endpoints`]).
    fn pods(&self, svc: &ExposedService) -> Upstreams {
        let names = self.pod_ports.get(&svc.key).map_or(&[][..], Vec::as_slice);
        endpoints::upstreams(svc, names, self.slices.get(&svc.key))
    }
}

/// Records what [`service_files`] gave `key`: its summary and its files, or, on a render error, a
/// problem, its files discarded and the Service kept exactly as it is.
pub(crate) fn record_service(
    result: Result<ExposedSummary, crate::render::RenderError>,
    key: &ServiceKey,
    sink: &mut dyn FileSink,
    exposed: &mut ExposedMap,
    kept: &mut BTreeSet<ServiceKey>,
    problems: &mut Vec<Problem>,
) {
    match result {
        Ok(summary) => {
            sink.keep();
            exposed.insert(key.clone(), summary);
        }
        Err(e) => {
            problems.push(Problem::service_error(key, "", e.to_string()));
            sink.discard();
            kept.insert(key.clone());
        }
    }
}

/// Hands the files of one exposed Service to `sink` (its snippet on every host it has an address
/// on, its zone fragment) and returns what it got. On an error the caller discards the files.
#[allow(clippy::too_many_arguments)]
pub(crate) fn service_files(
    svc: &ExposedService,
    addresses: HostAddresses,
    addresses_v6: HostAddresses,
    names: BTreeSet<String>,
    config: &Config,
    backends: &Backends<'_>,
    sink: &mut dyn FileSink,
    listeners: &mut BTreeMap<LbHostName, BTreeSet<Listener>>,
) -> Result<ExposedSummary, crate::render::RenderError> {
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
            let mut render = || render_haproxy::haproxy_service_to(svc, host, &ips, &upstreams());
            sink.file(layout::lb_service_cfg_path(host, &svc.key), fp, &mut render)
        } else if shared && render_map::per_service_reason(svc).is_none() {
            // Map entries depend on the Service and its addresses only: node churn goes to
            // the host's nodes file, not to every Service.
            listeners
                .entry(host.clone())
                .or_default()
                .extend(render_map::listeners_of(svc, &ips));
            let fp = fingerprint(&(svc, host, &ips));
            let mut render = || render_map::service_entries(svc, host, &ips);
            sink.file(layout::lb_service_map_path(host, &svc.key), fp, &mut render)
        } else {
            if shared {
                listeners
                    .entry(host.clone())
                    .or_default()
                    .extend(render_map::listeners_of(svc, &ips));
            }
            let fp = fingerprint(&(service_fp, host, &ips));
            let mut render = || render::nginx_service_to(svc, host, &ips, &upstreams());
            sink.file(layout::lb_service_path(host, &svc.key), fp, &mut render)
        };
        if let Err(e) = result {
            failed = Some(e);
        }
    }
    if !names.is_empty() {
        let ttl = svc.settings.dns_ttl.unwrap_or(DEFAULT_TTL);
        let all: Vec<IpAddr> = addresses.values().chain(addresses_v6.values()).copied().collect();
        let fp = fingerprint(&(&svc.key, &config.zone, &names, ttl, &all));
        let mut render = || render::zone_fragment(svc, &config.zone, &names, ttl, &all);
        if let Err(e) = sink.file(layout::dns_service_path(&config.zone, &svc.key), fp, &mut render) {
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

/// The ledger to allocate against: `previous` plus, for held Services without an entry (a revert
/// removed it), a stand-in entry holding their reserved addresses so nobody else gets them (the
/// stand-ins are returned and never written), plus, for exposed Services whose hold was lifted
/// and that have no entry, their reserved addresses back. Addresses someone else holds by now
/// are left out.
fn with_reservations<'a>(
    previous: &'a Ledger,
    holds: &HoldUpdate,
    exposed: &[ExposedService],
) -> (std::borrow::Cow<'a, Ledger>, BTreeSet<ServiceKey>, BTreeSet<ServiceKey>) {
    if holds.holds.holds.is_empty() && holds.lifted.is_empty() {
        // Nothing held or lifted (the usual case): no copy of a ledger of 50,000 entries.
        return (std::borrow::Cow::Borrowed(previous), BTreeSet::new(), BTreeSet::new());
    }
    let mut working = previous.clone();
    let mut taken: BTreeSet<(LbHostName, IpAddr)> = working
        .services
        .values()
        .flat_map(|e| e.addresses.iter().chain(&e.addresses_v6))
        .map(|(h, ip)| (h.clone(), *ip))
        .collect();
    let mut give = |key: &ServiceKey, hold: &crate::holds::Hold, working: &mut Ledger| -> bool {
        if working.services.contains_key(key) {
            return false;
        }
        let mut free = |map: &HostAddresses| -> HostAddresses {
            map.iter()
                .filter(|(h, ip)| taken.insert(((*h).clone(), **ip)))
                .map(|(h, ip)| (h.clone(), *ip))
                .collect()
        };
        let entry = Entry {
            addresses: free(&hold.addresses),
            addresses_v6: free(&hold.addresses_v6),
            ..Entry::default()
        };
        if entry.addresses.is_empty() && entry.addresses_v6.is_empty() {
            return false;
        }
        working.services.insert(key.clone(), entry);
        true
    };
    let mut phantoms = BTreeSet::new();
    for (key, hold) in &holds.holds.holds {
        if give(key, hold, &mut working) {
            phantoms.insert(key.clone());
        }
    }
    let mut resumed = BTreeSet::new();
    for (key, hold) in &holds.lifted {
        if exposed.iter().any(|e| &e.key == key) {
            give(key, hold, &mut working);
            resumed.insert(key.clone());
        }
    }
    (std::borrow::Cow::Owned(working), phantoms, resumed)
}

/// The host-level files of every shared-listeners host: a wildcard listener for every port a
/// Service uses there (Services served through the map, per-service ones on the same host, and
/// Services kept as they are, from their ledger entries, so their committed entries stay
/// reachable), and the node set every map entry sends to.
fn shared_host_files(
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
        let rendered = render_map::host_files(&host.name, set, nodes);
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

/// Services sharing addresses (one namespace, one `flipbit.io/shared-ip-key`) must not serve the
/// same protocol and port: the older Service (creation time, then name) keeps its ports, a later
/// one that clashes is not exposed.
fn shared_port_clashes(exposed: &[ExposedService], problems: &mut Vec<Problem>) -> BTreeSet<ServiceKey> {
    let mut groups: BTreeMap<(String, &str), Vec<&ExposedService>> = BTreeMap::new();
    for svc in exposed {
        if let Some(k) = &svc.settings.shared_key {
            groups
                .entry((svc.key.namespace.to_string(), k.as_str()))
                .or_default()
                .push(svc);
        }
    }
    let mut clashing = BTreeSet::new();
    for ((_, shared_key), mut members) in groups {
        members.sort_by(|a, b| (a.created, &a.key).cmp(&(b.created, &b.key)));
        let mut taken: BTreeMap<(crate::exposure::Protocol, u16), &ServiceKey> = BTreeMap::new();
        for svc in members {
            let clash = svc
                .ports
                .iter()
                .find_map(|p| taken.get(&(p.protocol, p.port)).map(|owner| (p, *owner)));
            match clash {
                Some((port, owner)) => {
                    problems.push(Problem::service_error(
                        &svc.key,
                        crate::annotations::field(crate::annotations::SHARED_IP_KEY),
                        format!(
                            "{}/{} clashes with Service {owner}, which shares the key {shared_key:?} and came first; not exposed",
                            port.protocol, port.port
                        ),
                    ));
                    clashing.insert(svc.key.clone());
                }
                None => {
                    for p in &svc.ports {
                        taken.insert((p.protocol, p.port), &svc.key);
                    }
                }
            }
        }
    }
    clashing
}

/// TTL of a Service's records unless `flipbit.io/dns-ttl` says otherwise.
pub const DEFAULT_TTL: u32 = 300;

/// The DNS names of every exposed Service that got addresses: its `flipbit.io/hostname` names or
/// its default name `<service>.<namespace>.<zone>`. A default name is always its Service's own
/// (whether that Service is exposed or not), so a tenant cannot take another Service's name by
/// claiming it first: default names are given first, and a custom claim of another input
/// Service's default name is an error on the claimant. Custom names are then given in key order:
/// a name claimed by two Services stays with the first, and the later one gets an error for that
/// name alone (so two Services never silently share a name).
fn dns_names<'a>(
    snapshot: &Snapshot,
    exposed: &'a [ExposedService],
    placed: impl Fn(&ServiceKey) -> bool,
    zone: &str,
    problems: &mut Vec<Problem>,
) -> BTreeMap<&'a ServiceKey, BTreeSet<String>> {
    let mut names_of = BTreeMap::new();
    let mut custom = Vec::new();
    for svc in exposed.iter().filter(|s| placed(&s.key)) {
        match &svc.settings.hostnames {
            None => {
                names_of.insert(&svc.key, BTreeSet::from([crate::dns::default_name(&svc.key, zone)]));
            }
            Some(wanted) => custom.push((svc, wanted)),
        }
    }
    if custom.is_empty() {
        return names_of;
    }
    let inputs = input_keys(snapshot);
    let mut owners: BTreeMap<&str, &ServiceKey> = BTreeMap::new();
    for (svc, wanted) in custom {
        let mut names = BTreeSet::new();
        for name in wanted {
            let refusal = match default_owner(name, zone, &inputs) {
                Some(owner) if owner != svc.key => Some(format!(
                    "the DNS name {name} is the default name of Service {owner}, which always keeps it; no record for it"
                )),
                _ => owners
                    .get(name.as_str())
                    .map(|owner| format!("the DNS name {name} already belongs to Service {owner}; no record for it")),
            };
            match refusal {
                Some(message) => problems.push(Problem::service_error(
                    &svc.key,
                    crate::annotations::field(crate::annotations::HOSTNAME),
                    message,
                )),
                None => {
                    owners.insert(name, &svc.key);
                    names.insert(name.clone());
                }
            }
        }
        names_of.insert(&svc.key, names);
    }
    names_of
}

/// `namespace`/`name` of every Service in the input, read or not, as written.
fn input_keys(snapshot: &Snapshot) -> BTreeSet<(&str, &str)> {
    let read = snapshot
        .services
        .iter()
        .map(|s| (s.namespace.as_str(), s.name.as_str()));
    let unreadable = snapshot
        .unreadable_services
        .iter()
        .map(|u| (u.key.namespace.as_str(), u.key.name.as_str()));
    read.chain(unreadable).collect()
}

/// The Service in the input whose default name `name` is, if any.
fn default_owner(name: &str, zone: &str, inputs: &BTreeSet<(&str, &str)>) -> Option<ServiceKey> {
    let relative = name.strip_suffix(zone)?.strip_suffix('.')?;
    let (service, namespace) = relative.split_once('.')?;
    if !inputs.contains(&(namespace, service)) {
        return None;
    }
    ServiceKey::new(namespace, service).ok()
}

/// True when any problem is an error (a Service skipped).
pub fn has_errors(problems: &[Problem]) -> bool {
    problems.iter().any(|p| p.severity == Severity::Error)
}
