//! Requests as hosts send them ↔ requests as the server stores and shows them.
//!
//! A host's `Opened` is checked here before anything is stored: its id, state, context and
//! sizes. The host name in the context is replaced by the one in the host's certificate: a
//! host never names itself.
use airlock_approval::convert as ac;
use airlock_approval::{OnTimeout, RequestContext, RequestState};
use airlock_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::error::Fault;
use crate::store::StoredRequest;

/// Most arguments kept per request.
const MAX_ARGV: usize = 256;
/// Most ancestors kept per request.
const MAX_ANCESTRY: usize = 64;
/// Longest string field accepted in a context (paths, arguments, reasons).
const MAX_FIELD: usize = 4096;
/// Longest a request may wait (hosts' rules say less; this bounds what a broken host can ask).
const MAX_WAIT_MS: u64 = 7 * 24 * 3600 * 1000;

/// What the server keeps of a request besides the indexed columns (JSON in `body`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Body {
    /// The held action's operation and object (from the host's key; no thread ids, no hash).
    pub tgid: u32,
    pub attempts: u32,
    pub on_timeout: OnTimeout,
    pub context: RequestContext,
}

fn check_len(field: &'static str, s: &str) -> Result<(), Fault> {
    if s.len() > MAX_FIELD {
        return Err(Fault::invalid(
            field,
            format!("longer than {MAX_FIELD} bytes"),
        ));
    }
    Ok(())
}

/// A request as stored, with its [`Body`] parsed: what the broker keeps of a request opened
/// through its replica, and what watchers are sent when it opens, so neither parses the JSON
/// again.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    pub request: StoredRequest,
    /// `request.body`, parsed.
    pub body: Body,
}

impl Parsed {
    /// Parses the body of a stored request.
    pub fn new(request: StoredRequest) -> Result<Parsed, Fault> {
        let body = body(&request)?;
        Ok(Parsed { request, body })
    }
}

/// Checks a request a host opened and makes the row to store (with its body parsed). `host`
/// is the name from the host's certificate.
pub fn stored_from_opened(host: &str, r: pb::HoldRequest, now: u64) -> Result<Parsed, Fault> {
    airlock_approval::check_id(&r.id).map_err(|e| Fault::invalid("request.id", e.to_string()))?;
    let state = ac::state_from_proto(r.state)
        .map_err(|e| Fault::invalid("request.state", e.to_string()))?;
    if state != RequestState::Pending {
        return Err(Fault::invalid(
            "request.state",
            "an opened request must be pending",
        ));
    }
    let on_timeout = ac::on_timeout_from_proto(r.on_timeout)
        .map_err(|e| Fault::invalid("request.on_timeout", e.to_string()))?;
    let c = r
        .context
        .ok_or_else(|| Fault::invalid("request.context", "required"))?;
    let mut context =
        ac::context_from_proto(c).map_err(|e| Fault::invalid("request.context", e.to_string()))?;
    if context.argv.len() > MAX_ARGV {
        return Err(Fault::invalid(
            "request.context.argv",
            format!("more than {MAX_ARGV} arguments"),
        ));
    }
    if context.ancestry.len() > MAX_ANCESTRY {
        return Err(Fault::invalid(
            "request.context.ancestry",
            format!("more than {MAX_ANCESTRY} processes"),
        ));
    }
    for a in &context.argv {
        check_len("request.context.argv", a)?;
    }
    for (f, v) in [
        ("request.context.target_path", &context.target_path),
        ("request.context.cwd", &context.cwd),
        ("request.context.reason", &context.reason),
        ("request.context.exe", &context.exe),
    ] {
        if let Some(v) = v {
            check_len(f, v)?;
        }
    }
    if r.deadline_unix_ms <= r.created_unix_ms
        || r.deadline_unix_ms - r.created_unix_ms > MAX_WAIT_MS
    {
        return Err(Fault::invalid(
            "request.deadline_unix_ms",
            "must be after created_unix_ms and at most 7 days later",
        ));
    }
    context.host = host.to_string();
    let body = Body {
        tgid: r.key.map(|k| k.tgid).unwrap_or(context.tgid),
        attempts: r.attempts,
        on_timeout,
        context,
    };
    let request = StoredRequest {
        id: r.id,
        host: host.to_string(),
        agent: body.context.agent.clone(),
        state: RequestState::Pending,
        created_unix_ms: r.created_unix_ms,
        deadline_unix_ms: r.deadline_unix_ms,
        route: None,
        threshold: 1,
        body: serde_json::to_string(&body).map_err(|e| Fault::Internal(e.to_string()))?,
        decision: None,
        votes: Vec::new(),
        updated_unix_ms: now,
    };
    Ok(Parsed { request, body })
}

/// The body of a stored request.
pub fn body(s: &StoredRequest) -> Result<Body, Fault> {
    serde_json::from_str(&s.body)
        .map_err(|e| Fault::Internal(format!("stored request {} is unreadable: {e}", s.id)))
}

/// A stored request as the approvals API shows it (the same message as a host's socket, with
/// votes, route and threshold; no holders).
pub fn to_proto(s: &StoredRequest) -> Result<pb::HoldRequest, Fault> {
    Ok(to_proto_with(s, &body(s)?))
}

/// [`to_proto`] of a request whose body `b` is parsed already.
pub fn to_proto_with(s: &StoredRequest, b: &Body) -> pb::HoldRequest {
    pb::HoldRequest {
        id: s.id.clone(),
        state: ac::state_to_proto(s.state) as i32,
        key: Some(pb::HoldKey {
            tgid: b.tgid,
            op: ac::op_to_proto(b.context.op) as i32,
            dev: b.context.target_dev,
            ino: b.context.target_ino,
            argv_hash: 0,
        }),
        holders: Vec::new(),
        attempts: b.attempts,
        created_unix_ms: s.created_unix_ms,
        deadline_unix_ms: s.deadline_unix_ms,
        on_timeout: ac::on_timeout_to_proto(b.on_timeout) as i32,
        context: Some(ac::context_to_proto(&b.context)),
        decision: s.decision.as_ref().map(ac::decision_record_to_proto),
        votes: s.votes.iter().map(ac::vote_to_proto).collect(),
        route: s.route.clone(),
        threshold: s.threshold,
    }
}

/// The decision message for a host, when the server has decided `s`.
pub fn decision_message(s: &StoredRequest) -> Option<pb::ServerMessage> {
    let d = s.decision.as_ref()?;
    let decision = match d.release {
        airlock_approval::Release::Allow => airlock_approval::Decision::Approve {
            for_: d.for_ms.map(std::time::Duration::from_millis),
        },
        airlock_approval::Release::Deny => airlock_approval::Decision::Deny {
            always: d.always,
            reason: d.reason.clone(),
        },
    };
    Some(pb::ServerMessage {
        body: Some(pb::server_message::Body::Decision(pb::Decision {
            decide: Some(ac::decide_to_proto(&s.id, &decision)),
            by: d.by.as_ref().map(ac::approver_to_proto),
            votes: s.votes.iter().map(ac::vote_to_proto).collect(),
        })),
    })
}

/// The settings message: the server's break-glass policy for the host.
pub fn settings_message(break_glass: bool) -> pb::ServerMessage {
    pb::ServerMessage {
        body: Some(pb::server_message::Body::Settings(pb::Settings {
            break_glass,
        })),
    }
}

/// A closed request from a host's `Outcome`: id, state and decision record.
pub fn outcome_from_proto(
    r: pb::HoldRequest,
) -> Result<
    (
        String,
        RequestState,
        Option<airlock_approval::DecisionRecord>,
    ),
    Fault,
> {
    airlock_approval::check_id(&r.id).map_err(|e| Fault::invalid("request.id", e.to_string()))?;
    let state = ac::state_from_proto(r.state)
        .map_err(|e| Fault::invalid("request.state", e.to_string()))?;
    if state == RequestState::Pending {
        return Err(Fault::invalid(
            "request.state",
            "an outcome must be a closed state",
        ));
    }
    let decision = r
        .decision
        .map(ac::decision_record_from_proto)
        .transpose()
        .map_err(|e| Fault::invalid("request.decision", e.to_string()))?;
    if let Some(d) = &decision
        && let Some(reason) = &d.reason
    {
        check_len("request.decision.reason", reason)?;
    }
    Ok((r.id, state, decision))
}
