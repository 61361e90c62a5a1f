//! The `airlock` CLI, one file per subcommand.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod approve;
pub mod audit;
pub mod deny;
pub mod enroll;
pub mod events;
pub mod pending;
pub mod policy;
pub mod run;
pub mod show;
pub mod status;
pub mod watch;

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
    /// List held actions waiting for a decision.
    Pending(pending::PendingArgs),
    /// Show everything about one request.
    Show(show::ShowArgs),
    /// Let a held action happen (once, or for a while).
    Approve(approve::ApproveArgs),
    /// Make a held action fail with EPERM (once, or always).
    Deny(deny::DenyArgs),
    /// Print requests as they open and close.
    Watch(watch::WatchArgs),
    /// Enrol this host with airlock-server (one-time token from `airlock-server hosts enroll`).
    Enroll(enroll::EnrollArgs),
    /// The tamper-evident audit stream: verify, export, key, query the collector.
    Audit(audit::AuditArgs),
}

/// Runs one parsed command line.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Command::Run(a) => run::run(a),
        Command::Status(a) => status::run(a),
        Command::Events(a) => events::run(a),
        Command::Policy(a) => policy::run(a),
        Command::Pending(a) => pending::run(a),
        Command::Show(a) => show::run(a),
        Command::Approve(a) => approve::run(a),
        Command::Deny(a) => deny::run(a),
        Command::Watch(a) => watch::run(a),
        Command::Enroll(a) => enroll::run(a),
        Command::Audit(a) => audit::run(a),
    }
}

/// Where the approvals commands (pending, show, approve, deny, watch) reach airlockd, or
/// airlock-server with `--server`.
#[derive(clap::Args, Debug, Clone)]
pub struct ApiArgs {
    /// airlockd's state directory; the socket is STATE_DIR/airlock.sock.
    #[arg(long, env = "AIRLOCK_STATE_DIR", default_value = "/run/airlock")]
    pub state_dir: std::path::PathBuf,
    /// airlockd's approvals socket (overrides --state-dir).
    #[arg(long, env = "AIRLOCK_SOCKET", value_name = "PATH")]
    pub socket: Option<std::path::PathBuf>,
    /// Ask airlock-server (https://HOST:PORT) instead of this host's airlockd: the whole fleet.
    #[arg(long, env = "AIRLOCK_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// API token for --server (`airlock-server tokens issue PRINCIPAL`).
    #[arg(
        long,
        env = "AIRLOCK_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// The server's CA certificate (PEM) for --server [default: the enrolled host's ca.pem].
    #[arg(long, env = "AIRLOCK_CA", value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
}

impl ApiArgs {
    /// The socket to connect to.
    pub fn socket_path(&self) -> std::path::PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| crate::paths::socket(&self.state_dir))
    }
}

/// Connects to airlockd and runs one approvals command on a single-threaded runtime.
///
/// Exit codes: what `f` returns; 1 when airlockd refused or failed the call (its message is
/// printed as `airlock: MESSAGE`, nothing added, so scripts can match it); errors before or
/// around the call (cannot connect, cannot decode the answer) propagate and exit 2.
pub fn with_client<F, Fut>(api: &ApiArgs, f: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(crate::api::remote::Client) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    use anyhow::Context as _;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let res = rt.block_on(async {
        let client = match api.server.as_deref().filter(|s| !s.is_empty()) {
            Some(url) => {
                crate::api::remote::connect_server(url, api.token.as_deref(), api.ca.as_deref())
                    .await?
            }
            None => {
                crate::api::remote::local(crate::api::connect_channel(&api.socket_path()).await?)
            }
        };
        f(client).await
    });
    match res {
        Err(e) if e.downcast_ref::<tonic::Status>().is_some() => {
            let s = e.downcast_ref::<tonic::Status>().expect("checked above");
            let msg = if s.message().is_empty() {
                s.code().description()
            } else {
                s.message()
            };
            eprintln!("airlock: {msg}");
            Ok(ExitCode::from(1))
        }
        other => other,
    }
}

/// Logs to stderr as `AIRLOCK_LOG` (filter) and `AIRLOCK_LOG_FORMAT` (`text` or `json`) say;
/// text is plain, without timestamps, under journald. Shared with airlock-server: see
/// `airlock_cli_support::logging`.
pub fn init_logging() {
    airlock_cli_support::logging::init();
}
