//! Default locations, overridable by flags and environment (tests run several daemons side by side).
use std::path::PathBuf;

/// Runtime state directory (status file, event log, sockets). `AIRLOCK_STATE_DIR` overrides.
pub fn state_dir() -> PathBuf {
    std::env::var_os("AIRLOCK_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

/// airlockd's default runtime state directory.
pub const DEFAULT_STATE_DIR: &str = "/run/airlock";
/// Where the audit spool and the unenrolled host's audit key live by default: on disk, because
/// records the collector has not yet acknowledged must outlive a reboot (`/run` is a tmpfs).
pub const DEFAULT_AUDIT_DIR: &str = "/var/lib/airlock/audit";

/// The audit directory (spools under `HOST/`, and `audit.key` when the host is not enrolled)
/// when none is set: [`DEFAULT_AUDIT_DIR`] for the default state directory, else
/// `STATE_DIR/audit`, so that a daemon given its own state directory (tests, side-by-side
/// daemons) keeps everything in it.
pub fn audit_dir(state_dir: &std::path::Path) -> PathBuf {
    if state_dir == std::path::Path::new(DEFAULT_STATE_DIR) {
        PathBuf::from(DEFAULT_AUDIT_DIR)
    } else {
        state_dir.join("audit")
    }
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
