//! `status-writes N`: issue 19's first figure. `flipbit-generator run` (production timings)
//! starts against the test API server holding N LoadBalancer Services on 3 LB hosts; taken: the
//! time from its first commit until every one of the N has its `status.loadBalancer.ingress`
//! written, and create → commit of new Services meanwhile (one after another, from the first
//! commit until the last status is written), beside the same once it is idle (the floor; the
//! target is the same figure).
//!
//! Options: `--latency-ms L` answers each status patch and Event L ms late (the in-process
//! server answers in well under 1 ms; a real API server takes a few ms, TLS and etcd included);
//! `--generator PATH` runs another build (e.g. one from before the outbox, for the before/after);
//! `--idle-probes K` (default 5); `--log FILE` keeps the generator's log.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flipbit_tests::apiserver::{ApiServer, StatusWrites};
use flipbit_tests::genproc::objects;
use flipbit_tests::live_cluster::LiveCluster;
use flipbit_tests::repo;

use crate::rig::{Flags, median, percentile};

/// The generator process, killed on drop; its log goes to a file (the old build logs a line per
/// status patch).
struct Generator(Child);

impl Drop for Generator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(binary: &Path, repo: &Path, kubeconfig: &Path, cache: &Path, log: &Path) -> Result<Generator, String> {
    let log = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    Command::new(binary)
        .arg("run")
        .arg("--repo")
        .arg(repo)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--identity",
            "bench",
            "--lease-namespace",
            "flipbit-system",
        ])
        .env("RUST_LOG", "info,kube=warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(Generator)
        .map_err(|e| format!("starting {}: {e}", binary.display()))
}

/// Waits until `check` holds, polling every `every`; how long it took.
fn until(limit: Duration, every: Duration, mut check: impl FnMut() -> bool) -> Result<Duration, String> {
    let started = Instant::now();
    while !check() {
        if started.elapsed() > limit {
            return Err(format!("not within {limit:?}"));
        }
        std::thread::sleep(every);
    }
    Ok(started.elapsed())
}

/// Creates Service probe/`name` and times it to its commit, in ms.
fn probe(api: &ApiServer, repo: &Path, name: &str) -> Result<f64, String> {
    let started = Instant::now();
    api.apply(objects::lb_service("probe", name, &[], &[(8080, 30080)]));
    let path = format!("lb/lb-a/probe/{name}.conf");
    until(Duration::from_secs(900), Duration::from_millis(2), || {
        repo::read(repo, &path).is_some()
    })
    .map_err(|e| format!("probe/{name} committed: {e}"))?;
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

pub fn run(n: usize, args: &[String]) -> Result<(), String> {
    let flags = Flags::parse(args)?;
    let latency: u64 = flags.get("latency-ms", 0)?;
    let idle_probes: usize = flags.get("idle-probes", 5)?;
    let binary = match flags.get::<String>("generator", String::new())? {
        path if path.is_empty() => flipbit_tests::bins::generator(),
        path => PathBuf::from(path),
    };
    let hosts = [
        ("lb-a", "127.94.0.0/16"),
        ("lb-b", "127.95.0.0/16"),
        ("lb-c", "127.96.0.0/16"),
    ];
    let LiveCluster {
        tmp,
        api,
        kubeconfig,
        repo,
        ..
    } = LiveCluster::with_hosts(&hosts, 97, 5);
    if latency > 0 {
        api.set_status_writes(StatusWrites::Delay(Duration::from_millis(latency)));
    }
    for i in 0..n {
        api.apply(objects::lb_service(
            &format!("ns{:03}", i % 100),
            &format!("svc{i:05}"),
            &[],
            &[(8080, 30080)],
        ));
    }
    let initial = repo::head(&repo);
    let log: PathBuf = flags.get("log", tmp.path().join("generator.log"))?;
    let started = Instant::now();
    let generator = start(&binary, &repo, &kubeconfig, &tmp.path().join("cache.git"), &log)?;
    let log_tail = || std::fs::read_to_string(&log).unwrap_or_default();
    until(Duration::from_secs(600), Duration::from_millis(5), || {
        repo::head(&repo) != initial
    })
    .map_err(|e| format!("the first commit: {e}; log:\n{}", log_tail()))?;
    let first_commit = Instant::now();
    let to_first = first_commit.duration_since(started);

    // Status of the N, followed from the server's log of accepted status patches.
    let done = AtomicBool::new(false);
    let all_written: Mutex<Option<Instant>> = Mutex::new(None);
    let api = Arc::new(api);
    let mut during = Vec::new();
    let mut probe_error = None;
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut seen = 0;
            let mut shown: HashSet<String> = HashSet::new();
            let deadline = Instant::now() + Duration::from_secs(1800);
            while shown.len() < n && Instant::now() < deadline {
                let patches = api.status_patches_since(seen);
                seen += patches.len();
                for p in patches {
                    let ingress = p.body.pointer("/status/loadBalancer/ingress");
                    if p.namespace.starts_with("ns") && ingress.is_some_and(|v| !v.is_null()) {
                        shown.insert(format!("{}/{}", p.namespace, p.name));
                    }
                }
                if shown.len() < n {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            if shown.len() == n
                && let Ok(mut at) = all_written.lock()
            {
                *at = Some(Instant::now());
            }
            done.store(true, Ordering::SeqCst);
        });
        // New Services, one after another, for as long as status is being written.
        let mut k = 0;
        while !done.load(Ordering::SeqCst) || k == 0 {
            match probe(&api, &repo, &format!("during-{k:03}")) {
                Ok(ms) => during.push(ms),
                Err(e) => {
                    probe_error = Some(e);
                    break;
                }
            }
            k += 1;
        }
    });
    if let Some(e) = probe_error {
        return Err(format!("{e}; log:\n{}", log_tail()));
    }
    let written_at = all_written
        .lock()
        .ok()
        .and_then(|at| *at)
        .ok_or_else(|| format!("the status of all {n} Services was not written within 30 min"))?;
    let to_written = written_at.duration_since(first_commit);
    let events_by_then = api.events().len();

    // Idle: the status burst is over; Services created one after another, each after a pause.
    std::thread::sleep(Duration::from_secs(2));
    let mut idle = Vec::new();
    for k in 0..idle_probes {
        idle.push(probe(&api, &repo, &format!("idle-{k:03}"))?);
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(generator);

    let samples = |v: &[f64]| v.iter().map(|ms| format!("{ms:.0}")).collect::<Vec<_>>().join(" ");
    let (during_samples, idle_samples) = (samples(&during), samples(&idle));
    let fmt = |v: &mut Vec<f64>| {
        format!(
            "median {:.0} ms, p90 {:.0} ms, max {:.0} ms ({} Services)",
            median(v),
            percentile(v, 0.9),
            v.iter().copied().fold(0.0, f64::max),
            v.len()
        )
    };
    let latency_note = if latency > 0 {
        format!(", each status patch and Event answered {latency} ms late")
    } else {
        String::new()
    };
    println!(
        "{n} Services x 3 LB hosts{latency_note}: first commit {:.1} s after start; every status written {:.2} s after it ({events_by_then} Events written by then)",
        to_first.as_secs_f64(),
        to_written.as_secs_f64()
    );
    println!("create -> commit while status is written: {}", fmt(&mut during));
    println!("create -> commit idle (floor and target): {}", fmt(&mut idle));
    println!("  while status is written, in order (ms): {during_samples}");
    println!("  idle, in order (ms): {idle_samples}");
    Ok(())
}
