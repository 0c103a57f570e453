//! Command-line interface (docs/design.md §4). Every flag can also come from the environment.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "flipbit-applier",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("FLIPBIT_REVISION"), ")"),
    about = "Applies this LB host's part of the Flipbit state repo to its nginx or HAProxy"
)]
pub struct Cli {
    /// Log format on stderr: `json` gives one JSON object a line, for a log pipeline.
    #[arg(long, env = "FLIPBIT_LOG_FORMAT", value_enum, default_value = "plain", global = true)]
    pub log_format: crate::logs::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One shot (for a systemd timer): fetch, validate, swap, reload.
    Apply(ApplyArgs),
    /// The fleet as its hosts published it: per LB host its applied commit (and how far behind
    /// the branch it is), the age of its last run, its state and its records (docs/design.md §5.6).
    Status(StatusArgs),
    /// The same, long-running: a full run every --interval seconds, and between runs a check of
    /// the branch head every --check-interval seconds that starts a run at once when it moved.
    Watch {
        #[command(flatten)]
        args: ApplyArgs,
        /// Seconds from the start of one full run (fetch, apply, publish this host's state, watch
        /// the peers) to the next (fractions allowed, at least 0.05). Peers judge this host's
        /// heartbeat by it.
        #[arg(long, env = "FLIPBIT_INTERVAL", default_value_t = 1.0, value_parser = parse_interval)]
        interval: f64,
        /// Seconds between two checks of the head the Git server advertises for the branch (one
        /// ref listing, as `git ls-remote`: no fetch), made between full runs; a head other than
        /// the one last fetched starts a full run at once. It is most of the time from a commit to
        /// this host serving it. No check is made sooner than this after the last request to the
        /// server, so the server sees about one request per check interval: raise it for a hosted
        /// Git service that limits request rates; 0 (or a value not below --interval) turns the
        /// checks off, leaving one fetch per --interval.
        #[arg(long, env = "FLIPBIT_CHECK_INTERVAL", default_value_t = 0.1, value_parser = parse_check_interval)]
        check_interval: f64,
    },
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// State repo: a Git URL or the path of a bare repo (read only).
    #[arg(long, env = "FLIPBIT_REPO")]
    pub repo: String,
    #[arg(long, env = "FLIPBIT_BRANCH", default_value = "main")]
    pub branch: String,
    /// This LB host's name in flipbit.yaml.
    #[arg(long, env = "FLIPBIT_LB")]
    pub lb: String,
    /// Releases, the `current` link, the applied commit and the Git cache live here.
    #[arg(long, env = "FLIPBIT_STATE_DIR", default_value = "/var/lib/flipbit")]
    pub state_dir: PathBuf,
    #[arg(long, env = "FLIPBIT_NGINX", default_value = "nginx")]
    pub nginx: PathBuf,
    /// nginx main config; it must include `<state-dir>/current/*/*.conf` inside `stream {}`.
    #[arg(long, env = "FLIPBIT_NGINX_CONF", default_value = "/etc/nginx/nginx.conf")]
    pub nginx_conf: PathBuf,
    /// nginx `-p` prefix, for a private instance.
    #[arg(long, env = "FLIPBIT_NGINX_PREFIX")]
    pub nginx_prefix: Option<PathBuf>,
    /// nginx `-e` error log; reload errors are read from it.
    #[arg(long, env = "FLIPBIT_NGINX_ERROR_LOG")]
    pub nginx_error_log: Option<PathBuf>,
    #[arg(long, env = "FLIPBIT_NGINX_PID", default_value = "/run/nginx.pid")]
    pub nginx_pid: PathBuf,
    /// HAProxy binary, on a host whose `flavor` in flipbit.yaml is `haproxy`.
    #[arg(long, env = "FLIPBIT_HAPROXY", default_value = "haproxy")]
    pub haproxy: PathBuf,
    /// HAProxy main config; haproxy runs in master-worker mode with
    /// `-f <this> -f <state-dir>/current` (the directory of this host's `.cfg` files).
    #[arg(long, env = "FLIPBIT_HAPROXY_CONF", default_value = "/etc/haproxy/haproxy.cfg")]
    pub haproxy_conf: PathBuf,
    /// HAProxy's master CLI socket (`haproxy -W -S <this>`): reloads are sent and confirmed there.
    #[arg(long, env = "FLIPBIT_HAPROXY_SOCKET", default_value = "/run/haproxy-master.sock")]
    pub haproxy_socket: PathBuf,
    /// A file the HAProxy master's stderr goes to, when not to the journal: a failed reload's
    /// alerts are quoted from it.
    #[arg(long, env = "FLIPBIT_HAPROXY_LOG")]
    pub haproxy_log: Option<PathBuf>,
    /// Reload with this shell command instead of SIGHUP to the nginx master (or the `reload`
    /// command on HAProxy's master CLI); the reload is confirmed the same way.
    #[arg(long, env = "FLIPBIT_RELOAD_COMMAND")]
    pub reload_command: Option<String>,
    /// Seconds a reload may take to show new workers.
    #[arg(long, env = "FLIPBIT_RELOAD_TIMEOUT", default_value_t = 10)]
    pub reload_timeout: u64,
    /// Accept a head that does not descend from the last applied commit.
    #[arg(long, env = "FLIPBIT_ALLOW_REWIND")]
    pub allow_rewind: bool,
    /// DNS server (ADDR:PORT) for the RFC 2136 step; the step is off without it.
    #[arg(long, env = "FLIPBIT_DNS_SERVER")]
    pub dns_server: Option<std::net::SocketAddr>,
    /// How DNS updates are signed: `tsig` (an HMAC key, --tsig-key: BIND, Knot, PowerDNS) or
    /// `gss-tsig` (a Kerberos login, RFC 3645: Active Directory; --kerberos-principal, --keytab,
    /// --dns-dc-host; docs/active-directory.md).
    #[arg(long, env = "FLIPBIT_DNS_AUTH", default_value = "tsig", value_parser = ["tsig", "gss-tsig"])]
    pub dns_auth: String,
    /// TSIG key file in BIND format (as `tsig-keygen` writes it).
    #[arg(long, env = "FLIPBIT_TSIG_KEY", requires = "dns_server")]
    pub tsig_key: Option<PathBuf>,
    /// `--dns-auth gss-tsig`: the account updates are made as, e.g. `flipbit-dns@EXAMPLE.TEST`.
    #[arg(long, env = "FLIPBIT_KERBEROS_PRINCIPAL")]
    pub kerberos_principal: Option<String>,
    /// `--dns-auth gss-tsig`: the account's keytab (`ktpass`, `samba-tool domain exportkeytab`);
    /// tickets are fetched from it again whenever they expire, without a restart.
    #[arg(long, env = "FLIPBIT_KEYTAB")]
    pub keytab: Option<PathBuf>,
    /// `--dns-auth gss-tsig`: the DNS server's host name as Kerberos knows it (the service is
    /// `DNS/<this>`), e.g. `dc1.example.test`.
    #[arg(long, env = "FLIPBIT_DNS_DC_HOST")]
    pub dns_dc_host: Option<String>,
    /// `--dns-auth gss-tsig`: the layout of the server's reply MACs. `detect` accepts Samba's
    /// (the request MAC without its length) when only that verifies on a context's first reply,
    /// and then only that on the context; `rfc` only RFC 8945's (Windows Server); `samba` only Samba's.
    #[arg(long, env = "FLIPBIT_GSS_REPLY_MAC", default_value = "detect", value_parser = ["detect", "rfc", "samba"])]
    pub gss_reply_mac: String,
    /// Seconds a GSS-TSIG context is used before a new one is negotiated (default: until Kerberos
    /// says it expires). For tests and figures.
    #[arg(long, env = "FLIPBIT_GSS_CONTEXT_MAX_AGE", hide = true)]
    pub gss_context_max_age: Option<f64>,
    /// Accept only commits signed (SSH, `git commit -S` with gpg.format=ssh) by a key in this
    /// file, git's allowed signers format (as for gpg.ssh.allowedSignersFile); read on every run.
    #[arg(long, env = "FLIPBIT_ALLOWED_SIGNERS")]
    pub allowed_signers: Option<PathBuf>,
    /// With --allowed-signers: this commit and its history are trusted unchecked (history from
    /// before signing was turned on).
    #[arg(
        long,
        env = "FLIPBIT_SIGNED_SINCE",
        requires = "allowed_signers",
        value_name = "COMMIT"
    )]
    pub signed_since: Option<String>,
    /// Seconds a fetch of the state repo may take in all (connecting: at most 10 of them); a
    /// server that accepts the connection and then stays silent fails the run after this, and
    /// the state dir's lock is released.
    #[arg(long, env = "FLIPBIT_GIT_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub git_timeout: u64,
    /// Seconds a peer LB host may look down (its published state stale and its addresses not
    /// answering) before this host takes its address records out of DNS; refused for a peer
    /// whose run interval is more than half of it. Needs the DNS step. Default: 4 run intervals,
    /// at least 10 (`watch`: 10; `apply` on a 15 s timer: 60).
    #[arg(long, env = "FLIPBIT_PEER_TIMEOUT", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub peer_timeout: Option<u64>,
    /// The zone the hosts publish their state in (`_flipbit.<host>.<zone>` TXT); default: the
    /// zone in flipbit.yaml. A separate, internal zone keeps the fleet's state out of a public one.
    #[arg(long, env = "FLIPBIT_STATUS_ZONE")]
    pub status_zone: Option<String>,
    /// `apply` only: the seconds between runs (the timer's period), published so peers know how
    /// late a heartbeat may be. `watch` publishes its --interval.
    #[arg(long, env = "FLIPBIT_RUN_INTERVAL", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub run_interval: u64,
    /// Write Prometheus metrics to this file after every run (node_exporter's textfile
    /// collector), atomically.
    #[arg(long, env = "FLIPBIT_METRICS_FILE")]
    pub metrics_file: Option<PathBuf>,
    /// `watch` only: serve Prometheus metrics on http://ADDR:PORT/metrics.
    #[arg(long, env = "FLIPBIT_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Seconds to wait for each DNS answer.
    #[arg(long, env = "FLIPBIT_DNS_TIMEOUT", default_value_t = 3)]
    pub dns_timeout: u64,
    /// For LB hosts on a flat L2 segment: after each confirmed reload, put the addresses this
    /// host serves on this interface and announce them (gratuitous ARP, unsolicited neighbour
    /// advertisements), before DNS names them; take those it added off once they are no longer
    /// served and no socket uses them. Never touches an address it did not add. Needs
    /// CAP_NET_ADMIN, CAP_NET_RAW and net.ipv4.ip_nonlocal_bind=1 (docs/lb-host.md).
    #[arg(long, env = "FLIPBIT_MANAGE_ADDRESSES", value_name = "IFACE")]
    pub manage_addresses: Option<crate::addresses::ManagedInterface>,
    #[command(flatten)]
    pub git_server: GitServerArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// State repo: a Git URL or the path of a bare repo (read only).
    #[arg(long, env = "FLIPBIT_REPO")]
    pub repo: String,
    #[arg(long, env = "FLIPBIT_BRANCH", default_value = "main")]
    pub branch: String,
    /// The DNS server to read the hosts' published state from (no key needed).
    #[arg(long, env = "FLIPBIT_DNS_SERVER")]
    pub dns_server: std::net::SocketAddr,
    /// See `apply --status-zone`.
    #[arg(long, env = "FLIPBIT_STATUS_ZONE")]
    pub status_zone: Option<String>,
    /// Where the Git cache lives; run on an LB host with its own state dir (and --lb), the
    /// status also shows that host's failure text from its journal.
    #[arg(long, env = "FLIPBIT_STATE_DIR", default_value = "/var/lib/flipbit")]
    pub state_dir: PathBuf,
    /// This host's name, when run on an LB host.
    #[arg(long, env = "FLIPBIT_LB")]
    pub lb: Option<String>,
    /// `table` for people, `json` for scripts.
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    pub output: String,
    /// Seconds to wait for each DNS answer.
    #[arg(long, env = "FLIPBIT_DNS_TIMEOUT", default_value_t = 3)]
    pub dns_timeout: u64,
    #[command(flatten)]
    pub git_server: GitServerArgs,
}

/// How the state repo's server is checked (docs/operating-with-git.md, "Connecting"); the
/// generator takes the same flags.
#[derive(Debug, Args)]
pub struct GitServerArgs {
    /// OpenSSH known_hosts file an ssh:// state repo's host key must be in (`ssh-keyscan -p PORT
    /// HOST >> FILE`); the only one read. Default: ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts.
    #[arg(long, env = "FLIPBIT_GIT_KNOWN_HOSTS")]
    pub git_known_hosts: Option<PathBuf>,
    /// PEM file of the CA certificates an https:// state repo's certificate may be signed by,
    /// besides the system's.
    #[arg(long, env = "FLIPBIT_GIT_CA_BUNDLE")]
    pub git_ca_bundle: Option<PathBuf>,
}

impl GitServerArgs {
    pub fn trust(&self) -> flipbit_store::ServerTrust {
        flipbit_store::ServerTrust {
            known_hosts: self.git_known_hosts.clone(),
            ca_bundle: self.git_ca_bundle.clone(),
        }
    }
}

/// Seconds between two watch runs: a finite number, at least 0.05 (below that the loop would
/// only burn CPU) and at most a day.
fn parse_interval(text: &str) -> Result<f64, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(0.05..=86_400.0).contains(&secs) {
        return Err(format!("{text} is out of range: use 0.05 to 86400 seconds"));
    }
    Ok(secs)
}

/// Seconds between two head checks: 0 (off), or as for [`parse_interval`].
fn parse_check_interval(text: &str) -> Result<f64, String> {
    if text.parse::<f64>() == Ok(0.0) {
        return Ok(0.0);
    }
    parse_interval(text)
}

/// The DNS step's signer from the flags, or None when the step is off (no --dns-server).
pub fn dns_auth(args: &ApplyArgs) -> Result<Option<crate::dns::auth::AuthConfig>, String> {
    use crate::dns::auth::{AuthConfig, GssConfig, GssSecret, ReplyMac};
    let Some(_) = args.dns_server else {
        return Ok(None);
    };
    if args.dns_auth == "tsig" {
        let key = args
            .tsig_key
            .clone()
            .ok_or("--dns-server needs --tsig-key (or --dns-auth gss-tsig with a Kerberos login)")?;
        return Ok(Some(AuthConfig::Tsig(key)));
    }
    if args.tsig_key.is_some() {
        return Err("--tsig-key is for --dns-auth tsig; --dns-auth gss-tsig signs with Kerberos".into());
    }
    let principal = args
        .kerberos_principal
        .clone()
        .ok_or("--dns-auth gss-tsig needs --kerberos-principal (e.g. flipbit-dns@EXAMPLE.TEST)")?;
    let secret = match &args.keytab {
        Some(keytab) => GssSecret::Keytab(keytab.clone()),
        None => return Err("--dns-auth gss-tsig needs --keytab, the account's keytab".into()),
    };
    let dc_host = args
        .dns_dc_host
        .clone()
        .ok_or("--dns-auth gss-tsig needs --dns-dc-host, the DNS server's host name (the service is DNS/<host>)")?;
    let max_context_age = match args.gss_context_max_age {
        Some(secs) if !(0.0..=86_400.0).contains(&secs) => {
            return Err(format!(
                "--gss-context-max-age {secs} is out of range: use 0 to 86400 seconds"
            ));
        }
        Some(secs) => Some(std::time::Duration::from_secs_f64(secs)),
        None => None,
    };
    Ok(Some(AuthConfig::Gss(GssConfig {
        principal,
        secret,
        dc_host: dc_host.trim_end_matches('.').to_owned(),
        reply_mac: match args.gss_reply_mac.as_str() {
            "rfc" => ReplyMac::Rfc,
            "samba" => ReplyMac::Samba,
            _ => ReplyMac::Detect,
        },
        max_context_age,
    })))
}
