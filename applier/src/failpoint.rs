//! Named points between the applier's side effects where the crash test (`tests/tests/e2e/hardening/crash.rs`)
//! kills it with SIGKILL, so every step boundary is hit for certain rather than by luck of
//! timing. Only debug builds (the tests') have them: `FLIPBIT_APPLIER_KILL_AT=<point>[:<n>]`
//! kills the process the n-th time (default first) it reaches `<point>`. Release builds compile
//! [`reached`] to nothing.

/// Every point, in the order an apply passes them (the crash test walks this list).
pub const POINTS: &[&str] = &[
    "fetched",
    "staged",
    "validated",
    "journal-written",
    "swapped",
    "reload-sent",
    "reloaded",
    "dns-sent",
];

#[cfg(debug_assertions)]
pub fn reached(point: &str) {
    use std::sync::Mutex;
    static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let Ok(wanted) = std::env::var("FLIPBIT_APPLIER_KILL_AT") else {
        return;
    };
    let (name, nth) = match wanted.split_once(':') {
        Some((name, n)) => (name, n.parse::<usize>().unwrap_or(1)),
        None => (wanted.as_str(), 1),
    };
    if name != point {
        return;
    }
    let count = match SEEN.lock() {
        Ok(mut seen) => {
            seen.push(point.to_owned());
            seen.iter().filter(|p| *p == point).count()
        }
        Err(_) => return,
    };
    if count == nth {
        eprintln!("failpoint {point}: killed");
        // SAFETY: sends SIGKILL to this process, as the test asked.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn reached(_point: &str) {}
