//! `airlock policy`: policy tools for operators.
//!
//! `check` runs exactly what airlockd runs at start ([`airlock_policy::load_and_compile`] against
//! this host), so a file that passes here is one the daemon accepts, and a file that fails gets
//! the same `file:line:column: message` lines the daemon would refuse it with.
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use airlock_policy::{HostResolver, load_and_compile};

/// Arguments of `airlock policy`.
#[derive(clap::Args, Debug)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub cmd: PolicyCmd,
}

/// Policy subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum PolicyCmd {
    /// Check policy files (or directories of *.yaml files) as airlockd would load them: print
    /// every problem as file:line:column and exit 1, or a summary of each policy and exit 0.
    Check {
        /// Policy files or directories.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Runs `airlock policy ...`.
pub fn run(args: PolicyArgs) -> anyhow::Result<ExitCode> {
    match args.cmd {
        PolicyCmd::Check { files } => check(&files),
    }
}

fn check(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    match load_and_compile(files, &HostResolver) {
        Ok(checked) => {
            let mut out = std::io::stdout().lock();
            out.write_all(checked.summary().as_bytes())?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Err(diags) => {
            // Exactly one line per problem, nothing else: editors and CI parse these lines.
            eprintln!("{diags}");
            Ok(ExitCode::from(1))
        }
    }
}
