//! End-to-end harness: real nginx and HAProxy instances with private prefixes, stand-in "kube-proxy"
//! backends on node addresses, bare state repos, and the built binaries. Shared by the tests in
//! `tests/tests/` and by the demo, so the demo proves exactly what the tests assert.

pub mod apiserver;
pub mod backends;
pub mod bind;
pub mod bins;
pub mod cluster;
pub mod demo;
pub mod failover;
pub mod fleet;
pub mod genproc;
pub mod gitdaemon;
pub mod githttp;
pub mod haproxy;
pub mod human;
pub mod live_cluster;
pub mod netns;
pub mod nginx;
pub mod podman;
pub mod probe;
pub mod repo;
pub mod samba;
pub mod shared_layout;
pub mod sshd;
pub mod sshkeys;
pub mod synth;
pub mod unit_sandbox;

/// The variable `scripts/test` sets: everything a test needs is installed and the run is root,
/// so a test that cannot run fails instead of skipping.
pub const NEED_ALL: &str = "FLIPBIT_TESTS_NEED_ALL";

/// Says why a test does not run: a skip for a contributor's bare `cargo test`, a failure under
/// `scripts/test` (which sets [`NEED_ALL`]), where a missing tool or privilege must never pass.
pub fn skip(why: &str) {
    if std::env::var_os(NEED_ALL).is_some() {
        panic!("cannot run: {why} ({NEED_ALL} is set: scripts/test installs every tool and runs as root)");
    }
    eprintln!("skipped: {why}");
}

/// True when running as root (needed for ports below 1024).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// True when nginx with the stream module is installed.
pub fn have_nginx() -> bool {
    std::path::Path::new(nginx::STREAM_MODULE).exists()
        && std::process::Command::new("nginx").arg("-v").output().is_ok()
}
