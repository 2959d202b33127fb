//! `qaloop`: thin. Parse the command line, hand over to [`qaloop::cli::main`].

use clap::Parser;

/// mimalloc instead of the system allocator: a national morning's passes allocate and free
/// millions of small strings and rows, and glibc's malloc and free took about a sixth of their
/// CPU; with mimalloc a national working day's passes are 15 % shorter on SQLite and 6 % on
/// PostgreSQL (BENCHMARKS.md, "mimalloc as the allocator"). Built without transparent huge
/// pages (`no_thp`), which cost an idle daemon 10 MiB. The benchmarks set the same allocator,
/// so their figures are the daemon's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    qaloop::cli::main(qaloop::cli::Cli::parse())
}
