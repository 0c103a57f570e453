//! Every end-to-end test runs in one process (one test binary, a module per suite), on parallel
//! threads. The few that must change process-wide state no other thread may read meanwhile (the
//! environment, for a C library that reads it) run themselves again in a process of their own.

use std::process::Command;

/// Set, to the test's name, in the process [`in_own_process`] starts.
const ALONE: &str = "FLIPBIT_TEST_ALONE";

/// For the test at `path` (`module_path!()` and its function name, joined by `::`): in the
/// test process, runs that test alone in a new process of this test binary, fails if it fails,
/// and returns true (the caller returns: the test ran). In that new process, returns false:
/// the caller runs the test's body, the only test in its process.
pub fn in_own_process(path: &str) -> bool {
    // Test names leave out the crate: `e2e::ad_dns::x` is the test `ad_dns::x`.
    let name = path.split_once("::").map_or(path, |(_, rest)| rest);
    if std::env::var_os(ALONE).is_some_and(|v| v == name) {
        return false;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(&exe)
        .args([name, "--exact", "--nocapture", "--test-threads", "1"])
        .env(ALONE, name)
        .output()
        .unwrap_or_else(|e| panic!("running {name} in a process of its own ({}): {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name}, run in a process of its own, failed:\n{stdout}{stderr}"
    );
    // A renamed test would match nothing and pass.
    assert!(
        stdout.contains("1 passed"),
        "{name} did not run in its own process:\n{stdout}{stderr}"
    );
    eprint!("{stderr}");
    true
}

/// True in a process [`in_own_process`] started: no other test runs in it.
pub fn alone() -> bool {
    std::env::var_os(ALONE).is_some()
}
