//! `fleet N`: issue 17's figures. Three LB hosts with N Services each, appliers in watch mode with
//! the defaults (1 s interval, 10 s peer timeout). Then, `--trials T` times: lb-b dies (its nginx
//! and its applier are killed) and the time until every one of its N addresses has left DNS (with
//! lb-a's and lb-c's still there) is taken; lb-b comes back (nginx, then its applier) and the time
//! until every one of its addresses is back. Before the trials, the steady state's DNS traffic:
//! UPDATEs per applier per minute, counted by the zone's serial over a minute.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flipbit_applier::dns::lookup::{Families, Lookup};
use flipbit_tests::nginx::NginxInstance;

use crate::rig::{self, Flags, NODE_PORT_TCP, Rig, ZONE, percentile};

/// A watching applier, killed on drop.
struct Watcher(Child);

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn watch(rig: &Rig, lb: &str) -> Result<Watcher, String> {
    Command::new(flipbit_tests::bins::applier())
        .args(rig.applier_args(lb, "watch"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Watcher)
        .map_err(|e| format!("starting a watching applier: {e}"))
}

/// The zone's SOA serial.
fn serial(rig: &Rig) -> Result<u64, String> {
    let named = rig.named.as_ref().ok_or("no named")?;
    let soa = named.query(ZONE, "SOA");
    soa.first()
        .and_then(|s| s.split_whitespace().nth(2))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no SOA serial in {soa:?}"))
}

/// Waits until `check` holds; how long it took.
fn until(limit: Duration, mut check: impl FnMut() -> Result<bool, String>) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        if check()? {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            return Err(format!("not within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn run(n: usize, args: &[String]) -> Result<(), String> {
    let flags = Flags::parse(args)?;
    let block: u8 = flags.get("block", 140)?;
    let port: u16 = flags.get("dns-port", 5443)?;
    let trials: usize = flags.get("trials", 10)?;
    let steady: u64 = flags.get("steady-seconds", 60)?;
    let mut rig = Rig::start(block, 3, n + 1, Some(port), &flags.host_options)?;
    for i in 0..n {
        rig.cluster
            .lb_service("bench", &format!("svc{i:05}"), &[], &[("TCP", 8080, NODE_PORT_TCP)]);
    }
    rig.render()?;
    for lb in rig::HOSTS {
        rig.apply(lb, &[])?;
    }
    let addresses = rig.all_addresses();
    let names: BTreeMap<String, Families> = addresses
        .keys()
        .map(|key| {
            let (ns, name) = key.split_once('/').unwrap_or(("", key));
            (format!("{name}.{ns}.{ZONE}"), Families { v4: true, v6: false })
        })
        .collect();
    let on = |lb: &str| -> Vec<(String, IpAddr)> {
        addresses
            .iter()
            .filter_map(|(key, by_host)| {
                let (ns, name) = key.split_once('/').unwrap_or(("", key));
                Some((format!("{name}.{ns}.{ZONE}"), *by_host.get(lb)?))
            })
            .collect()
    };
    let b = on("lb-b");
    let others = [on("lb-a"), on("lb-c")].concat();
    let named = rig.named.as_ref().ok_or("no named")?;
    let lookup = Lookup {
        server: named.addr(),
        timeout: Duration::from_secs(5),
    };
    // True when lb-b's addresses are all present (`want_b`) or all gone, the others all present.
    let dns_is = |want_b: bool| -> Result<bool, String> {
        let held = lookup.held(&names).map_err(|e| format!("{e:#}"))?;
        let has = |(name, ip): &(String, IpAddr)| held.get(name).is_some_and(|h| h.addresses.contains(ip));
        Ok(others.iter().all(has) && b.iter().all(|r| has(r) == want_b))
    };
    let mut watchers: BTreeMap<&str, Watcher> = BTreeMap::new();
    for lb in rig::HOSTS {
        watchers.insert(lb, watch(&rig, lb)?);
    }
    until(Duration::from_secs(60), || dns_is(true))?;
    std::thread::sleep(Duration::from_secs(5));
    let (s0, t0) = (serial(&rig)?, Instant::now());
    std::thread::sleep(Duration::from_secs(steady));
    let updates = serial(&rig)?.saturating_sub(s0);
    let per_minute = updates as f64 * 60.0 / t0.elapsed().as_secs_f64() / 3.0;
    println!(
        "fleet, {n} Services x 3 hosts, steady state: {per_minute:.1} UPDATEs per applier per minute (zone serial +{updates} in {:.0} s); queries per applier per run: 3 (its own state and its 2 peers')",
        t0.elapsed().as_secs_f64()
    );

    let dir = rig.lbs.get("lb-b").map(|l| l.dir.clone()).ok_or("no lb-b")?;
    let (mut gone, mut back) = (Vec::new(), Vec::new());
    for trial in 0..trials {
        watchers.remove("lb-b");
        rig.lbs.remove("lb-b");
        let took = until(Duration::from_secs(60), || dns_is(false))?;
        gone.push(took.as_secs_f64() * 1000.0);
        let nginx = NginxInstance::start_with_connections(&dir, 2 * n + 1024)?;
        rig.lbs.insert("lb-b".into(), nginx);
        watchers.insert("lb-b", watch(&rig, "lb-b")?);
        let took = until(Duration::from_secs(60), || dns_is(true))?;
        back.push(took.as_secs_f64() * 1000.0);
        println!(
            "fleet trial {trial}: lb-b's {} records left DNS {:.1} s after it died, were back {:.1} s after it restarted",
            b.len(),
            gone[trial] / 1000.0,
            back[trial] / 1000.0
        );
        // Let the fleet settle (lb-b's state fresh again) before the next death.
        std::thread::sleep(Duration::from_secs(3));
    }
    println!(
        "fleet, {n} Services on the dead host, {trials} trials: withdrawal p50 {:.1} s, p99 {:.1} s (target <= 15 s); return p50 {:.1} s, p99 {:.1} s (target <= 3 s)",
        percentile(&mut gone.clone(), 50.0) / 1000.0,
        percentile(&mut gone.clone(), 99.0) / 1000.0,
        percentile(&mut back.clone(), 50.0) / 1000.0,
        percentile(&mut back.clone(), 99.0) / 1000.0
    );
    Ok(())
}
