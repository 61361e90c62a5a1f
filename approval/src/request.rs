//! A request for approval as people, hosts and the server see it: its context, the decision
//! and who made it. Backend internals (threads, fanotify tokens, the de-duplication key) are
//! not here: they stay on the host.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Op;

/// The longest `approve --for` accepted.
pub const MAX_GRANT: Duration = Duration::from_secs(30 * 24 * 3600);

/// Which way a hold is released.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Release {
    /// The syscall completes as if it had never waited.
    Allow,
    /// The syscall fails with EPERM.
    Deny,
}

/// What a person decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Approve this request only (`for_: None`), or this agent cgroup's operation on this
    /// object until the duration has passed.
    Approve { for_: Option<Duration> },
    /// Deny this request only, or (`always`) this agent cgroup's operation on this object for
    /// the rest of its life.
    Deny {
        always: bool,
        reason: Option<String>,
    },
}

/// Who decided. On a host's local socket: the caller's peer credentials (uid, pid, user name).
/// Through airlock-server: the authenticated principal (uid and pid are 0 there).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approver {
    pub uid: u32,
    pub pid: u32,
    /// User name of `uid`, when it has one.
    pub user: Option<String>,
    /// How the decision arrived: "cli" (local socket), "cli-break-glass" (local socket while
    /// the host is linked to a server), "server" (decided by airlock-server), a channel name.
    pub via: String,
    /// airlock-server's principal (the server's config names them); `None` for local decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
}

/// Where a request is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Waiting for a decision; its holders wait in their syscalls.
    Pending,
    /// Approved; holders released to complete.
    Approved,
    /// Denied; holders failed with EPERM.
    Denied,
    /// Nobody decided in time; released per the rule's `onTimeout`.
    TimedOut,
    /// Every holder is gone (killed while waiting).
    Abandoned,
}

impl RequestState {
    /// Lowercase name, as in JSON and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Denied => "denied",
            RequestState::TimedOut => "timed_out",
            RequestState::Abandoned => "abandoned",
        }
    }
}

/// What the rule says happens when nobody decides in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    /// The held action fails with EPERM.
    #[default]
    Deny,
    /// The held action goes ahead.
    Allow,
}

/// One process in a request's ancestry (the held process first, up to the agent root).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ancestor {
    pub pid: u32,
    pub comm: String,
    pub exe: Option<String>,
}

/// Who launched the agent (recorded by `airlock run`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launcher {
    pub uid: u32,
    pub user: Option<String>,
    /// `SUDO_USER` when `airlock run` ran under sudo.
    pub sudo_user: Option<String>,
    /// `airlock run --reason`.
    pub reason: Option<String>,
}

/// Everything a person needs to decide, gathered when the request opens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestContext {
    pub host: String,
    pub agent: Option<String>,
    pub agent_cgroup: Option<String>,
    pub cgroup_id: u64,
    /// systemd unit of the cgroup (a `.scope` or `.service` path component), if any.
    pub unit: Option<String>,
    pub launched_by: Option<Launcher>,
    pub pid: u32,
    pub tgid: u32,
    pub uid: u32,
    pub euid: u32,
    pub comm: String,
    /// What the process runs (from the exec tracepoint, else /proc/PID/exe).
    pub exe: Option<String>,
    pub ancestry: Vec<Ancestor>,
    /// exec: arguments captured in the kernel at the hook.
    pub argv: Vec<String>,
    pub argv_truncated: bool,
    pub cwd: Option<String>,
    pub op: Op,
    pub target_path: Option<String>,
    pub target_dev: u32,
    pub target_ino: u64,
    pub rule: Option<String>,
    pub policy: Option<String>,
    /// The reason the agent gives: `AIRLOCK_REASON` in its environment, else `airlock run
    /// --reason`.
    pub reason: Option<String>,
    /// Which backend holds it.
    pub backend: String,
}

/// A decision as recorded on a closed request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub release: Release,
    /// `approve --for`: milliseconds the standing grant lasts.
    pub for_ms: Option<u64>,
    /// `deny --always`.
    pub always: bool,
    pub reason: Option<String>,
    /// `None` for a timeout.
    pub by: Option<Approver>,
    pub at_unix_ms: u64,
    /// The votes that made a server's decision, each as cast (empty for a local decision,
    /// whose one approver is `by`): the host's audit stream records each as a `vote`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub votes: Vec<Vote>,
}

impl RequestState {
    /// Parses [`RequestState::as_str`]'s names.
    pub fn parse(s: &str) -> Option<RequestState> {
        Some(match s {
            "pending" => RequestState::Pending,
            "approved" => RequestState::Approved,
            "denied" => RequestState::Denied,
            "timed_out" => RequestState::TimedOut,
            "abandoned" => RequestState::Abandoned,
            _ => return None,
        })
    }

    /// Closed states are final.
    pub fn is_closed(self) -> bool {
        self != RequestState::Pending
    }
}

/// One approver's vote on a request routed through airlock-server (N-of-M routes collect
/// several before the request is decided).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// The principal who voted.
    pub principal: String,
    /// Approve or deny.
    pub release: Release,
    /// Approve for a duration (milliseconds), when asked for.
    pub for_ms: Option<u64>,
    /// Deny always.
    pub always: bool,
    pub reason: Option<String>,
    /// Channel the vote came through ("cli", "web", "slack", ...).
    pub via: String,
    pub at_unix_ms: u64,
}

/// Checks a standing-grant duration: more than zero, at most [`MAX_GRANT`].
pub fn check_grant(d: Duration) -> Result<(), &'static str> {
    if d.is_zero() {
        return Err("must be longer than zero");
    }
    if d > MAX_GRANT {
        return Err("must not exceed 30 days");
    }
    Ok(())
}
