//! airlockd: the host daemon. Thin wrapper over `airlock_agent::daemon`.
use std::path::PathBuf;
use std::process::ExitCode;

use airlock_agent::daemon::{BackendChoice, DaemonConfig};
use clap::Parser;

/// Gates privileged actions of AI agents at the kernel.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Policy file or directory (repeatable).
    #[arg(
        long = "policy",
        short = 'p',
        env = "AIRLOCK_POLICY",
        default_value = "/etc/airlock/policies",
        value_delimiter = ':'
    )]
    policy: Vec<PathBuf>,
    /// Backend: auto picks BPF LSM when the kernel allows it, else fanotify.
    #[arg(long, value_enum, default_value = "auto", env = "AIRLOCK_BACKEND")]
    backend: BackendChoice,
    /// Runtime state (status file, event log, pending requests, approvals socket).
    #[arg(long, env = "AIRLOCK_STATE_DIR", default_value = "/run/airlock")]
    state_dir: PathBuf,
    /// bpffs directory for pinned programs and maps (they keep gating while airlockd is down).
    #[arg(long, env = "AIRLOCK_PIN_DIR", default_value = "/sys/fs/bpf/airlock")]
    pin_dir: PathBuf,
    /// Approvals socket [default: STATE_DIR/airlock.sock].
    #[arg(long, env = "AIRLOCK_SOCKET")]
    socket: Option<PathBuf>,
    /// Group allowed to use the approvals socket (mode 0660); default (or empty): root only.
    #[arg(long, env = "AIRLOCK_SOCKET_GROUP")]
    socket_group: Option<String>,
    /// airlock-server to take decisions from (https://HOST:PORT); the host must be enrolled
    /// first (`airlock enroll`). Without it, decisions are made on this host's socket only.
    #[arg(long, env = "AIRLOCK_SERVER")]
    server: Option<String>,
    /// A separate audit collector (`airlock-server collector`, https://HOST:PORT) to ship
    /// the audit spool to, instead of over the --server link; the same enrolled identity.
    #[arg(long, env = "AIRLOCK_COLLECTOR")]
    collector: Option<String>,
    /// The host identity made by `airlock enroll`.
    #[arg(
        long,
        env = "AIRLOCK_IDENTITY_DIR",
        default_value = "/var/lib/airlock/identity"
    )]
    identity_dir: PathBuf,
    /// With --server: allow decisions on the local socket as break-glass (recorded as such and
    /// reported to the server). `--break-glass=false` refuses them.
    #[arg(long, env = "AIRLOCK_BREAK_GLASS", default_value_t = true, action = clap::ArgAction::Set)]
    break_glass: bool,
    /// Most bytes the audit spool (<state>/audit) keeps before the collector acknowledges
    /// them. When full, an approve rule's request is denied (its record cannot be written)
    /// and other records are dropped and counted.
    #[arg(long, env = "AIRLOCK_AUDIT_SPOOL_MAX", default_value_t = 256 << 20, value_name = "BYTES")]
    audit_spool_max: u64,
}

fn main() -> ExitCode {
    airlock_agent::cli::init_logging();
    let args = Args::parse();
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
    let socket = args
        .socket
        .unwrap_or_else(|| airlock_agent::paths::socket(&args.state_dir));
    let cfg = DaemonConfig {
        policy_paths: args.policy,
        backend: args.backend,
        state_dir: args.state_dir,
        pin_dir: args.pin_dir,
        socket,
        socket_group: args.socket_group.filter(|g| !g.is_empty()),
        link: args.server.filter(|s| !s.is_empty()).map(|server| {
            airlock_agent::link::client::LinkConfig {
                server,
                identity_dir: args.identity_dir.clone(),
            }
        }),
        collector: args.collector.filter(|s| !s.is_empty()).map(|server| {
            airlock_agent::link::client::LinkConfig {
                server,
                identity_dir: args.identity_dir.clone(),
            }
        }),
        break_glass: args.break_glass,
        audit_spool_max: args.audit_spool_max,
    };
    match rt.block_on(airlock_agent::daemon::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("airlockd: {e}");
            ExitCode::from(2)
        }
    }
}
