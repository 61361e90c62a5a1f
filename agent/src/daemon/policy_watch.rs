//! Reloading the policy when its files change, as SIGHUP does: inotify on each policy path
//! (a directory, or the directory holding a policy file, since editors and config tools
//! replace files by renaming a new one over them). Changes are gathered for a short quiet
//! period first, so a save that writes several files (or a file then its rename) reloads
//! once, with everything in place. The reload itself is the daemon's (`State::reload`): a
//! policy with errors is refused with file:line:column and the one in force stays.
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::io::unix::AsyncFd;

/// Quiet time after the last change before reloading.
pub const SETTLE: Duration = Duration::from_millis(300);

/// Errors setting the watch up.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("inotify: {0}")]
    Init(nix::Error),
    #[error("watching {path}: {source}")]
    Watch { path: PathBuf, source: nix::Error },
    #[error("inotify with tokio: {0}")]
    Async(std::io::Error),
}

/// What one watch descriptor stands for: every entry of a policy directory, or one file
/// name in the directory that holds it.
#[derive(Debug, Default)]
struct Watched {
    /// `None`: the whole directory counts; else only these names.
    names: Option<Vec<OsString>>,
}

/// nix's Inotify for tokio's AsyncFd (which wants AsRawFd).
struct Fd(Inotify);

impl std::os::fd::AsRawFd for Fd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd as _;
        self.0.as_fd().as_raw_fd()
    }
}

/// The watch over the policy paths.
pub struct PolicyWatch {
    fd: AsyncFd<Fd>,
    watched: HashMap<WatchDescriptor, Watched>,
    /// A change was seen: reload at this time unless another comes first.
    due: Option<tokio::time::Instant>,
}

fn flags() -> AddWatchFlags {
    AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
}

impl PolicyWatch {
    /// Watches `paths` (policy files or directories). Must run inside a Tokio runtime.
    pub fn new(paths: &[PathBuf]) -> Result<PolicyWatch, WatchError> {
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(WatchError::Init)?;
        // Directory → the names in it that count (`None`: all of them).
        let mut dirs: std::collections::BTreeMap<PathBuf, Option<Vec<OsString>>> =
            Default::default();
        for p in paths {
            if p.is_dir() {
                dirs.insert(p.clone(), None);
                continue;
            }
            let dir = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf();
            let entry = dirs.entry(dir).or_insert_with(|| Some(Vec::new()));
            if let (Some(names), Some(n)) = (entry, p.file_name()) {
                names.push(n.to_os_string());
            }
        }
        let mut watched = HashMap::new();
        for (dir, names) in dirs {
            let wd = ino
                .add_watch(&dir, flags())
                .map_err(|source| WatchError::Watch { path: dir, source })?;
            watched.insert(wd, Watched { names });
        }
        Ok(PolicyWatch {
            // SAFETY: the descriptor is the Inotify's, owned by the AsyncFd for its whole
            // life, so it stays open and the same while registered.
            fd: unsafe { AsyncFd::register(Fd(ino)) }.map_err(|e| WatchError::Async(e.into()))?,
            watched,
            due: None,
        })
    }

    /// Whether any event read now concerns a policy path.
    fn relevant(&self, events: &[nix::sys::inotify::InotifyEvent]) -> bool {
        events.iter().any(|e| match self.watched.get(&e.wd) {
            None => false,
            Some(Watched { names: None }) => true,
            Some(Watched { names: Some(ns) }) => {
                e.mask
                    .intersects(AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF)
                    || e.name.as_ref().is_some_and(|n| ns.contains(n))
            }
        })
    }

    /// Reads what is queued now; whether any of it concerns a policy path.
    async fn next_batch(&mut self) -> bool {
        loop {
            let mut guard = match self.fd.readable().await {
                Ok(g) => g,
                // The descriptor broke: no more changes will be seen (SIGHUP still works).
                Err(_) => return std::future::pending().await,
            };
            match guard.try_io(|f| f.get_ref().0.read_events().map_err(std::io::Error::from)) {
                Ok(Ok(events)) => return self.relevant(&events),
                Ok(Err(_)) => return std::future::pending().await,
                Err(_would_block) => continue,
            }
        }
    }

    /// Resolves once a policy path changed and then stayed quiet for [`SETTLE`].
    ///
    /// Cancel-safe: the daemon polls this in a `select!` beside timers that fire more often
    /// than [`SETTLE`], so the future is dropped and made again many times while it settles.
    /// What it has seen lives in `self` (events read are never lost with a dropped future).
    pub async fn changed(&mut self) {
        loop {
            match self.due {
                None => {
                    if self.next_batch().await {
                        self.due = Some(tokio::time::Instant::now() + SETTLE);
                    }
                }
                Some(due) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(due) => {
                            self.due = None;
                            return;
                        }
                        relevant = self.next_batch() => {
                            if relevant {
                                self.due = Some(tokio::time::Instant::now() + SETTLE);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    async fn fires(w: &mut PolicyWatch) -> bool {
        tokio::time::timeout(WAIT, w.changed()).await.is_ok()
    }

    async fn quiet(w: &mut PolicyWatch) -> bool {
        tokio::time::timeout(SETTLE * 3, w.changed()).await.is_err()
    }

    #[tokio::test]
    async fn a_policy_directory_reloads_on_a_new_file_an_edit_a_rename_and_a_removal() {
        let dir = tempfile::tempdir().unwrap();
        let pol = dir.path().join("policies");
        std::fs::create_dir(&pol).unwrap();
        let mut w = PolicyWatch::new(std::slice::from_ref(&pol)).unwrap();
        assert!(quiet(&mut w).await, "nothing changed yet");
        std::fs::write(pol.join("a.yaml"), "x").unwrap();
        assert!(fires(&mut w).await, "new file");
        std::fs::write(pol.join("a.yaml"), "y").unwrap();
        assert!(fires(&mut w).await, "edit");
        // As editors and config tools save: a temporary file renamed over the policy.
        std::fs::write(dir.path().join("tmp"), "z").unwrap();
        std::fs::rename(dir.path().join("tmp"), pol.join("a.yaml")).unwrap();
        assert!(fires(&mut w).await, "rename over");
        std::fs::remove_file(pol.join("a.yaml")).unwrap();
        assert!(fires(&mut w).await, "removal");
    }

    /// As the daemon polls it: in a `select!` with a timer faster than [`SETTLE`], so the
    /// future is dropped mid-settle over and over.
    #[tokio::test]
    async fn a_change_is_not_lost_when_the_daemons_faster_timers_drop_the_future() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.yaml");
        std::fs::write(&file, "x").unwrap();
        let mut w = PolicyWatch::new(std::slice::from_ref(&file)).unwrap();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        std::fs::write(&file, "y").unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut ticks = 0;
        loop {
            tokio::select! {
                () = w.changed() => break,
                _ = tick.tick() => ticks += 1,
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the change was lost"
            );
        }
        assert!(ticks > 3, "the timer did preempt the watch ({ticks} ticks)");
    }

    #[tokio::test]
    async fn a_policy_file_reloads_on_its_own_changes_only_and_a_burst_counts_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.yaml");
        std::fs::write(&file, "x").unwrap();
        let mut w = PolicyWatch::new(std::slice::from_ref(&file)).unwrap();
        std::fs::write(dir.path().join("other.txt"), "x").unwrap();
        assert!(quiet(&mut w).await, "a neighbour is not the policy");
        for i in 0..5 {
            std::fs::write(&file, format!("{i}")).unwrap();
        }
        assert!(fires(&mut w).await, "the policy changed");
        assert!(quiet(&mut w).await, "five writes, one reload");
    }
}
