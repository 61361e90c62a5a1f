//! Approval-domain types ↔ `airlock.v1` messages.
//!
//! Domain → wire is total. Wire → domain is checked: a zero (UNSPECIFIED) or unknown enum value
//! means the peer speaks a newer `airlock.v1` than this build and is reported as such rather
//! than guessed at (see the compatibility rules in `approvals.proto`). Decide requests are
//! validated here, naming the offending field, for the host's socket and the server alike.
use std::time::Duration;

use airlock_proto::v1 as pb;
use pb::decide_request::{self, Decision as PbDecision};

use crate::{
    Ancestor, Approver, Decision, DecisionRecord, Launcher, OnTimeout, Op, Release, RequestContext,
    RequestState, Vote,
};

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

/// A decide request that cannot be carried out as sent; `field` names the part at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct InvalidField {
    pub field: &'static str,
    pub why: String,
}

impl InvalidField {
    fn new(field: &'static str, why: impl Into<String>) -> InvalidField {
        InvalidField {
            field,
            why: why.into(),
        }
    }
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
        Op::Signal => pb::Op::Signal,
        Op::Ptrace => pb::Op::Ptrace,
        Op::Bpf => pb::Op::Bpf,
        Op::KernelLoad => pb::Op::KernelLoad,
        Op::CgroupMove => pb::Op::CgroupMove,
        Op::Connect => pb::Op::Connect,
        Op::Xattr => pb::Op::Xattr,
        Op::Setuid => pb::Op::Setuid,
        Op::Setgid => pb::Op::Setgid,
        Op::Userns => pb::Op::Userns,
        Op::Mount => pb::Op::Mount,
        Op::Caps => pb::Op::Caps,
        Op::ReadSecret => pb::Op::ReadSecret,
        Op::MapExec => pb::Op::MapExec,
        Op::Setattr => pb::Op::Setattr,
    }
}

/// An operation from the wire; `field` names it in the error.
pub fn op_from_proto(field: &'static str, v: i32) -> Result<Op, ConvertError> {
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
        pb::Op::Signal => Op::Signal,
        pb::Op::Ptrace => Op::Ptrace,
        pb::Op::Bpf => Op::Bpf,
        pb::Op::KernelLoad => Op::KernelLoad,
        pb::Op::CgroupMove => Op::CgroupMove,
        pb::Op::Connect => Op::Connect,
        pb::Op::Xattr => Op::Xattr,
        pb::Op::Setuid => Op::Setuid,
        pb::Op::Setgid => Op::Setgid,
        pb::Op::Userns => Op::Userns,
        pb::Op::Mount => Op::Mount,
        pb::Op::Caps => Op::Caps,
        pb::Op::ReadSecret => Op::ReadSecret,
        pb::Op::MapExec => Op::MapExec,
        pb::Op::Setattr => Op::Setattr,
    })
}

/// The wire enum for a request state.
pub fn state_to_proto(s: RequestState) -> pb::RequestState {
    match s {
        RequestState::Pending => pb::RequestState::Pending,
        RequestState::Approved => pb::RequestState::Approved,
        RequestState::Denied => pb::RequestState::Denied,
        RequestState::TimedOut => pb::RequestState::TimedOut,
        RequestState::Abandoned => pb::RequestState::Abandoned,
    }
}

/// A request state from the wire.
pub fn state_from_proto(v: i32) -> Result<RequestState, ConvertError> {
    Ok(
        match pb::RequestState::try_from(v).map_err(|_| unknown("state", v))? {
            pb::RequestState::Unspecified => return Err(unknown("state", v)),
            pb::RequestState::Pending => RequestState::Pending,
            pb::RequestState::Approved => RequestState::Approved,
            pb::RequestState::Denied => RequestState::Denied,
            pb::RequestState::TimedOut => RequestState::TimedOut,
            pb::RequestState::Abandoned => RequestState::Abandoned,
        },
    )
}

/// The wire enum for `onTimeout`.
pub fn on_timeout_to_proto(t: OnTimeout) -> pb::OnTimeout {
    match t {
        OnTimeout::Deny => pb::OnTimeout::Deny,
        OnTimeout::Allow => pb::OnTimeout::Allow,
    }
}

/// `onTimeout` from the wire.
pub fn on_timeout_from_proto(v: i32) -> Result<OnTimeout, ConvertError> {
    match pb::OnTimeout::try_from(v) {
        Ok(pb::OnTimeout::Deny) => Ok(OnTimeout::Deny),
        Ok(pb::OnTimeout::Allow) => Ok(OnTimeout::Allow),
        _ => Err(unknown("on_timeout", v)),
    }
}

/// The wire enum for a release.
pub fn release_to_proto(r: Release) -> pb::Release {
    match r {
        Release::Allow => pb::Release::Allow,
        Release::Deny => pb::Release::Deny,
    }
}

/// A release from the wire; `field` names it in the error.
pub fn release_from_proto(field: &'static str, v: i32) -> Result<Release, ConvertError> {
    match pb::Release::try_from(v) {
        Ok(pb::Release::Allow) => Ok(Release::Allow),
        Ok(pb::Release::Deny) => Ok(Release::Deny),
        _ => Err(unknown(field, v)),
    }
}

/// Who decided, for the wire.
pub fn approver_to_proto(a: &Approver) -> pb::Approver {
    pb::Approver {
        uid: a.uid,
        pid: a.pid,
        user: a.user.clone(),
        via: a.via.clone(),
        principal: a.principal.clone(),
    }
}

/// Who decided, from the wire.
pub fn approver_from_proto(a: pb::Approver) -> Approver {
    Approver {
        uid: a.uid,
        pid: a.pid,
        user: a.user,
        via: a.via,
        principal: a.principal,
    }
}

/// A vote, for the wire.
pub fn vote_to_proto(v: &Vote) -> pb::Vote {
    pb::Vote {
        principal: v.principal.clone(),
        release: release_to_proto(v.release) as i32,
        for_ms: v.for_ms,
        always: v.always,
        reason: v.reason.clone(),
        via: v.via.clone(),
        at_unix_ms: v.at_unix_ms,
    }
}

/// A vote, from the wire.
pub fn vote_from_proto(v: pb::Vote) -> Result<Vote, ConvertError> {
    Ok(Vote {
        principal: v.principal,
        release: release_from_proto("votes.release", v.release)?,
        for_ms: v.for_ms,
        always: v.always,
        reason: v.reason,
        via: v.via,
        at_unix_ms: v.at_unix_ms,
    })
}

/// A request's context, for the wire.
pub fn context_to_proto(c: &RequestContext) -> pb::RequestContext {
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
            .map(|a| pb::Ancestor {
                pid: a.pid,
                comm: a.comm.clone(),
                exe: a.exe.clone(),
            })
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

/// A request's context, from the wire.
pub fn context_from_proto(c: pb::RequestContext) -> Result<RequestContext, ConvertError> {
    Ok(RequestContext {
        host: c.host,
        agent: c.agent,
        agent_cgroup: c.agent_cgroup,
        cgroup_id: c.cgroup_id,
        unit: c.unit,
        launched_by: c.launched_by.map(|l| Launcher {
            uid: l.uid,
            user: l.user,
            sudo_user: l.sudo_user,
            reason: l.reason,
        }),
        pid: c.pid,
        tgid: c.tgid,
        uid: c.uid,
        euid: c.euid,
        comm: c.comm,
        exe: c.exe,
        ancestry: c
            .ancestry
            .into_iter()
            .map(|a| Ancestor {
                pid: a.pid,
                comm: a.comm,
                exe: a.exe,
            })
            .collect(),
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

/// A decision record, for the wire.
pub fn decision_record_to_proto(d: &DecisionRecord) -> pb::DecisionRecord {
    pb::DecisionRecord {
        release: release_to_proto(d.release) as i32,
        for_ms: d.for_ms,
        always: d.always,
        reason: d.reason.clone(),
        by: d.by.as_ref().map(approver_to_proto),
        at_unix_ms: d.at_unix_ms,
    }
}

/// A decision record, from the wire.
pub fn decision_record_from_proto(d: pb::DecisionRecord) -> Result<DecisionRecord, ConvertError> {
    Ok(DecisionRecord {
        votes: Vec::new(),
        release: release_from_proto("decision.release", d.release)?,
        for_ms: d.for_ms,
        always: d.always,
        reason: d.reason,
        by: d.by.map(approver_from_proto),
        at_unix_ms: d.at_unix_ms,
    })
}

/// A decide request as a client sends it.
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
    pb::DecideRequest {
        id: id.to_string(),
        decision: Some(decision),
    }
}

/// Validates a decide request from the wire. The duration's upper bound ([`crate::MAX_GRANT`])
/// is checked here too, so that every receiver refuses the same requests.
pub fn decide_from_proto(req: pb::DecideRequest) -> Result<(String, Decision), InvalidField> {
    crate::check_id(&req.id).map_err(|e| InvalidField::new("id", e.to_string()))?;
    let decision = match req.decision {
        None => return Err(InvalidField::new("decision", "required: approve or deny")),
        Some(PbDecision::Approve(a)) => match a.for_ms {
            None => Decision::Approve { for_: None },
            Some(0) => {
                return Err(InvalidField::new(
                    "approve.for_ms",
                    "must be more than zero (omit it to approve once)",
                ));
            }
            Some(ms) => {
                let d = Duration::from_millis(ms);
                crate::check_grant(d).map_err(|why| InvalidField::new("approve.for_ms", why))?;
                Decision::Approve { for_: Some(d) }
            }
        },
        Some(PbDecision::Deny(d)) => {
            if d.reason.len() > MAX_REASON_LEN {
                return Err(InvalidField::new(
                    "deny.reason",
                    format!("longer than {MAX_REASON_LEN} bytes"),
                ));
            }
            let reason = Some(d.reason).filter(|r| !r.trim().is_empty());
            Decision::Deny {
                always: d.always,
                reason,
            }
        }
    };
    Ok((req.id, decision))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> RequestContext {
        RequestContext {
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
        }
    }

    #[test]
    fn context_votes_and_decisions_survive_the_wire() {
        let c = context();
        assert_eq!(context_from_proto(context_to_proto(&c)).unwrap(), c);
        let v = Vote {
            principal: "alice".into(),
            release: Release::Allow,
            for_ms: Some(5),
            always: false,
            reason: Some("ok".into()),
            via: "web".into(),
            at_unix_ms: 9,
        };
        assert_eq!(vote_from_proto(vote_to_proto(&v)).unwrap(), v);
        let d = DecisionRecord {
            votes: Vec::new(),
            release: Release::Deny,
            for_ms: None,
            always: true,
            reason: Some("no".into()),
            by: Some(Approver {
                uid: 0,
                pid: 0,
                user: None,
                via: "server".into(),
                principal: Some("bob".into()),
            }),
            at_unix_ms: 3,
        };
        assert_eq!(
            decision_record_from_proto(decision_record_to_proto(&d)).unwrap(),
            d
        );
    }

    #[test]
    fn every_op_maps_to_a_distinct_wire_value_and_back() {
        let ops = [
            Op::Exec,
            Op::OpenWrite,
            Op::Create,
            Op::Unlink,
            Op::Rename,
            Op::Truncate,
            Op::Link,
            Op::Chmod,
            Op::Chown,
            Op::Mkdir,
            Op::Rmdir,
            Op::Symlink,
            Op::Signal,
            Op::Ptrace,
            Op::Bpf,
            Op::KernelLoad,
            Op::CgroupMove,
            Op::Connect,
            Op::Xattr,
            Op::Setuid,
            Op::Setgid,
            Op::Userns,
            Op::Mount,
            Op::Caps,
            Op::ReadSecret,
            Op::MapExec,
            Op::Setattr,
        ];
        for op in ops {
            assert_eq!(op_from_proto("op", op_to_proto(op) as i32).unwrap(), op);
        }
    }

    #[test]
    fn malformed_decide_requests_name_the_field() {
        let ok = decide_to_proto("abc123", &Decision::Approve { for_: None });
        assert!(decide_from_proto(ok.clone()).is_ok());
        for (req, field) in [
            (
                pb::DecideRequest {
                    id: String::new(),
                    ..ok.clone()
                },
                "id",
            ),
            (
                pb::DecideRequest {
                    id: "ABC".into(),
                    ..ok.clone()
                },
                "id",
            ),
            (
                pb::DecideRequest {
                    decision: None,
                    ..ok.clone()
                },
                "decision",
            ),
            (
                decide_to_proto(
                    "abc",
                    &Decision::Approve {
                        for_: Some(Duration::ZERO),
                    },
                ),
                "approve.for_ms",
            ),
            (
                decide_to_proto(
                    "abc",
                    &Decision::Approve {
                        for_: Some(crate::MAX_GRANT * 2),
                    },
                ),
                "approve.for_ms",
            ),
            (
                decide_to_proto(
                    "abc",
                    &Decision::Deny {
                        always: false,
                        reason: Some("x".repeat(MAX_REASON_LEN + 1)),
                    },
                ),
                "deny.reason",
            ),
        ] {
            assert_eq!(decide_from_proto(req).unwrap_err().field, field);
        }
    }
}
