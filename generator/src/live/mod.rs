//! `flipbit-generator run`: the live loop. Watch the cluster, and on every settled change (or a
//! periodic resync) run the same decision cycle as `render`, but only while holding the lease;
//! then tell the cluster (status, Events) through the outbox, whose own task writes them, so no
//! decision waits on the API server. Watch errors, API outages and failed pushes are logged
//! and retried; the repo is never touched from a partial view (nothing runs before the first full
//! sync of all three watchers).

pub mod fleet;
mod http;
pub mod leader;
mod metrics;
mod outbox;
mod problem_log;
mod settle;
mod status;
mod stores;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use kube::Client;
use tokio::sync::watch;

use crate::cycle::{self, RepoTarget};
use flipbit_core::text::escaped;
use leader::LeaseSettings;
use metrics::{HostLabel, Metrics};

#[derive(Debug, Clone)]
pub struct LiveOptions {
    pub target: RepoTarget,
    pub kubeconfig: Option<PathBuf>,
    pub listen: SocketAddr,
    pub lease: LeaseSettings,
    /// A burst of changes settles after this long without another.
    pub quiet: Duration,
    /// ... or after this long in all.
    pub max_delay: Duration,
    /// A cycle runs at least this often (release grace, retries after a failed push).
    pub resync: Duration,
    /// The fleet view (`--dns-server`), when on.
    pub fleet: Option<fleet::FleetSettings>,
}

pub fn run(opts: LiveOptions) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(opts))
}

async fn client(kubeconfig: &Option<PathBuf>) -> Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc =
                kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig and not in a cluster")?,
    };
    Ok(Client::try_from(config)?)
}

async fn run_async(opts: LiveOptions) -> Result<()> {
    let client = client(&opts.kubeconfig).await?;
    let metrics = Arc::new(Metrics::new(opts.fleet.is_some()));
    let health = Arc::new(http::Health::default());
    let bound = http::serve(opts.listen, health.clone(), metrics.clone()).await?;
    tracing::info!(%bound, "serving /live, /ready, /metrics");

    let (changes_tx, mut changes) = watch::channel(0u64);
    let stores = stores::start(&client, changes_tx);
    let mut leading = leader::spawn(client.clone(), opts.lease.clone());
    stores.wait_ready().await?;
    health.ready.store(true, Ordering::Relaxed);
    tracing::info!("first full sync of Services, Nodes and EndpointSlices done");

    let (store, _temp) = cycle::open_store(&opts.target)?;
    // The state repo cache and the engine's memory of it travel together: one cycle at a time.
    let store = Arc::new(Mutex::new((store, cycle::Memory::default())));
    let latest = fleet::LatestSlot::default();
    if let Some(settings) = &opts.fleet {
        fleet::spawn(
            settings.clone(),
            fleet::Wiring {
                latest: latest.clone(),
                leading: leading.clone(),
                client: client.clone(),
                identity: opts.lease.identity.clone(),
                services: stores.services.clone(),
                metrics: metrics.clone(),
            },
        );
    }
    let outbox = outbox::spawn(outbox::Writer {
        client: client.clone(),
        identity: opts.lease.identity.clone(),
        leading: leading.clone(),
        metrics: metrics.clone(),
    });
    let mut status = status::StatusReporter::new(outbox);
    let mut terminate = shutdown_signal();
    // The first cycle reads the stores whole: what the first lists brought is no change to wait on.
    changes.borrow_and_update();
    let mut quiet = settle::Quiet::new(opts.quiet, opts.max_delay);
    let mut problem_log = problem_log::ProblemLog::default();
    loop {
        let is_leader = *leading.borrow_and_update();
        metrics.leader.set(i64::from(is_leader));
        if is_leader {
            cycle_once(&opts, &stores, &store, &metrics, &mut status, &mut problem_log, &latest).await;
        }
        tokio::select! {
            _ = changes.changed() => {
                if quiet.wait(&mut changes).await == settle::Settled::AtOnce {
                    metrics.leading_edge_cycles.inc();
                }
            }
            _ = leading.changed() => {}
            _ = tokio::time::sleep(opts.resync) => {}
            _ = &mut terminate => {
                tracing::info!("terminating");
                return Ok(());
            }
        }
    }
}

async fn cycle_once(
    opts: &LiveOptions,
    stores: &stores::Stores,
    store: &Arc<Mutex<(flipbit_store::Store, cycle::Memory)>>,
    metrics: &Metrics,
    status: &mut status::StatusReporter,
    problem_log: &mut problem_log::ProblemLog,
    latest: &fleet::LatestSlot,
) {
    metrics.reconciles.inc();
    let snapshot = stores.snapshot();
    let services = stores.services.state();
    let (store, target) = (store.clone(), opts.target.clone());
    let result = tokio::task::spawn_blocking(move || {
        let mut guard = store.lock().map_err(|_| anyhow::anyhow!("state repo lock poisoned"))?;
        let (store, memory) = &mut *guard;
        let result = cycle::run(
            store,
            &target,
            &snapshot,
            &[],
            jiff::Timestamp::now(),
            true,
            Some(memory),
        );
        if result.is_err() {
            // A failed cycle may have left the memory between two commits: start it afresh.
            *memory = cycle::Memory::default();
        }
        result
    })
    .await;
    let outcome = match result {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => {
            metrics.push_failures.inc();
            tracing::error!(
                error = %escaped(&format!("{e:#}")),
                "cycle failed; the repo keeps its last commit; retrying"
            );
            return;
        }
        Err(e) => {
            metrics.push_failures.inc();
            tracing::error!(error = %e, "cycle panicked");
            return;
        }
    };
    let unchanged_proposal = matches!(outcome.proposal, Some(cycle::Proposal::Unchanged { .. }));
    if let (Some(c), Some(msg), false) = (&outcome.committed, &outcome.message, unchanged_proposal) {
        let branch = match &outcome.proposal {
            Some(cycle::Proposal::Proposed { branch }) => branch.as_str(),
            _ => opts.target.branch.as_str(),
        };
        metrics.commits.inc();
        metrics
            .last_commit_seconds
            .set(jiff::Timestamp::now().as_millisecond() as f64 / 1000.0);
        tracing::info!(commit = %c.id, branch, files = c.files, subject = msg.lines().next().unwrap_or_default(), "pushed");
    }
    for host in &outcome.config.lb_hosts {
        let held = outcome
            .decision
            .ledger
            .services
            .values()
            .filter(|e| e.addresses.contains_key(&host.name))
            .count();
        metrics
            .allocations
            .get_or_create(&HostLabel {
                lb_host: host.name.to_string(),
            })
            .set(held as i64);
    }
    // Each object's problems when they appear, change or go: not again at every resync.
    problem_log.log(&outcome.problems);
    // Only enqueued: the outbox's task writes, so the next decision never waits on the API server.
    status.report(&services, &outcome);
    if opts.fleet.is_some() {
        // The head the LB hosts follow: the commit pushed to their branch, else the one decided on.
        let head = match (&outcome.committed, &outcome.proposal) {
            (Some(c), None) => c.id,
            _ => outcome.base,
        };
        let decided = fleet::Latest {
            head: head.to_string(),
            config: outcome.config.clone(),
            ledger: outcome.decision.ledger.clone(),
        };
        if let Ok(mut slot) = latest.lock() {
            *slot = Some(Arc::new(decided));
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
fn shutdown_signal() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(async {
        #[cfg(unix)]
        {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
    })
}
