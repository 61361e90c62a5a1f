//! `airlock status`: what airlockd runs, read from its status file.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::daemon::Status;

/// Arguments of `airlock status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// airlockd's state directory.
    #[arg(long, env = "AIRLOCK_STATE_DIR", default_value = "/run/airlock")]
    pub state_dir: PathBuf,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
}

/// Prints the daemon's status; exits 1 when no daemon is running.
pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let path = crate::paths::status_file(&args.state_dir);
    let body = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("airlock: airlockd is not running (no {})", path.display());
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let s: Status =
        serde_json::from_slice(&body).with_context(|| format!("parsing {}", path.display()))?;
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(s.pid as i32), None).is_ok();
    if args.json {
        println!("{}", String::from_utf8_lossy(&body));
        return Ok(if alive {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    println!(
        "airlockd   pid {} ({})",
        s.pid,
        if alive {
            "running"
        } else {
            "NOT running: stale status"
        }
    );
    println!("backend    {}", s.backend);
    println!("why        {}", s.backend_reason);
    println!("exec ctx   {}", s.exec_context);
    println!(
        "policies   {} ({})",
        s.policies.join(", "),
        s.policy_paths.join(", ")
    );
    println!(
        "rules      {} ({} gated binaries, {} protected paths)",
        s.rules, s.gated_binaries, s.protected_paths
    );
    println!("events     {} recorded, {} lost", s.events, s.lost);
    println!("requests   {} pending", s.pending_requests);
    match &s.link {
        Some(l) => println!(
            "server     {} ({}; local decisions: {})",
            l.server,
            if l.connected {
                "linked"
            } else {
                "NOT linked: reconnecting"
            },
            l.local_decisions
        ),
        None => println!("server     none (decisions on this host's socket)"),
    }
    if s.records_failed > 0 {
        println!(
            "RECORDS FAILED: {} records could not be written",
            s.records_failed
        );
    }
    if s.agents.is_empty() {
        println!("agents     none running");
    }
    for a in &s.agents {
        println!(
            "agent      {:<16} {} (cgroup id {})",
            a.agent, a.cgroup, a.id
        );
    }
    for n in &s.notes {
        println!("note       {n}");
    }
    if let Some(e) = &s.last_reload_error {
        println!("RELOAD FAILED (previous policy in force): {e}");
    }
    Ok(if alive {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
