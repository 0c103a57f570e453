//! What a test starts stops when the test ends, however it ends. A fixture owns its processes and
//! stops them in `Drop`, which also runs while a failed assertion unwinds; a helper thread that
//! shares a fixture is a [`Background`], stopped and joined on drop, so it cannot keep the fixture
//! (and its nginx and `named`) alive past a panic. Every test shares one process (one test binary):
//! whatever a failed test leaves running takes the next test's ports.

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a process gets to exit on SIGTERM before it is killed.
pub const GRACE: Duration = Duration::from_secs(5);

/// Stops `child`: SIGTERM, up to [`GRACE`] to exit, then SIGKILL; always reaped. Nothing is
/// signalled once it has been reaped (its pid may belong to another process by then).
pub fn stop(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: signalling a child this process spawned and has not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Stops the process named by `pid_file` when it is not `spawned` and still runs `program` (an
/// nginx master a reload or upgrade replaced, started with its own pid file): SIGTERM, then
/// SIGKILL after [`GRACE`]. The program check keeps a stale file from naming a reused pid.
pub fn stop_pid_file(pid_file: &Path, spawned: u32, program: &str) {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
    else {
        return;
    };
    if pid == spawned || !runs(pid, program) {
        return;
    }
    // SAFETY: signalling the process the fixture's own pid file names, checked to run `program`.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let deadline = Instant::now() + GRACE;
    while runs(pid, program) {
        if Instant::now() > deadline {
            // SAFETY: as above.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// True while process `pid` exists, is not a zombie and its command line mentions `program`.
pub fn runs(pid: u32, program: &str) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let zombie = status.lines().any(|l| l.starts_with("State:") && l.contains('Z'));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    !zombie && String::from_utf8_lossy(&cmdline).contains(program)
}

/// A child process stopped with [`stop`] when dropped; derefs to the [`Child`].
pub struct Owned(Child);

impl Owned {
    pub fn new(child: Child) -> Self {
        Self(child)
    }
}

impl Deref for Owned {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for Owned {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        stop(&mut self.0);
    }
}

/// A thread that runs until told to stop (a prober, steady traffic) and is told, and joined,
/// when dropped: if the test panics first, the thread ends with it and drops what it shares.
pub struct Background<T> {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<T>>,
}

impl<T: Send + 'static> Background<T> {
    /// Runs `body` on a thread; `body` loops while the flag it is given is false.
    pub fn spawn(body: impl FnOnce(&AtomicBool) -> T + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || body(&flag));
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the thread and returns what it returned; panics if it panicked.
    pub fn finish(mut self) -> T {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("a background thread is joined once");
        thread.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

impl<T> Drop for Background<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
