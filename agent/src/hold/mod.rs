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

// The approval domain (context, decisions, who decided) is shared with airlock-server; the hold
// table, its key and its holders are this host's own.
pub use airlock_approval::{
    Ancestor, Approver, Decision, DecisionRecord, Launcher, MAX_GRANT, OnTimeout, Release,
    RequestContext, RequestState, Vote,
};

pub mod approvals;
pub mod context;
pub mod store;
pub mod table;
#[cfg(test)]
pub(crate) mod testing;

pub use approvals::Approvals;

/// `STATE_DIR/runs/<scope>.json`, written by `airlock run`: who launched the run (shown with
/// its requests; the launcher's fields at the top level, so the file reads as a
/// [`Launcher`] too) and whether the run asked not to be told about holds on its stderr.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecordFile {
    #[serde(flatten)]
    pub launcher: Launcher,
    /// `airlock run --quiet`.
    #[serde(default)]
    pub quiet: bool,
}

impl RunRecordFile {
    /// The record of the run whose systemd unit (scope) is `unit`, if it has one and it reads.
    pub fn read(state_dir: &std::path::Path, unit: &str) -> Option<RunRecordFile> {
        let b = std::fs::read(crate::paths::run_record(state_dir, unit)).ok()?;
        serde_json::from_slice(&b).ok()
    }
}

/// Default time a request waits for a decision when its rule names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a once-decision stays usable by the held thread after it is written: the resumed
/// syscall consumes it within microseconds; the bound keeps a decision for a thread that died
/// from ever applying to a later thread with the same id.
pub const ONCE_GRACE: Duration = Duration::from_secs(60);

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
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    /// Signalling a held process failed (other than: it is gone).
    #[error("signal {signal} to {pid}: {source}")]
    Signal {
        signal: &'static str,
        pid: u32,
        source: nix::Error,
    },
    /// The parked permission event is not (or no longer) held by the backend.
    #[error("permission event {token} is not parked (already answered)")]
    NotParked { token: u64 },
    /// This backend cannot release holders of this kind.
    #[error("the {backend} backend cannot release a {kind} hold")]
    Unsupported {
        backend: &'static str,
        kind: &'static str,
    },
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

/// Told of each request as it opens, and as it closes right before its holders are released
/// (while they still wait): airlockd writes a line to the held processes' stderr.
pub trait Herald: Send + Sync {
    fn tell(&self, u: &Update);
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
