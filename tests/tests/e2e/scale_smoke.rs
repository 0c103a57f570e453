//! Smoke runs of the generator-scale and nginx-scale benchmarks at tiny sizes, so they keep
//! working as the code moves. Nothing is timed: each run must finish and print its figures.

use std::process::Command;

fn run(bin: &str, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().expect("running the bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{bin} {args:?} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn generator_scale_runs_in_both_layouts() {
    for layout in ["per-service", "shared"] {
        let out = run(env!("CARGO_BIN_EXE_flipbit-bench"), &["scale", "30", "12", layout]);
        for figure in [
            "cold:",
            "nothing changed",
            "one Service changed",
            "one new Service",
            "node flap",
            "peak RSS,",
        ] {
            assert!(out.lines().any(|l| l.starts_with(figure)), "{figure} missing:\n{out}");
        }
        assert!(
            out.contains("nothing changed") && out.contains("(0 files changed;"),
            "{out}"
        );
    }
}

#[test]
fn generator_scale_runs_against_git_daemon() {
    let out = Command::new(env!("CARGO_BIN_EXE_flipbit-bench"))
        .args(["scale", "30", "12"])
        .env("FLIPBIT_BENCH_REMOTE", "daemon")
        .output()
        .expect("running the bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let changed = stdout
        .lines()
        .find(|l| l.starts_with("one Service changed"))
        .unwrap_or_default();
    // The change was pushed over git://: the remote is a separate process.
    assert!(
        changed.contains("remote git daemon") && changed.contains("(3 files changed;"),
        "{stdout}"
    );
}

#[test]
fn nginx_scale_runs_for_both_layouts() {
    let Some(()) = flipbit_tests::require(&[flipbit_tests::tool::NGINX]) else {
        return;
    };
    let out = run(env!("CARGO_BIN_EXE_flipbit-nginx-scale"), &["40", "--runs", "1"]);
    assert!(
        out.contains("| PerService | 40 |") && out.contains("| SharedListeners | 40 |"),
        "{out}"
    );
    assert_eq!(
        out.matches("reached their node ports; an unowned address got no answer")
            .count(),
        2,
        "{out}"
    );
}
