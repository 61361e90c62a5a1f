//! cgroup v2 plumbing: finding the cgroup2 mount, cgroup ids, a process's cgroup, creating and
//! removing cgroups.
//!
//! Paths called "cgroup paths" here are relative to the cgroup2 mount and start with `/` (the
//! form `/proc/PID/cgroup` uses); [`cgroup_dir`] turns one into a directory under the mount.
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

mod dir;

pub use dir::{
    CgroupDir, KILL_TIMEOUT, add_pid, kill_tree, kill_tree_by_signal, procs_recursive, remove_tree,
};

/// Errors from cgroup operations.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// cgroup v2 is not mounted (a v1-only host).
    #[error("no cgroup2 mount found in /proc/self/mountinfo")]
    NoCgroup2,
    /// A file operation on `path` failed (NotFound for a process or cgroup that is gone).
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `/proc/PID/cgroup` has no `0::` line.
    #[error("process {pid} has no cgroup v2 entry in /proc/{pid}/cgroup")]
    NoV2Entry { pid: u32 },
    /// [`CgroupDir::create`] found the cgroup already there.
    #[error("{path}: already exists (refusing to adopt a cgroup this guard did not create)")]
    Exists { path: PathBuf },
    /// Killing did not empty the cgroup in time.
    #[error("{path}: processes still running after {timeout:?} of killing")]
    StillPopulated {
        path: PathBuf,
        timeout: std::time::Duration,
    },
}

impl CgroupError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CgroupError::Io {
            path: path.into(),
            source,
        }
    }
}

/// One line of `/proc/self/mountinfo`, the fields we need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// Root of the mount within its filesystem (field 4). For cgroup2 this is the cgroup the
    /// mount shows, relative to the reader's cgroup namespace.
    pub root: PathBuf,
    /// Where it is mounted (field 5), octal escapes (`\040`) decoded.
    pub mount_point: PathBuf,
    /// Filesystem type (first field after the ` - ` separator).
    pub fstype: String,
}

/// Parses the text of `/proc/*/mountinfo`. Malformed lines are skipped rather than failing the
/// whole parse: one odd mount must not hide the cgroup2 one.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let fields: Vec<&str> = line.split(' ').collect();
    // The optional fields (shared:N, master:N, ...) vary in number; a lone "-" ends them.
    let sep = fields.iter().skip(6).position(|f| *f == "-")? + 6;
    let fstype = fields.get(sep + 1)?;
    Some(MountEntry {
        root: PathBuf::from(unescape_octal(fields[3])),
        mount_point: PathBuf::from(unescape_octal(fields[4])),
        fstype: unescape_octal(fstype).to_string_lossy().into_owned(),
    })
}

/// Decodes the kernel's `\ooo` escapes (space, tab, newline and backslash are escaped in
/// mountinfo); anything else passes through byte for byte.
fn unescape_octal(s: &str) -> std::ffi::OsString {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
            if v <= 0xff {
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    OsStr::from_bytes(&out).to_owned()
}

/// Picks the cgroup2 mount out of parsed mountinfo. A mount of the whole hierarchy (root `/`)
/// is preferred over a bind mount of a sub-cgroup, because cgroup paths from `/proc/PID/cgroup`
/// are relative to the whole hierarchy.
pub fn find_cgroup2_mount(entries: &[MountEntry]) -> Option<PathBuf> {
    let v2 = || entries.iter().filter(|e| e.fstype == "cgroup2");
    v2().find(|e| e.root == Path::new("/"))
        .or_else(|| v2().next())
        .map(|e| e.mount_point.clone())
}

/// The cgroup2 mount point, read from /proc/self/mountinfo (it is not always /sys/fs/cgroup:
/// hybrid hosts mount it at /sys/fs/cgroup/unified).
pub fn cgroup2_mount() -> Result<PathBuf, CgroupError> {
    let path = "/proc/self/mountinfo";
    let text = std::fs::read_to_string(path).map_err(|e| CgroupError::io(path, e))?;
    find_cgroup2_mount(&parse_mountinfo(&text)).ok_or(CgroupError::NoCgroup2)
}

/// A cgroup's id: the inode number of its directory in cgroupfs (what
/// `bpf_get_current_cgroup_id` returns).
pub fn cgroup_id(dir: &Path) -> Result<u64, CgroupError> {
    // lstat: cgroupfs has no symlinks, and following one elsewhere would give a wrong identity.
    std::fs::symlink_metadata(dir)
        .map(|m| m.ino())
        .map_err(|e| CgroupError::io(dir, e))
}

/// The cgroup v2 path of `pid` relative to the cgroup2 mount, with a leading `/`.
///
/// Assumes the mount shows the whole hierarchy (mountinfo root `/`), as every normal host and
/// container setup does; paths are as seen from this process's cgroup namespace. A trailing
/// ` (deleted)` (the kernel's marker for a removed cgroup, seen for zombies) is dropped.
/// Non-UTF-8 names are converted lossily; use [`pid_cgroup_path_bytes`] for an exact path.
pub fn pid_cgroup_path(pid: u32) -> Result<String, CgroupError> {
    pid_cgroup_path_bytes(pid).map(|p| String::from_utf8_lossy(&p).into_owned())
}

/// Like [`pid_cgroup_path`], byte-exact: a cgroup name need not be UTF-8, and a lossy name would
/// point at a different (or no) directory.
pub fn pid_cgroup_path_bytes(pid: u32) -> Result<Vec<u8>, CgroupError> {
    let path = format!("/proc/{pid}/cgroup");
    let text = std::fs::read(&path).map_err(|e| CgroupError::io(path, e))?;
    parse_proc_cgroup(&text)
        .map(<[u8]>::to_vec)
        .ok_or(CgroupError::NoV2Entry { pid })
}

const DELETED_SUFFIX: &[u8] = b" (deleted)";

/// Extracts the cgroup v2 path from the text of `/proc/PID/cgroup` (the `0::/path` line; hybrid
/// hosts also list v1 hierarchies, which are ignored). Strips the ` (deleted)` suffix.
pub fn parse_proc_cgroup(text: &[u8]) -> Option<&[u8]> {
    text.split(|b| *b == b'\n').find_map(|line| {
        let path = line.strip_prefix(b"0::")?;
        let path = path.strip_suffix(DELETED_SUFFIX).unwrap_or(path);
        path.starts_with(b"/").then_some(path)
    })
}

/// The directory of cgroup path `path` (leading `/`) under `mount`.
pub fn cgroup_dir(mount: &Path, path: impl AsRef<OsStr>) -> PathBuf {
    let rel = path.as_ref().as_bytes();
    let rel = rel.strip_prefix(b"/").unwrap_or(rel);
    if rel.is_empty() {
        mount.to_path_buf()
    } else {
        mount.join(OsStr::from_bytes(rel))
    }
}

/// The cgroup path (leading `/`) of directory `dir` under `mount`, or `None` if `dir` is not
/// below `mount`.
pub fn cgroup_path_of(mount: &Path, dir: &Path) -> Option<String> {
    let rel = dir.strip_prefix(mount).ok()?;
    Some(format!("/{}", rel.to_string_lossy()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime shared:9 master:3 - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn mountinfo_finds_cgroup2_on_hybrid_host_not_v1_or_tmpfs() {
        let m = find_cgroup2_mount(&parse_mountinfo(HYBRID));
        assert_eq!(m, Some(PathBuf::from("/sys/fs/cgroup/unified")));
    }

    #[test]
    fn mountinfo_handles_optional_fields_of_any_count() {
        let e = parse_mountinfo(HYBRID);
        assert_eq!(e.len(), 5);
        assert_eq!(e[3].fstype, "cgroup");
        assert_eq!(e[4].fstype, "cgroup2");
        assert_eq!(e[0].mount_point, Path::new("/proc"));
    }

    #[test]
    fn mountinfo_decodes_octal_escapes_in_mount_point() {
        let text = "50 1 0:40 / /mnt/my\\040cg\\011x\\134y rw - cgroup2 none rw\n";
        let m = find_cgroup2_mount(&parse_mountinfo(text)).unwrap();
        assert_eq!(m, Path::new("/mnt/my cg\tx\\y"));
    }

    #[test]
    fn mountinfo_leaves_non_escape_backslashes_alone() {
        assert_eq!(unescape_octal("a\\9b\\04"), "a\\9b\\04");
        assert_eq!(unescape_octal("end\\"), "end\\");
    }

    #[test]
    fn mountinfo_skips_malformed_lines() {
        let text = "garbage\n1 2 3\n41 31 0:38 / /cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            find_cgroup2_mount(&parse_mountinfo(text)),
            Some(PathBuf::from("/cg"))
        );
    }

    #[test]
    fn mountinfo_prefers_whole_hierarchy_over_bind_mount_of_subtree() {
        let text = "\
60 1 0:38 /sub /bound rw - cgroup2 cgroup2 rw
61 1 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            find_cgroup2_mount(&parse_mountinfo(text)),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
    }

    #[test]
    fn mountinfo_without_cgroup2_gives_none() {
        let text = "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(find_cgroup2_mount(&parse_mountinfo(text)), None);
    }

    #[test]
    fn proc_cgroup_picks_v2_line_among_v1_lines() {
        let text = b"9:name=systemd:/\n4:memory:/process_api/36f5\n0::/airlock.slice/a.scope\n";
        assert_eq!(
            parse_proc_cgroup(text),
            Some(&b"/airlock.slice/a.scope"[..])
        );
    }

    #[test]
    fn proc_cgroup_root_and_missing_v2() {
        assert_eq!(parse_proc_cgroup(b"0::/\n"), Some(&b"/"[..]));
        assert_eq!(parse_proc_cgroup(b"1:cpu:/\n"), None);
        assert_eq!(parse_proc_cgroup(b""), None);
    }

    #[test]
    fn proc_cgroup_strips_deleted_marker() {
        assert_eq!(
            parse_proc_cgroup(b"0::/a/b (deleted)\n"),
            Some(&b"/a/b"[..])
        );
    }

    #[test]
    fn proc_cgroup_keeps_spaces_and_non_utf8_bytes() {
        assert_eq!(
            parse_proc_cgroup(b"0::/a b/\xffc\n"),
            Some(&b"/a b/\xffc"[..])
        );
    }

    #[test]
    fn cgroup_dir_and_path_round_trip() {
        let m = Path::new("/sys/fs/cgroup/unified");
        assert_eq!(cgroup_dir(m, "/"), m);
        assert_eq!(cgroup_dir(m, "/a/b"), m.join("a/b"));
        assert_eq!(cgroup_path_of(m, &m.join("a/b")).as_deref(), Some("/a/b"));
        assert_eq!(cgroup_path_of(m, m).as_deref(), Some("/"));
        assert_eq!(cgroup_path_of(m, Path::new("/elsewhere")), None);
    }

    #[test]
    fn cgroup_id_is_directory_inode() {
        let d = tempfile::tempdir().unwrap();
        let ino = std::fs::metadata(d.path()).unwrap().ino();
        assert_eq!(cgroup_id(d.path()).unwrap(), ino);
        assert!(matches!(
            cgroup_id(&d.path().join("nope")),
            Err(CgroupError::Io { .. })
        ));
    }

    #[test]
    fn pid_cgroup_path_of_self_starts_with_slash() {
        // Every Linux host with cgroup2 mounted lists a 0:: line; hosts without it give the error.
        match pid_cgroup_path(std::process::id()) {
            Ok(p) => assert!(p.starts_with('/'), "{p}"),
            Err(e) => assert!(matches!(e, CgroupError::NoV2Entry { .. }), "{e}"),
        }
    }
}
