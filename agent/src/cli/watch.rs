//! `airlock watch`: one line per request as it opens and as it closes, until interrupted.
use std::io::Write as _;
use std::process::ExitCode;

use airlock_proto::v1 as pb;
use anyhow::Context as _;

use super::show::{agent, command, local_time, op_name, outcome, span, target};
use crate::api::convert::request_from_proto;
use crate::hold::Request;
use crate::hold::approvals::now_unix_ms;

/// Arguments of `airlock watch`.
#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub api: super::ApiArgs,
    /// Print one JSON object per event: `{"event":"opened"|"closed","request":{...}}`.
    #[arg(long)]
    pub json: bool,
    /// Only requests from this host (with --server).
    #[arg(long)]
    pub host: Option<String>,
    /// Only requests of this agent.
    #[arg(long)]
    pub agent: Option<String>,
}

/// Prints events until airlockd ends the stream (exit 1 with its reason) or the user stops it.
pub fn run(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let remote = args.api.server.is_some();
    super::with_client(&args.api, |mut c| async move {
        let filter = pb::WatchRequest {
            host: args.host.clone(),
            agent: args.agent.clone(),
        };
        let mut stream = c.watch(filter).await?.into_inner();
        let mut out = std::io::stdout();
        while let Some(ev) = stream.message().await? {
            let kind = pb::watch_event::Kind::try_from(ev.kind)
                .unwrap_or(pb::watch_event::Kind::Unspecified);
            let Some(r) = ev.request else { continue };
            let r = request_from_proto(r).context("decoding airlockd's event")?;
            let text = match (kind, args.json) {
                // An event kind from a newer airlockd: skip it rather than misreport it.
                (pb::watch_event::Kind::Unspecified, _) => continue,
                (k, true) => {
                    let name = if k == pb::watch_event::Kind::Opened {
                        "opened"
                    } else {
                        "closed"
                    };
                    serde_json::json!({ "event": name, "request": r }).to_string()
                }
                (pb::watch_event::Kind::Opened, false) => {
                    with_host(remote, &r, opened(&r, now_unix_ms()))
                }
                (pb::watch_event::Kind::Closed, false) => with_host(remote, &r, closed(&r)),
            };
            // Flushed per line: watch is read live, often through a pipe.
            writeln!(out, "{text}")
                .and_then(|()| out.flush())
                .context("writing to stdout")?;
        }
        eprintln!("airlock: airlockd ended the watch");
        Ok(ExitCode::from(1))
    })
}

/// Adds `host=NAME` after the request id when watching a fleet.
fn with_host(remote: bool, r: &Request, line: String) -> String {
    if !remote {
        return line;
    }
    line.replacen(&r.id, &format!("{} host={}", r.id, r.context.host), 1)
}

/// `12:00:01 opened   1234abcd agent=X exec /usr/bin/apt: apt install foo (rule r, 5m left)`.
pub fn opened(r: &Request, now_ms: u64) -> String {
    let c = &r.context;
    format!(
        "{} opened   {} agent={} {} {}: {} (rule {}, {} left)",
        local_time(r.created_unix_ms, false),
        r.id,
        agent(c),
        op_name(c.op),
        target(c),
        command(c),
        c.rule.as_deref().unwrap_or("-"),
        span(r.deadline_unix_ms.saturating_sub(now_ms))
    )
}

/// `12:00:09 closed   1234abcd agent=X exec /usr/bin/apt: approved by alice (once)`.
pub fn closed(r: &Request) -> String {
    let c = &r.context;
    let at = r
        .decision
        .as_ref()
        .map_or_else(now_unix_ms, |d| d.at_unix_ms);
    format!(
        "{} closed   {} agent={} {} {}: {}",
        local_time(at, false),
        r.id,
        agent(c),
        op_name(c.op),
        target(c),
        outcome(r)
    )
}
