//! Paths of the workspace's binaries, built on demand when a test runs alone.

use std::path::PathBuf;
use std::sync::OnceLock;

fn target_dir() -> PathBuf {
    // Tests run from target/<profile>/deps/<test>; the binaries sit in target/<profile>.
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// The path of a workspace binary. `cargo build` runs once per test process first, so a test
/// run with `-p flipbit-tests` never exercises a stale binary (a no-op build takes a moment).
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let path = target_dir().join(name);
    {
        BUILT.get_or_init(|| {
            let mut cmd = std::process::Command::new(env!("CARGO"));
            // The variables cargo sets for a test process would make the build scripts of some
            // dependencies (ring) rerun, so the inner build would rebuild them every time.
            cmd.env_clear();
            for var in [
                "PATH",
                "HOME",
                "CARGO_HOME",
                "RUSTUP_HOME",
                "RUSTUP_TOOLCHAIN",
                // Without it a rustup proxy on a machine that sets it to 0 may install or update a
                // toolchain in the middle of a test run (it moved this machine from 1.95 to 1.99).
                "RUSTUP_AUTO_INSTALL",
                "CARGO_TARGET_DIR",
                "CARGO_INCREMENTAL",
                "TMPDIR",
            ] {
                if let Some(v) = std::env::var_os(var) {
                    cmd.env(var, v);
                }
            }
            cmd.args(["build", "--bins", "-p", "flipbit-generator", "-p", "flipbit-applier"]);
            if target_dir().ends_with("release") {
                cmd.arg("--release");
            }
            let status = cmd.status();
            assert!(status.is_ok_and(|s| s.success()), "cargo build of the binaries failed");
        });
    }
    path
}

pub fn generator() -> PathBuf {
    bin("flipbit-generator")
}

/// The applier; `FLIPBIT_TEST_APPLIER` names another build of it, to show that a test fails
/// against an older applier (how each regression test was checked to catch its bug).
pub fn applier() -> PathBuf {
    match std::env::var_os("FLIPBIT_TEST_APPLIER") {
        Some(path) => PathBuf::from(path),
        None => bin("flipbit-applier"),
    }
}
