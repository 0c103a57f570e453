//! Command-line interface (DESIGN.md §4). Every flag can also come from the environment.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "flipbit-generator",
    version,
    about = "Decides LB addresses and nginx configs for exposed Services and commits them to the state repo"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One shot from Kubernetes YAML files; commits and pushes if anything changed.
    Render(OfflineArgs),
    /// Prints what `render` would change; commits nothing.
    Plan(OfflineArgs),
}

#[derive(Debug, Args)]
pub struct RepoArgs {
    /// State repo: a Git URL or the path of a bare repo.
    #[arg(long, env = "FLIPBIT_REPO")]
    pub repo: String,
    /// Branch the LB hosts follow.
    #[arg(long, env = "FLIPBIT_BRANCH", default_value = "main")]
    pub branch: String,
    /// Bare cache repo kept between runs (default: a temporary one).
    #[arg(long, env = "FLIPBIT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    #[arg(long, env = "FLIPBIT_AUTHOR_NAME", default_value = "flipbit-generator")]
    pub author_name: String,
    #[arg(long, env = "FLIPBIT_AUTHOR_EMAIL", default_value = "flipbit-generator@localhost")]
    pub author_email: String,
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
