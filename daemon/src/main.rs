use std::io::Write;
use std::process::ExitCode;

use tokend::cli::{self, Command};

fn main() -> ExitCode {
    // Writes to stdout and stderr here ignore errors, as clap's did: `tokend --help | head -1`
    // closes the pipe early, and that is not a failure worth a panic.
    match cli::parse(std::env::args_os().skip(1)) {
        Ok(Command::Run(cli)) => tokend::run(cli),
        Ok(Command::Help) => {
            let _ = std::io::stdout().write_all(cli::HELP.as_bytes());
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            let _ = std::io::stdout().write_all(cli::VERSION.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e}\n\n{}", cli::USAGE);
            ExitCode::from(2)
        }
    }
}
