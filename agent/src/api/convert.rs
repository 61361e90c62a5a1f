//! `crate::hold` types ↔ `airlock.v1` messages.
//!
//! Server → wire is total. Wire → `hold` is checked: a zero (UNSPECIFIED) or unknown enum value
//! means the peer speaks a newer `airlock.v1` than this build, and is reported as such rather
//! than guessed at (see the compatibility rules in `approvals.proto`). Decide requests are
//! validated here, naming the offending field.
use std::time::Duration;

use airlock_proto::v1 as pb;
use pb::decide_request::{self, Decision as PbDecision};

use super::error::Fault;
use crate::event::Op;
use crate::hold::{
    Ancestor, Approver, Decision, DecisionRecord, HoldKey, HoldKind, Holder, Launcher, OnTimeout, Release, Request,
    RequestContext, RequestState,
};

/// Longest request id accepted (ids are 8 hex digits today; the bound keeps error messages short).
const MAX_ID_LEN: usize = 64;
/// Longest deny reason accepted: it is persisted with the request and shown to people.
pub const MAX_REASON_LEN: usize = 1024;

/// A message from the peer that this build cannot represent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// An enum value this build does not know (or UNSPECIFIED, which is never sent).
    #[error("{field} has value {value}, unknown to this airlock (is the other side newer?)")]
    UnknownEnum { field: &'static str, value: i32 },
    /// A message field that is always set was absent.
    #[error("{field} is missing")]
    Missing { field: &'static str },
}

fn unknown(field: &'static str, value: i32) -> ConvertError {
    ConvertError::UnknownEnum { field, value }
}

/// The wire enum for an operation.
pub fn op_to_proto(op: Op) -> pb::Op {
    match op {
        Op::Exec => pb::Op::Exec,
        Op::OpenWrite => pb::Op::OpenWrite,
        Op::Create => pb::Op::Create,
        Op::Unlink => pb::Op::Unlink,
        Op::Rename => pb::Op::Rename,
        Op::Truncate => pb::Op::Truncate,
        Op::Link => pb::Op::Link,
        Op::Chmod => pb::Op::Chmod,
        Op::Chown => pb::Op::Chown,
        Op::Mkdir => pb::Op::Mkdir,
        Op::Rmdir => pb::Op::Rmdir,
        Op::Symlink => pb::Op::Symlink,
    }
}

fn op_from_proto(field: &'static str, v: i32) -> Result<Op, ConvertError> {
    Ok(match pb::Op::try_from(v).map_err(|_| unknown(field, v))? {
        pb::Op::Unspecified => return Err(unknown(field, v)),
        pb::Op::Exec => Op::Exec,
        pb::Op::OpenWrite => Op::OpenWrite,
        pb::Op::Create => Op::Create,
        pb::Op::Unlink => Op::Unlink,
        pb::Op::Rename => Op::Rename,
        pb::Op::Truncate => Op::Truncate,
        pb::Op::Link => Op::Link,
        pb::Op::Chmod => Op::Chmod,
        pb::Op::Chown => Op::Chown,
        pb::Op::Mkdir => Op::Mkdir,
        pb::Op::Rmdir => Op::Rmdir,
        pb::Op::Symlink => Op::Symlink,
    })
}

fn state_to_proto(s: RequestState) -> pb::RequestState {
    match s {
        RequestState::Pending => pb::RequestState::Pending,
        RequestState::Approved => pb::RequestState::Approved,
        RequestState::Denied => pb::RequestState::Denied,
        RequestState::TimedOut => pb::RequestState::TimedOut,
        RequestState::Abandoned => pb::RequestState::Abandoned,
    }
}

fn state_from_proto(v: i32) -> Result<RequestState, ConvertError> {
    Ok(match pb::RequestState::try_from(v).map_err(|_| unknown("state", v))? {
        pb::RequestState::Unspecified => return Err(unknown("state", v)),
        pb::RequestState::Pending => RequestState::Pending,
        pb::RequestState::Approved => RequestState::Approved,
        pb::RequestState::Denied => RequestState::Denied,
        pb::RequestState::TimedOut => RequestState::TimedOut,
        pb::RequestState::Abandoned => RequestState::Abandoned,
    })
}

fn on_timeout_from_proto(v: i32) -> Result<OnTimeout, ConvertError> {
    match pb::OnTimeout::try_from(v) {
        Ok(pb::OnTimeout::Deny) => Ok(OnTimeout::Deny),
        Ok(pb::OnTimeout::Allow) => Ok(OnTimeout::Allow),
        _ => Err(unknown("on_timeout", v)),
    }
}

fn release_from_proto(v: i32) -> Result<Release, ConvertError> {
    match pb::Release::try_from(v) {
        Ok(pb::Release::Allow) => Ok(Release::Allow),
        Ok(pb::Release::Deny) => Ok(Release::Deny),
        _ => Err(unknown("decision.release", v)),
    }
}

fn holder_to_proto(h: &Holder) -> pb::Holder {
    let (how, parked_token) = match h.how {
        HoldKind::Restart => (pb::HoldKind::Restart, 0),
        HoldKind::Parked { token } => (pb::HoldKind::Parked, token),
        HoldKind::AfterExec => (pb::HoldKind::AfterExec, 0),
    };
    pb::Holder { tid: h.tid, tgid: h.tgid, how: how as i32, parked_token }
}

fn holder_from_proto(h: pb::Holder) -> Result<Holder, ConvertError> {
    let how = match pb::HoldKind::try_from(h.how) {
        Ok(pb::HoldKind::Restart) => HoldKind::Restart,
        Ok(pb::HoldKind::Parked) => HoldKind::Parked { token: h.parked_token },
        Ok(pb::HoldKind::AfterExec) => HoldKind::AfterExec,
        _ => return Err(unknown("holders.how", h.how)),
    };
    Ok(Holder { tid: h.tid, tgid: h.tgid, how })
}

fn approver_to_proto(a: &Approver) -> pb::Approver {
    pb::Approver { uid: a.uid, pid: a.pid, user: a.user.clone(), via: a.via.clone() }
}

fn approver_from_proto(a: pb::Approver) -> Approver {
    Approver { uid: a.uid, pid: a.pid, user: a.user, via: a.via }
}

fn context_to_proto(c: &RequestContext) -> pb::RequestContext {
    pb::RequestContext {
        host: c.host.clone(),
        agent: c.agent.clone(),
        agent_cgroup: c.agent_cgroup.clone(),
        cgroup_id: c.cgroup_id,
        unit: c.unit.clone(),
        launched_by: c.launched_by.as_ref().map(|l| pb::Launcher {
            uid: l.uid,
            user: l.user.clone(),
            sudo_user: l.sudo_user.clone(),
            reason: l.reason.clone(),
        }),
        pid: c.pid,
        tgid: c.tgid,
        uid: c.uid,
        euid: c.euid,
        comm: c.comm.clone(),
        exe: c.exe.clone(),
        ancestry: c
            .ancestry
            .iter()
            .map(|a| pb::Ancestor { pid: a.pid, comm: a.comm.clone(), exe: a.exe.clone() })
            .collect(),
        argv: c.argv.clone(),
        argv_truncated: c.argv_truncated,
        cwd: c.cwd.clone(),
        op: op_to_proto(c.op) as i32,
        target_path: c.target_path.clone(),
        target_dev: c.target_dev,
        target_ino: c.target_ino,
        rule: c.rule.clone(),
        policy: c.policy.clone(),
        reason: c.reason.clone(),
        backend: c.backend.clone(),
    }
}

fn context_from_proto(c: pb::RequestContext) -> Result<RequestContext, ConvertError> {
    Ok(RequestContext {
        host: c.host,
        agent: c.agent,
        agent_cgroup: c.agent_cgroup,
        cgroup_id: c.cgroup_id,
        unit: c.unit,
        launched_by: c
            .launched_by
            .map(|l| Launcher { uid: l.uid, user: l.user, sudo_user: l.sudo_user, reason: l.reason }),
        pid: c.pid,
        tgid: c.tgid,
        uid: c.uid,
        euid: c.euid,
        comm: c.comm,
        exe: c.exe,
        ancestry: c.ancestry.into_iter().map(|a| Ancestor { pid: a.pid, comm: a.comm, exe: a.exe }).collect(),
        argv: c.argv,
        argv_truncated: c.argv_truncated,
        cwd: c.cwd,
        op: op_from_proto("context.op", c.op)?,
        target_path: c.target_path,
        target_dev: c.target_dev,
        target_ino: c.target_ino,
        rule: c.rule,
        policy: c.policy,
        reason: c.reason,
        backend: c.backend,
    })
}

/// A request as sent on the wire.
pub fn request_to_proto(r: &Request) -> pb::HoldRequest {
    pb::HoldRequest {
        id: r.id.clone(),
        state: state_to_proto(r.state) as i32,
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
        on_timeout: match r.on_timeout {
            OnTimeout::Deny => pb::OnTimeout::Deny,
            OnTimeout::Allow => pb::OnTimeout::Allow,
        } as i32,
        context: Some(context_to_proto(&r.context)),
        decision: r.decision.as_ref().map(|d| pb::DecisionRecord {
            release: match d.release {
                Release::Allow => pb::Release::Allow,
                Release::Deny => pb::Release::Deny,
            } as i32,
            for_ms: d.for_ms,
            always: d.always,
            reason: d.reason.clone(),
            by: d.by.as_ref().map(approver_to_proto),
            at_unix_ms: d.at_unix_ms,
        }),
    }
}

/// A request received from the wire.
pub fn request_from_proto(r: pb::HoldRequest) -> Result<Request, ConvertError> {
    let key = r.key.ok_or(ConvertError::Missing { field: "key" })?;
    let context = r.context.ok_or(ConvertError::Missing { field: "context" })?;
    Ok(Request {
        id: r.id,
        state: state_from_proto(r.state)?,
        key: HoldKey {
            tgid: key.tgid,
            op: op_from_proto("key.op", key.op)?,
            dev: key.dev,
            ino: key.ino,
            argv_hash: key.argv_hash,
        },
        holders: r.holders.into_iter().map(holder_from_proto).collect::<Result<_, _>>()?,
        attempts: r.attempts,
        created_unix_ms: r.created_unix_ms,
        deadline_unix_ms: r.deadline_unix_ms,
        on_timeout: on_timeout_from_proto(r.on_timeout)?,
        context: context_from_proto(context)?,
        decision: match r.decision {
            None => None,
            Some(d) => Some(DecisionRecord {
                release: release_from_proto(d.release)?,
                for_ms: d.for_ms,
                always: d.always,
                reason: d.reason,
                by: d.by.map(approver_from_proto),
                at_unix_ms: d.at_unix_ms,
            }),
        },
    })
}

/// Checks a request id from the wire: 1 to 64 characters of `[0-9a-f]`.
pub(crate) fn check_id(id: &str) -> Result<(), Fault> {
    if id.is_empty() {
        return Err(Fault::invalid("id", "must not be empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(Fault::invalid("id", format!("longer than {MAX_ID_LEN} characters")));
    }
    if !id.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) {
        return Err(Fault::invalid("id", format!("{id:?} is not a request id (lowercase hexadecimal, e.g. 1234abcd)")));
    }
    Ok(())
}

/// A decide request as the client sends it.
pub fn decide_to_proto(id: &str, d: &Decision) -> pb::DecideRequest {
    let decision = match d {
        Decision::Approve { for_ } => PbDecision::Approve(decide_request::Approve {
            for_ms: for_.map(|d| d.as_millis().min(u64::MAX as u128) as u64),
        }),
        Decision::Deny { always, reason } => PbDecision::Deny(decide_request::Deny {
            always: *always,
            reason: reason.clone().unwrap_or_default(),
        }),
    };
    pb::DecideRequest { id: id.to_string(), decision: Some(decision) }
}

/// Validates a decide request from the wire. The duration's upper bound is the table's to check
/// (it owns [`crate::hold::MAX_GRANT`] and reports it as a bad duration).
pub(crate) fn decide_from_proto(req: pb::DecideRequest) -> Result<(String, Decision), Fault> {
    check_id(&req.id)?;
    let decision = match req.decision {
        None => return Err(Fault::invalid("decision", "required: approve or deny")),
        Some(PbDecision::Approve(a)) => match a.for_ms {
            None => Decision::Approve { for_: None },
            Some(0) => {
                return Err(Fault::invalid("approve.for_ms", "must be more than zero (omit it to approve once)"));
            }
            Some(ms) => Decision::Approve { for_: Some(Duration::from_millis(ms)) },
        },
        Some(PbDecision::Deny(d)) => {
            if d.reason.len() > MAX_REASON_LEN {
                return Err(Fault::invalid("deny.reason", format!("longer than {MAX_REASON_LEN} bytes")));
            }
            let reason = Some(d.reason).filter(|r| !r.trim().is_empty());
            Decision::Deny { always: d.always, reason }
        }
    };
    Ok((req.id, decision))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::{Code, Status};

    fn full_request() -> Request {
        Request {
            id: "0a1b2c3d".into(),
            state: RequestState::Approved,
            key: HoldKey { tgid: 10, op: Op::OpenWrite, dev: 8 << 20, ino: 42, argv_hash: 7 },
            holders: vec![
                Holder { tid: 10, tgid: 10, how: HoldKind::Restart },
                Holder { tid: 11, tgid: 10, how: HoldKind::Parked { token: 99 } },
                Holder { tid: 12, tgid: 10, how: HoldKind::AfterExec },
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
                ancestry: vec![Ancestor { pid: 10, comm: "sh".into(), exe: None }],
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
                release: Release::Allow,
                for_ms: Some(600_000),
                always: false,
                reason: Some("ok".into()),
                by: Some(Approver { uid: 0, pid: 5, user: None, via: "cli".into() }),
                at_unix_ms: 2_000,
            }),
        }
    }

    #[test]
    fn every_request_field_survives_the_wire() {
        let r = full_request();
        assert_eq!(request_from_proto(request_to_proto(&r)).unwrap(), r);
        let pending = Request { state: RequestState::Pending, decision: None, ..full_request() };
        assert_eq!(request_from_proto(request_to_proto(&pending)).unwrap(), pending);
    }

    #[test]
    fn every_op_maps_to_a_distinct_wire_value_and_back() {
        let ops = [
            Op::Exec, Op::OpenWrite, Op::Create, Op::Unlink, Op::Rename, Op::Truncate,
            Op::Link, Op::Chmod, Op::Chown, Op::Mkdir, Op::Rmdir, Op::Symlink,
        ];
        for op in ops {
            assert_eq!(op_from_proto("op", op_to_proto(op) as i32).unwrap(), op);
        }
    }

    #[test]
    fn unknown_or_unspecified_enums_from_a_newer_peer_are_reported_not_guessed() {
        let mut w = request_to_proto(&full_request());
        w.state = 0;
        assert_eq!(request_from_proto(w.clone()).unwrap_err(), unknown("state", 0));
        w.state = pb::RequestState::Pending as i32;
        w.context.as_mut().unwrap().op = 99;
        assert_eq!(request_from_proto(w).unwrap_err(), unknown("context.op", 99));
    }

    fn invalid(req: pb::DecideRequest) -> Status {
        Status::from(decide_from_proto(req).unwrap_err())
    }

    #[test]
    fn malformed_decide_requests_are_invalid_arguments_naming_the_field() {
        let ok = decide_to_proto("abc123", &Decision::Approve { for_: None });
        assert!(decide_from_proto(ok.clone()).is_ok());
        for (req, field) in [
            (pb::DecideRequest { id: String::new(), ..ok.clone() }, "id:"),
            (pb::DecideRequest { id: "ABC".into(), ..ok.clone() }, "id:"),
            (pb::DecideRequest { id: "12-4".into(), ..ok.clone() }, "id:"),
            (pb::DecideRequest { decision: None, ..ok.clone() }, "decision:"),
            (decide_to_proto("abc", &Decision::Approve { for_: Some(Duration::ZERO) }), "approve.for_ms:"),
            (
                decide_to_proto("abc", &Decision::Deny { always: false, reason: Some("x".repeat(MAX_REASON_LEN + 1)) }),
                "deny.reason:",
            ),
        ] {
            let s = invalid(req);
            assert_eq!(s.code(), Code::InvalidArgument);
            assert!(s.message().starts_with(field), "{field} in {:?}", s.message());
        }
    }

    #[test]
    fn an_empty_deny_reason_means_no_reason() {
        let (_, d) = decide_from_proto(decide_to_proto("ab", &Decision::Deny { always: true, reason: None })).unwrap();
        assert_eq!(d, Decision::Deny { always: true, reason: None });
    }
}
