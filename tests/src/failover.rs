//! The demo's last act: the three LB hosts' appliers watch each other; lb-2 dies (its nginx and its
//! applier), its addresses leave every DNS answer within the peer timeout while lb-1's and lb-3's
//! stay, the fleet's status shows it withdrawn, and when lb-2 comes back its addresses return.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flipbit_core::ledger::Ledger;

use crate::demo::Running;
use crate::nginx::NginxInstance;
use crate::repo;

/// A watching applier, killed on drop.
struct Watcher(Child);

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn watch(applier: &Path, apply_args: &[String], env: &[(String, String)]) -> Result<Watcher, String> {
    let mut args = apply_args.to_vec();
    args[0] = "watch".into();
    args.extend(["--interval", "0.5", "--peer-timeout", "3"].map(String::from));
    Command::new(applier)
        .args(&args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Watcher)
        .map_err(|e| format!("starting a watching applier: {e}"))
}

/// The DNS names of the example and, per name, the addresses each host published.
fn expected(running: &Running) -> Result<BTreeMap<String, BTreeMap<String, String>>, String> {
    let ledger =
        Ledger::parse(&repo::read(&running.repo, "ledger.yaml").ok_or("no ledger")?).map_err(|e| e.to_string())?;
    let zone = "k8s.example.test";
    let mut out = BTreeMap::new();
    for (key, entry) in &ledger.services {
        let name = format!("{}.{}.{zone}", key.name, key.namespace);
        let by_host: BTreeMap<String, String> = entry
            .addresses
            .iter()
            .map(|(h, ip)| (h.to_string(), ip.to_string()))
            .collect();
        out.insert(name, by_host);
    }
    Ok(out)
}

/// Waits until every name answers exactly the addresses of `hosts`; how long it took.
fn until_served_by(
    running: &Running,
    names: &BTreeMap<String, BTreeMap<String, String>>,
    hosts: &[&str],
    limit: Duration,
) -> Result<Duration, String> {
    running.dns_server().ok_or("the demo runs without DNS")?;
    let started = Instant::now();
    loop {
        let mut wrong = None;
        for (name, by_host) in names {
            let mut want: Vec<String> = hosts.iter().filter_map(|h| by_host.get(*h).cloned()).collect();
            want.sort();
            let got = running.dns_query(name, "A").unwrap_or_default();
            if got != want {
                wrong = Some(format!("{name}: {got:?}, want {want:?}"));
            }
        }
        match wrong {
            None => return Ok(started.elapsed()),
            Some(w) if started.elapsed() > limit => return Err(w),
            Some(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Runs the act; its narration, or why it failed.
pub fn run(running: &mut Running, applier: &Path, work: &Path) -> Result<String, String> {
    let mut log = String::new();
    let hosts: Vec<String> = running.applier_args.keys().cloned().collect();
    let mut watchers: BTreeMap<String, Watcher> = BTreeMap::new();
    for host in &hosts {
        watchers.insert(
            host.clone(),
            watch(applier, &running.applier_args[host], &running.applier_env)?,
        );
    }
    let names = expected(running)?;
    let all: Vec<&str> = hosts.iter().map(String::as_str).collect();
    until_served_by(running, &names, &all, Duration::from_secs(10))?;
    let _ = writeln!(
        log,
        "appliers watching each other: every name answers {} addresses",
        all.len()
    );

    let dir = running
        .nginx
        .get("lb-2")
        .map(|n| n.dir.clone())
        .ok_or("lb-2 is no nginx host")?;
    watchers.remove("lb-2");
    running.nginx.remove("lb-2");
    let _ = writeln!(log, "lb-2 stopped (nginx and its applier)");
    let others: Vec<&str> = all.iter().copied().filter(|h| *h != "lb-2").collect();
    let took = until_served_by(running, &names, &others, Duration::from_secs(30))?;
    let _ = writeln!(
        log,
        "lb-2's addresses left every DNS answer {:.1} s later; lb-1's and lb-3's stayed:",
        took.as_secs_f64()
    );
    log.push_str(&answers(running, &names));
    log.push_str(&status(running, applier, work)?);

    running.nginx.insert("lb-2".into(), NginxInstance::start(&dir)?);
    watchers.insert(
        "lb-2".into(),
        watch(applier, &running.applier_args["lb-2"], &running.applier_env)?,
    );
    let back = until_served_by(running, &names, &all, Duration::from_secs(30))?;
    let _ = writeln!(
        log,
        "lb-2 restarted: its addresses were back {:.1} s later:",
        back.as_secs_f64()
    );
    log.push_str(&answers(running, &names));
    drop(watchers);
    Ok(log)
}

fn answers(running: &Running, names: &BTreeMap<String, BTreeMap<String, String>>) -> String {
    let mut out = String::new();
    for name in names.keys() {
        if let Some(answers) = running.dns_query(name, "A") {
            let _ = writeln!(out, "  dig {name}: {}", answers.join(", "));
        }
    }
    out
}

/// `flipbit-applier status` of the fleet, as an operator runs it.
fn status(running: &Running, applier: &Path, work: &Path) -> Result<String, String> {
    let server = running.dns_server().ok_or("the demo runs without DNS")?;
    let out = Command::new(applier)
        .args(["status", "--repo"])
        .arg(&running.repo)
        .args(["--dns-server", &server, "--state-dir"])
        .arg(work.join("status"))
        .output()
        .map_err(|e| format!("running flipbit-applier status: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(format!("flipbit-applier status:\n{text}"))
}
