//! The log setup of both binaries (the applier's and the generator's): plain lines for people,
//! or JSON lines for a log pipeline, on stderr, filtered by `RUST_LOG`.

/// Log format on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

/// Installs the global subscriber: `format` on stderr, `RUST_LOG` or else `default_level`.
pub fn init(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_level.into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Plain => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}
