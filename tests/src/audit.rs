//! The audit stream end to end (host tier, with the server scenarios' server and daemon):
//! airlockd's spool verifies with the host's key, a changed record in an export is caught
//! with its sequence number, and the collector ends up holding every record the host wrote,
//! once each.
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::harness::{ensure, stdout};
use crate::server::{Case, Ctx};

const WAIT: Duration = Duration::from_secs(20);

/// `airlock audit ARGS --state-dir S --identity-dir I`.
fn audit(c: &Ctx, args: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(Command::new(c.bin_dir.join("airlock"))
        .arg("audit")
        .args(args)
        .arg("--state-dir")
        .arg(&c.daemon.state_dir)
        .arg("--identity-dir")
        .arg(&c.identity)
        .output()?)
}

/// What the collector holds of `e2e-host`, as JSON Lines (`airlock audit query --json` as
/// alice).
fn collector_records(c: &Ctx) -> anyhow::Result<String> {
    let token = c.fx.tokens.get("alice").context("alice's token")?;
    let q = Command::new(c.bin_dir.join("airlock"))
        .args([
            "audit", "query", "--json", "--limit", "10000", "--host", "e2e-host",
        ])
        .args(["--server", &c.fx.url, "--token", token, "--ca"])
        .arg(c.fx.sdir.join("ca.pem"))
        .output()?;
    ensure(q.status.success(), || {
        format!("audit query: {}", String::from_utf8_lossy(&q.stderr))
    })?;
    Ok(String::from_utf8_lossy(&q.stdout).into_owned())
}

/// The sequence numbers of the records in an export.
fn seqs(export: &str) -> Vec<u64> {
    export
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["seq"].as_u64())
        .collect()
}

/// The audit scenarios.
pub const CASES: &[(&str, Case)] = &[
    (
        "audit_spool_verifies_and_a_changed_record_is_caught_by_seq",
        |c| {
            let o = audit(c, &["verify"])?;
            ensure(
                o.status.success() && stdout(&o).contains("ok: the chain is whole"),
                || {
                    format!(
                        "verify of the live spool: {} {}",
                        stdout(&o),
                        String::from_utf8_lossy(&o.stderr)
                    )
                },
            )?;
            let o = audit(c, &["export"])?;
            ensure(o.status.success(), || {
                String::from_utf8_lossy(&o.stderr).to_string()
            })?;
            let text = String::from_utf8(o.stdout)?;
            let held: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("\"request.opened\""))
                .collect();
            let victim = *held
                .first()
                .context("no request.opened record in the spool")?;
            let seq = serde_json::from_str::<serde_json::Value>(victim)?["seq"]
                .as_u64()
                .context("seq")?;
            // Someone edits the record of a request after the fact.
            let forged =
                text.replacen(victim, &victim.replacen("\"exec\"", "\"open_write\"", 1), 1);
            ensure(forged != text, || "the forged export is unchanged".into())?;
            let file = c.fx.dir.join("audit-forged.jsonl");
            std::fs::write(&file, forged)?;
            let o = audit(c, &["verify", &file.to_string_lossy()])?;
            let said = stdout(&o);
            ensure(
                o.status.code() == Some(1) && said.contains(&format!("BROKEN at seq {seq}")),
                || format!("verify of a forged export: {said}"),
            )
        },
    ),
    (
        "collector_holds_every_record_the_host_wrote_once",
        collector_holds_every_record,
    ),
    (
        "server_votes_are_host_records_before_their_decision_and_outcome",
        votes_are_recorded,
    ),
];

/// Each vote the server counted is a `vote` record of the host, followed by the request's
/// `decision` and `outcome` under the same correlation id, in the collector's store.
fn votes_are_recorded(c: &Ctx) -> anyhow::Result<()> {
    let rows: Vec<serde_json::Value> = collector_records(c)?
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let of = |kind: &str, corr: &str| {
        rows.iter()
            .filter(|r| r["kind"] == kind && r["corr"] == corr)
            .filter_map(|r| r["seq"].as_u64())
            .collect::<Vec<u64>>()
    };
    let votes: Vec<&serde_json::Value> = rows.iter().filter(|r| r["kind"] == "vote").collect();
    ensure(!votes.is_empty(), || {
        format!("no vote record among {} records", rows.len())
    })?;
    for v in votes {
        let corr = v["corr"]
            .as_str()
            .context("a vote without a correlation id")?;
        let seq = v["seq"].as_u64().context("seq")?;
        ensure(v["body"]["approver"].is_string(), || {
            format!("vote {seq} names no approver: {v}")
        })?;
        let (decision, outcome) = (of("decision", corr), of("outcome", corr));
        ensure(
            decision.len() == 1
                && outcome.len() == 1
                && seq < decision[0]
                && decision[0] < outcome[0],
            || {
                format!(
                    "request {corr}: vote at {seq}, decision at {decision:?}, outcome at {outcome:?}"
                )
            },
        )?;
    }
    Ok(())
}

/// The collector holds every record of the host from seq 1 up to the host's head, each once
/// (waits up to [`WAIT`] for shipping to catch up).
pub fn collector_holds_every_record(c: &Ctx) -> anyhow::Result<()> {
    {
        let deadline = Instant::now() + WAIT;
        loop {
            // What the host has written by now (its spool keeps unacknowledged records;
            // acknowledged ones may be gone from it, so compare the head).
            let o = audit(c, &["export"])?;
            let local = seqs(&String::from_utf8_lossy(&o.stdout));
            let head = local.last().copied().unwrap_or(0);
            let stored = seqs(&collector_records(c)?);
            let mut sorted = stored.clone();
            sorted.dedup();
            ensure(sorted.len() == stored.len(), || {
                "the collector returned a record twice".into()
            })?;
            let whole = !stored.is_empty() && stored.iter().copied().eq(1..=stored.len() as u64);
            if whole && stored.len() as u64 >= head && head > 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "after {WAIT:?} the collector holds {} records (whole from 1: {whole}); the host's head is {head}",
                    stored.len()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
