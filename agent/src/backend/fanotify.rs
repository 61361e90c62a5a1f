//! Fallback backend: fanotify permission events. (Owned by the fanotify work.)
use super::{Backend, BackendError, BackendKind, BackendStats, EventSender};
use crate::agents::AgentSet;
use airlock_policy::CompiledPolicy;

/// Errors of the fanotify backend.
#[derive(Debug, thiserror::Error)]
pub enum FanotifyError {
    #[error("fanotify_init: {0}")]
    Init(std::io::Error),
}

/// The running fanotify backend.
pub struct FanotifyBackend {}

impl FanotifyBackend {
    /// Creates the fanotify group and starts the listener thread.
    pub fn start(events: EventSender) -> Result<Self, FanotifyError> {
        let _ = events;
        todo!()
    }
}

impl Backend for FanotifyBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Fanotify
    }
    fn apply(&mut self, policy: &CompiledPolicy, agents: &AgentSet) -> Result<(), BackendError> {
        let _ = (policy, agents);
        todo!()
    }
    fn stats(&self) -> BackendStats {
        todo!()
    }
}
