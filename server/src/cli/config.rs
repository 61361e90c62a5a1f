//! `airlock-server config check FILE`: validates a config file, errors as file:line:column.
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `airlock-server config`.
#[derive(clap::Args, Debug)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub cmd: ConfigCmd,
}

/// Config subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum ConfigCmd {
    /// Check a config file; prints every error with its file:line:column, exit 1 if any.
    Check {
        /// The file (e.g. DIR/server.yaml).
        file: PathBuf,
    },
}

/// Runs `config check`.
pub fn run(a: ConfigArgs) -> anyhow::Result<ExitCode> {
    match a.cmd {
        ConfigCmd::Check { file } => match crate::config::load(&file) {
            Ok(c) => {
                let dir = file.parent().unwrap_or(std::path::Path::new("."));
                if let Err(e) = crate::webhook::check(&c, dir) {
                    eprintln!("{}: {e}", file.display());
                    return Ok(ExitCode::from(1));
                }
                if let Err(e) = crate::slack::check(&c, dir) {
                    eprintln!("{}: {e}", file.display());
                    return Ok(ExitCode::from(1));
                }
                if let Err(e) = crate::teams::check(&c, dir) {
                    eprintln!("{}: {e}", file.display());
                    return Ok(ExitCode::from(1));
                }
                for n in &c.notes {
                    println!("note: {n}");
                }
                println!(
                    "{}: ok ({} principals, {} routes)",
                    file.display(),
                    c.principals.len(),
                    c.routes.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(1))
            }
        },
    }
}
