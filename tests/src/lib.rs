//! End-to-end harness: real nginx and HAProxy instances with private prefixes, stand-in "kube-proxy"
//! backends on node addresses, bare state repos, and the built binaries. Shared by the tests in
//! `tests/tests/` and by the demo, so the demo proves exactly what the tests assert.

pub mod apiserver;
pub mod backends;
pub mod bind;
pub mod bins;
pub mod cluster;
pub mod demo;
pub mod fleet;
pub mod genproc;
pub mod gitdaemon;
pub mod haproxy;
pub mod human;
pub mod nginx;
pub mod probe;
pub mod repo;
pub mod shared_layout;
pub mod sshkeys;
pub mod synth;

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
