//! `airlock show ID`: everything a request carries, one fact per line. Also the small
//! renderers (operation names, targets, durations, local times) the other approvals commands
//! share.
use std::fmt::Write as _;
use std::process::ExitCode;

use airlock_proto::v1 as pb;
use anyhow::Context as _;

use crate::api::convert::request_from_proto;
use crate::event::Op;
use crate::hold::approvals::now_unix_ms;
use crate::hold::{HoldKind, OnTimeout, Release, Request, RequestContext, RequestState};

/// Arguments of `airlock show`.
#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    #[command(flatten)]
    pub api: super::ApiArgs,
    /// Request id (as listed by `airlock pending`).
    pub id: String,
    /// Print the request as JSON (the record airlockd stores).
    #[arg(long)]
    pub json: bool,
}

/// Prints one request.
pub fn run(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let id = args.id.trim().to_ascii_lowercase();
    super::with_client(&args.api, |mut c| async move {
        let w = c
            .get_request(pb::GetRequestRequest { id })
            .await?
            .into_inner();
        let votes = votes(&w);
        let r = request_from_proto(w).context("decoding the answer")?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            print!("{}{votes}", render(&r, now_unix_ms()));
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// airlock-server's route and votes (empty for a host's own socket).
fn votes(w: &pb::HoldRequest) -> String {
    let mut o = String::new();
    if let Some(route) = &w.route {
        let approvals = w
            .votes
            .iter()
            .filter(|v| v.release == pb::Release::Allow as i32)
            .count();
        let _ = writeln!(
            o,
            "{:<10}{route} ({approvals} of {} approvals)",
            "route",
            w.threshold.max(1)
        );
    }
    for (i, v) in w.votes.iter().enumerate() {
        let how = if v.release == pb::Release::Allow as i32 {
            "approve"
        } else {
            "deny"
        };
        let why = v
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "{:<10}{} {how} via {} at {}{why}",
            if i == 0 { "votes" } else { "" },
            v.principal,
            v.via,
            local_time(v.at_unix_ms, true)
        );
    }
    o
}

/// The operation as people write it.
pub(crate) fn op_name(op: Op) -> &'static str {
    match op {
        Op::Exec => "exec",
        Op::OpenWrite => "open_write",
        Op::Create => "create",
        Op::Unlink => "unlink",
        Op::Rename => "rename",
        Op::Truncate => "truncate",
        Op::Link => "link",
        Op::Chmod => "chmod",
        Op::Chown => "chown",
        Op::Mkdir => "mkdir",
        Op::Rmdir => "rmdir",
        Op::Symlink => "symlink",
        Op::Signal => "signal",
        Op::Ptrace => "ptrace",
        Op::Bpf => "bpf",
        Op::KernelLoad => "kernel_load",
        Op::CgroupMove => "cgroup_move",
        Op::Connect => "connect",
        Op::Xattr => "xattr",
        Op::Setuid => "setuid",
        Op::Setgid => "setgid",
        Op::Userns => "userns",
        Op::Mount => "mount",
        Op::Caps => "caps",
        Op::ReadSecret => "read_secret",
        Op::MapExec => "map_exec",
        Op::Setattr => "setattr",
    }
}

/// The object acted on: its path, else its device and inode.
pub(crate) fn target(c: &RequestContext) -> String {
    c.target_path
        .clone()
        .unwrap_or_else(|| format!("inode {} on dev {}", c.target_ino, dev(c.target_dev)))
}

/// Kernel `s_dev` as major:minor.
fn dev(d: u32) -> String {
    format!("{}:{}", d >> 20, d & 0xfffff)
}

/// The agent's name, else its cgroup.
pub(crate) fn agent(c: &RequestContext) -> String {
    c.agent
        .clone()
        .unwrap_or_else(|| format!("cgroup {}", c.cgroup_id))
}

/// What ran: the captured arguments, else the command name.
pub(crate) fn command(c: &RequestContext) -> String {
    if c.argv.is_empty() {
        return c.comm.clone();
    }
    let mut s = c
        .argv
        .iter()
        .map(|a| quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    if c.argv_truncated {
        s.push_str(" …");
    }
    s
}

/// Quotes an argument only when it would otherwise read ambiguously.
fn quote(a: &str) -> String {
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        a.to_string()
    } else {
        format!("{a:?}")
    }
}

/// A span as its two largest units: `45s`, `3m12s`, `1h30m`, `2d4h`.
pub(crate) fn span(ms: u64) -> String {
    let s = ms / 1000;
    let parts = [
        (s / 86400, "d"),
        (s / 3600 % 24, "h"),
        (s / 60 % 60, "m"),
        (s % 60, "s"),
    ];
    let first = parts.iter().position(|p| p.0 != 0).unwrap_or(3);
    parts[first..]
        .iter()
        .take(2)
        .filter(|p| p.0 != 0 || first == 3)
        .map(|(n, u)| format!("{n}{u}"))
        .collect()
}

/// Local wall-clock time of a Unix millisecond timestamp: `HH:MM:SS`, or with the date.
pub(crate) fn local_time(unix_ms: u64, with_date: bool) -> String {
    let t = (unix_ms / 1000) as libc::time_t;
    // SAFETY: an all-zero `tm` is a valid value (integers and a null zone pointer), and
    // localtime_r only writes into the struct it is given.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return format!("@{}", unix_ms / 1000);
    }
    let time = format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec);
    if with_date {
        format!(
            "{:04}-{:02}-{:02} {time}",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday
        )
    } else {
        time
    }
}

/// How a closed request was closed, in a few words: `approved by alice (once)`.
pub(crate) fn outcome(r: &Request) -> String {
    let Some(d) = &r.decision else {
        return match r.state {
            RequestState::Abandoned => "abandoned: every waiting thread is gone".to_string(),
            s => s.as_str().to_string(),
        };
    };
    let mut s = r.state.as_str().to_string();
    if let Some(by) = &d.by {
        let who = by.user.clone().unwrap_or_else(|| format!("uid {}", by.uid));
        let _ = write!(s, " by {who}");
    }
    match (d.release, d.for_ms, d.always) {
        (_, _, _) if r.state == RequestState::TimedOut => {}
        (Release::Allow, Some(ms), _) => {
            let _ = write!(s, " (for {})", super::approve::exact(ms));
        }
        (Release::Deny, _, true) => s.push_str(" (always)"),
        _ => s.push_str(" (once)"),
    }
    if let Some(why) = &d.reason {
        let _ = write!(s, ": {why}");
    }
    s
}

/// The multi-line description `airlock show` prints.
pub fn render(r: &Request, now_ms: u64) -> String {
    let c = &r.context;
    let mut o = String::new();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(o, "{k:<10}{v}");
    };
    let state = if r.state == RequestState::Pending {
        let then = match r.on_timeout {
            OnTimeout::Deny => "deny",
            OnTimeout::Allow => "allow",
        };
        format!(
            "pending ({} left, then {then})",
            span(r.deadline_unix_ms.saturating_sub(now_ms))
        )
    } else {
        outcome(r)
    };
    line("request", format!("{}  {state}", r.id));
    line("action", format!("{} {}", op_name(c.op), target(c)));
    if c.op == Op::Exec || !c.argv.is_empty() {
        line("command", command(c));
    }
    let mut agent_line = agent(c);
    if let Some(cg) = &c.agent_cgroup {
        let _ = write!(agent_line, "  (cgroup {cg}, id {})", c.cgroup_id);
    }
    line("agent", agent_line);
    if let Some(u) = &c.unit {
        line("unit", u.clone());
    }
    if let Some(l) = &c.launched_by {
        let mut v = format!(
            "{} (uid {})",
            l.user.clone().unwrap_or_else(|| "?".into()),
            l.uid
        );
        if let Some(s) = &l.sudo_user {
            let _ = write!(v, " via sudo from {s}");
        }
        if let Some(why) = &l.reason {
            let _ = write!(v, ": {why:?}");
        }
        line("launched", v);
    }
    if let Some(why) = &c.reason {
        line("reason", format!("{why:?}"));
    }
    line(
        "rule",
        match (&c.rule, &c.policy) {
            (Some(r), Some(p)) => format!("{r} (policy {p})"),
            (Some(r), None) => r.clone(),
            (None, _) => "-".to_string(),
        },
    );
    line("host", c.host.clone());
    line(
        "process",
        format!(
            "pid {} tid {} comm {} uid {} euid {}",
            c.tgid, c.pid, c.comm, c.uid, c.euid
        ),
    );
    if let Some(e) = &c.exe {
        line("exe", e.clone());
    }
    if let Some(d) = &c.cwd {
        line("cwd", d.clone());
    }
    for (i, a) in c.ancestry.iter().enumerate() {
        let exe = a
            .exe
            .as_deref()
            .map(|e| format!(" {e}"))
            .unwrap_or_default();
        line(
            if i == 0 { "ancestry" } else { "" },
            format!("{} {}{exe}", a.pid, a.comm),
        );
    }
    line(
        "object",
        format!("dev {} inode {}", dev(c.target_dev), c.target_ino),
    );
    line("backend", c.backend.clone());
    let holders = r
        .holders
        .iter()
        .map(|h| match h.how {
            HoldKind::Restart => format!("tid {} (stopped, restarting)", h.tid),
            HoldKind::Parked { token } => format!("tid {} (parked event {token})", h.tid),
            HoldKind::AfterExec => format!("tid {} (stopped after exec)", h.tid),
        })
        .collect::<Vec<_>>()
        .join(", ");
    if holders.is_empty() {
        // airlock-server: which threads wait stays on the host.
        line("attempts", r.attempts.to_string());
    } else {
        line("holders", format!("{holders}; {} attempt(s)", r.attempts));
    }
    line(
        "created",
        format!(
            "{} ({} ago)",
            local_time(r.created_unix_ms, true),
            span(now_ms.saturating_sub(r.created_unix_ms))
        ),
    );
    line("deadline", local_time(r.deadline_unix_ms, true));
    if let Some(d) = &r.decision {
        let mut v = format!("at {}", local_time(d.at_unix_ms, true));
        match &d.by {
            Some(by) if by.principal.is_some() => {
                let _ = write!(
                    v,
                    " by {} (via {})",
                    by.principal.as_deref().unwrap_or("?"),
                    by.via
                );
            }
            Some(by) => {
                let _ = write!(
                    v,
                    " by {} (uid {}, pid {}, via {})",
                    by.user.as_deref().unwrap_or("?"),
                    by.uid,
                    by.pid,
                    by.via
                );
            }
            None => {}
        }
        line("decided", v);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_show_their_two_largest_units() {
        assert_eq!(span(0), "0s");
        assert_eq!(span(45_000), "45s");
        assert_eq!(span(192_000), "3m12s");
        assert_eq!(span(600_000), "10m");
        assert_eq!(span(5_400_000), "1h30m");
        assert_eq!(span(187_200_000 + 59_000), "2d4h");
    }

    #[test]
    fn arguments_are_quoted_only_when_ambiguous() {
        assert_eq!(quote("install"), "install");
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote(""), "\"\"");
    }
}
