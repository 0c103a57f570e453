//! `pods-rollout ENDPOINTS [--services N] [--nodes M] [--per-slice K]`: a rolling update of one
//! pod-backed Service (`flipbit.io/backends: pods`) of ENDPOINTS ready endpoints (500 by
//! default), among N synthetic nodes-backed Services (1,000 by default) on 3 LB hosts, decided
//! in process as `flipbit-generator run` decides (the cluster in memory, a warm cache repo, every
//! commit pushed to a bare repo). The endpoint controller's shape: slices of K endpoints (100),
//! the new pods in slices of their own (another target port). Each pod is replaced in two cycles,
//! as a rollout with maxSurge 1 and maxUnavailable 0 goes: the new pod becomes ready, then the
//! old one leaves (not ready, gone). Prints the commits, the files they changed, how many cycles
//! took the fast path, and the time per cycle. Then, to compare, one endpoint's readiness
//! flipped twenty times, every other time together with a node that carries no traffic (an
//! unlabelled one, so nothing else changes): those cycles get a full decision, as every
//! EndpointSlice change did before slice changes took the fast path.

use std::time::Instant;

use flipbit_core::model::{EndpointInput, EndpointPortInput, EndpointSliceInput, PortInput, ServiceInput};
use flipbit_generator::cycle::{self, Memory};
use flipbit_tests::synth;

use crate::inproc;
use crate::rig::{Flags, median, percentile};

const NAMESPACE: &str = "ns-pods";
const NAME: &str = "rollout";

pub fn run(endpoints: usize, args: &[String]) -> Result<(), String> {
    inproc::log_from_env();
    let flags = Flags::parse(args)?;
    let services: usize = flags.get("services", 1000)?;
    let nodes: usize = flags.get("nodes", 50)?;
    let per_slice: usize = flags.get("per-slice", 100)?;
    if endpoints == 0 || per_slice == 0 || endpoints > 60_000 {
        return Err("ENDPOINTS must be 1 to 60,000, --per-slice at least 1".into());
    }
    let tmp = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let repo = flipbit_tests::repo::create(
        &tmp.path().join("state.git"),
        &[("flipbit.yaml", synth::flipbit_yaml(false))].into(),
    )
    .map_err(|e| e.to_string())?;
    let target = inproc::target(repo.display().to_string(), tmp.path());
    let (store, _) = cycle::open_store(&target).map_err(|e| format!("{e:#}"))?;
    let mut memory = Memory::default();
    let mut snapshot = synth::snapshot(services, nodes);
    let mut bystander = synth::node(nodes, true);
    bystander.labels.clear();
    snapshot.nodes.push(bystander);
    snapshot.services.push(pod_service());
    // Pod i of the old version: 10.20.<i / 250>.<i % 250 + 1>:8080; of the new one, 10.21...:9090.
    let mut old_ready = endpoints;
    let mut new_ready = 0;
    snapshot.endpoint_slices = slices(endpoints, per_slice, 0, old_ready, new_ready);
    let label = format!(
        "1 pod-backed Service of {endpoints} endpoints (slices of {per_slice}) among {services} Services x 3 LB hosts x {nodes} nodes"
    );

    let cold = Instant::now();
    let outcome = inproc::run(&store, &target, &snapshot, &mut memory).map_err(|e| format!("cold run: {e:#}"))?;
    let cold_ms = cold.elapsed().as_secs_f64() * 1000.0;
    let cold_files = outcome.committed.as_ref().map_or(0, |c| c.files);
    println!("pods rollout, cold, {label}: {cold_ms:.0} ms ({cold_files} files)");

    let fast_before = memory.fast_decisions();
    let (mut times, mut files_per_commit) = (Vec::new(), Vec::new());
    let (mut cycles, mut commits, mut files, mut gone) = (0usize, 0usize, 0usize, 0usize);
    while gone < endpoints {
        // The new pod becomes ready; then the old one leaves.
        for step in 0..2 {
            if step == 0 {
                new_ready += 1;
            } else {
                old_ready -= 1;
                gone += 1;
            }
            snapshot.endpoint_slices = slices(endpoints, per_slice, gone, old_ready, new_ready);
            let started = Instant::now();
            let outcome =
                inproc::run(&store, &target, &snapshot, &mut memory).map_err(|e| format!("cycle {cycles}: {e:#}"))?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            cycles += 1;
            if let Some(c) = &outcome.committed {
                commits += 1;
                files += c.files;
                files_per_commit.push(c.files as f64);
            }
        }
    }
    let fast = memory.fast_decisions() - fast_before;
    let files_min = files_per_commit.iter().copied().fold(f64::INFINITY, f64::min);
    let files_max = files_per_commit.iter().copied().fold(0.0, f64::max);
    println!(
        "pods rollout, {label}: {cycles} cycles, {commits} commits, {files} files changed ({files_min:.0}-{files_max:.0} per commit), {fast} cycles on the fast path"
    );
    let total: f64 = times.iter().sum();
    // Each push leaves a pack in the bare repo and the cache, never repacked here (a Git server's
    // gc would), so fetches slow down over a long run: the first and last hundred cycles show it.
    let tenth = (times.len() / 10).max(1);
    let first = median(&mut times[..tenth].to_vec());
    let last = median(&mut times[times.len() - tenth..].to_vec());
    println!(
        "pods rollout, per cycle (fetch, decide, commit, push): median {:.1} ms (first {tenth} cycles {first:.1} ms, last {tenth} {last:.1} ms), p95 {:.1} ms, max {:.1} ms; {:.1} s in all",
        median(&mut times.clone()),
        percentile(&mut times.clone(), 0.95),
        percentile(&mut times, 1.0),
        total / 1000.0
    );
    let (mut fast_times, mut full_times) = (Vec::new(), Vec::new());
    for i in 0..20 {
        let full = i % 2 == 1;
        if let Some(pod) = snapshot
            .endpoint_slices
            .first_mut()
            .and_then(|s| s.endpoints.first_mut())
        {
            pod.ready = Some(pod.ready == Some(false));
        }
        if full && let Some(node) = snapshot.nodes.last_mut() {
            node.ready = !node.ready;
        }
        let before = memory.fast_decisions();
        let started = Instant::now();
        inproc::run(&store, &target, &snapshot, &mut memory).map_err(|e| format!("comparison: {e:#}"))?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let took_fast = memory.fast_decisions() > before;
        if took_fast == full {
            return Err(format!(
                "comparison cycle {i}: fast path {took_fast}, expected {}",
                !full
            ));
        }
        if full { &mut full_times } else { &mut fast_times }.push(ms);
    }
    println!(
        "pods rollout, one endpoint's readiness, {label}: median {:.1} ms on the fast path, {:.1} ms decided in full",
        median(&mut fast_times),
        median(&mut full_times)
    );
    Ok(())
}

/// The pod-backed Service: port 80 named `http`, no node port.
fn pod_service() -> ServiceInput {
    ServiceInput {
        namespace: NAMESPACE.into(),
        name: NAME.into(),
        service_type: "LoadBalancer".into(),
        load_balancer_class: Some("flipbit.io/nginx".into()),
        annotations: [("flipbit.io/backends".to_owned(), "pods".to_owned())].into(),
        ports: vec![PortInput {
            name: Some("http".into()),
            protocol: None,
            port: 80,
            node_port: None,
        }],
        ..ServiceInput::default()
    }
}

/// The Service's slices: old pods `gone..gone + old_ready` (the ones before `gone` left), new
/// pods `0..new_ready`, each version in slices of `per_slice` by pod number (the controller
/// keeps a pod in its slice; slices empty out and go as pods leave).
fn slices(total: usize, per_slice: usize, gone: usize, old_ready: usize, new_ready: usize) -> Vec<EndpointSliceInput> {
    let pod = |version: u8, i: usize| format!("10.{}.{}.{}", 20 + version, i / 250, i % 250 + 1);
    let mut out = Vec::new();
    for (version, range, port) in [(0u8, gone..gone + old_ready, 8080), (1, 0..new_ready, 9090)] {
        for first in (0..total).step_by(per_slice) {
            let members: Vec<usize> = (first..first + per_slice).filter(|i| range.contains(i)).collect();
            if members.is_empty() {
                continue;
            }
            out.push(EndpointSliceInput {
                namespace: NAMESPACE.into(),
                service_name: NAME.into(),
                ready_nodes: Vec::new(),
                address_type: "IPv4".into(),
                ports: vec![EndpointPortInput {
                    name: Some("http".into()),
                    protocol: Some("TCP".into()),
                    port: Some(port),
                }],
                endpoints: members
                    .into_iter()
                    .map(|i| EndpointInput {
                        addresses: vec![pod(version, i)],
                        ready: Some(true),
                    })
                    .collect(),
            });
        }
    }
    out
}
