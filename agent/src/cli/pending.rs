//! `airlock pending`: the requests waiting for a decision, one row each.
use std::fmt::Write as _;
use std::process::ExitCode;

use airlock_proto::v1 as pb;
use anyhow::Context as _;

use super::show::{agent, command, op_name, span, target};
use crate::api::convert::request_from_proto;
use crate::hold::Request;
use crate::hold::approvals::now_unix_ms;

/// Longest target and command shown in the table (`airlock show` has them in full).
const MAX_TARGET: usize = 48;
const MAX_COMMAND: usize = 40;

/// Arguments of `airlock pending`.
#[derive(clap::Args, Debug)]
pub struct PendingArgs {
    #[command(flatten)]
    pub api: super::ApiArgs,
    /// Print the requests as a JSON array (the records airlockd stores).
    #[arg(long)]
    pub json: bool,
    /// Only requests from this host (with --server).
    #[arg(long)]
    pub host: Option<String>,
    /// Only requests of this agent.
    #[arg(long)]
    pub agent: Option<String>,
}

/// Lists pending requests, oldest first.
pub fn run(args: PendingArgs) -> anyhow::Result<ExitCode> {
    let with_host = args.api.server.is_some();
    super::with_client(&args.api, |mut c| async move {
        let filter = pb::ListPendingRequest {
            host: args.host.clone(),
            agent: args.agent.clone(),
        };
        let resp = c.list_pending(filter).await?.into_inner();
        let reqs = resp
            .requests
            .into_iter()
            .map(request_from_proto)
            .collect::<Result<Vec<_>, _>>()
            .context("decoding airlockd's answer")?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&reqs)?);
        } else if reqs.is_empty() {
            println!("no requests pending");
        } else {
            print!("{}", table(&reqs, now_unix_ms(), with_host));
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Cuts `s` to `max` characters, keeping its start (`keep_end`: its end, for paths).
fn cut(s: &str, max: usize, keep_end: bool) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    if keep_end {
        format!("…{}", s.chars().skip(n - max + 1).collect::<String>())
    } else {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    }
}

/// The table `airlock pending` prints: a header and one aligned row per request.
/// With `with_host` (airlock-server answers for a fleet) the second column is the host.
pub fn table(reqs: &[Request], now_ms: u64, with_host: bool) -> String {
    let mut rows = vec![
        [
            "ID", "HOST", "AGE", "AGENT", "OP", "TARGET", "COMMAND", "RULE", "LEFT",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in reqs {
        let c = &r.context;
        rows.push(vec![
            r.id.clone(),
            c.host.clone(),
            span(now_ms.saturating_sub(r.created_unix_ms)),
            agent(c),
            op_name(c.op).to_string(),
            cut(&target(c), MAX_TARGET, true),
            cut(&command(c), MAX_COMMAND, false),
            c.rule.clone().unwrap_or_else(|| "-".into()),
            if now_ms >= r.deadline_unix_ms {
                "due".into()
            } else {
                span(r.deadline_unix_ms - now_ms)
            },
        ]);
    }
    if !with_host {
        for row in &mut rows {
            row.remove(1);
        }
    }
    let mut widths = [0usize; 9];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_keep_their_end_and_long_commands_their_start() {
        assert_eq!(cut("/a/b/c", 10, true), "/a/b/c");
        assert_eq!(cut("/very/long/path/to/bin/apt", 8, true), "…bin/apt");
        assert_eq!(cut("apt install something", 8, false), "apt ins…");
    }
}
