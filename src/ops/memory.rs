//! Giving the heap a pass freed back to the system, so an idle daemon stays small.
//!
//! glibc's `free` keeps freed memory in its arenas for reuse and returns only a free stretch at
//! the very top of the main heap; a pass that read a year's work (and the SQLite threads, each
//! with an arena of its own) leaves megabytes resident that the idle daemon never touches again.
//! `malloc_trim(0)` hands every arena's free pages back (BENCHMARKS.md, "Idle serve"). It costs
//! a walk of the free lists — well under a millisecond on this heap — once per pass or dispatch.

/// Returns freed heap memory to the system (glibc on Linux; elsewhere nothing).
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointers and works under glibc's own arena locks; it may
    // be called from any thread at any time, and at worst returns 0 (nothing released).
    unsafe {
        libc::malloc_trim(0);
    }
}
