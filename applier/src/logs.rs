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

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::LogFormat;
    use crate::cli::Cli;

    #[test]
    fn the_log_format_is_a_global_flag_plain_by_default() {
        // Only parsed: nothing is reached at that address.
        let status = ["status", "--repo", "/r", "--dns-server", "127.252.0.1:5430"];
        let parse = |before: &[&str], after: &[&str]| {
            let args = ["flipbit-applier"].iter().chain(before).chain(&status).chain(after);
            Cli::try_parse_from(args).map(|cli| cli.log_format)
        };
        assert_eq!(parse(&[], &[]).expect("plain"), LogFormat::Plain);
        assert_eq!(
            parse(&["--log-format", "json"], &[]).expect("json first"),
            LogFormat::Json
        );
        assert_eq!(
            parse(&[], &["--log-format", "json"]).expect("json after"),
            LogFormat::Json
        );
        assert!(parse(&["--log-format", "xml"], &[]).is_err());
    }
}
