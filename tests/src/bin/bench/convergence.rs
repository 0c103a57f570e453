//! `convergence N`: end to end, as an operator sees it. The in-process test API server, the real
//! `flipbit-generator run` with its production timings (200 ms quiet period with a leading edge,
//! 1 s at most), three LB hosts each with its own nginx and `flipbit-applier watch` at its default
//! timings (`--interval S`, `--check-interval S` override them; `--log FILTER` sets the appliers'
//! RUST_LOG, its lines in their logs), and one `named`. Beside the figure, the floor measured in
//! the same run: the median time to the commit, one fetch of one new commit, and the appliers'
//! own reload and DNS step (what no schedule can take away).
//! N Services are created one by one; each is timed from its creation in the API server until
//! a backend answers over TCP through every one of its three LB addresses AND `named` answers
//! its name with all three addresses. The ledger in the bare repo says which addresses to poll
//! (reading it is part of the wait, not a head start: it exists only once committed). Before each
//! creation the bench pauses for a fraction of the polling interval, so the creations fall evenly
//! over the appliers' polling cycle rather than always just after a poll.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flipbit_tests::apiserver::ApiServer;
use flipbit_tests::genproc::{GeneratorProcess, objects};
use flipbit_tests::probe;

use crate::rig::{self, Flags, HOSTS, NODE_PORT_TCP, Rig, ZONE, median, ms, percentile};

/// A Service that has not converged by then counts as a failure of the run.
const DEADLINE: Duration = Duration::from_secs(60);
/// Pause between two looks at a Service that has not converged yet.
const POLL: Duration = Duration::from_millis(5);

pub fn run(n: usize, args: &[String]) -> Result<(), String> {
    let flags = Flags::parse(args)?;
    let block: u8 = flags.get("block", 133)?;
    let port: u16 = flags.get("dns-port", 5442)?;
    // The appliers' own defaults unless asked otherwise.
    let mut watch_flags: Vec<String> = Vec::new();
    for flag in ["interval", "check-interval"] {
        let value: String = flags.get(flag, String::new())?;
        if !value.is_empty() {
            watch_flags.extend([format!("--{flag}"), value]);
        }
    }
    let log: String = flags.get("log", String::new())?;
    let rig = Rig::start(block, 3, n + 16, Some(port), &flags.host_options)?;
    let api = ApiServer::start();
    let kubeconfig = rig.tmp.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig)
        .map_err(|e| format!("writing the kubeconfig: {e}"))?;
    for (i, ip) in rig::node_ips(block).iter().enumerate() {
        api.apply(objects::node(
            &format!("node-{}", i + 1),
            &ip.to_string(),
            true,
            false,
            true,
        ));
    }
    let cache = rig.tmp.path().join("run-cache.git").display().to_string();
    // Production debounce (no timing flags) but a quick first lease, so the run starts at once.
    let generator = GeneratorProcess::spawn(
        &rig.repo,
        &kubeconfig,
        "bench",
        &["--lease-renew", "1"],
        &["--cache-dir", &cache],
    );
    generator.wait_for_log("leading=true", Duration::from_secs(30))?;
    let appliers = Appliers::start(&rig, &watch_flags, &log)?;
    // A cache of the bench's own, to time one fetch of one new commit as an applier makes it.
    let fetcher = flipbit_store::Store::open(
        &rig.tmp.path().join("bench-fetch.git"),
        &rig.repo.display().to_string(),
        "main",
    )
    .map_err(|e| format!("the bench's fetch cache: {e}"))?;

    // One Service first, untimed: every process has done its first real cycle after this.
    converge(&rig, &api, "warm-up", port).map_err(|e| appliers.explain(e, &generator))?;
    fetcher.fetch().map_err(|e| format!("fetch: {e}"))?;

    let (mut total, mut committed, mut tcp, mut dns, mut fetches) = (vec![], vec![], vec![], vec![], vec![]);
    // Creations fall evenly over one full-run interval of the appliers (their default: 1 s),
    // which also spreads them over every phase of the shorter head-check cycle.
    let period: f64 = match flags.get("interval", String::new())? {
        text if text.is_empty() => 1.0,
        text => text
            .parse()
            .map_err(|_| format!("--interval {text:?} is not a number"))?,
    };
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..n {
        // Creating a Service right after the last one converged would always land at the same
        // point of the appliers' polling cycle; a pause drawn uniformly from one interval (the
        // same sequence every run) samples that cycle evenly instead.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_secs_f64(period * (rng % 1000) as f64 / 1000.0));
        let name = format!("svc{i:03}");
        let t = converge(&rig, &api, &name, port).map_err(|e| appliers.explain(e, &generator))?;
        total.push(ms(t.total));
        committed.push(ms(t.committed));
        tcp.push(ms(t.tcp));
        dns.push(ms(t.dns));
        // The floor's fetch: one new commit into a cache one commit behind, as an applier's.
        let started = Instant::now();
        fetcher.fetch().map_err(|e| format!("fetch: {e}"))?;
        fetches.push(ms(started.elapsed()));
    }
    let runs = total.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ");
    println!("convergence, {n} Services, per Service (ms): [{runs}]");
    let (reload, update) = appliers.step_medians();
    let floor = median(&mut committed.clone()) + median(&mut fetches) + reload + update;
    let mut sorted = total.clone();
    let settings = if watch_flags.is_empty() {
        "appliers at their defaults".to_owned()
    } else {
        format!("appliers with {}", watch_flags.join(" "))
    };
    println!(
        "convergence, {n} Services x 3 LB hosts, {settings}: p50 {:.0} ms (target <= 300), p95 {:.0} ms, p99 {:.0} ms (target <= 600), max {:.0} ms; floor {floor:.0} ms",
        percentile(&mut sorted, 0.50),
        percentile(&mut sorted, 0.95),
        percentile(&mut sorted, 0.99),
        percentile(&mut sorted, 1.0),
    );
    println!(
        "convergence, {n} Services: medians from creation: committed {:.0} ms, TCP through all 3 addresses {:.0} ms, DNS with all 3 {:.0} ms",
        median(&mut committed),
        median(&mut tcp),
        median(&mut dns)
    );
    println!(
        "convergence floor, same run: committed {:.0} ms (median, from creation) + one fetch {:.0} ms + the applier's load-balancer step until the new workers serve {reload:.0} ms + its DNS step {update:.0} ms (medians)",
        median(&mut committed),
        median(&mut fetches),
    );
    if !log.is_empty()
        && let Some(first) = appliers.logs.first()
    {
        println!(
            "--- {}:\n{}",
            first.display(),
            std::fs::read_to_string(first).unwrap_or_default()
        );
        println!("--- generator:\n{}", generator.log());
    }
    drop(appliers);
    Ok(())
}

struct Timings {
    committed: Duration,
    tcp: Duration,
    dns: Duration,
    total: Duration,
}

/// Creates `bench/<name>` and waits until it serves through every LB address and in DNS.
fn converge(rig: &Rig, api: &ApiServer, name: &str, port: u16) -> Result<Timings, String> {
    let fqdn = format!("{name}.bench.{ZONE}");
    let started = Instant::now();
    api.apply(objects::lb_service("bench", name, &[], &[(8080, NODE_PORT_TCP)]));
    let mut addresses: Option<BTreeSet<IpAddr>> = None;
    let mut committed = None;
    let mut answered: BTreeSet<IpAddr> = BTreeSet::new();
    let (mut tcp, mut dns) = (None, None);
    loop {
        if started.elapsed() > DEADLINE {
            return Err(format!(
                "bench/{name} did not converge within {DEADLINE:?}: addresses {addresses:?}, TCP answered through {answered:?}, DNS {:?}",
                rig::query_a(port, &fqdn, Duration::from_millis(500))
            ));
        }
        if addresses.is_none() {
            let by_host: BTreeMap<String, IpAddr> = rig.addresses("bench", name);
            if by_host.len() == HOSTS.len() {
                addresses = Some(by_host.into_values().collect());
                committed = Some(started.elapsed());
            }
        }
        if let Some(want) = &addresses {
            for ip in want {
                if !answered.contains(ip) && probe::tcp(SocketAddr::new(*ip, 8080)).is_ok() {
                    answered.insert(*ip);
                }
            }
            if tcp.is_none() && answered.len() == want.len() {
                tcp = Some(started.elapsed());
            }
            if dns.is_none() {
                let got: BTreeSet<IpAddr> = rig::query_a(port, &fqdn, Duration::from_millis(200))
                    .into_iter()
                    .map(|(ip, _)| IpAddr::V4(ip))
                    .collect();
                if &got == want {
                    dns = Some(started.elapsed());
                }
            }
            if let (Some(committed), Some(tcp), Some(dns)) = (committed, tcp, dns) {
                return Ok(Timings {
                    committed,
                    tcp,
                    dns,
                    total: tcp.max(dns),
                });
            }
        }
        std::thread::sleep(POLL);
    }
}

/// The appliers' log filter: their two debug lines that time the floor's steps, besides info.
const STEP_LOG: &str = "info,flipbit_applier::lb_step=debug,flipbit_applier::dns_step=debug";

/// `flipbit-applier watch` on every LB host, stopped (killed) when dropped.
struct Appliers {
    children: Vec<Child>,
    logs: Vec<std::path::PathBuf>,
}

impl Appliers {
    fn start(rig: &Rig, watch_flags: &[String], filter: &str) -> Result<Self, String> {
        let mut out = Self {
            children: Vec::new(),
            logs: Vec::new(),
        };
        for lb in rig.lbs.keys() {
            let log = rig.tmp.path().join(format!("applier-{lb}.log"));
            let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
            let child = Command::new(flipbit_tests::bins::applier())
                .args(rig.applier_args(lb, "watch"))
                .args(watch_flags)
                .env("RUST_LOG", if filter.is_empty() { STEP_LOG } else { filter })
                .stdout(file.try_clone().map_err(|e| e.to_string())?)
                .stderr(file)
                .stdin(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting flipbit-applier watch: {e}"))?;
            out.children.push(child);
            out.logs.push(log);
        }
        Ok(out)
    }

    /// Medians over every host's runs, in ms, from the appliers' logs: its load-balancer step
    /// from the fetched head until the new workers serve (history check, staging, `nginx -t`,
    /// reload), and its DNS step until the UPDATE was answered.
    fn step_medians(&self) -> (f64, f64) {
        let (mut reloads, mut updates) = (Vec::new(), Vec::new());
        for log in &self.logs {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            for line in text.lines() {
                let millis = |after: &str| -> Option<f64> {
                    let rest = line.split(after).nth(1)?;
                    rest.split_whitespace().next()?.parse().ok()
                };
                if let Some(m) = millis("reload took: new workers serve ms=") {
                    reloads.push(m);
                }
                if let Some(m) = millis("updates sent ms=") {
                    updates.push(m);
                }
            }
        }
        (median(&mut reloads), median(&mut updates))
    }

    /// `error` with the appliers' and the generator's last log lines, to say where it stuck.
    fn explain(&self, error: String, generator: &GeneratorProcess) -> String {
        let mut text = error;
        for log in &self.logs {
            text.push_str(&format!("\n--- {}:\n{}", log.display(), tail(log)));
        }
        let gen_log = generator.log();
        let lines: Vec<&str> = gen_log.lines().collect();
        text.push_str(&format!(
            "\n--- generator:\n{}",
            lines[lines.len().saturating_sub(10)..].join("\n")
        ));
        text
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

impl Drop for Appliers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
