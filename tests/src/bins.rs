//! Paths of the workspace's binaries, built on demand when a test runs alone.

use std::path::{Path, PathBuf};
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
            // Run outside cargo (a bench binary started from a shell), nothing names the
            // toolchain, and the rustup proxy that cargo calls as `rustc` picks one by the
            // directory it runs in: a dependency's own `rust-toolchain.toml` (`ff` pins 1.56)
            // then builds it with that. The toolchain this cargo belongs to is the one to use.
            if std::env::var_os("RUSTUP_TOOLCHAIN").is_none()
                && let Some(toolchain) = toolchain_of(Path::new(env!("CARGO")))
            {
                cmd.env("RUSTUP_TOOLCHAIN", toolchain);
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

/// The rustup toolchain a cargo binary at `cargo` belongs to (`<rustup home>/toolchains/<name>/bin/cargo`).
fn toolchain_of(cargo: &Path) -> Option<&std::ffi::OsStr> {
    let bin = cargo.parent()?;
    let toolchain = bin.parent()?;
    (bin.file_name()? == "bin" && toolchain.parent()?.file_name()? == "toolchains").then(|| toolchain.file_name())?
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_toolchain_is_read_from_a_rustup_cargo_path_only() {
        let rustup = Path::new("/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/bin/cargo");
        assert_eq!(
            toolchain_of(rustup),
            Some(std::ffi::OsStr::new("stable-x86_64-unknown-linux-gnu"))
        );
        assert_eq!(toolchain_of(Path::new("/usr/bin/cargo")), None);
        assert_eq!(toolchain_of(Path::new("cargo")), None);
    }
}
