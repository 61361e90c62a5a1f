//! airlock: the operator CLI. Each subcommand lives in `airlock_agent::cli::<name>`.
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // `airlock __generate-docs DIR`: man pages and completions of airlock and airlockd, for
    // `cargo xtask man` (hidden: not part of the clap definition).
    if let Some(code) = airlock_cli_support::docs::hidden_command(
        "airlock",
        std::env::args_os().skip(1),
        airlock_agent::docs::generate,
    ) {
        return code;
    }
    // `airlock __gated-exec …`: what `airlock run` starts inside a systemd scope (hidden as
    // well; see `cli/run/gated_exec.rs`).
    if let Some(code) =
        airlock_agent::cli::run::gated_exec::hidden_command(std::env::args_os().skip(1))
    {
        return code;
    }
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
