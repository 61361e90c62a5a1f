//! The handle the daemon and the gRPC API share: the request table behind a mutex, with the
//! wall clock and CLOCK_BOOTTIME read here (the table itself takes times as arguments, so tests
//! can drive it).
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;

use super::table::{HoldTable, Joined, Opening};
use super::{Approver, Decision, HoldError, HoldKey, Holder, Request, Update, Vote};

/// Shared, cloneable access to the request table.
#[derive(Clone)]
pub struct Approvals {
    table: Arc<Mutex<HoldTable>>,
}

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// CLOCK_BOOTTIME in nanoseconds: the clock the kernel checks standing grants against.
pub fn now_boot_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

impl Approvals {
    /// Wraps a table.
    pub fn new(table: HoldTable) -> Approvals {
        Approvals {
            table: Arc::new(Mutex::new(table)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HoldTable> {
        // A panic while holding the lock leaves the table as consistent as its last completed
        // step; keep serving rather than stop deciding.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pending requests, oldest first.
    pub fn pending(&self) -> Vec<Request> {
        self.lock().pending()
    }

    /// How many requests are pending (for status; no copies).
    pub fn pending_count(&self) -> usize {
        self.lock().pending_count()
    }

    /// One request, pending or recently closed.
    pub fn get(&self, id: &str) -> Result<Request, HoldError> {
        self.lock().get(id)
    }

    /// Decides a pending request (see [`HoldTable::decide`]).
    pub fn decide(&self, id: &str, decision: Decision, by: Approver) -> Result<Request, HoldError> {
        self.lock()
            .decide(id, decision, by, now_unix_ms(), now_boot_ns())
    }

    /// Applies a decision made by `votes` (a server's), which its record keeps.
    pub fn decide_voted(
        &self,
        id: &str,
        decision: Decision,
        by: Approver,
        votes: Vec<Vote>,
    ) -> Result<Request, HoldError> {
        self.lock()
            .decide_voted(id, decision, by, votes, now_unix_ms(), now_boot_ns())
    }

    /// New and closed requests from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.lock().subscribe()
    }

    /// A held attempt (daemon).
    pub fn on_held(&self, key: HoldKey, holder: Holder, open: impl FnOnce() -> Opening) -> Joined {
        self.lock().on_held(key, holder, now_unix_ms(), open)
    }

    /// Timeouts and abandoned holds (daemon, once a second).
    pub fn tick(&self, alive: impl Fn(&Holder) -> bool) -> Vec<Request> {
        self.lock().tick(now_unix_ms(), alive)
    }

    /// Direct access for the daemon's start-up (restore).
    pub fn with_table<T>(&self, f: impl FnOnce(&mut HoldTable) -> T) -> T {
        f(&mut self.lock())
    }
}
