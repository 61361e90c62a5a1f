//! Creating, emptying and removing cgroup directories, and [`CgroupDir`], a guard that removes
//! its cgroup (and everything below) when dropped.
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::CgroupError;

/// How long [`CgroupDir`]'s drop and [`kill_tree`] callers wait for killed processes to exit.
pub const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// How often to retry while waiting for the kernel to finish tearing processes down.
const POLL: Duration = Duration::from_millis(5);

/// A cgroup directory this process created; dropping it kills what is left inside (unless told
/// not to) and removes it, its descendants (deepest first) and the parents it had to create.
///
/// Drop never panics; failures are logged with `tracing::warn!` and the directory stays (a
/// cgroup with live processes cannot be removed).
#[derive(Debug)]
pub struct CgroupDir {
    path: PathBuf,
    /// Ancestors that did not exist and were created along with `path`, deepest first.
    created_parents: Vec<PathBuf>,
    kill_on_drop: bool,
    disarmed: bool,
}

impl CgroupDir {
    /// Creates cgroup `path` and any missing parents (mkdir -p). `path` itself must not exist:
    /// a guard that deletes on drop must not adopt somebody else's cgroup.
    pub fn create(path: impl Into<PathBuf>) -> Result<CgroupDir, CgroupError> {
        let path = path.into();
        let mut created_parents: Vec<PathBuf> = Vec::new();
        // A parent we found may be removed under us by another guard that created it (it was
        // empty for an instant); mkdir then says ENOENT and creating the parents again fixes it.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let made = match mkdir_parents(&path) {
                Ok(made) => made,
                Err(e) => {
                    remove_dirs_if_empty(&created_parents);
                    return Err(e);
                }
            };
            for p in made {
                if !created_parents.contains(&p) {
                    created_parents.push(p);
                }
            }
            created_parents.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
            match fs::create_dir(&path) {
                Ok(()) => {
                    return Ok(CgroupDir {
                        path,
                        created_parents,
                        kill_on_drop: true,
                        disarmed: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < 5 => continue,
                Err(e) => {
                    remove_dirs_if_empty(&created_parents);
                    return Err(if e.kind() == io::ErrorKind::AlreadyExists {
                        CgroupError::Exists { path }
                    } else {
                        CgroupError::io(path, e)
                    });
                }
            }
        }
    }

    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cgroup's id (its directory's inode).
    pub fn id(&self) -> Result<u64, CgroupError> {
        super::cgroup_id(&self.path)
    }

    /// Whether drop kills processes left inside (default `true`). With `false`, drop leaves a
    /// still-populated cgroup in place instead of killing.
    pub fn set_kill_on_drop(&mut self, kill: bool) {
        self.kill_on_drop = kill;
    }

    /// Creates (mkdir -p) a cgroup below this one, removed along with it.
    pub fn create_child(&self, rel: impl AsRef<Path>) -> Result<PathBuf, CgroupError> {
        let p = self.path.join(rel);
        fs::create_dir_all(&p).map_err(|e| CgroupError::io(&p, e))?;
        Ok(p)
    }

    /// Moves process `pid` (all its threads) into this cgroup.
    pub fn add_pid(&self, pid: u32) -> Result<(), CgroupError> {
        add_pid(&self.path, pid)
    }

    /// The processes directly in this cgroup (not in its descendants).
    pub fn procs(&self) -> Result<Vec<u32>, CgroupError> {
        read_procs(&self.path)
    }

    /// Whether any process is in this cgroup or below it.
    pub fn is_populated(&self) -> Result<bool, CgroupError> {
        is_populated(&self.path)
    }

    /// Kills every process in this cgroup and below, and waits (up to [`KILL_TIMEOUT`]) until
    /// they are gone. See [`kill_tree`].
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        kill_tree(&self.path, KILL_TIMEOUT)
    }

    /// Removes the cgroup now, reporting failure (drop only logs it). Kills leftovers first
    /// when kill-on-drop is set.
    pub fn remove(mut self) -> Result<(), CgroupError> {
        self.disarmed = true;
        if self.kill_on_drop {
            kill_tree(&self.path, KILL_TIMEOUT)?;
        }
        remove_tree(&self.path)?;
        remove_dirs_if_empty(&self.created_parents);
        Ok(())
    }

    /// Gives up ownership: the cgroup stays after drop. Returns its path.
    pub fn keep(mut self) -> PathBuf {
        self.disarmed = true;
        std::mem::take(&mut self.path)
    }
}

impl Drop for CgroupDir {
    fn drop(&mut self) {
        if self.disarmed {
            return;
        }
        if self.kill_on_drop {
            if let Err(e) = kill_tree(&self.path, KILL_TIMEOUT) {
                tracing::warn!("cgroup cleanup: {e}");
            }
        } else if is_populated(&self.path).unwrap_or(false) {
            // Someone chose to let processes outlive us; their cgroup must stay so they remain
            // identifiable (and gated) as agent processes.
            return;
        }
        if let Err(e) = remove_tree(&self.path) {
            tracing::warn!("cgroup cleanup: {e}");
            return;
        }
        remove_dirs_if_empty(&self.created_parents);
    }
}

/// Creates the missing ancestors of `path`, returning those it created, deepest first.
fn mkdir_parents(path: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let missing: Vec<&Path> = path
        .ancestors()
        .skip(1)
        .take_while(|p| !p.as_os_str().is_empty() && fs::symlink_metadata(p).is_err())
        .collect();
    let mut made = Vec::new();
    for dir in missing.iter().rev() {
        match fs::create_dir(dir) {
            Ok(()) => made.push(dir.to_path_buf()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                remove_dirs_if_empty(&made.iter().rev().cloned().collect::<Vec<_>>());
                return Err(CgroupError::io(dir, e));
            }
        }
    }
    made.reverse();
    Ok(made)
}

/// rmdir each, in order, ignoring failures: a shared parent (`airlock.slice`) that another
/// cgroup now lives in is not empty and must stay.
fn remove_dirs_if_empty(dirs: &[PathBuf]) {
    for d in dirs {
        let _ = fs::remove_dir(d);
    }
}

/// Moves process `pid` into the cgroup at `dir` (writes to `cgroup.procs`).
pub fn add_pid(dir: &Path, pid: u32) -> Result<(), CgroupError> {
    let procs = dir.join("cgroup.procs");
    // One pid per write(2): cgroup.procs takes exactly one per call.
    fs::OpenOptions::new()
        .write(true)
        .open(&procs)
        .and_then(|mut f| f.write_all(pid.to_string().as_bytes()))
        .map_err(|e| CgroupError::io(procs, e))
}

fn read_procs(dir: &Path) -> Result<Vec<u32>, CgroupError> {
    let procs = dir.join("cgroup.procs");
    let text = fs::read_to_string(&procs).map_err(|e| CgroupError::io(procs, e))?;
    Ok(text
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect())
}

/// Any process in `dir` or below? Read from `cgroup.events`, which counts the whole subtree.
fn is_populated(dir: &Path) -> Result<bool, CgroupError> {
    let events = dir.join("cgroup.events");
    match fs::read_to_string(&events) {
        Ok(text) => Ok(text.lines().any(|l| l.trim() == "populated 1")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // The root cgroup has no cgroup.events; fall back to listing.
            let mut any = false;
            for d in subtree_dirs(dir)? {
                any |= !read_procs(&d)?.is_empty();
            }
            Ok(any)
        }
        Err(e) => Err(CgroupError::io(events, e)),
    }
}

/// `dir` and every directory below it, parents before children (reverse for removal).
fn subtree_dirs(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let rd = match fs::read_dir(&out[i]) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound && i > 0 => {
                i += 1;
                continue;
            }
            Err(e) => return Err(CgroupError::io(&out[i], e)),
        };
        for entry in rd.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(entry.path());
            }
        }
        i += 1;
    }
    Ok(out)
}

/// Kills every process in cgroup `dir` and below and waits until none is left.
///
/// Uses `cgroup.kill` (Linux 5.14+), which also catches processes forking meanwhile; older
/// kernels get [`kill_tree_by_signal`]. The calling process must not be inside `dir`.
pub fn kill_tree(dir: &Path, timeout: Duration) -> Result<(), CgroupError> {
    let kill_file = dir.join("cgroup.kill");
    if !kill_file.exists() {
        return kill_tree_by_signal(dir, timeout);
    }
    let deadline = Instant::now() + timeout;
    fs::write(&kill_file, "1").map_err(|e| CgroupError::io(kill_file, e))?;
    wait_unpopulated(dir, deadline, timeout, || Ok(()))
}

/// The `cgroup.kill`-less way of [`kill_tree`]: freezes the subtree (`cgroup.freeze`, 5.2+, so
/// nothing forks meanwhile; SIGKILL still gets through to frozen tasks), SIGKILLs every pid
/// listed in each `cgroup.procs` until none is left, then thaws. Skips the calling process.
pub fn kill_tree_by_signal(dir: &Path, timeout: Duration) -> Result<(), CgroupError> {
    let deadline = Instant::now() + timeout;
    let freeze = dir.join("cgroup.freeze");
    // Freezing a cgroup we are in would stop us too, for good.
    let frozen = freeze.exists() && !contains_self(dir) && fs::write(&freeze, "1").is_ok();
    let result = wait_unpopulated(dir, deadline, timeout, || kill_listed(dir));
    if frozen {
        let _ = fs::write(&freeze, "0");
    }
    result
}

fn contains_self(dir: &Path) -> bool {
    let me = std::process::id();
    subtree_dirs(dir)
        .unwrap_or_default()
        .iter()
        .any(|d| read_procs(d).is_ok_and(|p| p.contains(&me)))
}

/// Runs `pass` and checks `cgroup.events` until the subtree is empty or `deadline` passes.
fn wait_unpopulated(
    dir: &Path,
    deadline: Instant,
    timeout: Duration,
    mut pass: impl FnMut() -> Result<(), CgroupError>,
) -> Result<(), CgroupError> {
    loop {
        match pass().and_then(|()| is_populated(dir)) {
            Ok(false) => return Ok(()),
            Ok(true) if Instant::now() >= deadline => {
                return Err(CgroupError::StillPopulated {
                    path: dir.to_path_buf(),
                    timeout,
                });
            }
            Ok(true) => std::thread::sleep(POLL),
            // Removed meanwhile: nothing left to kill.
            Err(CgroupError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
}

/// One pass of SIGKILL over every pid listed in the subtree (the fallback of [`kill_tree`]).
fn kill_listed(dir: &Path) -> Result<(), CgroupError> {
    let me = std::process::id();
    for d in subtree_dirs(dir)? {
        let pids = match read_procs(&d) {
            Ok(p) => p,
            Err(CgroupError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                continue;
            }
            Err(e) => return Err(e),
        };
        for pid in pids.into_iter().filter(|p| *p != me && *p != 0) {
            // ESRCH (already gone) is the goal; other errors show up as the cgroup staying populated.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    Ok(())
}

/// Removes cgroup `dir` and all cgroups below it, deepest first. A cgroup whose processes were
/// just killed can stay busy for a moment while they exit, so EBUSY is retried briefly.
/// A `dir` that does not exist is not an error.
pub fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    let dirs = match subtree_dirs(dir) {
        Ok(d) => d,
        Err(CgroupError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for d in dirs.iter().rev() {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            match fs::remove_dir(d) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(POLL);
                }
                Err(e) => return Err(CgroupError::io(d, e)),
            }
        }
    }
    Ok(())
}

/// Every process in the cgroup at `dir` and its descendants (best effort: cgroups removed
/// meanwhile are skipped).
pub fn procs_recursive(dir: &Path) -> Vec<u32> {
    subtree_dirs(dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|d| read_procs(d).ok())
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mkdir_parents_reports_only_dirs_it_created_deepest_first() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir(t.path().join("a")).unwrap();
        let made = mkdir_parents(&t.path().join("a/b/c/leaf")).unwrap();
        assert_eq!(made, vec![t.path().join("a/b/c"), t.path().join("a/b")]);
        assert!(t.path().join("a/b/c").is_dir());
        assert!(!t.path().join("a/b/c/leaf").exists());
    }

    #[test]
    fn remove_tree_removes_deepest_first_and_tolerates_missing() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("x/y/z")).unwrap();
        fs::create_dir_all(t.path().join("x/w")).unwrap();
        remove_tree(&t.path().join("x")).unwrap();
        assert!(!t.path().join("x").exists());
        remove_tree(&t.path().join("x")).unwrap();
    }

    #[test]
    fn subtree_dirs_lists_parents_before_children_and_skips_symlinks() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("a/b")).unwrap();
        std::os::unix::fs::symlink(t.path().join("a"), t.path().join("link")).unwrap();
        let d = subtree_dirs(t.path()).unwrap();
        assert_eq!(d.len(), 3, "{d:?}");
        assert_eq!(d[0], t.path());
        let ia = d.iter().position(|p| p.ends_with("a")).unwrap();
        let ib = d.iter().position(|p| p.ends_with("a/b")).unwrap();
        assert!(ia < ib);
    }

    #[test]
    fn guard_refuses_to_adopt_existing_directory() {
        let t = tempfile::tempdir().unwrap();
        let err = CgroupDir::create(t.path().to_path_buf()).unwrap_err();
        assert!(matches!(err, CgroupError::Exists { .. }), "{err}");
        assert!(t.path().exists());
    }
}
