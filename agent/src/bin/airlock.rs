//! airlock: the operator CLI. Each subcommand lives in `airlock_agent::cli::<name>`.
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    airlock_agent::cli::init_logging();
    let cli = airlock_agent::cli::Cli::parse();
    match airlock_agent::cli::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("airlock: {e:#}");
            ExitCode::from(2)
        }
    }
}
