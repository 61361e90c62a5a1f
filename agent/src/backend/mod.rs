//! Backends gate kernel operations for agent processes and report [`GateEvent`]s.
//!
//! - [`lsm`]: BPF LSM programs decide in the kernel (preferred).
//! - [`fanotify`]: fallback for kernels that refuse BPF LSM programs: fanotify permission events
//!   on gated binaries and protected trees, agent scoping in userspace.
//!
//! [`select`] probes which one can run here and says why.
use airlock_policy::CompiledPolicy;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::agents::AgentSet;
use crate::event::GateEvent;

pub mod exec_context;
pub mod fanotify;
pub mod lsm;

/// Which backend is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    Lsm,
    Fanotify,
}

impl BackendKind {
    /// Short name used in events, logs and `airlock status`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Lsm => "lsm",
            BackendKind::Fanotify => "fanotify",
        }
    }
}

/// Counters every backend keeps.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct BackendStats {
    /// Events delivered to the daemon.
    pub events: u64,
    /// Events the kernel or the backend could not deliver (ring buffer full, channel full).
    pub lost: u64,
}

/// Where backends send events. Bounded: a backend never blocks a gated process on a slow
/// daemon; it counts the event as lost instead.
pub type EventSender = mpsc::Sender<GateEvent>;

/// A running backend.
pub trait Backend: Send {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;
    /// Replaces the rules and agent cgroups in force. On error the previous ones stay in force.
    fn apply(&mut self, policy: &CompiledPolicy, agents: &AgentSet) -> Result<(), BackendError>;
    /// Current counters.
    fn stats(&self) -> BackendStats;
    /// The fallback's exec backstop: execs this backend lets through must be recorded in
    /// `allow` first (see `exec_context`). Backends that decide in the kernel ignore it.
    fn set_backstop(&self, _allow: Option<std::sync::Arc<exec_context::ExecAllow>>) {}
    /// Whether the threads or tasks that deliver events to the daemon still run (the
    /// watchdog's health check: with them gone, held syscalls never become requests).
    fn is_alive(&self) -> bool {
        true
    }
}

/// Errors starting or updating a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Lsm(#[from] lsm::LsmError),
    #[error(transparent)]
    Fanotify(#[from] fanotify::FanotifyError),
}
