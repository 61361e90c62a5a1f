//! [`CgroupWatcher`]: tells the daemon "the cgroup tree changed, resolve again".
//!
//! inotify works on cgroup2: mkdir/rmdir of a cgroup go through vfs_mkdir/vfs_rmdir, which emit
//! IN_CREATE/IN_DELETE with IN_ISDIR on the parent (verified as root on Linux 6.18, also for a
//! mkdir made through a second cgroup2 mount inside a new cgroup namespace: it is the same
//! superblock). cgroup2 refuses rename (EPERM), so a watched directory's path stays valid.
//! inotify watches one directory each, so every cgroup gets a watch, added as it appears.
//!
//! A slow periodic rescan ([`SAFETY_RESCAN`]) backs it up anyway, for what inotify cannot
//! promise: a full event queue (IN_Q_OVERFLOW) or running out of watches
//! (fs.inotify.max_user_watches) on hosts with very many cgroups. When inotify is unusable
//! or a watch could not be added, the rescan period drops to [`FALLBACK_RESCAN`].
use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::sync::watch;

/// Rescan period while inotify covers the whole tree.
pub const SAFETY_RESCAN: Duration = Duration::from_secs(60);
/// Rescan period without (complete) inotify coverage.
pub const FALLBACK_RESCAN: Duration = Duration::from_secs(1);

/// Errors starting the watcher.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot list cgroup mount {path}: {source}")]
    Mount {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start cgroup watcher thread: {0}")]
    Thread(std::io::Error),
    #[error("cgroup watcher thread has stopped")]
    Stopped,
}

/// Watches the cgroup2 tree and counts changes; every count change means "resolve again".
///
/// The count is a [`tokio::sync::watch`] value, so bursts (systemd creating many cgroups at
/// once) coalesce into one wake-up of a busy daemon. A background thread does the watching;
/// dropping the watcher stops and joins it.
pub struct CgroupWatcher {
    rx: watch::Receiver<u64>,
    /// Dropping this end wakes the thread's poll (hang-up) and makes it exit.
    stop: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
    inotify: bool,
}

impl CgroupWatcher {
    /// Starts watching the tree under `mount` with the default [`SAFETY_RESCAN`] period. Every
    /// directory existing now is watched before this returns.
    pub fn spawn(mount: PathBuf) -> Result<CgroupWatcher, WatchError> {
        Self::spawn_with(mount, SAFETY_RESCAN)
    }

    /// Like [`CgroupWatcher::spawn`] with a chosen periodic rescan (used when inotify covers
    /// the whole tree; otherwise [`FALLBACK_RESCAN`] or `rescan`, whichever is shorter).
    pub fn spawn_with(mount: PathBuf, rescan: Duration) -> Result<CgroupWatcher, WatchError> {
        std::fs::read_dir(&mount).map_err(|e| WatchError::Mount {
            path: mount.clone(),
            source: e,
        })?;
        let tree = match Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK) {
            Ok(ino) => {
                let mut t = Tree {
                    ino,
                    wds: HashMap::new(),
                    incomplete: false,
                    mount,
                };
                t.watch_subtree(&t.mount.clone());
                Some(t)
            }
            Err(e) => {
                tracing::warn!(
                    "inotify unavailable ({e}); rescanning cgroups every {FALLBACK_RESCAN:?}"
                );
                None
            }
        };
        let inotify = tree.is_some();
        let (tx, rx) = watch::channel(0u64);
        let (stop, stop_rx) = UnixStream::pair().map_err(WatchError::Thread)?;
        let thread = std::thread::Builder::new()
            .name("cgroup-watch".into())
            .spawn(move || run(tree, stop_rx, tx, rescan))
            .map_err(WatchError::Thread)?;
        Ok(CgroupWatcher {
            rx,
            stop: Some(stop),
            thread: Some(thread),
            inotify,
        })
    }

    /// A receiver of the change count, for `select!` loops or other tasks.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.rx.clone()
    }

    /// Waits for the next change (or periodic rescan tick) and returns the change count.
    pub async fn changed(&mut self) -> Result<u64, WatchError> {
        self.rx.changed().await.map_err(|_| WatchError::Stopped)?;
        Ok(*self.rx.borrow_and_update())
    }

    /// The change count so far.
    pub fn generation(&self) -> u64 {
        *self.rx.borrow()
    }

    /// Whether the watching thread still runs (the daemon's watchdog checks it: without it new
    /// agent cgroups would never be gated).
    pub fn is_alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Whether inotify is in use (false: periodic rescans only).
    pub fn uses_inotify(&self) -> bool {
        self.inotify
    }
}

impl Drop for CgroupWatcher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const MASK: AddWatchFlags = AddWatchFlags::IN_CREATE
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_ONLYDIR)
    .union(AddWatchFlags::IN_DONT_FOLLOW);

struct Tree {
    ino: Inotify,
    wds: HashMap<WatchDescriptor, PathBuf>,
    /// Some directory has no watch (ENOSPC, EMFILE...): rely on fast periodic rescans.
    incomplete: bool,
    mount: PathBuf,
}

impl Tree {
    /// Watches `dir` and everything below it. Watching before listing means a child created
    /// during the listing is either listed or reported.
    fn watch_subtree(&mut self, dir: &Path) {
        let mut pending = vec![dir.to_path_buf()];
        while let Some(d) = pending.pop() {
            match self.ino.add_watch(&d, MASK) {
                Ok(wd) => {
                    self.wds.insert(wd, d.clone());
                }
                // Gone already (its IN_DELETE follows) or not a directory.
                Err(Errno::ENOENT | Errno::ENOTDIR) => continue,
                Err(e) => {
                    if !self.incomplete {
                        tracing::warn!(
                            "inotify watch on {} failed ({e}); new cgroups may be noticed only \
                             by periodic rescan every {FALLBACK_RESCAN:?}",
                            d.display()
                        );
                    }
                    self.incomplete = true;
                }
            }
            let Ok(listing) = std::fs::read_dir(&d) else {
                continue;
            };
            for entry in listing.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    pending.push(entry.path());
                }
            }
        }
    }

    /// Reads all queued events; returns whether the cgroup tree changed.
    fn drain(&mut self) -> bool {
        let mut changed = false;
        loop {
            let events = match self.ino.read_events() {
                Ok(ev) => ev,
                Err(Errno::EAGAIN) => return changed,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!("reading inotify events: {e}");
                    self.incomplete = true;
                    return true;
                }
            };
            for ev in events {
                if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    // Events were lost, maybe creations: watch whatever is there now.
                    let mount = self.mount.clone();
                    self.watch_subtree(&mount);
                    changed = true;
                    continue;
                }
                if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                    self.wds.remove(&ev.wd);
                    continue;
                }
                if !ev.mask.contains(AddWatchFlags::IN_ISDIR) {
                    continue;
                }
                changed = true;
                let created = AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO;
                if ev.mask.intersects(created)
                    && let (Some(parent), Some(name)) = (self.wds.get(&ev.wd), &ev.name)
                {
                    let child = parent.join(name);
                    self.watch_subtree(&child);
                }
            }
        }
    }
}

fn run(mut tree: Option<Tree>, mut stop: UnixStream, tx: watch::Sender<u64>, rescan: Duration) {
    loop {
        let period = match &tree {
            Some(t) if !t.incomplete => rescan,
            _ => rescan.min(FALLBACK_RESCAN),
        };
        let mut fds = vec![libc::pollfd {
            fd: stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(t) = &tree {
            fds.push(libc::pollfd {
                fd: t.ino.as_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let timeout = i32::try_from(period.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: fds is a valid array of fds.len() pollfds that outlives the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            tracing::warn!(
                "cgroup watcher poll: {}; falling back to rescans",
                Errno::last()
            );
            std::thread::sleep(FALLBACK_RESCAN);
            tx.send_modify(|g| *g += 1);
            continue;
        }
        if fds[0].revents != 0 {
            let mut b = [0u8; 1];
            // Hang-up (0 bytes) or anything written: either way the owner wants us gone.
            let _ = stop.read(&mut b);
            return;
        }
        let changed = match (&mut tree, fds.get(1)) {
            (Some(t), Some(p)) if p.revents != 0 => t.drain(),
            _ => n == 0, // timeout: periodic rescan
        };
        if changed {
            tx.send_modify(|g| *g += 1);
        }
    }
}
