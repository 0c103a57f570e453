//! One apply on one LB host (docs/design.md §5): fetch, then the load-balancer step (`lb_step`:
//! check, stage, validate, swap, reload, confirm), with `--manage-addresses` the addresses step
//! (`addresses`, §5.7) and, only once the load balancer serves the head on its addresses, the DNS
//! step (`dns_step`). The LB and DNS steps record what they confirmed in the journal, which a run
//! reads first, and the addresses step recomputes its work from the interface: a run killed
//! anywhere is finished by the next one. Any failure before the swap leaves the load balancer
//! untouched; a failed reload swaps back to the release it still runs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use flipbit_core::fleet::Cause;
use flipbit_core::names::LbHostName;
use flipbit_core::text::escaped;
use flipbit_store::{CommitId, FetchLimits, Store};

use crate::addresses::{self, ManagedInterface};
use crate::dns::{self, client::UpdateClient};
use crate::dns_step::{self, DnsOutcome};
use crate::failpoint;
use crate::haproxy::Haproxy;
use crate::journal::{self, DnsRecord, Journal};
use crate::lb_step::{self, Withheld};
use crate::nginx::Nginx;
use crate::release::{Lock, StateDir};
use crate::signatures::SignaturePolicy;

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub repo: String,
    pub branch: String,
    pub lb: LbHostName,
    pub state_dir: PathBuf,
    pub nginx: Nginx,
    /// Used when this host's `flavor` in flipbit.yaml is `haproxy`.
    pub haproxy: Haproxy,
    /// Accept a head that does not descend from the last applied commit (a force push).
    pub allow_rewind: bool,
    /// The DNS step, when enabled.
    pub dns: Option<DnsSettings>,
    /// Accept only commits signed by an allowed key, when set.
    pub signatures: Option<SignaturePolicy>,
    /// Bounds on each fetch.
    pub git_limits: FetchLimits,
    /// Publishing this host's state and watching its peers (needs the DNS step).
    pub fleet: FleetOptions,
    /// Prometheus textfile written after every run, when set.
    pub metrics_file: Option<PathBuf>,
}

/// How this host takes part in the fleet (docs/design.md §5.6).
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// How long a peer may look down before its records are taken out of DNS.
    pub peer_timeout: Duration,
    /// The zone of the hosts' state records; `None`: the zone in flipbit.yaml.
    pub status_zone: Option<String>,
    /// Seconds between this host's runs, published for its peers.
    pub interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Already at this commit.
    UpToDate { commit: String },
    /// A new commit that does not change this host's files: recorded, the load balancer left alone.
    Recorded { commit: String },
    /// The load balancer (`nginx` or `haproxy`, as `balancer` says) now runs this commit's files.
    Reloaded {
        commit: String,
        files: usize,
        millis: u128,
        balancer: &'static str,
    },
    /// The head waits for an earlier rollout wave (`rollout:` in flipbit.yaml): the load balancer
    /// keeps the commit it serves, and the DNS step is not run.
    Held { commit: String, why: String },
}

/// What one apply did: the load-balancer step, then the DNS step when one is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The load-balancer step (nginx or HAProxy; `nginx` in the state files, for compatibility).
    pub lb: Applied,
    /// Services withheld from this host (another process holds a socket they need), and why.
    pub withheld: Withheld,
    /// What the addresses step changed on the interface, when it ran.
    pub addresses: Option<addresses::Changes>,
    pub dns: Option<DnsOutcome>,
}

/// Where and how the DNS step sends its updates.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    pub server: std::net::SocketAddr,
    pub auth: dns::auth::AuthConfig,
    pub timeout: std::time::Duration,
}

impl DnsSettings {
    /// The client these settings describe, a TSIG key file read now (so a rotated key is used from
    /// the next run on).
    pub fn client(&self) -> Result<UpdateClient> {
        Ok(UpdateClient {
            server: self.server,
            auth: self.auth.load()?,
            timeout: self.timeout,
        })
    }
}

/// A step that failed: its cause code (what peers and metrics see) and the error (what the log
/// and the command's one line say).
#[derive(Debug)]
pub struct Failure {
    pub cause: Cause,
    pub error: anyhow::Error,
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure {
            cause: crate::outcome::cause_of(&error),
            error,
        }
    }
}

/// One run, step by step, whatever failed: the command's result, the state this host
/// publishes and its metrics all come from it.
#[derive(Debug)]
pub struct Run {
    /// The head fetched, when the fetch worked.
    pub head: Option<CommitId>,
    /// The load-balancer step: what it did and the Services withheld, or why it failed (the
    /// fetch's failure included).
    pub lb: Result<(Applied, Withheld), Failure>,
    /// The addresses step, when `--manage-addresses` is set and it succeeded; its failure is the
    /// run's failure, in `lb`, since the load balancer then serves no one on the segment.
    pub addresses: Option<addresses::Changes>,
    /// The DNS step, when it is configured and the load-balancer step succeeded.
    pub dns: Option<Result<DnsOutcome, Failure>>,
    pub lb_time: Duration,
    pub dns_time: Duration,
    /// The journal as the run left it.
    pub journal: Journal,
    /// What this host saw of its peers and did about them (with the DNS step).
    pub peers: Option<crate::fleet::peers::PeersReport>,
}

impl Run {
    /// The command's view: the report, or the first failure's error.
    pub fn into_report(self) -> Result<Report> {
        let (lb, withheld) = self.lb.map_err(|f| f.error)?;
        let dns = self.dns.transpose().map_err(|f| f.error)?;
        Ok(Report {
            lb,
            withheld,
            addresses: self.addresses,
            dns,
        })
    }
}

/// One apply, as the command runs it.
pub fn apply_once(opts: &ApplyOptions) -> Result<Report> {
    run_once(opts)?.into_report()
}

/// One run without the addresses step.
pub fn run_once(opts: &ApplyOptions) -> Result<Run> {
    run_managing(opts, None)
}

/// One run: lock, fetch, the load-balancer step, the addresses step on `interface` when given,
/// then the DNS step, then this host's part in the fleet (its published state, its peers).
/// Errors before the fetch (the state dir, the lock) end it; a step's failure is recorded in the
/// [`Run`]. The interface is a parameter rather than a field of [`ApplyOptions`], which library
/// users build field by field: the step is opt-in, and only the command line turns it on.
pub fn run_managing(opts: &ApplyOptions, interface: Option<&ManagedInterface>) -> Result<Run> {
    tracing::debug!(lb = %opts.lb, "apply started");
    let state = StateDir::new(opts.state_dir.clone())?;
    let _lock = Lock::take(&state)?;
    let journal = read_journal(&state);
    let started = Instant::now();
    let mut run = Run {
        head: None,
        lb: Err(Failure::from(anyhow!("not run"))),
        addresses: None,
        dns: None,
        lb_time: Duration::ZERO,
        dns_time: Duration::ZERO,
        journal,
        peers: None,
    };
    let published = run.journal.dns.as_ref().map(|d| d.commit);
    let (store, head, prefetch) = match open_and_fetch(opts, &state, published) {
        Ok(fetched) => fetched,
        Err(e) => {
            run.lb = Err(Failure::from(e));
            run.lb_time = started.elapsed();
            return Ok(run);
        }
    };
    run.head = Some(head);
    let fleet = match crate::fleet::for_run(opts, &store, head) {
        Ok(fleet) => fleet,
        Err(e) => {
            tracing::warn!(error = %escaped(&format!("{e:#}")), "no fleet view this run");
            None
        }
    };
    let mut own = fleet
        .as_ref()
        .and_then(|f| f.read(opts.lb.as_str()).ok())
        .unwrap_or_default();
    let on = Where {
        opts,
        state: &state,
        store: &store,
        head,
        interface,
        prefetch: std::cell::Cell::new(prefetch),
    };
    let republished = steps(&on, fleet.as_ref(), &mut own, &mut run, started);
    if let Some(fleet) = &fleet {
        fleet.publish(&own, &run, republished);
        run.peers = Some(fleet.watch_peers(run.lb.is_ok()));
    }
    Ok(run)
}

/// What a run's steps work on.
struct Where<'a> {
    opts: &'a ApplyOptions,
    state: &'a StateDir,
    store: &'a Store,
    head: CommitId,
    /// `--manage-addresses`.
    interface: Option<&'a ManagedInterface>,
    /// The published commit's DNS records, read during the fetch; taken by the DNS step.
    prefetch: std::cell::Cell<Option<dns_step::Prefetch>>,
}

/// The load-balancer, addresses and DNS steps of `run`; true when this host sent all its records
/// again (a peer had withdrawn them). A commit the load-balancer step only recorded (nothing of
/// this host's files changed) is written to the journal here, unless the DNS step wrote the
/// journal after it: at 10,000 zone fragments changed that is the usual run, and each durable
/// write costs two fsyncs (5–20 ms on the bench's disk).
fn steps(
    on: &Where<'_>,
    fleet: Option<&crate::fleet::Fleet<'_>>,
    own: &mut crate::fleet::Own,
    run: &mut Run,
    started: Instant,
) -> bool {
    let mut recorded = false;
    let republished = lb_and_dns(on, fleet, own, run, started, &mut recorded);
    let dns_wrote = matches!(run.dns, Some(Ok(DnsOutcome::Applied { .. })));
    if recorded
        && !dns_wrote
        && let Err(e) = journal::write(on.state, &run.journal)
    {
        run.lb = Err(Failure::from(anyhow::Error::from(e).context("writing the journal")));
    }
    republished
}

/// [`steps`] but for that write; `recorded` is set when the load-balancer step recorded the head
/// without writing the journal.
fn lb_and_dns(
    on: &Where<'_>,
    fleet: Option<&crate::fleet::Fleet<'_>>,
    own: &mut crate::fleet::Own,
    run: &mut Run,
    started: Instant,
    recorded: &mut bool,
) -> bool {
    let Where {
        opts,
        state,
        store,
        head,
        ..
    } = *on;
    // A later rollout wave waits until the earlier waves serve the head healthy.
    match crate::rollout::hold(opts, store, head) {
        Ok(None) => {}
        Ok(Some(why)) => {
            tracing::info!(%head, why = %escaped(&why), "held by the rollout");
            run.lb = Ok((
                Applied::Held {
                    commit: head.to_string(),
                    why,
                },
                Withheld::new(),
            ));
            // The release it keeps running still needs its addresses, and those it dropped are
            // still to be removed once their connections end.
            if let Err(e) = addresses_step(on, run) {
                run.lb = Err(Failure::from(e));
            }
            run.lb_time = started.elapsed();
            return false;
        }
        Err(e) => {
            run.lb = Err(Failure::from(e));
            run.lb_time = started.elapsed();
            return false;
        }
    }
    let step = lb_step::Step {
        opts,
        state,
        store,
        head,
    };
    let loaded_before = run.journal.loaded.as_ref().map(|l| l.commit);
    let outcome = match step.run(&mut run.journal) {
        Ok(outcome) => outcome,
        Err(e) => {
            run.lb = Err(Failure::from(e));
            run.lb_time = started.elapsed();
            return false;
        }
    };
    let lb_step::Outcome {
        applied: mut lb_applied,
        withheld,
        reloaded,
    } = outcome;
    *recorded = matches!(lb_applied, Applied::Recorded { .. });
    if !matches!(lb_applied, Applied::UpToDate { .. }) {
        lb_step::report_withheld(&opts.lb, &withheld);
    }
    // Before the probe, which connects to the addresses as any client would, and before DNS
    // names any of them.
    if let Err(e) = addresses_step(on, run) {
        if let Some(reloaded) = reloaded {
            reloaded.finish();
        }
        run.lb = Err(Failure::from(e));
        run.lb_time = started.elapsed();
        return false;
    }
    // After a reload, and while DNS has yet to follow a commit (a probe that failed earlier): the
    // listeners must accept before DNS names them.
    let dns_behind = opts.dns.is_some() && run.journal.dns.as_ref().is_none_or(|d| d.commit != head);
    if (matches!(lb_applied, Applied::Reloaded { .. }) || dns_behind)
        && let Err(e) = probe_self(opts, store, head, loaded_before, &run.journal)
    {
        if let Some(reloaded) = reloaded {
            reloaded.finish();
        }
        run.lb = Err(Failure {
            cause: Cause::Probe,
            error: anyhow!("commit {head} on {}: {}", opts.lb, escaped(&e)),
        });
        run.lb_time = started.elapsed();
        return false;
    }
    run.lb_time = started.elapsed();
    // What the DNS step takes as published: a host a peer withdrew sends all again, once it
    // answers on its own addresses.
    let baseline = match fleet {
        Some(fleet) => {
            let serving = own.state.as_ref().is_some_and(|s| s.withdrawn) && serves_itself(fleet, run);
            fleet.baseline(own, run.journal.dns.is_some(), serving)
        }
        None => Some(dns_step::Baseline::Journal),
    };
    // The DNS step needs only the new workers: the addresses it adds are new listeners, which
    // the old workers never had. So it runs while nginx's old generation winds down (~100 ms),
    // and the run ends once that generation no longer accepts.
    let dns_started = Instant::now();
    if let Some(baseline) = baseline {
        run.dns = dns_step(opts, state, store, head, &mut run.journal, baseline, on.prefetch.take())
            .map_err(Failure::from)
            .transpose();
    }
    run.dns_time = dns_started.elapsed();
    if let Some(reloaded) = reloaded {
        let waited = Instant::now();
        reloaded.finish();
        if let Applied::Reloaded { millis, .. } = &mut lb_applied {
            *millis += waited.elapsed().as_millis();
        }
    }
    run.lb = Ok((lb_applied, withheld));
    baseline == Some(dns_step::Baseline::Republish) && matches!(run.dns, Some(Ok(_)))
}

/// The addresses step (§5.7), when `--manage-addresses` is set, for the release the load
/// balancer was confirmed to run (none yet: nothing to serve, nothing to change). Its error
/// fails the run, so DNS never names an address that is not on the interface.
fn addresses_step(on: &Where<'_>, run: &mut Run) -> Result<()> {
    let (Some(interface), Some(loaded)) = (on.interface, &run.journal.loaded) else {
        return Ok(());
    };
    let changes = addresses::reconcile(interface, on.store, &on.opts.lb, loaded).map_err(|e| {
        e.context(format!(
            "commit {} on {}: the addresses step failed; DNS left as it was",
            loaded.commit, on.opts.lb
        ))
    })?;
    run.addresses = Some(changes);
    Ok(())
}

/// The post-apply probe of the release just loaded (`selfcheck`).
fn probe_self(
    opts: &ApplyOptions,
    store: &Store,
    head: CommitId,
    previous: Option<CommitId>,
    journal: &Journal,
) -> Result<usize, String> {
    let config = lb_step::config_at(store, head).map_err(|e| format!("{e:#}"))?;
    let host = config.host(&opts.lb).ok_or("this host is not in flipbit.yaml")?;
    let format = crate::verify::output_format(store, head).map_err(|e| format!("{e:#}"))?;
    let no_withheld = std::collections::BTreeSet::new();
    let probe = crate::selfcheck::Probe {
        store,
        commit: head,
        previous,
        host,
        format,
        withheld: journal.loaded.as_ref().map_or(&no_withheld, |l| &l.withheld),
        limit: crate::selfcheck::DEFAULT_LIMIT,
        timeout: crate::selfcheck::DEFAULT_TIMEOUT,
    };
    probe.run()
}

/// True when this host's load balancer answers on one of the sockets of the release it was
/// confirmed to run (or serves nothing to try).
fn serves_itself(fleet: &crate::fleet::Fleet<'_>, run: &Run) -> bool {
    let Some(loaded) = &run.journal.loaded else {
        return false;
    };
    let Some(host) = fleet.config.host(&fleet.opts.lb) else {
        return false;
    };
    let format = crate::verify::output_format(fleet.store, loaded.commit).unwrap_or(1);
    match crate::fleet::reach::served_sockets(fleet.store, loaded.commit, host, format, 3) {
        Ok(sockets) => crate::fleet::reach::any_answers(&sockets) != Some(false),
        Err(_) => false,
    }
}

/// The cache repo, and the branch's head fetched into it. With the DNS step, the records of
/// `published` (the commit it last published) are read on another thread meanwhile: at 10,000
/// Services that read takes about as long as the fetch of a commit changing every one of them.
fn open_and_fetch(
    opts: &ApplyOptions,
    state: &StateDir,
    published: Option<CommitId>,
) -> Result<(Store, CommitId, Option<dns_step::Prefetch>)> {
    let mut store = Store::open(&state.cache_repo(), &opts.repo, &opts.branch)?;
    store.limit_fetches(opts.git_limits);
    tracing::debug!("cache opened");
    let prefetch = match (&opts.dns, published) {
        (Some(_), Some(commit)) => {
            dns_step::Prefetch::start(state.cache_repo(), &opts.repo, &opts.branch, &opts.lb, commit)
        }
        _ => None,
    };
    let head = store
        .fetch()?
        .ok_or_else(|| anyhow!("branch {} not found in {}", escaped(&opts.branch), escaped(&opts.repo)))?;
    failpoint::reached("fetched");
    tracing::debug!(%head, "fetched");
    Ok((store, head, prefetch))
}

/// The journal, or, when it does not read back, one rebuilt from what can be checked, said in
/// one line: the release `current` points at becomes the rewind check's anchor and the DNS
/// step's starting point (re-sending records is harmless, and records of Services gone before
/// it are deleted again), and nothing counts as loaded, so the load balancer is reloaded onto
/// the head and confirmed.
fn read_journal(state: &StateDir) -> Journal {
    match journal::read(state) {
        journal::Read::Found(journal) | journal::Read::Fresh(journal) => journal,
        journal::Read::Corrupt(why) => {
            let current = state.current_release();
            let from = current.as_ref().map_or("nothing".to_owned(), |r| r.commit.to_string());
            tracing::warn!(
                journal = %state.root().join("journal").display(),
                why = %escaped(&why),
                "journal unreadable; rebuilt from the release `current` points at ({from}): the load balancer is reloaded onto the head and DNS changes are sent again from there"
            );
            Journal {
                lb: current.as_ref().map(|r| r.commit),
                loaded: None,
                pending: None,
                dns: current.map(|r| DnsRecord {
                    commit: r.commit,
                    omitted: r.withheld,
                    omitted_names: Default::default(),
                }),
            }
        }
    }
}

fn dns_step(
    opts: &ApplyOptions,
    state: &StateDir,
    store: &Store,
    head: CommitId,
    journal: &mut Journal,
    baseline: dns_step::Baseline,
    prefetch: Option<dns_step::Prefetch>,
) -> Result<Option<DnsOutcome>> {
    let Some(settings) = &opts.dns else {
        return Ok(None);
    };
    let client = settings.client()?;
    let outcome = dns_step::run(store, state, &opts.lb, head, &client, journal, baseline, prefetch)?;
    tracing::debug!("dns step done");
    Ok(Some(outcome))
}

/// The default bounds on a fetch: a minute in all, ten seconds to connect.
pub fn default_git_limits(total: Duration) -> FetchLimits {
    FetchLimits {
        connect: total.min(Duration::from_secs(10)),
        total,
    }
}
