//! `scale N [NODES] [shared]`: the generator at scale, in process (as `flipbit-generator run` works: the
//! cluster in memory, a warm cache repo): N synthetic Services × 3 LB hosts × NODES nodes (500 by
//! default). Cold allocate + render + commit + push, a one-Service change, a new Service, a node
//! going NotReady, nothing changed; then the process's peak RSS.

use std::time::Instant;

use flipbit_generator::cycle;
use flipbit_tests::synth;

use crate::inproc;

pub fn scale(n: usize, nodes: usize, shared: bool) {
    inproc::log_from_env();
    let Ok(tmp) = tempfile::tempdir() else {
        return eprintln!("error: no temporary directory");
    };
    let repo = match flipbit_tests::repo::create(
        &tmp.path().join("state.git"),
        &[("flipbit.yaml", synth::flipbit_yaml(shared))].into(),
    ) {
        Ok(r) => r,
        Err(e) => return eprintln!("error: {e}"),
    };
    // The remote is the bare repo's path (the store's own push: one pack written straight into
    // the remote, the cache's packed blobs copied as they are; `store/src/local_push.rs`);
    // FLIPBIT_BENCH_REMOTE=daemon serves it with `git daemon` on loopback instead, a remote in its
    // own process as in production, pushed to through libgit2.
    let daemon = match std::env::var("FLIPBIT_BENCH_REMOTE").as_deref() {
        Ok("daemon") => match flipbit_tests::gitdaemon::GitDaemon::start(tmp.path()) {
            Ok(d) => Some(d),
            Err(e) => return eprintln!("error: {e}"),
        },
        _ => None,
    };
    let url = match &daemon {
        Some(d) => d.url("state.git"),
        None => repo.display().to_string(),
    };
    let target = inproc::target(url, tmp.path());
    let store = match cycle::open_store(&target) {
        Ok((store, _)) => store,
        Err(e) => return eprintln!("error: {e:#}"),
    };
    let mut snapshot = synth::snapshot(n, nodes);
    let layout = if shared { "shared-listeners" } else { "per-service" };
    let remote = if daemon.is_some() { "git daemon" } else { "local path" };
    let label = format!("{n} Services x 3 LB hosts ({layout}) x {nodes} nodes, remote {remote}");
    let mut memory = cycle::Memory::default();
    // Each step's milliseconds: in all, and without the push (decided and committed).
    // Repeated steps print indented detail lines (left out of scripts/bench's table) and a median.
    let mut step = |what: &str, snapshot: &flipbit_core::model::Snapshot, detail: bool| -> (f64, f64) {
        let started = Instant::now();
        let outcome = inproc::run(&store, &target, snapshot, &mut memory);
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match outcome {
            Ok(o) => {
                let files = o.committed.as_ref().map_or(0, |c| c.files);
                let push = o.push_time.map_or(0.0, |t| t.as_secs_f64() * 1000.0);
                let indent = if detail { "  " } else { "" };
                println!(
                    "{indent}{what}, {label}: {ms:.0} ms ({files} files changed; {:.0} ms to the commit, {push:.0} ms to push)",
                    ms - push
                );
                (ms, ms - push)
            }
            Err(e) => {
                eprintln!("error: {what}: {e:#}");
                (f64::NAN, f64::NAN)
            }
        }
    };
    step("cold: allocate, render, commit, push", &snapshot, false);
    println!("peak RSS after the cold run, {label}: {} MB", peak_rss_mb());
    // FLIPBIT_BENCH_REPEAT=K repeats the steady steps K times (to profile them, or for a median).
    let repeat: usize = std::env::var("FLIPBIT_BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let detail = repeat > 1;
    let mut unchanged = Vec::new();
    for _ in 0..repeat {
        unchanged.push(step("nothing changed", &snapshot, detail));
    }
    let mut changes = Vec::new();
    for i in 0..repeat {
        let balance = if i % 2 == 0 { "least-conn" } else { "hash" };
        snapshot.services[0]
            .annotations
            .insert("flipbit.io/balance".into(), balance.into());
        changes.push(step("one Service changed (balance annotation)", &snapshot, detail));
    }
    if detail {
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        for (what, runs) in [("nothing changed", &unchanged), ("one Service changed", &changes)] {
            let pushed = median(runs.iter().map(|c| c.0).collect());
            let committed = median(runs.iter().map(|c| c.1).collect());
            println!("{what}, median of {repeat}, {label}: {committed:.0} ms to the commit, {pushed:.0} ms in all");
        }
    }
    snapshot.services.push(synth::service(n));
    step("one new Service", &snapshot, false);
    snapshot.nodes[0].ready = false;
    step("node flap (one node NotReady)", &snapshot, false);
    println!("peak RSS, {label}: {} MB", peak_rss_mb());
}

/// VmHWM of this process.
fn peak_rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
        })
        .map_or(0, |kb| kb / 1024)
}
