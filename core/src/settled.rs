//! The engine's memory of its last decision, so the next one looks only at the Services that
//! changed. At 50,000 Services a full decision reads, allocates and fingerprints every one of them
//! (~0.6 s); a change to one of them should cost about one Service's work.
//!
//! A full decision is the truth; this is a shortcut that must reach the same result, so it is taken
//! only where that is plain to see:
//! - everything but the Services and their EndpointSlices is as it was (`flipbit.yaml`, nodes,
//!   unreadable Services, no holds), and no withdrawn address comes free yet;
//! - a Service whose EndpointSlices changed is looked at again like a changed one: its slices
//!   decide only its own files (its pods, or its nodes under `externalTrafficPolicy: Local`);
//! - the Services looked at again (changed, new, gone, and every Service that had a problem last
//!   time) involve no other Service: no shared address key, no requested address, no
//!   `flipbit.io/hostname`, and none whose default DNS name (its own, exposed or not) another
//!   Service holds as a custom name (it gets it back), and on a shared-listeners
//!   host neither the first nor the last Service on a port (the host's listeners stay as they are).
//!
//! Anything else gets a full decision, which rebuilds this memory. Services that had no problem and
//! did not change keep exactly what they had: a full decision would give them the same.
//! `core/tests/fast_path.rs` checks that against full decisions over random sequences of changes.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::net::IpAddr;

use jiff::{SignedDuration, Timestamp};

use crate::allocate::{self, AddressEvent, Placement, Used};
use crate::config::{Config, Layout};
use crate::decide::{self, Class, Decision, ExposedMap, ExposedSummary, Inputs};
use crate::endpoints::SlicesByService;
use crate::exposure::{ExposedService, Protocol};
use crate::holds::HoldUpdate;
use crate::ledger::Ledger;
use crate::model::{ServiceInput, Snapshot};
use crate::names::{LbHostName, ServiceKey};
use crate::nodes::{self, Node};
use crate::problem::{Problem, Subject};
use crate::render::files::{self, Backends, Given, Recorded};
use crate::repo_paths;
use crate::sink::FileSink;

mod kept;

type HashMap<K, V> = foldhash::HashMap<K, V>;
type HashSet<K> = foldhash::HashSet<K>;

/// `namespace`/`name` as written in the input (not necessarily a valid key).
type RawKey = (String, String);

/// A Service input as last seen.
#[derive(Debug, Clone)]
struct Seen {
    key: RawKey,
    fingerprint: u64,
    /// The last fast decision that found it in the snapshot.
    generation: u64,
}

/// What the last decision decided, and the inputs it decided from.
#[derive(Debug, Clone)]
pub(crate) struct Settled {
    config: Config,
    /// Nodes and unreadable Services.
    context: u64,
    /// The EndpointSlices of each Service, by [`key_hash`]: the sum of their hashes (so their
    /// order does not count, and two keys that share a hash still see each other's changes).
    slices: HashMap<u64, u64>,
    /// Every Service input by the hash of its raw key.
    inputs: HashMap<u64, Seen>,
    /// Inputs that had a problem, or were not plainly exposed or ignored: looked at every time.
    troubled: HashSet<RawKey>,
    generation: u64,
    ledger: Ledger,
    exposed: ExposedMap,
    kept: BTreeSet<ServiceKey>,
    /// Keys of Services that could not be read: kept, whatever input has the same key.
    unreadable: BTreeSet<ServiceKey>,
    /// Problems not of one Service input: nodes, unreadable Services, LB host files.
    context_problems: Vec<Problem>,
    node_states: BTreeMap<IpAddr, (String, Option<&'static str>)>,
    eligible: std::sync::Arc<[Node]>,
    ready: BTreeMap<(String, String), BTreeSet<String>>,
    used: Used,
    /// How many Services give each listener of a shared-listeners host.
    listeners: BTreeMap<(LbHostName, Protocol, u16, bool), usize>,
    /// DNS names Services hold through `flipbit.io/hostname`.
    custom_names: HashSet<String>,
    /// The first moment a withdrawn address comes free.
    next_expiry: Option<Timestamp>,
}

/// A fast decision: the decision, the memory after it, and every Service it looked at.
pub(crate) struct Fast {
    pub(crate) decision: Decision,
    pub(crate) settled: Settled,
    pub(crate) touched: Vec<ServiceKey>,
}

fn hash_of<T: std::hash::Hash + ?Sized>(value: &T) -> u64 {
    foldhash::fast::FixedState::with_seed(0x666c_6970).hash_one(value)
}

fn raw_key(svc: &ServiceInput) -> RawKey {
    (svc.namespace.clone(), svc.name.clone())
}

/// The hash of a Service's `namespace`/`name` as written, the key of its input and its slices.
fn key_hash(namespace: &str, name: &str) -> u64 {
    hash_of(&(namespace, name))
}

fn context_of(snapshot: &Snapshot) -> u64 {
    hash_of(&(&snapshot.nodes, &snapshot.unreadable_services))
}

fn slices_of(snapshot: &Snapshot) -> HashMap<u64, u64> {
    let mut out: HashMap<u64, u64> = HashMap::default();
    for slice in &snapshot.endpoint_slices {
        let sum = out.entry(key_hash(&slice.namespace, &slice.service_name)).or_default();
        *sum = sum.wrapping_add(hash_of(slice));
    }
    out
}

/// The keys (by [`key_hash`]) whose slices differ between `before` and `after`.
fn moved_slices(before: &HashMap<u64, u64>, after: &HashMap<u64, u64>) -> HashSet<u64> {
    let changed = after
        .iter()
        .filter(|(k, sum)| before.get(*k) != Some(*sum))
        .map(|(k, _)| *k);
    let gone = before.keys().filter(|k| !after.contains_key(*k)).copied();
    changed.chain(gone).collect()
}

impl Settled {
    /// The memory after a full decision; `None` where the shortcut can never apply to it (holds,
    /// a Service listed twice, a key both unreadable and read).
    pub(crate) fn after_full(
        snapshot: &Snapshot,
        config: &Config,
        holds: &HoldUpdate,
        decision: &Decision,
        unclean: HashSet<RawKey>,
    ) -> Option<Settled> {
        if !holds.holds.holds.is_empty() || !holds.lifted.is_empty() {
            return None;
        }
        let mut inputs = HashMap::default();
        for svc in &snapshot.services {
            let key = raw_key(svc);
            let seen = Seen {
                fingerprint: hash_of(svc),
                key,
                generation: 0,
            };
            if inputs.insert(hash_of(&seen.key), seen).is_some() {
                return None;
            }
        }
        let unreadable: BTreeSet<&ServiceKey> = snapshot.unreadable_services.iter().map(|u| &u.key).collect();
        let mut troubled = unclean;
        let mut context_problems = Vec::new();
        for problem in &decision.problems {
            match &problem.object {
                Subject::Service(key) if unreadable.contains(key) => context_problems.push(problem.clone()),
                Subject::Service(key) => {
                    troubled.insert((key.namespace.to_string(), key.name.to_string()));
                }
                Subject::UnkeyedService { .. } => {
                    // An input whose name is not even a key: `classified` marked it.
                }
                Subject::Node(_) | Subject::EndpointSlice { .. } | Subject::LbHost(_) => {
                    context_problems.push(problem.clone());
                }
            }
        }
        if unreadable
            .iter()
            .any(|k| inputs.contains_key(&hash_of(&(k.namespace.to_string(), k.name.to_string()))))
        {
            return None;
        }
        let grace = grace_of(config);
        let next_expiry = decision
            .ledger
            .services
            .values()
            .filter_map(|e| e.released_at)
            .map(|at| at.saturating_add(grace).unwrap_or(Timestamp::MAX))
            .min();
        let mut settled = Settled {
            config: config.clone(),
            context: context_of(snapshot),
            slices: slices_of(snapshot),
            inputs,
            troubled,
            generation: 0,
            ledger: decision.ledger.clone(),
            exposed: decision.exposed.clone(),
            kept: decision.kept.clone(),
            unreadable: unreadable.into_iter().cloned().collect(),
            context_problems,
            node_states: decision.node_states.clone(),
            eligible: nodes::eligible(&snapshot.nodes, config).0.into(),
            ready: nodes::ready_nodes_by_service(&snapshot.endpoint_slices),
            used: allocate::used_addresses(&decision.ledger),
            custom_names: HashSet::default(),
            next_expiry,
            listeners: BTreeMap::new(),
        };
        settled.derive(config);
        Some(settled)
    }

    /// What follows from what each Service got: the DNS names held as custom names and, with a
    /// shared-listeners host, how many Services give each of its listeners.
    fn derive(&mut self, config: &Config) {
        let mut custom_names = HashSet::default();
        for (key, summary) in self.exposed.iter() {
            let default = crate::dns::default_name(key, &config.zone);
            custom_names.extend(summary.dns_names.iter().filter(|n| **n != default).cloned());
        }
        self.custom_names = custom_names;
        if config.lb_hosts.iter().any(|h| h.layout == Layout::SharedListeners) {
            let mut counts = BTreeMap::new();
            for key in self.exposed.keys().chain(&self.kept) {
                let given = self.listeners_of(config, key, self.exposed.get(key), self.kept.contains(key));
                for listener in given {
                    *counts.entry(listener).or_insert(0) += 1;
                }
            }
            self.listeners = counts;
        }
    }

    /// Until when a decision on exactly the inputs and ledger of the last one decides nothing new:
    /// `Some(None)` for ever, `Some(Some(at))` until a withdrawn address comes free, `None` when
    /// the next decision looks at some Service again whatever changed (one had a problem, or is
    /// not plainly exposed or ignored) or a problem not of one Service stands. With no Service
    /// changed and nothing troubled, [`Settled::decide_fast`] looks at no Service at all, so it
    /// decides exactly what this memory holds.
    pub(crate) fn unchanged_until(&self) -> Option<Option<Timestamp>> {
        (self.troubled.is_empty() && self.context_problems.is_empty()).then_some(self.next_expiry)
    }

    /// Decides by looking at changed and troubled Services only; `None` when a full decision is
    /// needed (the memory is spent either way: a full decision rebuilds it).
    pub(crate) fn decide_fast(mut self, inputs: Inputs<'_>, sink: &mut dyn FileSink) -> Option<Fast> {
        let (snapshot, config, holds, now) = (inputs.snapshot, inputs.config, inputs.holds, inputs.now);
        let plain = holds.holds.holds.is_empty() && holds.lifted.is_empty();
        // The memory is of the ledger it is asked to decide on (the same map, or an equal one).
        let previous = inputs.previous;
        let same_ledger = previous.services.ptr_eq(&self.ledger.services) || *previous == self.ledger;
        if !plain
            || !same_ledger
            || *config != self.config
            || context_of(snapshot) != self.context
            || self.next_expiry.is_some_and(|at| now >= at)
        {
            return None;
        }
        let slices = slices_of(snapshot);
        let moved = moved_slices(&self.slices, &slices);
        self.slices = slices;
        self.refresh_ready(snapshot, &moved);
        let (dirty, gone) = self.dirty_inputs(snapshot, &moved)?;

        let mut problems = Vec::new();
        let mut exposed: Vec<ExposedService> = Vec::new();
        let mut kept_now: Vec<ServiceKey> = Vec::new();
        let mut touched: Vec<ServiceKey> = Vec::new();
        let mut unclean: Vec<RawKey> = Vec::new();
        let mut pod_ports = BTreeMap::new();
        for svc in &dirty {
            match decide::classify(svc, config, &mut exposed, &mut pod_ports, &mut problems) {
                Class::NotManaged => touched.extend(ServiceKey::new(&svc.namespace, &svc.name).ok()),
                Class::Exposed { key, clean } => {
                    if !clean {
                        unclean.push(raw_key(svc));
                    }
                    touched.push(key);
                }
                Class::Invalid(key) => {
                    unclean.push(raw_key(svc));
                    touched.push(key.clone());
                    kept_now.push(key);
                }
                Class::Unkeyed => unclean.push(raw_key(svc)),
            }
        }
        touched.extend(gone.iter().filter_map(|(ns, name)| ServiceKey::new(ns, name).ok()));
        if !self.alone(config, &exposed, &touched) {
            return None;
        }

        // Addresses: gone Services are withdrawn, exposed ones placed as a full decision would.
        let exposed_keys: BTreeSet<&ServiceKey> = exposed.iter().map(|e| &e.key).collect();
        let before: Vec<_> = touched.iter().map(|k| self.ledger.services.get(k).cloned()).collect();
        let shared_hosts = config.lb_hosts.iter().any(|h| h.layout == Layout::SharedListeners);
        let old_listeners: Vec<Listeners> = match shared_hosts {
            true => touched
                .iter()
                .map(|k| self.listeners_of(config, k, self.exposed.get(k), self.kept.contains(k)))
                .collect(),
            false => Vec::new(),
        };
        let mut placement = Placement::new(std::mem::take(&mut self.used));
        for key in &touched {
            if exposed_keys.contains(key) || kept_now.contains(key) {
                continue;
            }
            if let Some(entry) = self.ledger.services.get_mut(key)
                && entry.released_at.is_none()
            {
                entry.released_at = Some(now);
                placement.events.push(AddressEvent::Withdrawn { key: key.clone() });
                let free_at = now.saturating_add(grace_of(config)).unwrap_or(Timestamp::MAX);
                self.next_expiry = Some(self.next_expiry.map_or(free_at, |at| at.min(free_at)));
            }
        }
        exposed.sort_by(|a, b| a.key.cmp(&b.key));
        for svc in &exposed {
            placement.release_unadmitted(config, &self.ledger, svc);
        }
        for svc in &exposed {
            placement.place(config, &mut self.ledger, svc);
        }
        let ledger_changed = touched
            .iter()
            .zip(&before)
            .any(|(k, old)| self.ledger.services.get(k) != old.as_ref());
        // On shared-listeners hosts every Service's ports are listeners of the host, which only a
        // full decision renders: the Services looked at may only add to or take from listeners
        // other Services keep.
        if shared_hosts {
            let mut counts = std::mem::take(&mut self.listeners);
            for (key, old) in touched.iter().zip(&old_listeners) {
                let new_summary = exposed.iter().find(|e| &e.key == key).and_then(|svc| {
                    Some(ExposedSummary {
                        ports: svc.ports.clone(),
                        addresses: placement.addresses.get(key)?.clone(),
                        addresses_v6: placement.addresses_v6.get(key).cloned().unwrap_or_default(),
                        nodes: nodes::NodeSet::new(&self.eligible, &[]),
                        pods: None,
                        dns_names: Vec::new(),
                        format: crate::format::needed(svc),
                    })
                });
                let new = self.listeners_of(config, key, new_summary.as_ref(), kept_now.contains(key));
                for listener in old.difference(&new) {
                    match counts.get_mut(listener) {
                        Some(n) if *n > 1 => *n -= 1,
                        // The host's last Service on that port went: its listener goes too.
                        _ => return None,
                    }
                }
                for listener in new.difference(old) {
                    // A port no Service used on that host (`None`): a new listener.
                    *counts.get_mut(listener)? += 1;
                }
            }
            self.listeners = counts;
        }
        problems.append(&mut placement.problems);
        let mut events = std::mem::take(&mut placement.events);
        events.sort();
        self.used = std::mem::take(&mut placement.used);

        // Files and summaries.
        for key in &touched {
            self.exposed.remove(key);
            self.kept.remove(key);
        }
        self.kept.extend(kept_now);
        let slices = SlicesByService::of_services(&snapshot.endpoint_slices, pod_ports.keys());
        let backends = Backends::new(&self.eligible, &self.ready, &slices, pod_ports);
        let mut out = Recorded::new(&mut self.exposed, &mut self.kept, &mut problems);
        let given = |key: &ServiceKey| {
            Some(Given {
                addresses: placement.addresses.remove(key)?,
                addresses_v6: placement.addresses_v6.remove(key).unwrap_or_default(),
                names: decide::default_names(key, &config.zone),
            })
        };
        files::services(&exposed, given, config, &backends, sink, &mut out);
        if ledger_changed {
            // Any fingerprint the engine has not seen: the text is rendered and compared.
            let fp = hash_of(&(now, self.generation, repo_paths::LEDGER_FILE));
            let ledger = &self.ledger;
            let mut render = || Ok(ledger.to_yaml());
            let _ = sink.file(repo_paths::LEDGER_FILE.to_owned(), fp, &mut render);
            sink.keep();
        }
        // Given every time, as by a full decision: a repo that lacks it gets it with the next commit.
        files::format_file(sink, &self.exposed);

        for key in &touched {
            self.troubled.remove(&(key.namespace.to_string(), key.name.to_string()));
        }
        for (ns, name) in &gone {
            self.troubled.remove(&(ns.clone(), name.clone()));
        }
        self.troubled.extend(unclean);
        for p in &problems {
            if let Some(key) = p.object.service() {
                self.troubled.insert((key.namespace.to_string(), key.name.to_string()));
            }
        }
        problems.extend(self.context_problems.iter().cloned());
        crate::problem::sort_and_dedup(&mut problems);
        let decision = Decision {
            ledger: self.ledger.clone(),
            files: BTreeMap::new(),
            kept: self.kept.clone(),
            exposed: self.exposed.clone(),
            events,
            problems,
            node_states: self.node_states.clone(),
            holds: holds.clone(),
            resumed: BTreeSet::new(),
        };
        Some(Fast {
            decision,
            settled: self,
            touched,
        })
    }

    /// Nodes holding a ready endpoint, afresh for the Services whose slices `moved`.
    fn refresh_ready(&mut self, snapshot: &Snapshot, moved: &HashSet<u64>) {
        if moved.is_empty() {
            return;
        }
        self.ready.retain(|(ns, name), _| !moved.contains(&key_hash(ns, name)));
        let slices = snapshot
            .endpoint_slices
            .iter()
            .filter(|s| moved.contains(&key_hash(&s.namespace, &s.service_name)));
        self.ready.extend(nodes::ready_nodes_by_service(slices));
    }

    /// The inputs to look at (changed, new, troubled, or whose slices `moved`) and the raw keys of
    /// inputs that went; `None` when one key is listed twice.
    fn dirty_inputs<'s>(
        &mut self,
        snapshot: &'s Snapshot,
        moved: &HashSet<u64>,
    ) -> Option<(Vec<&'s ServiceInput>, Vec<RawKey>)> {
        self.generation += 1;
        let generation = self.generation;
        let mut dirty = Vec::new();
        for svc in &snapshot.services {
            let key_hash = key_hash(&svc.namespace, &svc.name);
            let fingerprint = hash_of(svc);
            match self.inputs.get_mut(&key_hash) {
                Some(seen) => {
                    if seen.key.0 != svc.namespace || seen.key.1 != svc.name || seen.generation == generation {
                        return None;
                    }
                    seen.generation = generation;
                    let slices_moved = !moved.is_empty() && moved.contains(&key_hash);
                    if seen.fingerprint != fingerprint || slices_moved || self.troubled.contains(&seen.key) {
                        seen.fingerprint = fingerprint;
                        dirty.push(svc);
                    }
                }
                None => {
                    self.inputs.insert(
                        key_hash,
                        Seen {
                            key: raw_key(svc),
                            fingerprint,
                            generation,
                        },
                    );
                    dirty.push(svc);
                }
            }
        }
        let mut gone = Vec::new();
        if self.inputs.len() > snapshot.services.len() {
            self.inputs.retain(|_, seen| {
                let here = seen.generation == generation;
                if !here {
                    gone.push(seen.key.clone());
                }
                here
            });
        }
        Some((dirty, gone))
    }

    /// True when none of the Services looked at can change what another Service gets. A Service's
    /// default DNS name is its own whether it is exposed or not, so one looked at (new, gone,
    /// exposed or not) whose default name another Service holds as a custom name changes what
    /// that Service gets.
    fn alone(&self, config: &Config, exposed: &[ExposedService], touched: &[ServiceKey]) -> bool {
        let solitary = exposed.iter().all(|svc| {
            svc.settings.shared_key.is_none() && svc.settings.requested.is_empty() && svc.settings.hostnames.is_none()
        });
        let default_taken = !self.custom_names.is_empty()
            && touched
                .iter()
                .any(|k| self.custom_names.contains(&crate::dns::default_name(k, &config.zone)));
        let was_shared = touched
            .iter()
            .any(|k| self.ledger.services.get(k).is_some_and(|e| e.shared_key.is_some()));
        let unreadable = touched.iter().any(|k| self.unreadable.contains(k));
        solitary && !default_taken && !was_shared && !unreadable
    }

    /// The listeners `key` gives shared-listeners hosts: an exposed Service's ports on its
    /// addresses, a kept one's from its ledger entry, none for others.
    fn listeners_of(
        &self,
        config: &Config,
        key: &ServiceKey,
        exposed: Option<&ExposedSummary>,
        kept: bool,
    ) -> Listeners {
        let mut out = Listeners::new();
        let mut add = |ports: &mut dyn Iterator<Item = (Protocol, u16)>, addresses: &[(&LbHostName, &IpAddr)]| {
            let ports: Vec<(Protocol, u16)> = ports.collect();
            for (host, ip) in addresses {
                if config.host(host).is_some_and(|h| h.layout == Layout::SharedListeners) {
                    out.extend(ports.iter().map(|(p, n)| ((*host).clone(), *p, *n, ip.is_ipv6())));
                }
            }
        };
        if let Some(summary) = exposed {
            let addresses: Vec<_> = summary.addresses.iter().chain(&summary.addresses_v6).collect();
            add(&mut summary.ports.iter().map(|p| (p.protocol, p.port)), &addresses);
        } else if kept && let Some(entry) = self.ledger.services.get(key) {
            let addresses: Vec<_> = entry.addresses.iter().chain(&entry.addresses_v6).collect();
            add(&mut entry.ports.iter().map(|p| (p.protocol, p.port)), &addresses);
        }
        out
    }
}

/// Listeners of shared-listeners hosts: host, protocol, port, IPv6.
type Listeners = BTreeSet<(LbHostName, Protocol, u16, bool)>;

fn grace_of(config: &Config) -> SignedDuration {
    SignedDuration::from_secs(i64::try_from(config.release_grace_seconds).unwrap_or(i64::MAX))
}
