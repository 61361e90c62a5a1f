//! `airlock approve ID [--for DURATION]`: let a held action happen, once or for a while.
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use super::show::{agent, local_time, op_name, target};
use crate::api::convert::{decide_to_proto, request_from_proto};
use crate::hold::{Decision, MAX_GRANT, Request};

/// Arguments of `airlock approve`.
#[derive(clap::Args, Debug)]
pub struct ApproveArgs {
    #[command(flatten)]
    pub api: super::ApiArgs,
    /// Request id (as listed by `airlock pending`).
    pub id: String,
    /// Also let this agent do the same operation on the same object, without asking, for this
    /// long: 30s, 10m, 2h, 1d, or combinations such as 1h30m (at most 30d).
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub for_: Option<Duration>,
}

/// Approves one request and says what it allowed.
pub fn run(args: ApproveArgs) -> anyhow::Result<ExitCode> {
    let id = args.id.trim().to_ascii_lowercase();
    let req = decide_to_proto(&id, &Decision::Approve { for_: args.for_ });
    super::with_client(&args.api, |mut c| async move {
        let r = c.decide(req).await?.into_inner();
        // airlock-server on an N-of-M route: the vote counted, the decision waits for others.
        if r.decision.is_none() && r.threshold > 0 {
            let approvals = r
                .votes
                .iter()
                .filter(|v| v.release == airlock_proto::v1::Release::Allow as i32)
                .count();
            println!(
                "approval recorded for {} ({approvals} of {} needed); waiting for other approvers",
                r.id, r.threshold
            );
            return Ok(ExitCode::SUCCESS);
        }
        let r = request_from_proto(r).context("decoding the answer")?;
        println!("{}", said(&r));
        Ok(ExitCode::SUCCESS)
    })
}

/// `approved 1234abcd (once)`, or `approved 1234abcd (for 10m: agent X may OP TARGET until
/// HH:MM:SS)`.
pub fn said(r: &Request) -> String {
    match r
        .decision
        .as_ref()
        .and_then(|d| d.for_ms.map(|ms| (ms, d.at_unix_ms)))
    {
        None => format!("approved {} (once)", r.id),
        Some((ms, at)) => format!(
            "approved {} (for {}: agent {} may {} {} until {})",
            r.id,
            exact(ms),
            agent(&r.context),
            op_name(r.context.op),
            target(&r.context),
            local_time(at.saturating_add(ms), false)
        ),
    }
}

/// Units accepted in a duration, largest first.
const UNITS: [(&str, u64); 4] = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];

const DURATION_HELP: &str = "use a number and a unit (s, m, h, d), e.g. 30s, 10m, 2h, 1d or 1h30m";

/// Parses `30s`, `10m`, `2h`, `1d`, `1h30m`: numbers each followed by a unit, largest unit
/// first, each unit at most once. Refuses zero and anything over 30 days, as airlockd would,
/// so a typo is reported before the daemon is contacted.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Err(format!("empty duration; {DURATION_HELP}"));
    }
    let mut rest = s;
    let mut total: u64 = 0;
    let mut prev_rank: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("expected a number at {rest:?}; {DURATION_HELP}"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{:?} is too large", &rest[..digits]))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        if unit.is_empty() {
            return Err(format!("{n} has no unit; {DURATION_HELP}"));
        }
        let Some(rank) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(format!("unknown unit {unit:?}; {DURATION_HELP}"));
        };
        if prev_rank.is_some_and(|p| rank <= p) {
            return Err(format!(
                "units go from largest to smallest, each once (e.g. 1h30m), not {s:?}"
            ));
        }
        prev_rank = Some(rank);
        total = n
            .checked_mul(UNITS[rank].1)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{s:?} is too long"))?;
        rest = &rest[unit_len..];
    }
    let d = Duration::from_secs(total);
    if d.is_zero() {
        return Err("must be longer than zero (omit --for to approve once)".to_string());
    }
    if d > MAX_GRANT {
        return Err("must not exceed 30 days (30d)".to_string());
    }
    Ok(d)
}

/// A duration in milliseconds written back the way [`parse_duration`] reads it (`1h30m`),
/// with a millisecond remainder when there is one.
pub fn exact(ms: u64) -> String {
    let mut secs = ms / 1000;
    let mut out = String::new();
    for (u, n) in UNITS {
        if secs >= n {
            out.push_str(&format!("{}{u}", secs / n));
            secs %= n;
        }
    }
    if !ms.is_multiple_of(1000) {
        out.push_str(&format!("{}ms", ms % 1000));
    }
    if out.is_empty() {
        "0s".to_string()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit_and_combination_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(
            parse_duration("1d2h3m4s"),
            Ok(Duration::from_secs(86_400 + 7200 + 180 + 4))
        );
        assert_eq!(
            parse_duration("90m"),
            Ok(Duration::from_secs(5400)),
            "a unit need not be normalized"
        );
    }

    #[test]
    fn malformed_durations_say_what_is_wrong() {
        for (input, says) in [
            ("", "empty"),
            ("ten minutes", "expected a number"),
            ("10", "has no unit"),
            ("10x", "unknown unit \"x\""),
            ("10 m", "unknown unit \" m\""),
            ("30m1h", "largest to smallest"),
            ("1m1m", "largest to smallest"),
            ("h", "expected a number"),
            ("99999999999999999999s", "too large"),
            ("9999999999999999d", "too long"),
        ] {
            let e = parse_duration(input).unwrap_err();
            assert!(e.contains(says), "{input:?}: {e}");
        }
    }

    #[test]
    fn zero_and_more_than_thirty_days_are_refused_before_contacting_the_daemon() {
        assert!(
            parse_duration("0s")
                .unwrap_err()
                .contains("longer than zero")
        );
        assert!(
            parse_duration("0h0m")
                .unwrap_err()
                .contains("longer than zero")
        );
        assert!(parse_duration("31d").unwrap_err().contains("30 days"));
        assert_eq!(parse_duration("30d"), Ok(MAX_GRANT));
    }

    #[test]
    fn exact_durations_read_back_the_way_they_are_written() {
        for s in ["30s", "10m", "2h", "1d", "1h30m", "1d2h3m4s"] {
            assert_eq!(exact(parse_duration(s).unwrap().as_millis() as u64), s);
        }
        assert_eq!(exact(1500), "1s500ms");
        assert_eq!(exact(0), "0s");
    }

    #[test]
    fn the_for_flag_rejects_bad_input_naming_the_argument() {
        use clap::Parser as _;
        let e = crate::cli::Cli::try_parse_from([
            "airlock",
            "approve",
            "0000dead",
            "--for",
            "ten minutes",
        ])
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("--for") && msg.contains("ten minutes"),
            "{msg}"
        );
    }
}
