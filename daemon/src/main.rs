use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tokend::run(tokend::cli::Cli::parse())
}
