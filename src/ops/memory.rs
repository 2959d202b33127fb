//! Giving back what a pass used, so an idle daemon stays small.
//!
//! Two kinds of memory stay resident after a pass that the idle daemon never touches again:
//!
//! - **Freed heap.** mimalloc, the binary's allocator, hands freed pages back a second after
//!   they were freed, but only when a later allocation or free looks (an idle daemon makes few);
//!   `mi_collect(true)` purges them at once. glibc's `free`, which SQLite and aws-lc still use
//!   for their own allocations, keeps freed memory in its arenas for reuse and returns only a
//!   free stretch at the very top of the main heap; `malloc_trim(0)` hands every arena's free
//!   pages back. Both cost well under a millisecond, once per pass or dispatch
//!   ([`release_freed`]).
//! - **Code pages.** A pass runs code from all over the binary (migrations, templates, SQL,
//!   SMTP, TLS), and the kernel maps the binary's pages in 64 KiB runs around each one touched
//!   ("fault-around"), so after start-up nearly the whole of the binary's code is mapped: about
//!   16 MiB of an idle RSS of 19 (BENCHMARKS.md, "Idle serve"). Mapped executable pages are
//!   the ones the kernel is most reluctant to reclaim. When the daemon goes idle,
//!   [`release_idle`] asks the kernel to reclaim them (`madvise(MADV_PAGEOUT)`, Linux 5.4; the
//!   call Android uses on the apps it sends to the background): the pages leave our page tables
//!   and, when no other process maps them, the page cache. The next pass reads back what it
//!   runs, a few megabytes from the page cache or the disk.
//!
//! `MADV_PAGEOUT` never discards data (a page that was written to would be swapped, not
//! dropped), so unlike `MADV_DONTNEED` it is safe on any mapping; it is applied only to the
//! executable's read-only mappings, which hold code and constants.

/// Returns freed heap memory to the system: mimalloc's (the binary's allocator, `src/main.rs`)
/// and glibc's (SQLite's and aws-lc's own allocations, on Linux).
pub fn release_freed() {
    // SAFETY: `mi_collect` takes no pointers; it purges the calling thread's heap and, when
    // forced, every arena's freed pages under mimalloc's own locks. In a binary that kept the
    // system allocator it finds nothing to release.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointers and works under glibc's own arena locks; it may
    // be called from any thread at any time, and at worst returns 0 (nothing released).
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Returns what an idle daemon does not need: freed heap and the binary's code pages. For the
/// moment the daemon goes idle (its database connections closed), not after every pass: a busy
/// daemon would only read the pages back.
pub fn release_idle() {
    #[cfg(target_os = "linux")]
    page_out_executable();
    release_freed();
}

/// `madvise(MADV_PAGEOUT)` on each read-only mapping of our own executable. Best effort: a
/// kernel without `MADV_PAGEOUT` answers `EINVAL`, and nothing changes. Measured on the idle
/// daemon (kernel 6.18, ext4): file-backed RSS 18.4 → 3.9 MiB, growing to 4.6 MiB over the next
/// minutes as the idle loop's wake-ups read back the little code they run.
#[cfg(target_os = "linux")]
fn page_out_executable() {
    let (Ok(exe), Ok(maps)) = (
        std::fs::read_link("/proc/self/exe"),
        std::fs::read_to_string("/proc/self/maps"),
    ) else {
        return;
    };
    for (start, end) in read_only_mappings_of(&maps, &exe.to_string_lossy()) {
        // SAFETY: the range is one whole mapping of this process, page-aligned as the kernel
        // listed it; MADV_PAGEOUT only reclaims (data is written back or swapped, never
        // discarded), so every later access sees the same bytes. A mapping that went away in
        // between makes the call fail with ENOMEM, which is ignored.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT);
        }
    }
}

/// The address ranges of the mappings of file `path` that are not writable, from the text of
/// `/proc/self/maps` (`start-end perms offset dev inode path`, one mapping a line).
#[cfg(target_os = "linux")]
fn read_only_mappings_of(maps: &str, path: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            let mapped = fields.nth(3)?; // skip offset, device, inode
            if mapped != path || fields.next().is_some() || perms.contains('w') {
                return None; // another file, a path with spaces or "(deleted)", or writable
            }
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            (end > start).then_some((start, end))
        })
        .collect()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// This process's file-backed resident memory, KiB (`RssFile` in `/proc/self/status`).
    fn file_backed_kib() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("RssFile:"))?;
        line.trim().trim_end_matches("kB").trim().parse().ok()
    }

    const MAPS: &str = "\
55d0c0000000-55d0c0200000 r--p 00000000 fe:01 1234 /usr/bin/qaloop
55d0c0200000-55d0c1400000 r-xp 00200000 fe:01 1234 /usr/bin/qaloop
55d0c1400000-55d0c1500000 r--p 01400000 fe:01 1234 /usr/bin/qaloop
55d0c1500000-55d0c1510000 rw-p 01500000 fe:01 1234 /usr/bin/qaloop
55d0c1600000-55d0c1700000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000100000 r-xp 00000000 fe:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000200000-7f0000300000 r-xp 00000000 fe:01 1234 /usr/bin/qaloop-old (deleted)
";

    #[test]
    fn only_the_executables_read_only_mappings_are_paged_out() {
        assert_eq!(
            read_only_mappings_of(MAPS, "/usr/bin/qaloop"),
            vec![
                (0x55d0c0000000, 0x55d0c0200000),
                (0x55d0c0200000, 0x55d0c1400000),
                (0x55d0c1400000, 0x55d0c1500000),
            ]
        );
    }

    #[test]
    fn a_replaced_binary_or_another_file_is_left_alone() {
        assert!(read_only_mappings_of(MAPS, "/usr/bin/qaloop-old").is_empty());
        assert!(read_only_mappings_of(MAPS, "/usr/bin/other").is_empty());
    }

    #[test]
    fn paging_out_our_own_code_shrinks_the_resident_set_and_keeps_running() {
        // This test binary, like the daemon, has much of its code mapped by now.
        let before = file_backed_kib().unwrap();
        release_idle();
        let after = file_backed_kib().unwrap();
        // Still running here: what was paged out is read back as it runs.
        assert!(
            after < before,
            "file-backed RSS {before} KiB before, {after} KiB after paging out"
        );
    }
}
