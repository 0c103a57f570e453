//! Waiting for something a test can observe (a file in the repo, a counter in /metrics, a log
//! line, an answer), never for a fixed time: the one polling loop every test uses.

use std::time::{Duration, Instant};

/// How often [`wait_until`] checks again.
const POLL: Duration = Duration::from_millis(20);

/// Retries `check` until it succeeds, or `timeout` has passed: then its last error. Checks once
/// more at the deadline, so a slow machine that got there in time is not failed.
pub fn wait_until<T>(timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// [`wait_until`] for a condition: `Err(what)` when it never held.
pub fn wait_for(timeout: Duration, what: &str, mut holds: impl FnMut() -> bool) -> Result<(), String> {
    wait_until(timeout, || {
        if holds() {
            Ok(())
        } else {
            Err(format!("timed out after {timeout:?} waiting for {what}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_success_or_the_last_error() {
        let mut calls = 0;
        let got = wait_until(Duration::from_secs(5), || {
            calls += 1;
            if calls == 3 {
                Ok(calls)
            } else {
                Err(format!("call {calls}"))
            }
        });
        assert_eq!(got, Ok(3));
        let mut calls = 0;
        let got: Result<(), String> = wait_until(Duration::ZERO, || {
            calls += 1;
            Err(format!("call {calls}"))
        });
        assert_eq!(got, Err("call 1".to_owned()));
        assert!(wait_for(Duration::ZERO, "never", || false).is_err_and(|e| e.contains("never")));
    }
}
