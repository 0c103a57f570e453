use std::process::ExitCode;

use clap::Parser;

use flipbit_generator::cli::{Cli, Command, OfflineArgs};
use flipbit_generator::offline::{self, RepoTarget};
use flipbit_generator::report;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let (args, push) = match cli.command {
        Command::Render(a) => (a, true),
        Command::Plan(a) => (a, false),
    };
    let outcome = offline_run(&args, push)?;
    for p in &outcome.problems {
        eprintln!("{p}");
    }
    if push {
        println!("{}", report::rendered(&outcome));
    } else {
        print!("{}", report::plan(&outcome));
    }
    Ok(())
}

fn offline_run(args: &OfflineArgs, push: bool) -> anyhow::Result<offline::Outcome> {
    let target = RepoTarget {
        url: args.repo.repo.clone(),
        branch: args.repo.branch.clone(),
        cache_dir: args.repo.cache_dir.clone(),
        author_name: args.repo.author_name.clone(),
        author_email: args.repo.author_email.clone(),
    };
    offline::run(
        &target,
        &args.manifests,
        args.now.unwrap_or_else(jiff::Timestamp::now),
        push,
    )
}
