//! Default locations, overridable by flags and environment (tests run several daemons side by side).
use std::path::PathBuf;

/// Runtime state directory (status file, event log, sockets). `AIRLOCK_STATE_DIR` overrides.
pub fn state_dir() -> PathBuf {
    std::env::var_os("AIRLOCK_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/airlock"))
}

/// Where the daemon writes its status (backend, reason, policy, counters) as JSON.
pub fn status_file(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("status.json")
}

/// Where the daemon appends one JSON object per event.
pub fn event_log(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("events.jsonl")
}

/// Where `airlock run` records who launched the run in cgroup/scope `scope` (its directory
/// name, e.g. `airlock-claude-123x4.scope`).
pub fn run_record(state_dir: &std::path::Path, scope: &str) -> PathBuf {
    state_dir.join("runs").join(format!("{scope}.json"))
}

/// Where pending and recent approval requests are kept.
pub fn requests_dir(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("requests")
}

/// The approvals API's Unix socket (gRPC `airlock.v1.Approvals`). `AIRLOCK_SOCKET` overrides it
/// in the CLI.
pub fn socket(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("airlock.sock")
}
