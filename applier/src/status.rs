//! `flipbit-applier status`: the fleet as its hosts published it (docs/design.md §5.6). It reads
//! the branch into a cache of its own (`<state-dir>/status.git`, so it never waits on, or takes,
//! the applier's lock), then each LB host's state record, and says per host what it serves, how
//! far behind the branch that is, how old its last run is and what state it is in. It reports:
//! hosts that are down or silent are rows, not errors; a DNS server it cannot read is an error.

pub mod local;
pub mod published;
pub mod rollout;
pub mod view;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use flipbit_core::text::escaped;
use flipbit_store::{CommitId, Store};

use crate::cli::StatusArgs;
use crate::dns::lookup::Lookup;
use crate::lb_step::config_at;
use view::{Facts, FleetStatus, HostStatus};

/// Prints the fleet's status as `--output` says.
pub fn run(args: &StatusArgs) -> Result<()> {
    let fleet = gather(args)?;
    match args.output.as_str() {
        "json" => print!("{}", fleet.json()),
        _ => print!("{}", fleet.table()),
    }
    Ok(())
}

/// The fleet's status now.
pub fn gather(args: &StatusArgs) -> Result<FleetStatus> {
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating the state dir {}", args.state_dir.display()))?;
    let mut store = Store::open(&args.state_dir.join("status.git"), &args.repo, &args.branch)?;
    store.limit_fetches(crate::apply::default_git_limits(Duration::from_secs(60)));
    let head = store
        .fetch()?
        .ok_or_else(|| anyhow!("branch {} not found in {}", escaped(&args.branch), escaped(&args.repo)))?;
    let config = config_at(&store, head)?;
    let zone = args.status_zone.clone().unwrap_or_else(|| config.zone.clone());
    let hosts: Vec<_> = config.lb_hosts.iter().map(|h| h.name.clone()).collect();
    // On an LB host, its own failure text explains its row.
    let local = match &args.lb {
        Some(lb) if !hosts.iter().any(|h| h.as_str() == lb) => {
            bail!("--lb {}: no such LB host in flipbit.yaml at {head}", escaped(lb))
        }
        Some(lb) => local::read(&args.state_dir).map(|f| (lb.clone(), f)),
        None => None,
    };
    let lookup = Lookup {
        server: args.dns_server,
        timeout: Duration::from_secs(args.dns_timeout.max(1)),
    };
    let states = published::read(&lookup, &zone, &hosts)?;
    let now = unix_now();
    let mut behind = BTreeMap::new();
    let mut rows = Vec::new();
    for host in &config.lb_hosts {
        let published = states.get(&host.name).unwrap_or(&published::Published::Missing);
        // Only a commit this cache holds can be counted from or read.
        let applied = published
            .state()
            .and_then(|s| s.commit.as_deref())
            .and_then(|c| CommitId::from_str(c).ok())
            .filter(|c| store.shape(*c).is_ok());
        let facts = Facts {
            behind: applied.and_then(|c| *behind.entry(c).or_insert_with(|| commits_behind(&store, head, c))),
            records: applied.and_then(|c| match crate::dns_step::records_of(&store, c, &host.name) {
                Ok(records) => Some(records.len()),
                Err(e) => {
                    tracing::warn!(lb = %host.name, commit = %c, error = %escaped(&format!("{e:#}")), "records not counted");
                    None
                }
            }),
            error: local
                .as_ref()
                .filter(|(lb, _)| lb == host.name.as_str())
                .map(|(_, f)| format!("{} step: {}", f.step, f.text)),
        };
        rows.push(HostStatus::new(
            host.name.as_str(),
            &host.flavor.to_string(),
            published,
            now,
            facts,
        ));
    }
    Ok(FleetStatus {
        branch: args.branch.clone(),
        head: head.to_string(),
        zone,
        at: now,
        hosts: rows,
        rollout: rollout::of(&config, &head.to_string(), &states, now),
    })
}

/// Commits on the branch that `applied` lacks, when `head` descends from it (after a rewind the
/// count means nothing).
fn commits_behind(store: &Store, head: CommitId, applied: CommitId) -> Option<usize> {
    if !store.descends_from(head, applied).ok()? {
        return None;
    }
    store.commits_to_verify(head, &[applied]).ok().map(|c| c.len())
}

/// Unix seconds now (0 on a clock before 1970, which no record can be compared with anyway).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
