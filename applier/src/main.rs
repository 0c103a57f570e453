use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use flipbit_applier::apply::{self, Applied, ApplyOptions, DnsSettings, FleetOptions, Report, Run};
use flipbit_applier::cli::{ApplyArgs, Cli, Command};
use flipbit_applier::dns_step::DnsOutcome;
use flipbit_applier::haproxy::Haproxy;
use flipbit_applier::metrics::observer::Observer;
use flipbit_applier::nginx::Nginx;
use flipbit_applier::signatures::SignaturePolicy;
use flipbit_applier::watch::Between;
use flipbit_core::text::escaped;
use flipbit_core::timing::WatchSchedule;

fn main() -> ExitCode {
    let cli = Cli::parse();
    flipbit_applier::logs::init(cli.log_format, "info");
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", escaped(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn options(args: &ApplyArgs, interval: Duration) -> anyhow::Result<ApplyOptions> {
    Ok(ApplyOptions {
        repo: args.repo.clone(),
        branch: args.branch.clone(),
        lb: args.lb.parse().with_context(|| "--lb")?,
        state_dir: args.state_dir.clone(),
        nginx: Nginx {
            bin: args.nginx.clone(),
            conf: args.nginx_conf.clone(),
            prefix: args.nginx_prefix.clone(),
            error_log: args.nginx_error_log.clone(),
            pid_file: args.nginx_pid.clone(),
            reload_command: args.reload_command.clone(),
            reload_timeout: Duration::from_secs(args.reload_timeout),
            found_log: Default::default(),
        },
        haproxy: Haproxy {
            bin: args.haproxy.clone(),
            conf: args.haproxy_conf.clone(),
            master_socket: args.haproxy_socket.clone(),
            log: args.haproxy_log.clone(),
            reload_command: args.reload_command.clone(),
            reload_timeout: Duration::from_secs(args.reload_timeout),
        },
        allow_rewind: args.allow_rewind,
        dns: match (
            args.dns_server,
            flipbit_applier::cli::dns_auth(args).map_err(anyhow::Error::msg)?,
        ) {
            (Some(server), Some(auth)) => Some(DnsSettings {
                server,
                auth,
                timeout: Duration::from_secs(args.dns_timeout.max(1)),
            }),
            _ => None,
        },
        signatures: args.allowed_signers.as_ref().map(|file| SignaturePolicy {
            allowed_signers: file.clone(),
            signed_since: args.signed_since.clone(),
        }),
        git_limits: apply::default_git_limits(Duration::from_secs(args.git_timeout)),
        fleet: FleetOptions {
            peer_timeout: args.peer_timeout.map_or_else(
                || flipbit_applier::fleet::decide::default_peer_timeout(interval),
                Duration::from_secs,
            ),
            status_zone: args.status_zone.clone(),
            interval,
        },
        metrics_file: args.metrics_file.clone(),
    })
}

fn report(report: &Report) {
    for (service, why) in &report.withheld {
        println!("withheld {service}: {}", flipbit_core::text::escaped(why));
    }
    match &report.lb {
        Applied::UpToDate { commit } => println!("up to date at {commit}"),
        Applied::Recorded { commit } => println!("recorded {commit}: no change for this host"),
        Applied::Held { commit, why } => {
            println!("held {commit}: {}", flipbit_core::text::escaped(why))
        }
        Applied::Reloaded {
            commit,
            files,
            millis,
            balancer,
        } => {
            println!("applied {commit}: {files} files, {balancer} reloaded in {millis} ms")
        }
    }
    if let Some(changes) = report.addresses.as_ref().filter(|c| c.changed()) {
        println!("{changes}");
    }
    if let Some(DnsOutcome::Applied {
        adds,
        deletes,
        messages,
        millis,
    }) = &report.dns
    {
        println!("dns: {adds} records added, {deletes} deleted in {messages} UPDATE messages in {millis} ms");
    }
}

/// Something worth printing happened.
fn changed(report: &Report) -> bool {
    !matches!(report.lb, Applied::UpToDate { .. })
        || matches!(report.dns, Some(DnsOutcome::Applied { .. }))
        || report.addresses.as_ref().is_some_and(|c| c.changed())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let git_server = match &cli.command {
        Command::Status(args) => &args.git_server,
        Command::Apply(args) | Command::Watch { args, .. } => &args.git_server,
    };
    git_server.trust().install()?;
    match cli.command {
        Command::Status(args) => flipbit_applier::status::run(&args),
        Command::Apply(args) => {
            let opts = options(&args, Duration::from_secs(args.run_interval))?;
            // Every line of the run names the LB host through this span, not each by hand.
            let _lb = tracing::info_span!("lb", name = %opts.lb).entered();
            if args.metrics_listen.is_some() {
                tracing::warn!("--metrics-listen is for `watch`; a one-shot apply writes --metrics-file only");
            }
            let mut observer = Observer::new(args.metrics_file.clone());
            let run = apply::run_managing(&opts, args.manage_addresses.as_ref());
            observer.observe(&opts, &run);
            report(&run?.into_report()?);
            Ok(())
        }
        Command::Watch {
            args,
            interval,
            check_interval,
        } => {
            let period = Duration::from_secs_f64(interval);
            let mut between = Between::new(
                &args.repo,
                &args.branch,
                WatchSchedule {
                    interval: period,
                    check: (check_interval > 0.0).then(|| Duration::from_secs_f64(check_interval)),
                },
            );
            let opts = options(&args, period)?;
            let _lb = tracing::info_span!("lb", name = %opts.lb).entered();
            let mut observer = Observer::new(args.metrics_file.clone());
            if let Some(addr) = args.metrics_listen {
                let bound = observer
                    .serve(addr)
                    .with_context(|| format!("--metrics-listen {addr}"))?;
                tracing::info!(%bound, "serving /metrics");
            }
            loop {
                // Runs start every `period`, however long an apply took (an apply that took
                // longer is followed at once by the next run), and sooner when a check between
                // them sees the branch move.
                let started = std::time::Instant::now();
                let run = apply::run_managing(&opts, args.manage_addresses.as_ref());
                observer.observe(&opts, &run);
                let fetched = run.as_ref().ok().and_then(|r| r.head);
                match run.and_then(Run::into_report) {
                    Ok(outcome) if !changed(&outcome) => {}
                    Ok(outcome) => report(&outcome),
                    Err(e) => {
                        tracing::error!(error = %escaped(&format!("{e:#}")), "apply failed; the running config is kept")
                    }
                }
                between.wait(started, fetched, &mut observer);
            }
        }
    }
}
