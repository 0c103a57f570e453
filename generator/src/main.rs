use std::process::ExitCode;

use clap::Parser;

use flipbit_core::text::escaped;
use flipbit_generator::cli::{Cli, Command, OfflineArgs, RepoArgs, RunArgs, ValidateArgs};
use flipbit_generator::cycle::RepoTarget;
use flipbit_generator::live::{self, LiveOptions, leader::LeaseSettings};
use flipbit_generator::offline;
use flipbit_generator::report;
use flipbit_generator::validate;

/// mimalloc rather than glibc's malloc: a decision over 50,000 Services allocates and frees
/// millions of small objects, and glibc spent a fifth of each cycle consolidating its free lists
/// (`perf`: `unlink_chunk`, `malloc_consolidate`). It returns freed memory at once (`allocator`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A one-shot `render` or `plan` with a warm cache allocates little and exits soon: purging
    // each freed page at once only makes it fault the same pages in again (a third of a warm
    // render at 10,000 Services went to zeroing pages). Cold, it may allocate like `run`, so the
    // offline commands purge at once too until `render_cache` finds a usable cache.
    flipbit_generator::allocator::return_freed_memory_at_once();
    let default_level = if matches!(cli.command, Command::Run(_)) {
        "info"
    } else {
        "warn"
    };
    flipbit_applier::logs::init(cli.log_format, default_level);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", escaped(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// Exit status of `plan` when there is something to commit, so CI can gate on it.
const PLAN_HAS_CHANGES: u8 = 2;

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let git_server = match &cli.command {
        Command::Render(args) | Command::Plan(args) => &args.repo.git_server,
        Command::Run(args) => &args.repo.git_server,
        Command::Validate(args) => &args.git_server,
    };
    git_server.trust().install()?;
    match cli.command {
        Command::Render(args) => {
            match offline::run(&target(&args.repo), &args.manifests, now(&args))? {
                offline::Rendered::Decided(outcome) => {
                    for p in &outcome.problems {
                        eprintln!("{}", escaped(&p.to_string()));
                    }
                    println!("{}", report::rendered(&outcome));
                    // Freed with the process (see `offline::run`).
                    std::mem::forget(outcome);
                }
                offline::Rendered::UpToDate(head) => println!("{}", report::up_to_date(head)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan(args) => {
            let plan = offline::plan(&target(&args.repo), &args.manifests, now(&args))?;
            for p in &plan.outcome.problems {
                eprintln!("{}", escaped(&p.to_string()));
            }
            let color = std::io::IsTerminal::is_terminal(&std::io::stdout());
            print!("{}", report::plan(&plan, color));
            Ok(if plan.outcome.committed.is_some() {
                ExitCode::from(PLAN_HAS_CHANGES)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Run(args) => live(args).map(|()| ExitCode::SUCCESS),
        Command::Validate(args) => validate_repo(&args),
    }
}

/// Prints every finding and the verdict; exit 1 unless it passed.
fn validate_repo(args: &ValidateArgs) -> anyhow::Result<ExitCode> {
    let report = match (&args.dir, &args.repo) {
        (Some(dir), _) => validate::run(validate::Source::Dir(dir), args.allow_moves)?,
        (None, Some(url)) => {
            let target = RepoTarget {
                url: url.clone(),
                branch: args.branch.clone(),
                cache_dir: None,
                author_name: String::new(),
                author_email: String::new(),
                signing_key: None,
                propose_branch: None,
            };
            validate::run(validate::Source::Repo(&target), args.allow_moves)?
        }
        (None, None) => anyhow::bail!("validate: give --repo URL or --dir PATH"),
    };
    print!("{}", report.text());
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn now(args: &OfflineArgs) -> jiff::Timestamp {
    args.now.unwrap_or_else(jiff::Timestamp::now)
}

fn target(repo: &RepoArgs) -> RepoTarget {
    RepoTarget {
        url: repo.repo.clone(),
        branch: repo.branch.clone(),
        cache_dir: repo.cache_dir.clone(),
        author_name: repo.author_name.clone(),
        author_email: repo.author_email.clone(),
        signing_key: repo.signing_key.clone(),
        propose_branch: repo.propose_branch.clone(),
    }
}

fn seconds(value: f64, flag: &str) -> anyhow::Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(value)
        .map_err(|_| anyhow::anyhow!("{flag}: {value} is not a number of seconds"))
}

fn live(args: RunArgs) -> anyhow::Result<()> {
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| format!("flipbit-generator-{}", std::process::id()));
    live::run(LiveOptions {
        target: target(&args.repo),
        kubeconfig: args.kubeconfig.clone(),
        listen: args.listen,
        lease: LeaseSettings {
            namespace: args.lease_namespace.clone(),
            name: args.lease_name.clone(),
            identity,
            duration: seconds(args.lease_duration, "--lease-duration")?,
            renew: seconds(args.lease_renew, "--lease-renew")?,
        },
        quiet: std::time::Duration::from_millis(args.debounce_ms),
        max_delay: std::time::Duration::from_millis(args.debounce_max_ms),
        resync: seconds(args.resync, "--resync")?,
        fleet: args
            .dns_server
            .map(|server| -> anyhow::Result<_> {
                Ok(live::fleet::FleetSettings {
                    server,
                    zone: args.status_zone.clone(),
                    every: seconds(args.fleet_refresh, "--fleet-refresh")?.max(std::time::Duration::from_secs(1)),
                    timeout: std::time::Duration::from_secs(3),
                })
            })
            .transpose()?,
    })
}
