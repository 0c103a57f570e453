//! End-to-end harness: real nginx and HAProxy instances with private prefixes, stand-in "kube-proxy"
//! backends on node addresses, bare state repos, and the built binaries. Shared by the tests in
//! `tests/tests/e2e/` and by the demo, so the demo proves exactly what the tests assert.

pub mod alone;
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
pub mod process;
pub mod repo;
pub mod samba;
pub mod shared_layout;
pub mod sshd;
pub mod sshkeys;
pub mod synth;
pub mod unit_sandbox;
pub mod wait;

/// The variable `scripts/test` sets: everything a test needs is installed and the run is root,
/// so a test that cannot run fails naming what it lacks instead of skipping.
pub const REQUIRE_TOOLS: &str = "FLIPBIT_REQUIRE_TOOLS";

/// The older name of [`REQUIRE_TOOLS`], still honoured (a CI job or a habit may set it).
pub const NEED_ALL: &str = "FLIPBIT_TESTS_NEED_ALL";

/// What a test does when a tool or privilege it needs is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Prints why and passes: a contributor's bare `cargo test` on a machine without nginx.
    Skip,
    /// Panics naming what is missing: under `scripts/test`, a test that did not run must not pass.
    Fail,
}

impl Missing {
    /// [`Missing::Fail`] when [`REQUIRE_TOOLS`] or [`NEED_ALL`] is set (to anything but empty or `0`).
    pub fn from_env() -> Self {
        Self::from_values(
            std::env::var_os(REQUIRE_TOOLS).as_deref(),
            std::env::var_os(NEED_ALL).as_deref(),
        )
    }

    /// The same from the two variables' values, so the rule is tested without touching the
    /// process's environment (which every test thread shares).
    pub fn from_values(require: Option<&std::ffi::OsStr>, alias: Option<&std::ffi::OsStr>) -> Self {
        let on = |v: Option<&std::ffi::OsStr>| v.is_some_and(|v| !v.is_empty() && v != "0");
        if on(require) || on(alias) {
            Missing::Fail
        } else {
            Missing::Skip
        }
    }
}

/// A tool (or privilege) an end-to-end test needs, named as the failure should name it.
#[derive(Clone, Copy)]
pub struct Tool {
    pub name: &'static str,
    present: fn() -> bool,
}

impl Tool {
    pub const fn new(name: &'static str, present: fn() -> bool) -> Self {
        Self { name, present }
    }

    pub fn present(&self) -> bool {
        (self.present)()
    }
}

/// The tools the end-to-end tests use; `scripts/test` installs every one of them.
pub mod tool {
    use super::Tool;

    fn runs(cmd: &str, arg: &str) -> bool {
        std::process::Command::new(cmd).arg(arg).output().is_ok()
    }

    pub const ROOT: Tool = Tool::new("root (run the tests as root)", super::is_root);
    pub const NGINX: Tool = Tool::new("nginx with the stream module", super::have_nginx);
    pub const BIND: Tool = Tool::new("BIND 9 (named, dig, nsupdate, tsig-keygen)", crate::bind::have_bind);
    pub const NAMED_CHECKZONE: Tool = Tool::new("named-checkzone (bind9)", || runs("named-checkzone", "-v"));
    pub const HAPROXY: Tool = Tool::new("haproxy", crate::haproxy::have_haproxy);
    pub const SAMBA: Tool = Tool::new("Samba (samba, samba-tool) run as root", crate::samba::have_samba);
    pub const SSHD: Tool = Tool::new("openssh-server (sshd, ssh-keygen)", crate::sshd::have_sshd);
    pub const GIT_HTTPS: Tool = Tool::new("fcgiwrap, openssl and git http-backend", crate::githttp::have_git_https);
    pub const IPROUTE: Tool = Tool::new("`ip` (iproute2)", || runs("ip", "-V"));
    pub const SKOPEO: Tool = Tool::new("skopeo", || runs("skopeo", "--version"));
    pub const DPKG: Tool = Tool::new("dpkg", || runs("dpkg", "--version"));
    pub const SYSTEMD_ANALYZE: Tool = Tool::new("systemd-analyze", || runs("systemd-analyze", "--version"));
    pub const KUBECTL: Tool = Tool::new("kubectl (install its binary by hand: no apt repository here)", || {
        std::process::Command::new("kubectl")
            .args(["version", "--client"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
}

/// `Some(())` when every one of `tools` is present. Otherwise `None` after printing what is
/// missing (bare `cargo test`), or a panic naming it under [`REQUIRE_TOOLS`]. The one gate every
/// end-to-end test passes before it starts a real tool:
/// `let Some(()) = require(&[tool::NGINX]) else { return };`.
pub fn require(tools: &[Tool]) -> Option<()> {
    require_in(Missing::from_env(), tools)
}

/// [`require`] with the mode given.
pub fn require_in(mode: Missing, tools: &[Tool]) -> Option<()> {
    let missing: Vec<&str> = tools.iter().filter(|t| !t.present()).map(|t| t.name).collect();
    if missing.is_empty() {
        return Some(());
    }
    skip_in(mode, &format!("missing: {}", missing.join(", ")));
    None
}

/// Says why a test does not run, for reasons other than a missing tool (an artifact
/// `scripts/test` builds first, a machine podman cannot use): a skip for a contributor's bare
/// `cargo test`, a failure under `scripts/test`.
pub fn skip(why: &str) {
    skip_in(Missing::from_env(), why)
}

/// [`skip`] with the mode given.
pub fn skip_in(mode: Missing, why: &str) {
    match mode {
        Missing::Fail => panic!(
            "cannot run: {why} ({REQUIRE_TOOLS} or {NEED_ALL} is set: scripts/test installs every tool and runs as root)"
        ),
        Missing::Skip => eprintln!("skipped: {why}"),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    const ABSENT: Tool = Tool::new("flipbit-no-such-tool", || false);
    const PRESENT: Tool = Tool::new("always-there", || true);

    #[test]
    fn either_variable_turns_skips_into_failures() {
        let on = Some(OsStr::new("1"));
        assert_eq!(Missing::from_values(None, None), Missing::Skip);
        assert_eq!(Missing::from_values(on, None), Missing::Fail);
        assert_eq!(Missing::from_values(None, on), Missing::Fail);
        assert_eq!(
            Missing::from_values(Some(OsStr::new("0")), Some(OsStr::new(""))),
            Missing::Skip
        );
    }

    #[test]
    fn a_missing_tool_skips_bare_and_fails_naming_it_when_required() {
        assert_eq!(require_in(Missing::Skip, &[PRESENT]), Some(()));
        assert_eq!(require_in(Missing::Fail, &[PRESENT]), Some(()));
        assert_eq!(require_in(Missing::Skip, &[PRESENT, ABSENT]), None);
        let failed = std::panic::catch_unwind(|| require_in(Missing::Fail, &[PRESENT, ABSENT]))
            .expect_err("a missing tool passed under FLIPBIT_REQUIRE_TOOLS");
        let message = failed
            .downcast_ref::<String>()
            .map(String::as_str)
            .unwrap_or_default()
            .to_owned();
        assert!(
            message.contains("missing: flipbit-no-such-tool") && !message.contains("always-there"),
            "{message}"
        );
    }
}
