//! `airlock deny ID [--reason TEXT] [--always]`: make a held action fail with EPERM.
use std::process::ExitCode;

use anyhow::Context as _;

use super::show::{agent, op_name, target};
use crate::api::convert::{MAX_REASON_LEN, decide_to_proto, request_from_proto};
use crate::hold::{Decision, Request};

/// Arguments of `airlock deny`.
#[derive(clap::Args, Debug)]
pub struct DenyArgs {
    #[command(flatten)]
    pub api: super::ApiArgs,
    /// Request id (as listed by `airlock pending`).
    pub id: String,
    /// Why, recorded with the decision.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Also deny the same operation on the same object to this agent, without asking, for the
    /// rest of its cgroup's life.
    #[arg(long)]
    pub always: bool,
}

/// Denies one request and says what it refused.
pub fn run(args: DenyArgs) -> anyhow::Result<ExitCode> {
    if args
        .reason
        .as_ref()
        .is_some_and(|r| r.len() > MAX_REASON_LEN)
    {
        anyhow::bail!("--reason: longer than {MAX_REASON_LEN} bytes");
    }
    let id = args.id.trim().to_ascii_lowercase();
    let req = decide_to_proto(
        &id,
        &Decision::Deny {
            always: args.always,
            reason: args.reason.clone(),
        },
    );
    super::with_client(&args.api, |mut c| async move {
        let r = c.decide(req).await?.into_inner();
        let r = request_from_proto(r).context("decoding airlockd's answer")?;
        println!("{}", said(&r));
        Ok(ExitCode::SUCCESS)
    })
}

/// `denied 1234abcd (once)`, or `denied 1234abcd (always: agent X may not OP TARGET while its
/// cgroup lives)`, with the reason when one was given.
pub fn said(r: &Request) -> String {
    let d = r.decision.as_ref();
    let mut s = if d.is_some_and(|d| d.always) {
        format!(
            "denied {} (always: agent {} may not {} {} while its cgroup lives)",
            r.id,
            agent(&r.context),
            op_name(r.context.op),
            target(&r.context)
        )
    } else {
        format!("denied {} (once)", r.id)
    };
    if let Some(why) = d.and_then(|d| d.reason.as_deref()) {
        s.push_str(&format!(": {why}"));
    }
    s
}
