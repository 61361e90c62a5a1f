//! The `airlock` CLI, one file per subcommand.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod events;
pub mod policy;
pub mod run;
pub mod status;

/// Operator CLI for airlock.
#[derive(Parser, Debug)]
#[command(name = "airlock", version)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a command as an agent, inside a fresh agent cgroup.
    Run(run::RunArgs),
    /// Show which backend airlockd runs, why, and what it gates.
    Status(status::StatusArgs),
    /// Print recorded events (optionally following new ones).
    Events(events::EventsArgs),
    /// Policy tools.
    Policy(policy::PolicyArgs),
}

/// Runs one parsed command line.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Command::Run(a) => run::run(a),
        Command::Status(a) => status::run(a),
        Command::Events(a) => events::run(a),
        Command::Policy(a) => policy::run(a),
    }
}

/// Logs to stderr; plain lines without timestamps under journald (it stamps them itself).
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("AIRLOCK_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        b.without_time().with_ansi(false).init();
    } else {
        b.init();
    }
}
