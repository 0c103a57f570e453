//! Command-line interface (docs/design.md §4). Every flag can also come from the environment.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The same Git server settings as the applier's.
pub use flipbit_applier::cli::GitServerArgs;

#[derive(Debug, Parser)]
#[command(
    name = "flipbit-generator",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("FLIPBIT_REVISION"), ")"),
    about = "Decides LB addresses and nginx configs for exposed Services and commits them to the state repo"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, env = "FLIPBIT_LOG_FORMAT", value_enum, default_value = "plain", global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// The applier's, so both binaries log alike.
pub use flipbit_applier::logs::LogFormat;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One shot from Kubernetes YAML files; commits and pushes if anything changed.
    Render(OfflineArgs),
    /// Prints what `render` would change; commits nothing.
    Plan(OfflineArgs),
    /// Live: watch the cluster, commit and push while holding the lease, report status and Events.
    Run(RunArgs),
    /// The state repo's pre-merge check: flipbit.yaml, holds.yaml and the ledger against the
    /// pools, with the generator's own errors; exit 1 on any finding.
    Validate(ValidateArgs),
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// State repo (a Git URL or the path of a bare repo): checks the head of --branch.
    #[arg(long, env = "FLIPBIT_REPO", required_unless_present = "dir", conflicts_with = "dir")]
    pub repo: Option<String>,
    /// Branch to check in --repo.
    #[arg(long, env = "FLIPBIT_BRANCH", default_value = "main")]
    pub branch: String,
    /// A checkout of the state repo (a CI job's work tree, a pre-commit hook's): checks the
    /// files in this directory instead of a branch.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Accept ledger addresses that the next run would move (outside their host's pools, or on a
    /// host that left lbHosts): for a pool retired on purpose.
    #[arg(long)]
    pub allow_moves: bool,
    #[command(flatten)]
    pub git_server: GitServerArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, or the in-cluster account).
    #[arg(long, env = "FLIPBIT_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Address of /live, /ready and /metrics.
    #[arg(long, env = "FLIPBIT_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: std::net::SocketAddr,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "FLIPBIT_LEASE_NAMESPACE", default_value = "flipbit-system")]
    pub lease_namespace: String,
    #[arg(long, env = "FLIPBIT_LEASE_NAME", default_value = "flipbit-generator")]
    pub lease_name: String,
    /// This replica's name in the Lease (default: $POD_NAME, else the host name).
    #[arg(long, env = "FLIPBIT_IDENTITY")]
    pub identity: Option<String>,
    /// Seconds a Lease stays valid without renewal.
    #[arg(long, env = "FLIPBIT_LEASE_DURATION", default_value_t = 15.0)]
    pub lease_duration: f64,
    /// Seconds between renewals (and a standby's checks).
    #[arg(long, env = "FLIPBIT_LEASE_RENEW", default_value_t = 10.0)]
    pub lease_renew: f64,
    /// A burst of changes settles after this many milliseconds without another...
    #[arg(long, env = "FLIPBIT_DEBOUNCE_MS", default_value_t = 200)]
    pub debounce_ms: u64,
    /// ... or after this many in all.
    #[arg(long, env = "FLIPBIT_DEBOUNCE_MAX_MS", default_value_t = 1000)]
    pub debounce_max_ms: u64,
    /// Seconds between cycles when nothing changes.
    #[arg(long, env = "FLIPBIT_RESYNC", default_value_t = 60.0)]
    pub resync: f64,
    /// DNS server (ADDR:PORT) to read the state each LB host publishes (`_flipbit.<host>.<zone>`
    /// TXT; queries need no key): /metrics gains the fleet view, and a Service whose address is
    /// on a host its peers withdrew from DNS gets a `HostWithdrawn` Event. Off without it.
    #[arg(long, env = "FLIPBIT_DNS_SERVER")]
    pub dns_server: Option<std::net::SocketAddr>,
    /// The zone the hosts publish their state in (default: the zone in flipbit.yaml), as the
    /// appliers' `--status-zone`.
    #[arg(long, env = "FLIPBIT_STATUS_ZONE", requires = "dns_server")]
    pub status_zone: Option<String>,
    /// Seconds between two reads of the fleet's state (one TXT query per LB host), apart from the
    /// decision cycles; at least 1.
    #[arg(long, env = "FLIPBIT_FLEET_REFRESH", default_value_t = 15.0)]
    pub fleet_refresh: f64,
}

#[derive(Debug, Args)]
pub struct RepoArgs {
    /// State repo: a Git URL or the path of a bare repo.
    #[arg(long, env = "FLIPBIT_REPO")]
    pub repo: String,
    /// Branch the LB hosts follow.
    #[arg(long, env = "FLIPBIT_BRANCH", default_value = "main")]
    pub branch: String,
    /// Bare cache repo kept between runs (default: a temporary one). `render` also keeps there
    /// what it derived (flipbit-render.cache), so the next run redoes only what changed.
    #[arg(long, env = "FLIPBIT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    #[arg(long, env = "FLIPBIT_AUTHOR_NAME", default_value = "flipbit-generator")]
    pub author_name: String,
    #[arg(long, env = "FLIPBIT_AUTHOR_EMAIL", default_value = "flipbit-generator@localhost")]
    pub author_email: String,
    /// Review mode: commit to this branch instead (rebased on --branch each time) for a human or CI
    /// to merge; the LB hosts follow only --branch.
    #[arg(long, env = "FLIPBIT_PROPOSE_BRANCH")]
    pub propose_branch: Option<String>,
    /// OpenSSH private key (unencrypted) that signs every commit, in git's SSH signature format.
    #[arg(long, env = "FLIPBIT_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,
    #[command(flatten)]
    pub git_server: GitServerArgs,
}

#[derive(Debug, Args)]
pub struct OfflineArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Folder of Kubernetes YAML (Services, Nodes, EndpointSlices).
    #[arg(long, env = "FLIPBIT_MANIFESTS")]
    pub manifests: PathBuf,
    /// The time decisions are made at (RFC 3339); for replaying a run. Default: now.
    #[arg(long, env = "FLIPBIT_NOW")]
    pub now: Option<jiff::Timestamp>,
}
