//! The seed's example on loopback, start to finish: a bare state repo, stand-in node backends,
//! `flipbit-generator render`, one real nginx (or, with `haproxy`, a HAProxy on lb-3) plus
//! `flipbit-applier apply` per LB host, then real TCP and UDP traffic through every LB address and
//! port. Used by `scripts/demo` and by the end-to-end test, which asserts on the same report.
//! With `ad_dns` the DNS step goes to a throwaway Samba AD domain controller over GSS-TSIG
//! (`scripts/demo --dns ad`) instead of the private `named` with HMAC TSIG.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use flipbit_core::config::{Config, Flavor};
use flipbit_core::ledger::Ledger;
use flipbit_core::model::Snapshot;
use flipbit_core::repo_paths;

use crate::backends::Backends;
use crate::bind::NamedInstance;
use crate::haproxy::HaproxyInstance;
use crate::nginx::NginxInstance;
use crate::samba::{self, SambaDc};
use crate::{probe, repo};

pub struct DemoOptions {
    pub example: PathBuf,
    pub work: PathBuf,
    pub generator: PathBuf,
    pub applier: PathBuf,
    /// Port of the demo's `named` on 127.0.0.1; `None` runs without the DNS step.
    pub dns_port: Option<u16>,
    /// Make lb-3 a HAProxy host (`flavor: haproxy` in the example's flipbit.yaml).
    pub haproxy: bool,
    /// Publish to a throwaway Samba AD DC (127.0.0.1:53) over GSS-TSIG instead of `named`
    /// (`dns_port` is then unused). Waits for the machine's DC lock, as the Samba tests do.
    pub ad_dns: bool,
}

impl DemoOptions {
    /// The seed's example (state-repo-example) in `work`, with this build's binaries: nginx on
    /// every host, no DNS step.
    pub fn example(work: &Path) -> DemoOptions {
        DemoOptions {
            example: Path::new(env!("CARGO_MANIFEST_DIR")).join("../state-repo-example"),
            work: work.to_path_buf(),
            generator: crate::bins::generator(),
            applier: crate::bins::applier(),
            dns_port: None,
            haproxy: false,
            ad_dns: false,
        }
    }
}

/// One proof: traffic to `target` answered by a node of the Service.
#[derive(Debug, Clone)]
pub struct Check {
    pub service: String,
    pub target: String,
    pub answer: Result<String, String>,
    pub ok: bool,
}

pub struct Running {
    pub repo: PathBuf,
    /// Each host's `flipbit-applier apply` arguments (DNS included), by host.
    pub applier_args: BTreeMap<String, Vec<String>>,
    pub named: Option<NamedInstance>,
    /// The Samba DC of `--dns ad`; dropping it stops the DC and frees the DC lock.
    pub dc: Option<SambaDc>,
    /// Environment every applier of this demo runs with (`KRB5_CONFIG` for the DC's realm).
    pub applier_env: Vec<(String, String)>,
    pub nginx: BTreeMap<String, NginxInstance>,
    pub haproxy: BTreeMap<String, HaproxyInstance>,
    pub backends: Backends,
    pub snapshot: Snapshot,
    pub log: String,
    /// The example's addresses and ports, held while it runs (see [`example_lock`]).
    _example: MutexGuard<'static, ()>,
}

/// The example listens on fixed addresses and ports (127.1.x.x, ports 53, 80 and 443), and two
/// end-to-end tests run it (`example` and the AD demo in `ad_dns`), in one test process: the
/// second waits here until the first has dropped its [`Running`].
fn example_lock() -> MutexGuard<'static, ()> {
    static EXAMPLE: Mutex<()> = Mutex::new(());
    EXAMPLE.lock().unwrap_or_else(PoisonError::into_inner)
}

pub struct Report {
    pub table: String,
    pub dns_table: String,
    pub checks: Vec<Check>,
}

impl Running {
    /// The DNS server the appliers publish to (`named` or the DC), as `IP:PORT`.
    pub fn dns_server(&self) -> Option<String> {
        match (&self.named, &self.dc) {
            (Some(named), _) => Some(format!("127.0.0.1:{}", named.port)),
            (None, Some(dc)) => Some(dc.dns().to_string()),
            (None, None) => None,
        }
    }

    /// Sorted answers for `name` `rtype` from the demo's DNS server (`None` without one).
    pub fn dns_query(&self, name: &str, rtype: &str) -> Option<Vec<String>> {
        match (&self.named, &self.dc) {
            (Some(named), _) => Some(named.query(name, rtype)),
            (None, Some(dc)) => Some(dc.query(name, rtype)),
            (None, None) => None,
        }
    }
}

impl Report {
    pub fn all_ok(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }
}

fn run_cmd(bin: &Path, args: &[String], env: &[(String, String)], log: &mut String) -> Result<String, String> {
    let out = Command::new(bin)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let _ = writeln!(
        log,
        "$ {} {}\n{stdout}{stderr}",
        bin.file_name().unwrap_or_default().to_string_lossy(),
        args.join(" ")
    );
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{} {} failed: {stdout}{stderr}", bin.display(), args.join(" ")))
    }
}

/// Sets everything up and applies; the returned handles keep nginx and the backends running.
pub fn start(opts: &DemoOptions) -> Result<Running, String> {
    let example = example_lock();
    let mut log = String::new();
    std::fs::create_dir_all(&opts.work).map_err(|e| e.to_string())?;
    let mut config_text =
        std::fs::read_to_string(opts.example.join(repo_paths::CONFIG_FILE)).map_err(|e| e.to_string())?;
    if opts.haproxy {
        config_text = config_text.replacen("  - name: lb-3\n", "  - name: lb-3\n    flavor: haproxy\n", 1);
    }
    let config = Config::parse(&config_text).map_err(|e| e.to_string())?;
    let repo_path = opts.work.join("state.git");
    repo::create(&repo_path, &BTreeMap::from([(repo_paths::CONFIG_FILE, config_text)])).map_err(|e| e.to_string())?;

    let manifests = opts.example.join("cluster");
    let (snapshot, _) = flipbit_generator::manifests::load_dir(&manifests).map_err(|e| e.to_string())?;
    let (tcp, udp) = backend_addresses(&snapshot);
    let backends = Backends::start(&tcp, &udp).map_err(|e| format!("starting node backends: {e}"))?;
    let _ = writeln!(log, "node backends: {} TCP and {} UDP listeners", tcp.len(), udp.len());

    let render = vec![
        "render".into(),
        "--repo".into(),
        repo_path.display().to_string(),
        "--manifests".into(),
        manifests.display().to_string(),
    ];
    run_cmd(&opts.generator, &render, &[], &mut log)?;

    let (named, dc) = if opts.ad_dns {
        (None, Some(start_dc(&config.zone, &mut log)?))
    } else {
        let named = match opts.dns_port {
            Some(port) => Some(NamedInstance::start(&opts.work.join("named"), port, &config.zone)?),
            None => None,
        };
        (named, None)
    };
    let applier_env: Vec<(String, String)> = dc
        .iter()
        .map(|dc| ("KRB5_CONFIG".to_owned(), dc.krb5_conf.display().to_string()))
        .collect();
    let mut nginx = BTreeMap::new();
    let mut haproxy = BTreeMap::new();
    let mut applier_args = BTreeMap::new();
    for host in &config.lb_hosts {
        let dir = opts.work.join(host.name.as_str());
        let mut args = match host.flavor {
            Flavor::Nginx => {
                let instance = NginxInstance::start(&dir)?;
                let args = instance.applier_args(&repo_path, host.name.as_str());
                nginx.insert(host.name.to_string(), instance);
                args
            }
            Flavor::Haproxy => {
                let instance = HaproxyInstance::start(&dir)?;
                let args = instance.applier_args(&repo_path, host.name.as_str());
                haproxy.insert(host.name.to_string(), instance);
                args
            }
        };
        if let Some(named) = &named {
            args.extend([
                "--dns-server".to_owned(),
                format!("127.0.0.1:{}", named.port),
                "--tsig-key".to_owned(),
                named.key_file.display().to_string(),
            ]);
        }
        if let Some(dc) = &dc {
            args.extend(gss_args(dc));
        }
        run_cmd(&opts.applier, &args, &applier_env, &mut log)?;
        applier_args.insert(host.name.to_string(), args);
    }
    Ok(Running {
        repo: repo_path,
        applier_args,
        named,
        dc,
        applier_env,
        nginx,
        haproxy,
        backends,
        snapshot,
        log,
        _example: example,
    })
}

/// Starts the Samba DC for `zone` (the harness's realm is the example's zone), waiting for the
/// machine's DC lock when another DC runs.
fn start_dc(zone: &str, log: &mut String) -> Result<SambaDc, String> {
    if zone != samba::DOMAIN {
        return Err(format!(
            "--dns ad: the Samba DC's realm is {}, the example's zone is {zone}",
            samba::DOMAIN
        ));
    }
    if !samba::have_samba() {
        return Err("--dns ad needs root and Samba (samba, samba-tool: scripts/demo --dns ad installs them)".into());
    }
    let dc = SambaDc::start(samba::Services::All).map_err(|e| format!("starting the Samba DC: {e}"))?;
    let _ = writeln!(
        log,
        "Samba AD DC for realm {} on {} (GSS-TSIG as {}@{})",
        samba::REALM,
        samba::DNS,
        samba::ACCOUNT,
        samba::REALM
    );
    Ok(dc)
}

/// The applier's GSS-TSIG flags for the DC: the service account's keytab, the DC's host name.
fn gss_args(dc: &SambaDc) -> Vec<String> {
    [
        "--dns-server".to_owned(),
        dc.dns().to_string(),
        "--dns-auth".to_owned(),
        "gss-tsig".to_owned(),
        "--kerberos-principal".to_owned(),
        format!("{}@{}", samba::ACCOUNT, samba::REALM),
        "--keytab".to_owned(),
        dc.keytab.display().to_string(),
        "--dns-dc-host".to_owned(),
        samba::DC_HOST.to_owned(),
    ]
    .to_vec()
}

/// Every node InternalIP × every node port of every Service, by protocol.
pub fn backend_addresses(snapshot: &Snapshot) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    let mut tcp = BTreeSet::new();
    let mut udp = BTreeSet::new();
    for node in &snapshot.nodes {
        for ip in node
            .internal_ips
            .iter()
            .filter_map(|s| s.parse::<std::net::IpAddr>().ok())
        {
            for svc in &snapshot.services {
                for port in &svc.ports {
                    let Some(np) = port.node_port.and_then(|p| u16::try_from(p).ok()) else {
                        continue;
                    };
                    let set = if port.protocol.as_deref() == Some("UDP") {
                        &mut udp
                    } else {
                        &mut tcp
                    };
                    set.insert(SocketAddr::new(ip, np));
                }
            }
        }
    }
    (tcp.into_iter().collect(), udp.into_iter().collect())
}

/// One route as read back from a committed snippet: where the LB listens and which node
/// addresses may answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub listen: SocketAddr,
    pub udp: bool,
    pub servers: BTreeSet<SocketAddr>,
}

/// Reads the routes out of a rendered HAProxy file: each `frontend`'s `bind`s with the servers
/// of the `backend` that follows it (TCP only).
pub fn haproxy_routes(text: &str) -> Vec<Route> {
    let mut out = Vec::new();
    let mut binds: Vec<SocketAddr> = Vec::new();
    let mut servers = BTreeSet::new();
    let mut flush = |binds: &mut Vec<SocketAddr>, servers: &mut BTreeSet<SocketAddr>| {
        for listen in binds.drain(..) {
            out.push(Route {
                listen,
                udp: false,
                servers: servers.clone(),
            });
        }
        servers.clear();
    };
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["frontend", ..] => flush(&mut binds, &mut servers),
            ["bind", addr, ..] => binds.extend(addr.parse::<SocketAddr>().ok()),
            ["server", _, addr, ..] => servers.extend(addr.parse::<SocketAddr>().ok()),
            _ => {}
        }
    }
    flush(&mut binds, &mut servers);
    out
}

/// Reads the routes out of a rendered nginx snippet.
pub fn routes(snippet: &str) -> Vec<Route> {
    let mut out = Vec::new();
    let mut servers = BTreeSet::new();
    for line in snippet.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("server ").and_then(|r| r.strip_suffix(';')) {
            if let Ok(addr) = rest.split_whitespace().next().unwrap_or_default().parse() {
                servers.insert(addr);
            }
        } else if let Some(rest) = line.strip_prefix("listen ").and_then(|r| r.strip_suffix(';')) {
            let mut parts = rest.split_whitespace();
            if let Some(Ok(listen)) = parts.next().map(str::parse) {
                out.push(Route {
                    listen,
                    udp: parts.any(|p| p == "udp"),
                    servers: std::mem::take(&mut servers),
                });
            }
        } else if line.starts_with("upstream ") {
            servers.clear();
        }
    }
    out
}

/// Probes every route of every committed snippet and tabulates the example.
pub fn prove(running: &Running) -> Result<Report, String> {
    let ledger_text = repo::read(&running.repo, repo_paths::LEDGER_FILE).ok_or("no ledger.yaml committed")?;
    let ledger = Ledger::parse(&ledger_text).map_err(|e| e.to_string())?;
    let mut checks = Vec::new();
    let mut nodes_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut lb_ports: BTreeMap<String, BTreeSet<(u16, &str)>> = BTreeMap::new();
    for path in repo::files_under(&running.repo, repo_paths::LB_DIR) {
        let Some((_, key)) = repo_paths::parse_lb_path(&path) else {
            continue;
        };
        let text = repo::read(&running.repo, &path).unwrap_or_default();
        let routes = if path.ends_with(".cfg") {
            haproxy_routes(&text)
        } else {
            routes(&text)
        };
        for route in routes {
            let proto = if route.udp { "udp" } else { "tcp" };
            lb_ports
                .entry(key.to_string())
                .or_default()
                .insert((route.listen.port(), proto));
            nodes_of
                .entry(key.to_string())
                .or_default()
                .extend(route.servers.iter().map(|s| s.ip().to_string()));
            let answer = probe_route(&route, PROBES_PER_ROUTE);
            let ok = answer.as_ref().is_ok_and(|answers| {
                answers
                    .split(", ")
                    .all(|a| a.parse::<SocketAddr>().is_ok_and(|s| route.servers.contains(&s)))
            });
            checks.push(Check {
                service: key.to_string(),
                target: format!("{proto} {}", route.listen),
                answer,
                ok,
            });
        }
    }
    let table = table(&running.snapshot, &ledger, &nodes_of, &lb_ports);
    let dns_table = if running.dns_server().is_some() {
        prove_dns(running, &ledger, &mut checks)
    } else {
        String::new()
    };
    Ok(Report {
        table,
        dns_table,
        checks,
    })
}

/// Queries every name of every committed zone fragment and checks the answer is exactly the
/// Service's LB addresses, one per LB host.
fn prove_dns(running: &Running, ledger: &Ledger, checks: &mut Vec<Check>) -> String {
    let mut rows = vec![["SERVICE", "NAMESPACE", "LB ADDRESSES", "DNS NAME", "DNS ANSWERS"].map(String::from)];
    for path in repo::files_under(&running.repo, repo_paths::DNS_DIR) {
        let Some((_, key)) = repo_paths::parse_dns_path(&path) else {
            continue;
        };
        let Some(entry) = ledger.services.get(&key) else {
            continue;
        };
        let mut expected: Vec<String> = entry.addresses.values().map(ToString::to_string).collect();
        expected.sort();
        let text = repo::read(&running.repo, &path).unwrap_or_default();
        let names: BTreeSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with(';'))
            .filter_map(|l| l.split_whitespace().next())
            .map(|n| n.trim_end_matches('.'))
            .collect();
        for name in names {
            let answers = running.dns_query(name, "A").unwrap_or_default();
            let ok = answers == expected;
            checks.push(Check {
                service: key.to_string(),
                target: format!("dns {name}"),
                answer: if answers.is_empty() {
                    Err("no answer".into())
                } else {
                    Ok(answers.join(", "))
                },
                ok,
            });
            rows.push([
                key.name.to_string(),
                key.namespace.to_string(),
                entry
                    .addresses
                    .iter()
                    .map(|(h, ip)| format!("{h} {ip}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                name.to_owned(),
                answers.join(", "),
            ]);
        }
    }
    let table = format_rows(&rows);
    match &running.dc {
        Some(dc) => format!(
            "DNS answered by the Samba AD domain controller on {} (records written over GSS-TSIG):\n{table}",
            dc.dns()
        ),
        None => table,
    }
}

/// Connections (or datagrams) sent to each route; with round-robin they reach several nodes.
pub const PROBES_PER_ROUTE: usize = 3;

/// Probes `route` `n` times; returns the distinct nodes that answered, comma-separated.
pub fn probe_route(route: &Route, n: usize) -> Result<String, String> {
    let mut answers = BTreeSet::new();
    for _ in 0..n {
        let answer = crate::wait::wait_until(Duration::from_secs(3), || {
            if route.udp {
                probe::udp(route.listen)
            } else {
                probe::tcp(route.listen)
            }
        })?;
        answers.insert(answer);
    }
    Ok(answers.into_iter().collect::<Vec<_>>().join(", "))
}

fn table(
    snapshot: &Snapshot,
    ledger: &Ledger,
    nodes_of: &BTreeMap<String, BTreeSet<String>>,
    lb_ports: &BTreeMap<String, BTreeSet<(u16, &str)>>,
) -> String {
    let mut rows = vec![
        [
            "SERVICE",
            "NAMESPACE",
            "EXPOSED",
            "NODE PORTS",
            "LB ADDRESSES",
            "LB PORTS",
            "NODES",
        ]
        .map(String::from),
    ];
    let mut services: Vec<_> = snapshot.services.iter().collect();
    services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    for svc in services {
        let key = format!("{}/{}", svc.namespace, svc.name);
        let entry = ledger
            .services
            .iter()
            .find(|(k, e)| k.to_string() == key && e.released_at.is_none());
        let node_ports: BTreeSet<i32> = svc.ports.iter().filter_map(|p| p.node_port).collect();
        let node_ports: Vec<String> = node_ports.iter().map(ToString::to_string).collect();
        let dash = || "-".to_owned();
        let (exposed, addrs, ports, nodes) = match entry {
            Some((_, e)) => (
                "yes".to_owned(),
                e.addresses
                    .iter()
                    .map(|(h, ip)| format!("{h} {ip}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                lb_ports
                    .get(&key)
                    .map(|s| {
                        s.iter()
                            .map(|(p, proto)| format!("{p}/{proto}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_else(dash),
                nodes_of
                    .get(&key)
                    .map(|s| s.iter().cloned().collect::<Vec<_>>().join(","))
                    .unwrap_or_else(dash),
            ),
            None => ("no".to_owned(), dash(), dash(), dash()),
        };
        rows.push([
            svc.name.clone(),
            svc.namespace.clone(),
            exposed,
            node_ports.join(","),
            addrs,
            ports,
            nodes,
        ]);
    }
    format_rows(&rows)
}

fn format_rows<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}
