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
    if let Some(c) = s.collector_connected {
        println!(
            "collector  {}",
            if c {
                "linked"
            } else {
                "NOT linked: reconnecting"
            }
        );
    }
    if let Some(a) = &s.audit {
        println!(
            "{}",
            audit_line(a, s.link.is_some() || s.collector_connected.is_some())
        );
    }
    println!("generation policy {} since start", s.policy_generation);
    let age = now_unix().saturating_sub(s.updated_unix);
    if alive && age > 5 {
        println!(
            "STALE: airlockd last updated its status {age} s ago (its event loop may be stuck)"
        );
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

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The spool's line: records written, waiting for the collector, and how full it is.
fn audit_line(a: &crate::daemon::StatusAudit, shipped: bool) -> String {
    let pct = (a.bytes as f64 * 100.0 / a.max_bytes.max(1) as f64).round();
    let mut line = format!(
        "audit      {} records, spool {} KiB of {} KiB ({pct}%)",
        a.head_seq,
        a.bytes / 1024,
        a.max_bytes / 1024
    );
    if shipped {
        line.push_str(&format!(
            ", {} waiting for the collector",
            a.head_seq.saturating_sub(a.acked_seq)
        ));
    }
    if a.failed > 0 {
        line.push_str(&format!("; {} NOT WRITTEN", a.failed));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_line_says_what_waits_for_the_collector_and_what_was_lost() {
        let a = crate::daemon::StatusAudit {
            head_seq: 120,
            acked_seq: 100,
            bytes: 512 * 1024,
            max_bytes: 1024 * 1024,
            failed: 0,
        };
        assert_eq!(
            audit_line(&a, true),
            "audit      120 records, spool 512 KiB of 1024 KiB (50%), 20 waiting for the collector"
        );
        assert_eq!(
            audit_line(&a, false),
            "audit      120 records, spool 512 KiB of 1024 KiB (50%)"
        );
        let full = crate::daemon::StatusAudit { failed: 3, ..a };
        assert!(audit_line(&full, true).ends_with("; 3 NOT WRITTEN"));
    }
}
