//! `render-cli N`: issue 19 item 3. `flipbit-generator render` as a CLI user runs it (a fresh
//! process each time, `--cache-dir`, the synthetic cluster of `scale` as manifests: one `List` of
//! N Services, one of the nodes, 3 LB hosts) with one Service changed and with no change, beside
//! the floor measured in the same run: `git commit -a` of one changed file in a clone of the same
//! state repo (a work tree of the same 4N + 2 files). Targets: one change ≤ 2× the floor, no change
//! ≤ 1.5×. The cold render (which fills the cache) is printed for reference, and so is a run with
//! no change that decides (its answer file removed, as when a hold is in play or after a run with
//! problems: see `generator/src/render_cache/answer.rs`).
//!
//! Options: `--nodes M` (default 500), `--reps K` (default 5; medians are printed),
//! `--generator PATH` (another build, e.g. one from before the cache, for the before/after),
//! `--keep DIR` (build the state repo, manifests and cache in DIR and leave them there, to profile
//! single runs by hand afterwards).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use flipbit_tests::synth;

use crate::rig::{Flags, median};

pub fn run(n: usize, args: &[String]) -> Result<(), String> {
    let flags = Flags::parse(args)?;
    let nodes: usize = flags.get("nodes", 500)?;
    let reps: usize = flags.get("reps", 5)?;
    let generator = match flags.get::<String>("generator", String::new())? {
        g if g.is_empty() => flipbit_tests::bins::generator(),
        g => PathBuf::from(g),
    };
    let keep = flags.get::<String>("keep", String::new())?;
    // Removed when dropped at the end, unless DIR is kept instead.
    let temp = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let tmp = match keep.is_empty() {
        true => temp.path().to_path_buf(),
        false => {
            std::fs::create_dir_all(&keep).map_err(|e| format!("{keep}: {e}"))?;
            PathBuf::from(keep)
        }
    };
    let state = flipbit_tests::repo::create(
        &tmp.as_path().join("state.git"),
        &[("flipbit.yaml", synth::flipbit_yaml(false))].into(),
    )
    .map_err(|e| format!("state repo: {e}"))?;
    let manifests = tmp.as_path().join("cluster");
    let mut snapshot = synth::snapshot(n, nodes);
    let write = |s: &flipbit_core::model::Snapshot| {
        synth::write_manifests(s, &manifests).map_err(|e| format!("{}: {e}", manifests.display()))
    };
    write(&snapshot)?;
    let cache = tmp.as_path().join("cache.git");
    let render = |expect: &str| -> Result<f64, String> {
        let started = Instant::now();
        let out = Command::new(&generator)
            .args(["render", "--repo"])
            .arg(&state)
            .arg("--manifests")
            .arg(&manifests)
            .arg("--cache-dir")
            .arg(&cache)
            .output()
            .map_err(|e| format!("{}: {e}", generator.display()))?;
        let took = started.elapsed().as_secs_f64() * 1000.0;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !stdout.starts_with(expect) {
            return Err(format!(
                "render: expected {expect:?}, got {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(took)
    };
    let cold = render("committed")?;

    // The floor: a clone with a work tree of the same files, one of them changed, committed.
    let clone = tmp.as_path().join("clone");
    git(
        tmp.as_path(),
        &[
            "clone",
            "-q",
            &state.display().to_string(),
            &clone.display().to_string(),
        ],
    )?;
    let changed_file = clone.join("lb/lb-1/ns-07/svc-00007.conf");
    let mut floor = Vec::new();
    for i in 0..reps {
        let mut text =
            std::fs::read_to_string(&changed_file).map_err(|e| format!("{}: {e}", changed_file.display()))?;
        text.push_str(&format!("# edit {i}\n"));
        std::fs::write(&changed_file, text).map_err(|e| format!("{}: {e}", changed_file.display()))?;
        let started = Instant::now();
        git(
            &clone,
            &[
                "-c",
                "user.name=bench",
                "-c",
                "user.email=bench@localhost",
                "commit",
                "-q",
                "-a",
                "-m",
                "one file",
            ],
        )?;
        floor.push(started.elapsed().as_secs_f64() * 1000.0);
    }

    // Flipbit: one Service changed (a different one each time), then nothing changed: answered
    // from the last run's answer, and decided (the answer removed, as when a hold is in play).
    let (mut one, mut none, mut decided) = (Vec::new(), Vec::new(), Vec::new());
    render("no change")?;
    let answer = cache.join("flipbit-render.answer");
    for i in 0..reps {
        let svc = &mut snapshot.services[(i * 7919 + 7) % n];
        for port in &mut svc.ports {
            port.node_port = port.node_port.map(|p| 30000 + (p - 30000 + 1) % 2768);
        }
        write(&snapshot)?;
        one.push(render("committed")?);
        none.push(render("no change")?);
        // (A build from before the answer file has none to remove.)
        match std::fs::remove_file(&answer) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(format!("{}: {e}", answer.display())),
            _ => {}
        }
        decided.push(render("no change")?);
    }
    let floor = median(&mut floor);
    let (one, none, decided) = (median(&mut one), median(&mut none), median(&mut decided));
    println!("render CLI cold, {n} Services x 3 LB hosts x {nodes} nodes (fills the cache): {cold:.0} ms");
    println!(
        "render CLI one changed Service of {n}: {one:.0} ms = {:.2}x the floor (target <= 2x: {}); floor (git commit -a of one changed file, same tree): {floor:.0} ms; median of {reps}",
        one / floor,
        verdict(one / floor <= 2.0)
    );
    println!(
        "render CLI no change, {n} Services: {none:.0} ms = {:.2}x the floor (target <= 1.5x: {}); median of {reps}",
        none / floor,
        verdict(none / floor <= 1.5)
    );
    println!(
        "render CLI no change, decided (no answer kept: e.g. a Service on hold), {n} Services: {decided:.0} ms = {:.2}x the floor; median of {reps}",
        decided / floor
    );
    Ok(())
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}

fn git(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .output()
        .map_err(|e| format!("git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}
