//! The generator's allocator is mimalloc (see main.rs). mimalloc keeps freed pages for a second
//! (ten for whole arenas) before handing them back to the kernel, so a cold decision's transient
//! memory (rendered texts, the exposure list, the tree builders) was still resident when the push
//! began, and the push's own memory came on top: 473 MB peak RSS at 50,000 Services, against
//! 415 MB when freed pages go back at once, for ~5% more time in a cold decision (`BENCHMARKS.md`).

use std::ffi::{c_int, c_long};

// Links the mimalloc library in wherever this module is (tests included), not only in main.rs.
extern crate mimalloc;

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_e` (include/mimalloc.h): how many
/// milliseconds freed memory waits before it is purged; 0 purges at once.
const MI_OPTION_PURGE_DELAY: c_int = 15;

unsafe extern "C" {
    // From the mimalloc library the `mimalloc` crate links in.
    fn mi_option_set(option: c_int, value: c_long);
    fn mi_option_get(option: c_int) -> c_long;
}

/// Freed memory goes back to the kernel at once. Call first thing in `main`.
pub fn return_freed_memory_at_once() {
    // SAFETY: mimalloc's options are plain integers it reads atomically; setting one is
    // allowed at any time, from any thread.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
}

/// mimalloc's own delay (1 s): for a short run whose memory stays small (`render` with a warm
/// cache), where purging at once costs more page faults than it saves memory.
pub fn keep_freed_memory_a_while() {
    // SAFETY: as in `return_freed_memory_at_once`.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 1000) }
}

/// `PR_SET_THP_DISABLE` (linux/prctl.h).
const PR_SET_THP_DISABLE: c_int = 41;

unsafe extern "C" {
    // From the C library: `int prctl(int option, ...)`.
    fn prctl(option: c_int, ...) -> c_int;
}

/// Whether the kernel may back this process's memory with transparent huge pages (mimalloc asks
/// for them on its arenas). A warm `render` touches a few hundred MB once and exits: every 2 MB
/// page it touches is zeroed whole first, which was half the CPU of a warm run at 50,000
/// Services (`clear_page_erms`; system time 0.53 s with them, 0.15 s without). Cold runs keep
/// them. A failure (another kernel) changes nothing but speed.
pub fn huge_pages(allowed: bool) {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes one integer argument (the rest must be 0)
    // and only sets a flag of the process's memory.
    unsafe {
        let _ = prctl(
            PR_SET_THP_DISABLE,
            std::ffi::c_ulong::from(!allowed),
            0 as std::ffi::c_ulong,
            0 as std::ffi::c_ulong,
            0 as std::ffi::c_ulong,
        );
    }
}

/// The purge delay in force, in milliseconds.
pub fn purge_delay_ms() -> c_long {
    // SAFETY: reading an option has no preconditions.
    unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }
}

#[cfg(test)]
mod tests {
    /// The option number is mimalloc 3's purge delay: its default is 1,000 ms (options.c), and
    /// it reads back as 0 once set. A mimalloc upgrade that renumbers the options fails here.
    #[test]
    fn the_option_is_the_purge_delay() {
        assert_eq!(super::purge_delay_ms(), 1000);
        super::return_freed_memory_at_once();
        assert_eq!(super::purge_delay_ms(), 0);
    }
}
