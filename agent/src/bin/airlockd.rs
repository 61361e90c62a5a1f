//! airlockd: the host daemon. Thin wrapper over `airlock_agent::daemon`; its command line is
//! `airlock_agent::daemon_args::DaemonArgs`, its config file `airlock_agent::config`.
use std::process::ExitCode;

use airlock_agent::daemon_args::{ConfigCmd, DaemonArgs, DaemonCmd};
use clap::Parser;

fn main() -> ExitCode {
    airlock_agent::cli::init_logging();
    let mut args = DaemonArgs::parse();
    if let Some(DaemonCmd::Config(ConfigCmd::Check { file })) = args.cmd.take() {
        return match airlock_agent::config::load(&file, true) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(1)
            }
        };
    }
    let (path, required) = args.config_file();
    let file = match airlock_agent::config::load(&path, required) {
        Ok(f) => f,
        Err(e) => {
            // A config with errors never half-applies: nothing starts.
            eprintln!("airlockd: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("airlockd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(airlock_agent::daemon::run(args.into_config(file))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("airlockd: {e}");
            ExitCode::from(2)
        }
    }
}
