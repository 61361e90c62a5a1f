//! Requests on disk: one JSON file per request under `STATE_DIR/requests/`, written atomically
//! (temporary file, then rename) whenever a request opens, gains a holder or closes. A
//! restarted airlockd reads the pending ones back; closed ones stay for `airlock show` and are
//! pruned after [`KEEP_CLOSED`].
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{Request, RequestState};

/// How long closed requests stay on disk.
pub const KEEP_CLOSED: Duration = Duration::from_secs(24 * 3600);

/// Errors reading or writing the request store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a request record: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The request directory.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

/// What [`Store::load`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    pub pending: Vec<Request>,
    pub closed: Vec<Request>,
    /// Files that could not be read or parsed (kept on disk, renamed `*.bad`, and reported).
    pub errors: Vec<StoreError>,
}

impl Store {
    /// Opens (creating it, mode 0700) `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes `r` durably enough to survive a daemon crash (not a host crash: the state dir is
    /// on tmpfs, and held processes do not survive a reboot either).
    pub fn save(&self, r: &Request) -> Result<(), StoreError> {
        let path = self.path(&r.id);
        let tmp = self.dir.join(format!(".{}.tmp", r.id));
        let body = serde_json::to_vec(r).expect("requests serialize");
        std::fs::write(&tmp, body)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| StoreError::Io { path, source })
    }

    /// Reads every request; prunes closed ones older than [`KEEP_CLOSED`]. A file that does not
    /// parse is renamed to `*.bad` (never deleted) and reported.
    pub fn load(&self, now: SystemTime) -> Result<Loaded, StoreError> {
        let mut out = Loaded::default();
        let rd = std::fs::read_dir(&self.dir).map_err(|source| StoreError::Io {
            path: self.dir.clone(),
            source,
        })?;
        for entry in rd.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let parsed = std::fs::read(&path)
                .map_err(|source| StoreError::Io {
                    path: path.clone(),
                    source,
                })
                .and_then(|b| {
                    serde_json::from_slice::<Request>(&b).map_err(|source| StoreError::Parse {
                        path: path.clone(),
                        source,
                    })
                });
            match parsed {
                Ok(r) if r.state == RequestState::Pending => out.pending.push(r),
                Ok(r) => {
                    let age = entry
                        .metadata()
                        .ok()
                        .and_then(|m| m.modified().ok())
                        .and_then(|m| now.duration_since(m).ok())
                        .unwrap_or_default();
                    if age > KEEP_CLOSED {
                        let _ = std::fs::remove_file(&path);
                    } else {
                        out.closed.push(r);
                    }
                }
                Err(e) => {
                    let _ = std::fs::rename(&path, path.with_extension("json.bad"));
                    out.errors.push(e);
                }
            }
        }
        out.pending.sort_by_key(|r| r.created_unix_ms);
        out.closed.sort_by_key(|r| r.created_unix_ms);
        Ok(out)
    }
}
