//! The set-up shared by the issue-7 figures (`overhead`, `dns-ratio`, `convergence`,
//! `under-load`): a bare state repo, stand-in node backends, one real nginx per LB host and,
//! when asked, a real `named`, all inside one address block `127.<block>.0.0/16`, so a bench run
//! and the smoke tests (which pass their own blocks and ports) never collide. Also the small
//! tools the figures share: flags, medians and percentiles, a raw DNS A query.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use flipbit_core::ledger::Ledger;
use flipbit_tests::backends::Backends;
use flipbit_tests::bind::NamedInstance;
use flipbit_tests::cluster::{ManifestDir, text};
use flipbit_tests::haproxy::HaproxyInstance;
use flipbit_tests::nginx::NginxInstance;

/// The zone every figure publishes into (the one `NamedInstance` serves).
pub const ZONE: &str = "k8s.example.test";

/// Node port of the stand-in backends' TCP answer (`<node>:<port>\n`, then close).
pub const NODE_PORT_TCP: u16 = 30080;
/// Node port of the stand-in backends' UDP echo (and a second TCP answer).
pub const NODE_PORT_UDP: u16 = 30053;

/// Command-line options after `<figure> N`: `--block B`, `--dns-port P`, `--reps R`,
/// `--namespaces K`, `--interval S`, `--connections C`, `--changes K`, `--log FILTER` (the
/// applier's `RUST_LOG`, its output printed), and `--host-option key=value` (repeatable: a line
/// added to every LB host in flipbit.yaml, e.g. `layout=shared-listeners`; `flavor=haproxy` also
/// runs a private HAProxy on each host instead of nginx). Each figure reads the ones it uses.
#[derive(Debug, Clone)]
pub struct Flags {
    values: BTreeMap<String, String>,
    pub host_options: Vec<String>,
}

impl Flags {
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut values = BTreeMap::new();
        let mut host_options = Vec::new();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let Some(name) = flag.strip_prefix("--") else {
                return Err(format!("unexpected argument {flag:?}"));
            };
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            if name == "host-option" {
                let (k, v) = value
                    .split_once('=')
                    .ok_or_else(|| format!("--host-option {value:?}: expected key=value"))?;
                host_options.push(format!("{k}: {v}"));
            } else {
                values.insert(name.to_owned(), value.clone());
            }
        }
        Ok(Self { values, host_options })
    }

    /// The value of `--name`, parsed, or `default` when absent.
    pub fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.values.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{name} {v:?} is not valid")),
        }
    }
}

/// A bare repo, backends on five nodes `127.<block>.0.10..14`, and one nginx per LB host; host
/// `i` (lb-a, lb-b, lb-c) draws from `127.<block>.<64 * (i + 1)>.0/18` (16,382 addresses).
pub struct Rig {
    pub tmp: TempDir,
    pub repo: PathBuf,
    pub cluster: ManifestDir,
    pub lbs: BTreeMap<String, NginxInstance>,
    /// The LB hosts run HAProxy instead (`--host-option flavor=haproxy`); `lbs` is then empty.
    pub haproxies: BTreeMap<String, HaproxyInstance>,
    pub named: Option<NamedInstance>,
    cache: PathBuf,
    _backends: Backends,
}

pub const HOSTS: [&str; 3] = ["lb-a", "lb-b", "lb-c"];

impl Rig {
    /// `hosts` LB hosts (1 to 3), nginx sized for `listeners` listening sockets, and a `named`
    /// on 127.0.0.1:`dns_port` when given.
    pub fn start(
        block: u8,
        hosts: usize,
        listeners: usize,
        dns_port: Option<u16>,
        host_options: &[String],
    ) -> Result<Self, String> {
        let haproxy = host_options.iter().any(|o| o == "flavor: haproxy");
        if haproxy && !flipbit_tests::haproxy::have_haproxy() {
            return Err("haproxy is not installed (scripts/test installs it)".into());
        }
        if !haproxy && !flipbit_tests::have_nginx() {
            return Err("nginx with the stream module is not installed (scripts/test installs it)".into());
        }
        let tmp = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let mut yaml = format!("zone: {ZONE}\nlbHosts:\n");
        for (i, name) in HOSTS.iter().take(hosts).enumerate() {
            yaml.push_str(&format!(
                "  - name: {name}\n    pools: [\"127.{block}.{}.0/18\"]\n",
                64 * (i + 1)
            ));
            for option in host_options {
                yaml.push_str(&format!("    {option}\n"));
            }
        }
        let repo = flipbit_tests::repo::create(&tmp.path().join("state.git"), &[("flipbit.yaml", yaml)].into())
            .map_err(|e| format!("state repo: {e}"))?;
        let cluster = ManifestDir::new(&tmp.path().join("cluster"));
        cluster.nodes(block);
        let nodes: Vec<IpAddr> = node_ips(block);
        let tcp: Vec<SocketAddr> = nodes
            .iter()
            .flat_map(|ip| [SocketAddr::new(*ip, NODE_PORT_TCP), SocketAddr::new(*ip, NODE_PORT_UDP)])
            .collect();
        let udp: Vec<SocketAddr> = nodes.iter().map(|ip| SocketAddr::new(*ip, NODE_PORT_UDP)).collect();
        let backends = Backends::start(&tcp, &udp).map_err(|e| format!("node backends: {e}"))?;
        // Every listening socket takes a connection slot in each worker; leave room for traffic.
        let connections = (listeners + 1024).min(19_000);
        let (mut lbs, mut haproxies) = (BTreeMap::new(), BTreeMap::new());
        for name in HOSTS.iter().take(hosts) {
            if haproxy {
                haproxies.insert((*name).to_owned(), HaproxyInstance::start(&tmp.path().join(name))?);
                continue;
            }
            let nginx = NginxInstance::start_with_connections(&tmp.path().join(name), connections)?;
            lbs.insert((*name).to_owned(), nginx);
        }
        let named = match dns_port {
            Some(port) => Some(NamedInstance::start(&tmp.path().join("named"), port, ZONE)?),
            None => None,
        };
        let cache = tmp.path().join("generator-cache.git");
        Ok(Self {
            tmp,
            repo,
            cluster,
            lbs,
            haproxies,
            named,
            cache,
            _backends: backends,
        })
    }

    /// `flipbit-generator render` with a warm cache; returns how long it took.
    pub fn render(&self) -> Result<Duration, String> {
        let started = Instant::now();
        let cache = self.cache.display().to_string();
        let out =
            flipbit_tests::cluster::generator("render", &self.repo, self.cluster.path(), &["--cache-dir", &cache]);
        if !out.status.success() {
            return Err(format!("render: {}", text(&out)));
        }
        Ok(started.elapsed())
    }

    /// `flipbit-applier <mode>` arguments for `lb` (with the DNS step when there is a `named`).
    pub fn applier_args(&self, lb: &str, mode: &str) -> Vec<String> {
        let mut args = match self.haproxies.get(lb) {
            Some(haproxy) => haproxy.applier_args(&self.repo, lb),
            None => self.lbs[lb].applier_args(&self.repo, lb),
        };
        args[0] = mode.to_owned();
        if let Some(named) = &self.named {
            args.extend([
                "--dns-server".to_owned(),
                format!("127.0.0.1:{}", named.port),
                "--tsig-key".to_owned(),
                named.key_file.display().to_string(),
                "--dns-timeout".to_owned(),
                "5".to_owned(),
            ]);
        }
        args
    }

    /// One `flipbit-applier apply` on `lb`: its wall-clock time and what it printed.
    pub fn apply(&self, lb: &str, env: &[(&str, &str)]) -> Result<(Duration, String), String> {
        let started = Instant::now();
        let out = Command::new(flipbit_tests::bins::applier())
            .args(self.applier_args(lb, "apply"))
            .envs(env.iter().copied())
            .output()
            .map_err(|e| format!("running flipbit-applier: {e}"))?;
        let took = started.elapsed();
        if !out.status.success() {
            return Err(format!("apply on {lb}: {}", text(&out)));
        }
        Ok((took, text(&out)))
    }

    /// The committed ledger's addresses of `namespace/name`, by LB host.
    pub fn addresses(&self, namespace: &str, name: &str) -> BTreeMap<String, IpAddr> {
        self.all_addresses()
            .remove(&format!("{namespace}/{name}"))
            .unwrap_or_default()
    }

    /// Every Service's committed addresses, by `namespace/name` and LB host.
    pub fn all_addresses(&self) -> BTreeMap<String, BTreeMap<String, IpAddr>> {
        let Some(text) = flipbit_tests::repo::read(&self.repo, "ledger.yaml") else {
            return BTreeMap::new();
        };
        let Ok(ledger) = Ledger::parse(&text) else {
            return BTreeMap::new();
        };
        ledger
            .services
            .iter()
            .filter(|(_, e)| e.released_at.is_none())
            .map(|(k, e)| {
                let by_host = e.addresses.iter().map(|(h, ip)| (h.to_string(), *ip)).collect();
                (k.to_string(), by_host)
            })
            .collect()
    }
}

pub fn node_ips(block: u8) -> Vec<IpAddr> {
    (10..15).map(|i| IpAddr::V4(Ipv4Addr::new(127, block, 0, i))).collect()
}

/// Points `<state>/current` at `releases/<id>` with one atomic rename, as the applier does.
pub fn switch_current(state_dir: &Path, id: &str) -> Result<(), String> {
    let tmp = state_dir.join(".bench-current.new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(Path::new("releases").join(id), &tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, state_dir.join("current")).map_err(|e| format!("{}: {e}", state_dir.display()))
}

/// The release `<state>/current` points at.
pub fn current_release(state_dir: &Path) -> Option<String> {
    let target = std::fs::read_link(state_dir.join("current")).ok()?;
    Some(target.file_name()?.to_str()?.to_owned())
}

/// Flushes dirty pages to disk (untimed, between measurements): the file-heavy steps before a
/// measurement (a render of 10k files) would otherwise be written back during it, and bill
/// whichever side happens to run first.
pub fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// User + system CPU time of this process's waited-for children (and theirs), so far.
pub fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given; RUSAGE_CHILDREN is always valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Milliseconds, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The value at rank `p` (0..=1, nearest rank) of `samples`, which it sorts.
pub fn percentile(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    let rank = (p * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

pub fn median(samples: &mut [f64]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    }
}

/// One A query for `name` to 127.0.0.1:`port` over UDP: the addresses and TTLs answered (empty
/// on NXDOMAIN, no data, or no answer within `timeout`). Written out by hand so that polling DNS
/// costs a datagram, not a `dig` process per try.
pub fn query_a(port: u16, name: &str, timeout: Duration) -> Vec<(Ipv4Addr, u32)> {
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else {
        return Vec::new();
    };
    let _ = socket.set_read_timeout(Some(timeout));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let id = (nanos as u16) ^ (std::process::id() as u16);
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]); // no RD; one question
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]); // root, type A, class IN
    if socket.send_to(&q, ("127.0.0.1", port)).is_err() {
        return Vec::new();
    }
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let Ok(n) = socket.recv(&mut buf) else {
            return Vec::new();
        };
        if n >= 12 && buf[..2] == id.to_be_bytes() {
            return parse_a_answers(&buf[..n]).unwrap_or_default();
        }
    }
    Vec::new()
}

/// The A records in the answer section of `msg`.
fn parse_a_answers(msg: &[u8]) -> Option<Vec<(Ipv4Addr, u32)>> {
    let count = |at: usize| -> Option<usize> { Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]) as usize) };
    let (questions, answers) = (count(4)?, count(6)?);
    let skip_name = |mut at: usize| -> Option<usize> {
        loop {
            let len = *msg.get(at)?;
            if len & 0xc0 == 0xc0 {
                return Some(at + 2);
            }
            at += 1 + len as usize;
            if len == 0 {
                return Some(at);
            }
        }
    };
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(at)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..answers {
        at = skip_name(at)?;
        let rtype = count(at)?;
        let ttl = u32::from_be_bytes(msg.get(at + 4..at + 8)?.try_into().ok()?);
        let len = count(at + 8)?;
        let data = msg.get(at + 10..at + 10 + len)?;
        if rtype == 1 && len == 4 {
            out.push((Ipv4Addr::new(data[0], data[1], data[2], data[3]), ttl));
        }
        at += 10 + len;
    }
    out.sort();
    Some(out)
}
