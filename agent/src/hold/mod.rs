//! Holds: a flagged action under an `approve` rule waits inside its syscall while a human
//! decides. This module is the userspace side, independent of the backend:
//!
//! - [`table::HoldTable`]: the request state machine (one request per held action, however
//!   often its syscall restarts and however many threads hit it; decisions; timeouts; holders
//!   that died), persisted by [`store::Store`] so that a restarted airlockd finds its pending
//!   requests;
//! - [`Approvals`]: the shared handle the daemon and the gRPC API use;
//! - [`Gate`]: the seam to the backend that actually releases a hold (LSM: once-grants in a
//!   map plus SIGCONT; fanotify: answering the parked permission event) and writes standing
//!   decisions (agent-wide grants with an expiry the kernel checks).
//!
//! Everything here runs without root: tests drive it with a fake [`Gate`] and a fake clock.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::event::Op;

pub mod approvals;
pub mod context;
pub mod store;
pub mod table;
#[cfg(test)]
pub(crate) mod testing;

pub use approvals::Approvals;

/// Default time a request waits for a decision when its rule names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a once-decision stays usable by the held thread after it is written: the resumed
/// syscall consumes it within microseconds; the bound keeps a decision for a thread that died
/// from ever applying to a later thread with the same id.
pub const ONCE_GRACE: Duration = Duration::from_secs(60);

/// The longest `approve --for` accepted.
pub const MAX_GRANT: Duration = Duration::from_secs(30 * 24 * 3600);

/// What identifies one held action for de-duplication: the same process doing the same
/// operation on the same object with the same arguments is one request, whichever thread and
/// however many restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HoldKey {
    pub tgid: u32,
    pub op: Op,
    /// Kernel `s_dev` encoding.
    pub dev: u32,
    pub ino: u64,
    /// exec only: [`airlock_common::argv_hash`] of the held attempt (0 otherwise).
    pub argv_hash: u64,
}

/// How a holder waits, which decides how it is released.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum HoldKind {
    /// LSM: the thread was sent SIGSTOP and its syscall returned -ERESTARTNOINTR; a
    /// once-decision in the kernel map and SIGCONT let the restarted syscall finish.
    Restart,
    /// fanotify: the permission event `token` is parked in the backend, unanswered.
    Parked { token: u64 },
    /// fanotify backstop: the exec already happened without a daemon decision and the new
    /// image was stopped before its first instruction; SIGCONT lets it run, deny kills it.
    AfterExec,
}

/// One thread waiting on a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub tid: u32,
    pub tgid: u32,
    pub how: HoldKind,
}

/// Which way a hold is released.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Release {
    /// The syscall completes as if it had never waited.
    Allow,
    /// The syscall fails with EPERM.
    Deny,
}

/// A decision that outlives one request: this agent cgroup may (or may not) do `op` on the
/// object until `until_boot_ns` (CLOCK_BOOTTIME; `None` = for the cgroup's life).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standing {
    pub cgroup_id: u64,
    pub op: Op,
    pub dev: u32,
    pub ino: u64,
    pub release: Release,
    pub until_boot_ns: Option<u64>,
}

/// Errors releasing holds or writing standing decisions.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// A kernel map update failed (LSM backend, backstop).
    #[error("map {name}: {source}")]
    Map { name: &'static str, source: aya::maps::MapError },
    /// Signalling a held process failed (other than: it is gone).
    #[error("signal {signal} to {pid}: {source}")]
    Signal { signal: &'static str, pid: u32, source: nix::Error },
    /// The parked permission event is not (or no longer) held by the backend.
    #[error("permission event {token} is not parked (already answered)")]
    NotParked { token: u64 },
    /// This backend cannot release holders of this kind.
    #[error("the {backend} backend cannot release a {kind} hold")]
    Unsupported { backend: &'static str, kind: &'static str },
}

/// The backend side of a hold: releases holders and writes standing decisions.
pub trait Gate: Send + Sync {
    /// Releases every holder of one request, each exactly once. A holder that no longer exists
    /// is not an error. On error the request stays pending (holders already released stay
    /// released; releasing them again is a no-op).
    fn release(&self, key: &HoldKey, holders: &[Holder], how: Release) -> Result<(), GateError>;
    /// Writes a standing decision; later attempts of the cgroup on the object are decided by it
    /// in the kernel (LSM) or the listener (fanotify) without a new request.
    fn standing(&self, s: &Standing) -> Result<(), GateError>;
}

/// What a person decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Approve this request only (`for_: None`), or this agent cgroup's operation on this
    /// object until the duration has passed.
    Approve { for_: Option<Duration> },
    /// Deny this request only, or (`always`) this agent cgroup's operation on this object for
    /// the rest of its life.
    Deny { always: bool, reason: Option<String> },
}

/// Who decided (from the API caller's peer credentials).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approver {
    pub uid: u32,
    pub pid: u32,
    /// User name of `uid`, when it has one.
    pub user: Option<String>,
    /// How the decision arrived ("cli", "grpc", "timeout").
    pub via: String,
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
    #[default]
    Deny,
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
}

/// One held action waiting for (or having had) a decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: String,
    pub state: RequestState,
    pub key: HoldKey,
    pub holders: Vec<Holder>,
    /// How often the gated syscall reached the gate for this request (restarts, threads).
    pub attempts: u32,
    pub created_unix_ms: u64,
    pub deadline_unix_ms: u64,
    pub on_timeout: OnTimeout,
    pub context: RequestContext,
    pub decision: Option<DecisionRecord>,
}

/// A change the table announces to watchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// A new request is waiting.
    Opened(Request),
    /// A request was decided, timed out or abandoned.
    Closed(Request),
}

/// Errors of the request table.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error("no request with id {id:?}")]
    NotFound { id: String },
    #[error("request {id} is already {state}; nothing changed")]
    Closed { id: String, state: &'static str },
    #[error("duration {value}: {why}")]
    BadDuration { value: String, why: &'static str },
    #[error("releasing the hold: {0}")]
    Gate(#[from] GateError),
    #[error("request store: {0}")]
    Store(#[from] store::StoreError),
}
