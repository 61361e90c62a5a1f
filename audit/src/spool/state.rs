//! The spool's small state file and its lock: what was acknowledged, where the remaining
//! chain starts, and how many audit-only records wait to be reported as dropped.

use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SpoolError;
use crate::record::Anchor;

const STATE: &str = "state.json";
const STATE_TMP: &str = "state.json.tmp";
const LOCK: &str = "lock";

/// Audit-only records dropped since the last `audit.dropped` record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    pub count: u64,
    pub first_at_unix_ms: u64,
    pub last_at_unix_ms: u64,
}

/// `state.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Highest sequence number the collector acknowledged.
    pub acked: u64,
    /// The last record of the segments deleted by acknowledgements: the first remaining
    /// record's `prev` must be its hash.
    pub base: Anchor,
    pub dropped: Dropped,
}

impl Default for State {
    fn default() -> State {
        State {
            acked: 0,
            base: Anchor::GENESIS,
            dropped: Dropped::default(),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Fsyncs a directory, so that file creations, renames and removals in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Reads the state, or the default when there is none (a new spool).
pub fn load(dir: &Path) -> Result<State, SpoolError> {
    let path = dir.join(STATE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|_| SpoolError::BadState { path }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Replaces the state atomically: a crash leaves the old or the new file, never half.
pub fn store(dir: &Path, s: &State) -> Result<(), SpoolError> {
    let tmp = dir.join(STATE_TMP);
    let path = dir.join(STATE);
    let bytes = serde_json::to_vec(s).expect("the state always serializes");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(&bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    sync_dir(dir)
}

/// An exclusive lock on the spool directory, held while the spool is open: two writers
/// would interleave frames and fork the chain.
pub struct Lock {
    _file: std::fs::File,
}

/// Takes the lock without waiting.
pub fn lock(dir: &Path) -> Result<Lock, SpoolError> {
    let path: PathBuf = dir.join(LOCK);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io(&path))?;
    // SAFETY: flock on a descriptor this function owns; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            SpoolError::Locked { path }
        } else {
            io(&path)(e)
        });
    }
    // The lock is released when the file is closed, with the spool.
    Ok(Lock { _file: file })
}
