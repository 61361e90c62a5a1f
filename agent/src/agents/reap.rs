//! [`ScopeReaper`]: removes the cgroups `airlock run` made once they are empty and the
//! `airlock run` that made them is gone, however it ended.
//!
//! `airlock run` removes its scope itself when CMD exits. A SIGKILL of `airlock run` (or a
//! crash, or `--kill-on-exit=false` leftovers exiting later) leaves an empty
//! `/airlock.slice/airlock-NAME-<pid>x<hex>.scope` behind: in cgroupfs mode nobody else knows
//! about it (under systemd, systemd collects its transient scopes itself; removing an empty one
//! first does no harm, systemd tolerates the cgroup being gone). airlockd runs as long as there
//! is gating, so it does the removal, with or without systemd.
//!
//! A scope is removed only when both hold:
//! - `cgroup.events` says `populated 0` (no process in it or below; rmdir would fail
//!   anyway with EBUSY otherwise, so a process that joins meanwhile keeps it);
//! - no live process (zombies do not count) has the pid in its name (the `airlock run` that
//!   created it). This protects
//!   the window in which a live `airlock run` has made the cgroup but its child has not joined
//!   yet (it waits up to 10 s for airlockd to gate the cgroup first). A reused pid only delays
//!   the removal to a later sweep. (An `airlock run` in another pid namespace is not seen by
//!   its pid; its scope could be removed in that window and that run would then fail to start.)
//!
//! Wake-ups: inotify on the slice directory (new scopes) and on each scope's `cgroup.events`
//! (the kernel reports populated changes as IN_MODIFY), plus a sweep every [`REAP_SWEEP`] for
//! whatever inotify missed.
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::WatchError;

/// Period of the sweep that backs inotify up.
pub const REAP_SWEEP: Duration = Duration::from_secs(2);

/// The slice `airlock run` puts its scopes in, relative to the cgroup2 mount.
const SLICE: &str = "airlock.slice";

/// The pid of the `airlock run` that made scope `name` (`airlock-NAME-<pid>x<hex>.scope`, see
/// `cli::run::unique_suffix`); `None` for any other name.
pub fn run_scope_creator(name: &str) -> Option<u32> {
    let inner = name.strip_prefix("airlock-")?.strip_suffix(".scope")?;
    let (agent, unique) = inner.rsplit_once('-')?;
    if agent.is_empty() {
        return None;
    }
    let (pid, hex) = unique.split_once('x')?;
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    pid.parse().ok().filter(|&p| p > 0)
}

/// Whether `cgroup.events` text says the cgroup has no process in it or below.
pub fn events_say_empty(text: &str) -> bool {
    text.lines().any(|l| l.trim() == "populated 0")
}

/// Whether process `pid` exists and has not exited: a zombie (killed, not yet reaped by a
/// parent that may never wait) is gone as far as its scope is concerned.
fn process_lives(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the ')' closing the command name, which may contain anything.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_none_or(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Removes the empty, orphaned `airlock run` scopes under `mount`/airlock.slice now, and the
/// run records (`state_dir`/runs/SCOPE.json) their `airlock run` left; returns the removed
/// scopes' directories.
pub fn sweep(mount: &Path, state_dir: &Path) -> Vec<PathBuf> {
    sweep_with(mount, state_dir, crate::cgroup::remove_tree)
}

/// [`sweep`] with the removal of a scope's cgroup tree passed in (tests use plain directories).
fn sweep_with(
    mount: &Path,
    state_dir: &Path,
    remove: impl Fn(&Path) -> Result<(), crate::cgroup::CgroupError>,
) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(listing) = std::fs::read_dir(mount.join(SLICE)) else {
        return removed;
    };
    for entry in listing.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = run_scope_creator(name) else {
            continue;
        };
        let dir = entry.path();
        let empty =
            std::fs::read_to_string(dir.join("cgroup.events")).is_ok_and(|t| events_say_empty(&t));
        if !empty || process_lives(pid) {
            continue;
        }
        // The run record first: whoever sees the scope gone then finds no record either (a
        // record without its scope would only name a launcher nothing runs under).
        let _ = std::fs::remove_file(crate::paths::run_record(state_dir, name));
        match remove(&dir) {
            Ok(()) => {
                tracing::info!(
                    scope = name,
                    "removed the empty scope of an `airlock run` that is gone"
                );
                removed.push(dir);
            }
            // A process joined meanwhile (EBUSY) or it is gone already: a later sweep decides.
            Err(e) => tracing::debug!(scope = name, error = %e, "scope not removed"),
        }
    }
    removed
}

/// The background thread doing [`sweep`]s; dropping it stops and joins the thread.
pub struct ScopeReaper {
    /// Dropping this end wakes the thread's poll (hang-up) and makes it exit.
    stop: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
}

impl ScopeReaper {
    /// Starts reaping `airlock run` scopes under the cgroup2 `mount`; run records are removed
    /// from `state_dir`. Sweeps once before returning.
    pub fn spawn(mount: PathBuf, state_dir: PathBuf) -> Result<ScopeReaper, WatchError> {
        // Without inotify the periodic sweep still does the job, only later.
        let ino = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok();
        let (stop, stop_rx) = UnixStream::pair().map_err(WatchError::Thread)?;
        let mut reaper = Reaper {
            ino,
            mount,
            state_dir,
        };
        reaper.rearm_and_sweep();
        let thread = std::thread::Builder::new()
            .name("scope-reaper".into())
            .spawn(move || reaper.run(stop_rx))
            .map_err(WatchError::Thread)?;
        Ok(ScopeReaper {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for ScopeReaper {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Reaper {
    ino: Option<Inotify>,
    mount: PathBuf,
    state_dir: PathBuf,
}

impl Reaper {
    /// (Re)adds the watches (adding an existing watch again is a no-op) and sweeps. Watching
    /// before sweeping means a change during the sweep wakes the next round.
    fn rearm_and_sweep(&mut self) {
        if let Some(ino) = &self.ino {
            let dirs = AddWatchFlags::IN_CREATE | AddWatchFlags::IN_ONLYDIR;
            // The mount root: for the slice's own creation.
            let _ = ino.add_watch(&self.mount, dirs);
            let slice = self.mount.join(SLICE);
            if ino.add_watch(&slice, dirs).is_ok()
                && let Ok(listing) = std::fs::read_dir(&slice)
            {
                for e in listing.flatten() {
                    let is_run_scope = e
                        .file_name()
                        .to_str()
                        .is_some_and(|n| run_scope_creator(n).is_some());
                    if is_run_scope {
                        let _ = ino
                            .add_watch(&e.path().join("cgroup.events"), AddWatchFlags::IN_MODIFY);
                    }
                }
            }
        }
        sweep(&self.mount, &self.state_dir);
    }

    fn run(mut self, mut stop: UnixStream) {
        let timeout = i32::try_from(REAP_SWEEP.as_millis()).unwrap_or(i32::MAX);
        loop {
            let mut fds = vec![libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            if let Some(ino) = &self.ino {
                fds.push(libc::pollfd {
                    fd: ino.as_fd().as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            // SAFETY: fds is a valid array of fds.len() pollfds that outlives the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 && Errno::last() != Errno::EINTR {
                std::thread::sleep(REAP_SWEEP);
            }
            if fds[0].revents != 0 {
                let mut b = [0u8; 1];
                // Hang-up or anything written: the owner wants us gone.
                let _ = stop.read(&mut b);
                return;
            }
            if let Some(ino) = &self.ino {
                // Only the wake-up matters; the sweep looks at everything.
                while matches!(ino.read_events(), Ok(ev) if !ev.is_empty()) {}
            }
            self.rearm_and_sweep();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creator_pid_is_read_only_from_airlock_run_scope_names() {
        assert_eq!(
            run_scope_creator("airlock-claude-1234x1f.scope"),
            Some(1234)
        );
        assert_eq!(run_scope_creator("airlock-my-agent-77xabc.scope"), Some(77));
        for other in [
            "airlock-claude.scope",
            "airlock--1x1.scope",
            "airlock-claude-1234x.scope",
            "airlock-claude-1234xzz.scope",
            "airlock-claude-0x1.scope",
            "airlock-claude-1234x1f.service",
            "session-3.scope",
            "airlock-claude-ax1.scope",
        ] {
            assert_eq!(run_scope_creator(other), None, "{other}");
        }
    }

    #[test]
    fn run_scope_names_from_airlock_run_are_recognised() {
        let path =
            crate::cli::run::scope_cgroup_path("claude", &format!("{}x5", std::process::id()));
        let name = path.rsplit('/').next().unwrap();
        assert_eq!(run_scope_creator(name), Some(std::process::id()));
    }

    #[test]
    fn a_zombie_creator_counts_as_gone() {
        assert!(process_lives(std::process::id()));
        assert!(!process_lives(1 << 23));
        let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pid = child.id();
        // Not reaped yet: a zombie once it has exited.
        let t = std::time::Instant::now();
        while process_lives(pid) && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!process_lives(pid), "exited child still counts as alive");
        child.wait().unwrap();
    }

    #[test]
    fn populated_line_decides_emptiness() {
        assert!(events_say_empty("populated 0\nfrozen 0\n"));
        assert!(!events_say_empty("populated 1\nfrozen 0\n"));
        assert!(!events_say_empty(""));
    }

    /// A plain directory tree stands in for cgroupfs: what is checked is which scopes the
    /// sweep picks (and that it drops their run records), not the kernel's rmdir.
    #[test]
    fn sweep_removes_only_empty_scopes_whose_creator_is_gone() {
        let mount = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let slice = mount.path().join(SLICE);
        // A pid that cannot exist (above pid_max's ceiling of 2^22).
        let dead = 1u32 << 23;
        let mk = |name: &str, events: Option<&str>| {
            let d = slice.join(name);
            std::fs::create_dir_all(&d).unwrap();
            if let Some(text) = events {
                std::fs::write(d.join("cgroup.events"), text).unwrap();
            }
            d
        };
        let orphan_name = format!("airlock-a-{dead}x1.scope");
        let orphan = mk(&orphan_name, Some("populated 0\nfrozen 0\n"));
        let busy = mk(
            &format!("airlock-a-{dead}x2.scope"),
            Some("populated 1\nfrozen 0\n"),
        );
        let unknown = mk(&format!("airlock-a-{dead}x3.scope"), None);
        let alive = mk(
            &format!("airlock-a-{}x4.scope", std::process::id()),
            Some("populated 0\n"),
        );
        let foreign = mk("user-1000.slice", Some("populated 0\n"));
        let record = crate::paths::run_record(state.path(), &orphan_name);
        std::fs::create_dir_all(record.parent().unwrap()).unwrap();
        std::fs::write(&record, "{}").unwrap();
        let rm =
            |d: &Path| std::fs::remove_dir_all(d).map_err(|e| crate::cgroup::CgroupError::io(d, e));
        assert_eq!(
            sweep_with(mount.path(), state.path(), rm),
            std::slice::from_ref(&orphan)
        );
        assert!(!orphan.exists() && !record.exists());
        for kept in [&busy, &unknown, &alive, &foreign] {
            assert!(kept.exists(), "{}", kept.display());
        }
        assert!(sweep_with(mount.path(), state.path(), rm).is_empty());
    }
}
