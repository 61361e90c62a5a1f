//! The host's hold table entries ↔ `airlock.v1` messages. The approval domain's own
//! conversions (context, decisions, votes, enums) live in `airlock_approval::convert`.
//!
//! Server → wire is total. Wire → `hold` is checked: a zero (UNSPECIFIED) or unknown enum value
//! means the peer speaks a newer `airlock.v1` than this build, and is reported as such rather
//! than guessed at (see the compatibility rules in `approvals.proto`). Decide requests are
//! validated here, naming the offending field.
use airlock_approval::convert as ac;
pub use airlock_approval::convert::{ConvertError, MAX_REASON_LEN, decide_to_proto, op_to_proto};
use airlock_proto::v1 as pb;

use super::error::Fault;
use crate::hold::{Decision, HoldKey, HoldKind, Holder, Request};

fn unknown(field: &'static str, value: i32) -> ConvertError {
    ConvertError::UnknownEnum { field, value }
}

fn holder_to_proto(h: &Holder) -> pb::Holder {
    let (how, parked_token) = match h.how {
        HoldKind::Restart => (pb::HoldKind::Restart, 0),
        HoldKind::Parked { token } => (pb::HoldKind::Parked, token),
        HoldKind::AfterExec => (pb::HoldKind::AfterExec, 0),
    };
    pb::Holder {
        tid: h.tid,
        tgid: h.tgid,
        how: how as i32,
        parked_token,
    }
}

fn holder_from_proto(h: pb::Holder) -> Result<Holder, ConvertError> {
    let how = match pb::HoldKind::try_from(h.how) {
        Ok(pb::HoldKind::Restart) => HoldKind::Restart,
        Ok(pb::HoldKind::Parked) => HoldKind::Parked {
            token: h.parked_token,
        },
        Ok(pb::HoldKind::AfterExec) => HoldKind::AfterExec,
        _ => return Err(unknown("holders.how", h.how)),
    };
    Ok(Holder {
        tid: h.tid,
        tgid: h.tgid,
        how,
    })
}

/// A request as sent on the host's own socket: everything, holders included.
pub fn request_to_proto(r: &Request) -> pb::HoldRequest {
    pb::HoldRequest {
        id: r.id.clone(),
        state: ac::state_to_proto(r.state) as i32,
        key: Some(pb::HoldKey {
            tgid: r.key.tgid,
            op: op_to_proto(r.key.op) as i32,
            dev: r.key.dev,
            ino: r.key.ino,
            argv_hash: r.key.argv_hash,
        }),
        holders: r.holders.iter().map(holder_to_proto).collect(),
        attempts: r.attempts,
        created_unix_ms: r.created_unix_ms,
        deadline_unix_ms: r.deadline_unix_ms,
        on_timeout: ac::on_timeout_to_proto(r.on_timeout) as i32,
        context: Some(ac::context_to_proto(&r.context)),
        decision: r.decision.as_ref().map(ac::decision_record_to_proto),
        votes: Vec::new(),
        route: None,
        threshold: 0,
    }
}

/// A request as sent to airlock-server over the host link: the backend internals (which
/// threads wait, fanotify tokens, the argv hash) stay on the host.
pub fn request_to_link(r: &Request) -> pb::HoldRequest {
    let mut w = request_to_proto(r);
    w.holders.clear();
    if let Some(k) = w.key.as_mut() {
        k.argv_hash = 0;
    }
    w
}

/// A request received from the wire. A request from airlock-server carries no holders.
pub fn request_from_proto(r: pb::HoldRequest) -> Result<Request, ConvertError> {
    let key = r.key.ok_or(ConvertError::Missing { field: "key" })?;
    let context = r
        .context
        .ok_or(ConvertError::Missing { field: "context" })?;
    Ok(Request {
        id: r.id,
        state: ac::state_from_proto(r.state)?,
        key: HoldKey {
            tgid: key.tgid,
            op: ac::op_from_proto("key.op", key.op)?,
            dev: key.dev,
            ino: key.ino,
            argv_hash: key.argv_hash,
        },
        holders: r
            .holders
            .into_iter()
            .map(holder_from_proto)
            .collect::<Result<_, _>>()?,
        attempts: r.attempts,
        created_unix_ms: r.created_unix_ms,
        deadline_unix_ms: r.deadline_unix_ms,
        on_timeout: ac::on_timeout_from_proto(r.on_timeout)?,
        context: ac::context_from_proto(context)?,
        decision: r.decision.map(ac::decision_record_from_proto).transpose()?,
    })
}

/// Checks a request id from the wire (see [`airlock_approval::check_id`]).
pub(crate) fn check_id(id: &str) -> Result<(), Fault> {
    airlock_approval::check_id(id).map_err(|e| Fault::invalid("id", e.to_string()))
}

/// Validates a decide request from the wire.
pub(crate) fn decide_from_proto(req: pb::DecideRequest) -> Result<(String, Decision), Fault> {
    ac::decide_from_proto(req).map_err(|e| Fault::invalid(e.field, e.why))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Op;
    use crate::hold::{
        Ancestor, Approver, DecisionRecord, Launcher, OnTimeout, Release, RequestContext,
        RequestState,
    };
    use std::time::Duration;
    use tonic::{Code, Status};

    fn full_request() -> Request {
        Request {
            id: "0a1b2c3d".into(),
            state: RequestState::Approved,
            key: HoldKey {
                tgid: 10,
                op: Op::OpenWrite,
                dev: 8 << 20,
                ino: 42,
                argv_hash: 7,
            },
            holders: vec![
                Holder {
                    tid: 10,
                    tgid: 10,
                    how: HoldKind::Restart,
                },
                Holder {
                    tid: 11,
                    tgid: 10,
                    how: HoldKind::Parked { token: 99 },
                },
                Holder {
                    tid: 12,
                    tgid: 10,
                    how: HoldKind::AfterExec,
                },
            ],
            attempts: 3,
            created_unix_ms: 1_000,
            deadline_unix_ms: 301_000,
            on_timeout: OnTimeout::Allow,
            context: RequestContext {
                host: "h".into(),
                agent: Some("claude".into()),
                agent_cgroup: Some("/agents/claude".into()),
                cgroup_id: 77,
                unit: Some("run-1.scope".into()),
                launched_by: Some(Launcher {
                    uid: 1000,
                    user: Some("alice".into()),
                    sudo_user: Some("bob".into()),
                    reason: Some("refactor".into()),
                }),
                pid: 11,
                tgid: 10,
                uid: 1000,
                euid: 0,
                comm: "sh".into(),
                exe: Some("/bin/sh".into()),
                ancestry: vec![Ancestor {
                    pid: 10,
                    comm: "sh".into(),
                    exe: None,
                }],
                argv: vec!["sh".into(), "-c".into()],
                argv_truncated: true,
                cwd: Some("/src".into()),
                op: Op::OpenWrite,
                target_path: Some("/etc/passwd".into()),
                target_dev: 8 << 20,
                target_ino: 42,
                rule: Some("etc".into()),
                policy: Some("base".into()),
                reason: Some("needs it".into()),
                backend: "fanotify".into(),
            },
            decision: Some(DecisionRecord {
                votes: Vec::new(),
                release: Release::Allow,
                for_ms: Some(600_000),
                always: false,
                reason: Some("ok".into()),
                by: Some(Approver {
                    uid: 0,
                    pid: 5,
                    user: None,
                    via: "cli".into(),
                    principal: None,
                }),
                at_unix_ms: 2_000,
            }),
        }
    }

    #[test]
    fn every_request_field_survives_the_wire() {
        let r = full_request();
        assert_eq!(request_from_proto(request_to_proto(&r)).unwrap(), r);
        let pending = Request {
            state: RequestState::Pending,
            decision: None,
            ..full_request()
        };
        assert_eq!(
            request_from_proto(request_to_proto(&pending)).unwrap(),
            pending
        );
    }

    #[test]
    fn unknown_or_unspecified_enums_from_a_newer_peer_are_reported_not_guessed() {
        let mut w = request_to_proto(&full_request());
        w.state = 0;
        assert_eq!(
            request_from_proto(w.clone()).unwrap_err(),
            unknown("state", 0)
        );
        w.state = pb::RequestState::Pending as i32;
        w.context.as_mut().unwrap().op = 99;
        assert_eq!(
            request_from_proto(w).unwrap_err(),
            unknown("context.op", 99)
        );
    }

    fn invalid(req: pb::DecideRequest) -> Status {
        Status::from(decide_from_proto(req).unwrap_err())
    }

    #[test]
    fn malformed_decide_requests_are_invalid_arguments_naming_the_field() {
        let ok = decide_to_proto("abc123", &Decision::Approve { for_: None });
        assert!(decide_from_proto(ok.clone()).is_ok());
        for (req, field) in [
            (
                pb::DecideRequest {
                    id: String::new(),
                    ..ok.clone()
                },
                "id:",
            ),
            (
                pb::DecideRequest {
                    id: "ABC".into(),
                    ..ok.clone()
                },
                "id:",
            ),
            (
                pb::DecideRequest {
                    id: "12-4".into(),
                    ..ok.clone()
                },
                "id:",
            ),
            (
                pb::DecideRequest {
                    decision: None,
                    ..ok.clone()
                },
                "decision:",
            ),
            (
                decide_to_proto(
                    "abc",
                    &Decision::Approve {
                        for_: Some(Duration::ZERO),
                    },
                ),
                "approve.for_ms:",
            ),
            (
                decide_to_proto(
                    "abc",
                    &Decision::Deny {
                        always: false,
                        reason: Some("x".repeat(MAX_REASON_LEN + 1)),
                    },
                ),
                "deny.reason:",
            ),
        ] {
            let s = invalid(req);
            assert_eq!(s.code(), Code::InvalidArgument);
            assert!(
                s.message().starts_with(field),
                "{field} in {:?}",
                s.message()
            );
        }
    }

    #[test]
    fn an_empty_deny_reason_means_no_reason() {
        let (_, d) = decide_from_proto(decide_to_proto(
            "ab",
            &Decision::Deny {
                always: true,
                reason: None,
            },
        ))
        .unwrap();
        assert_eq!(
            d,
            Decision::Deny {
                always: true,
                reason: None
            }
        );
    }
}
