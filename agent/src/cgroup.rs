//! cgroup v2 plumbing: finding the cgroup2 mount, cgroup ids, a process's cgroup, creating and
//! removing cgroups. (Owned by the cgroup work; signatures are the contract.)
use std::path::{Path, PathBuf};

/// Errors from cgroup operations.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup2 mount found in /proc/self/mountinfo")]
    NoCgroup2,
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("process {pid} has no cgroup v2 entry in /proc/{pid}/cgroup")]
    NoV2Entry { pid: u32 },
}

/// The cgroup2 mount point, read from /proc/self/mountinfo (it is not always /sys/fs/cgroup).
pub fn cgroup2_mount() -> Result<PathBuf, CgroupError> {
    todo!()
}

/// A cgroup's id: the inode number of its directory in cgroupfs (what
/// `bpf_get_current_cgroup_id` returns).
pub fn cgroup_id(dir: &Path) -> Result<u64, CgroupError> {
    let _ = dir;
    todo!()
}

/// The cgroup v2 path of `pid` relative to the cgroup2 mount, with a leading `/`.
pub fn pid_cgroup_path(pid: u32) -> Result<String, CgroupError> {
    let _ = pid;
    todo!()
}
