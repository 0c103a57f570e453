//! The whole decision, (cluster snapshot, config, ledger, now) → desired state, with no I/O: which
//! Services are exposed, on which addresses, through which nodes, and the text of every file
//! (rendered by [`crate::render::files`]). The steps the fast path ([`crate::settled`]) takes too
//! live here once: classifying a Service input ([`classify`]) and its default DNS names
//! ([`default_names`]); problems are ordered by [`crate::problem::sort_and_dedup`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use jiff::Timestamp;

use crate::allocate::{self, AddressEvent};
use crate::config::Config;
use crate::endpoints::{self, SlicesByService};
use crate::exposure::{self, ExposedService, Exposure, ServicePort};
use crate::holds::{self, HoldUpdate};
use crate::host_addresses::HostAddresses;
use crate::ledger::Ledger;
use crate::model::{ServiceInput, Snapshot};
use crate::names::ServiceKey;
use crate::nodes::{self, Node};
use crate::problem::{Problem, Severity};
use crate::render::files::{self, Backends, Given, Recorded};
use crate::repo_paths;
use crate::sink::{FileSink, TextFiles, fingerprint};

pub use crate::render::files::DEFAULT_TTL;

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
            .filter(|path| match repo_paths::service_of(path) {
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
    let inputs = Inputs {
        snapshot,
        config,
        previous,
        holds,
        now,
    };
    let mut decision = decide_into(inputs, &mut sink);
    decision.files = sink.files;
    decision
}

/// What a decision reads: the cluster, the repo's settings, the last ledger, the holds and the
/// time. The full decision and the fast path take the same inputs, so they are named once.
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    pub snapshot: &'a Snapshot,
    pub config: &'a Config,
    pub previous: &'a Ledger,
    pub holds: &'a HoldUpdate,
    pub now: Timestamp,
}

/// The decision, its files handed to `sink` (the returned `files` is empty): the one code path
/// behind [`decide`] and the generator's incremental engine.
pub fn decide_into(inputs: Inputs<'_>, sink: &mut dyn FileSink) -> Decision {
    let Inputs {
        snapshot,
        config,
        previous,
        holds,
        now,
    } = inputs;
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
        let class = classify(svc, config, &mut exposed, &mut pod_ports, &mut problems);
        sink.classified(
            svc,
            matches!(class, Class::NotManaged | Class::Exposed { clean: true, .. }),
        );
        if let Class::Invalid(key) = class {
            kept.insert(key);
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

    let (working, phantoms, resumed) = holds::with_reservations(previous, holds, &exposed);
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
    let backends = Backends::new(&eligible, &ready, &slices, pod_ports);
    let mut out = Recorded::new(&mut summaries, &mut kept, &mut problems);
    let given = |key: &ServiceKey| {
        Some(Given {
            addresses: alloc.addresses.get(key)?.clone(),
            addresses_v6: alloc.addresses_v6.get(key).cloned().unwrap_or_default(),
            names: names_of.remove(key).unwrap_or_default(),
        })
    };
    files::services(&exposed, given, config, &backends, sink, &mut out);
    let listeners = out.listeners;
    files::shared_host_files(config, previous, &kept, listeners, backends.all(), sink, &mut problems);
    let ledger_fp = fingerprint(&alloc.ledger);
    let mut render_ledger = || Ok(alloc.ledger.to_yaml());
    // Serialising the ledger cannot fail.
    let _ = sink.file(repo_paths::LEDGER_FILE.to_owned(), ledger_fp, &mut render_ledger);
    sink.keep();
    files::format_file(sink, &summaries);
    let node_states = nodes::states(&snapshot.nodes, config);
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

/// How one Service input was classified by [`classify`].
pub(crate) enum Class {
    NotManaged,
    /// Exposed; `clean` when classifying it found no problem.
    Exposed {
        key: ServiceKey,
        clean: bool,
    },
    /// Ours but invalid: kept as it is.
    Invalid(ServiceKey),
    /// Its namespace or name is not a valid key.
    Unkeyed,
}

/// Classifies `svc` as every decision does, full or fast: an exposed Service is pushed to
/// `exposed` (and, when pod-backed, its port names to `pod_ports`), and every problem found with
/// it (its own, ports its LB flavour cannot carry, its endpoints) to `problems`.
pub(crate) fn classify(
    svc: &ServiceInput,
    config: &Config,
    exposed: &mut Vec<ExposedService>,
    pod_ports: &mut BTreeMap<ServiceKey, Vec<Option<String>>>,
    problems: &mut Vec<Problem>,
) -> Class {
    match exposure::classify(svc, config) {
        Exposure::NotManaged => Class::NotManaged,
        Exposure::Exposed(e, mut warnings) => {
            let clean = warnings.is_empty();
            problems.append(&mut warnings);
            problems.extend(crate::flavor::unserved_ports(&e, config));
            if endpoints::pod_backed(&e) {
                problems.extend(endpoints::warnings(&e));
                pod_ports.insert(e.key.clone(), endpoints::port_names(&e, svc));
            }
            let key = e.key.clone();
            exposed.push(*e);
            Class::Exposed { key, clean }
        }
        Exposure::Invalid(key, mut errors) => {
            problems.append(&mut errors);
            Class::Invalid(key)
        }
        Exposure::Unkeyed(p) => {
            problems.push(p);
            Class::Unkeyed
        }
    }
}

/// The DNS names of a Service without `flipbit.io/hostname`: its default name alone.
pub(crate) fn default_names(key: &ServiceKey, zone: &str) -> BTreeSet<String> {
    BTreeSet::from([crate::dns::default_name(key, zone)])
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
                names_of.insert(&svc.key, default_names(&svc.key, zone));
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
