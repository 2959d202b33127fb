//! `qaloop`: thin. Parse the command line, hand over to [`qaloop::cli::main`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    qaloop::cli::main(qaloop::cli::Cli::parse())
}
