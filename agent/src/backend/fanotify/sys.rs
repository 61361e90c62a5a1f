//! Thin wrappers over the fanotify, inotify and file syscalls the backend uses, and
//! [`Permission`]: one pending permission event that is answered exactly once.
//!
//! libc is used directly rather than nix's `Fanotify` because the backend needs to own each
//! event's fd past the read (a held `approve` decision keeps it), to read into a reusable buffer,
//! and to mark through `/proc/self/fd/N` paths.
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use airlock_common::{InodeKey, kernel_dev};

/// Events an exec-gated binary's inode is marked for.
pub(crate) const MASK_EXEC: u64 = libc::FAN_OPEN_EXEC_PERM;
/// Events a regular file inside a protected tree (or a protected single file) is marked for.
/// `FAN_OPEN_EXEC_PERM` is there so that an exec open announces itself before its
/// `FAN_OPEN_PERM`: the listener then knows that open is an exec without reading
/// `/proc/<tid>/syscall`, which would block on the exec'ing task's `cred_guard_mutex`.
pub(crate) const MASK_FILE: u64 = libc::FAN_OPEN_PERM | libc::FAN_OPEN_EXEC_PERM;
/// Events a directory inside a protected tree is marked for: opens of its children (not of the
/// directory itself: no `FAN_ONDIR`).
pub(crate) const MASK_DIR: u64 = MASK_FILE | libc::FAN_EVENT_ON_CHILD;

/// What the listener answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response {
    Allow,
    Deny,
}

impl Response {
    fn raw(self) -> u32 {
        match self {
            Response::Allow => libc::FAN_ALLOW,
            Response::Deny => libc::FAN_DENY,
        }
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cstr(p: &OsStr) -> io::Result<CString> {
    CString::new(p.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Creates the fanotify group: content class (permission events), unlimited queue and marks,
/// the reporting thread's id rather than its process id (`/proc/<tid>/syscall` must be the
/// blocked thread's), non-blocking reads (the listener polls).
pub(crate) fn fanotify_init() -> io::Result<OwnedFd> {
    let flags = libc::FAN_CLASS_CONTENT
        | libc::FAN_CLOEXEC
        | libc::FAN_NONBLOCK
        | libc::FAN_UNLIMITED_QUEUE
        | libc::FAN_UNLIMITED_MARKS
        | libc::FAN_REPORT_TID;
    // O_NONBLOCK on the event fds: the kernel opens one for every event, and a FIFO in a
    // protected directory opened O_RDONLY without it would wait for a writer, which is the very
    // process waiting for our answer.
    let event_flags = libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: plain syscall with integer arguments.
    let fd = cvt(unsafe { libc::fanotify_init(flags, event_flags as libc::c_uint) })?;
    // SAFETY: fanotify_init returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `/proc/self/fd/N`: a path that resolves (through the magic link) to exactly the object `fd`
/// refers to, so that marking by path cannot race with a rename.
pub(crate) fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Adds (`add`) or removes `mask` on the inode `target` refers to.
pub(crate) fn mark(
    group: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
    mask: u64,
    add: bool,
) -> io::Result<()> {
    let path = cstr(fd_path(target).as_os_str())?;
    let op = if add {
        libc::FAN_MARK_ADD
    } else {
        libc::FAN_MARK_REMOVE
    };
    // SAFETY: valid fd and NUL-terminated path.
    cvt(unsafe {
        libc::fanotify_mark(
            group.as_raw_fd(),
            op | libc::FAN_MARK_INODE,
            mask,
            libc::AT_FDCWD,
            path.as_ptr(),
        )
    })
    .map(drop)
}

/// `openat(dir, name, flags | O_CLOEXEC | O_NOFOLLOW?)`; `dir` `None` means the path is absolute.
pub(crate) fn open_at(
    dir: Option<BorrowedFd<'_>>,
    name: &Path,
    flags: libc::c_int,
) -> io::Result<OwnedFd> {
    let c = cstr(name.as_os_str())?;
    let dirfd = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: valid dirfd and NUL-terminated path.
    let fd = cvt(unsafe { libc::openat(dirfd, c.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: new fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Identity and type of a filesystem object, with the kernel's `s_dev` encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    pub key: InodeKey,
    /// `st_mode & S_IFMT`.
    pub kind: u32,
    pub nlink: u64,
}

impl FileId {
    fn from_stat(st: libc::stat) -> FileId {
        FileId {
            key: inode_key(st.st_dev, st.st_ino),
            kind: st.st_mode & libc::S_IFMT,
            nlink: st.st_nlink,
        }
    }
    pub fn is_dir(&self) -> bool {
        self.kind == libc::S_IFDIR
    }
    pub fn is_reg(&self) -> bool {
        self.kind == libc::S_IFREG
    }
}

/// Converts `stat`'s `st_dev` to the kernel's `s_dev` encoding used in every key.
pub fn inode_key(st_dev: libc::dev_t, ino: u64) -> InodeKey {
    InodeKey {
        ino,
        dev: kernel_dev(libc::major(st_dev), libc::minor(st_dev)),
        slot: 0,
    }
}

/// fstat.
pub(crate) fn fstat(fd: BorrowedFd<'_>) -> io::Result<FileId> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: st is a valid out-pointer.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded and filled st.
    Ok(FileId::from_stat(unsafe { st.assume_init() }))
}

/// lstat (never follows the last component).
pub(crate) fn lstat(path: &Path) -> io::Result<FileId> {
    let c = cstr(path.as_os_str())?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: NUL-terminated path and valid out-pointer.
    cvt(unsafe { libc::lstat(c.as_ptr(), st.as_mut_ptr()) })?;
    // SAFETY: lstat succeeded and filled st.
    Ok(FileId::from_stat(unsafe { st.assume_init() }))
}

/// The path an fd was opened through, as the kernel prints it (`readlink /proc/self/fd/N`).
pub(crate) fn fd_target(fd: BorrowedFd<'_>) -> Option<PathBuf> {
    std::fs::read_link(fd_path(fd)).ok()
}

/// CLOCK_BOOTTIME in nanoseconds, the clock the LSM backend stamps events with.
pub(crate) fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// A pipe whose write end is closed to stop the backend's threads: closing makes the read end
/// readable (EOF) for every thread polling it, which one eventfd read could not do for two.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: valid out-array of two ints.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
    // SAFETY: pipe2 returned two new fds.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Makes the read end of a [`pipe`] readable for every poller without closing the write end:
/// a forked child may hold a copy of the write end (until its exec), which would keep a mere
/// close from ever reading as EOF.
pub(crate) fn poke(fd: BorrowedFd<'_>) {
    // SAFETY: writing one byte from a static buffer.
    unsafe { libc::write(fd.as_raw_fd(), b"x".as_ptr().cast(), 1) };
}

/// Waits until `fd` is readable or `stop` is readable/hung up. Returns false when stopping.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, stop: BorrowedFd<'_>) -> bool {
    let mut pfds = [
        libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: valid array of two pollfds.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return false;
        }
        if pfds[1].revents != 0 {
            return false;
        }
        return true;
    }
}

/// read(2) into `buf`; `Ok(0)` means nothing was ready.
pub(crate) fn read_some(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for buf.len() bytes.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(0),
            _ => Err(e),
        };
    }
    Ok(n as usize)
}

/// One event record from the fanotify fd.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawEvent {
    pub mask: u64,
    pub fd: RawFd,
    /// Thread id (the group reports TIDs).
    pub tid: i32,
    pub version_ok: bool,
}

/// Splits a buffer read from the fanotify fd into records (whole records only).
pub(crate) fn parse_events(buf: &[u8]) -> Vec<RawEvent> {
    let hdr = std::mem::size_of::<libc::fanotify_event_metadata>();
    let mut out = Vec::new();
    let mut off = 0;
    while off + hdr <= buf.len() {
        // SAFETY: at least `hdr` bytes remain; read_unaligned copes with any alignment.
        let m: libc::fanotify_event_metadata =
            unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
        let len = m.event_len as usize;
        out.push(RawEvent {
            mask: m.mask,
            fd: m.fd,
            tid: m.pid,
            version_ok: m.vers == libc::FANOTIFY_METADATA_VERSION,
        });
        if len < hdr {
            break;
        }
        off += len;
    }
    out
}

/// A permission event that has not been answered yet: its fd, and the group to answer through.
///
/// It is answered exactly once: by [`Permission::respond`], or on drop with its fallback
/// (including while unwinding from a panic), because an unanswered permission event leaves the
/// opening task waiting for as long as the group lives. It is `Send`, so that a later milestone
/// can park it while a human decides and answer from another thread.
pub struct Permission {
    group: Arc<OwnedFd>,
    fd: Option<OwnedFd>,
    fallback: Response,
}

impl Permission {
    /// Takes ownership of an event fd the kernel installed in our table.
    pub(crate) fn new(group: Arc<OwnedFd>, fd: RawFd) -> Permission {
        // SAFETY: the kernel installed `fd` for this event and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Permission {
            group,
            fd: Some(fd),
            fallback: Response::Allow,
        }
    }

    /// The event's fd: the object being opened, opened read-only for us.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd
            .as_ref()
            .expect("answered permission has no fd")
            .as_fd()
    }

    /// What is answered if this is dropped unanswered.
    pub fn set_fallback(&mut self, r: Response) {
        self.fallback = r;
    }

    /// Answers the event and closes its fd.
    pub fn respond(mut self, r: Response) {
        self.finish(r);
    }

    fn finish(&mut self, r: Response) {
        if let Some(fd) = self.fd.take() {
            let resp = libc::fanotify_response {
                fd: fd.as_raw_fd(),
                response: r.raw(),
            };
            // SAFETY: writing a plain struct of the size the kernel expects. ENOENT (the task
            // was killed while waiting and the kernel dropped the event) needs no handling.
            unsafe {
                libc::write(
                    self.group.as_raw_fd(),
                    (&resp as *const libc::fanotify_response).cast(),
                    std::mem::size_of::<libc::fanotify_response>(),
                )
            };
            drop(fd);
        }
    }
}

impl Drop for Permission {
    fn drop(&mut self) {
        let r = self.fallback;
        self.finish(r);
    }
}

/// Creates the inotify instance that follows protected trees and gated paths.
pub(crate) fn inotify_init() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall.
    let fd = cvt(unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) })?;
    // SAFETY: new fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What every watched directory reports: entries appearing (created, moved in, hard-linked) and
/// attribute/link-count changes of entries (a gated name re-pointed).
pub(crate) const WATCH_MASK: u32 =
    libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_ATTRIB | libc::IN_ONLYDIR | libc::IN_EXCL_UNLINK;

/// Watches the directory `dir` refers to; returns the watch descriptor.
pub(crate) fn inotify_watch(ino: BorrowedFd<'_>, dir: BorrowedFd<'_>) -> io::Result<i32> {
    let path = cstr(fd_path(dir).as_os_str())?;
    // SAFETY: valid fd and NUL-terminated path.
    cvt(unsafe { libc::inotify_add_watch(ino.as_raw_fd(), path.as_ptr(), WATCH_MASK) })
}

/// Removes a watch (errors mean it is gone already).
pub(crate) fn inotify_unwatch(ino: BorrowedFd<'_>, wd: i32) {
    // SAFETY: plain syscall.
    unsafe { libc::inotify_rm_watch(ino.as_raw_fd(), wd) };
}

/// One inotify record.
#[derive(Clone, Debug)]
pub(crate) struct InotifyEvent {
    pub wd: i32,
    pub mask: u32,
    pub name: Option<std::ffi::OsString>,
}

/// Splits a buffer read from the inotify fd into records.
pub(crate) fn parse_inotify(buf: &[u8]) -> Vec<InotifyEvent> {
    let hdr = std::mem::size_of::<libc::inotify_event>();
    let mut out = Vec::new();
    let mut off = 0;
    while off + hdr <= buf.len() {
        // SAFETY: at least `hdr` bytes remain; read_unaligned copes with any alignment.
        let e: libc::inotify_event =
            unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
        let end = (off + hdr + e.len as usize).min(buf.len());
        let raw = &buf[off + hdr..end];
        let name_len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let name = (name_len > 0).then(|| OsStr::from_bytes(&raw[..name_len]).to_owned());
        out.push(InotifyEvent {
            wd: e.wd,
            mask: e.mask,
            name,
        });
        off = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fanotify_records_are_split_by_event_len() {
        let one = libc::fanotify_event_metadata {
            event_len: std::mem::size_of::<libc::fanotify_event_metadata>() as u32,
            vers: libc::FANOTIFY_METADATA_VERSION,
            reserved: 0,
            metadata_len: 24,
            mask: libc::FAN_OPEN_PERM,
            fd: 7,
            pid: 42,
        };
        let mut buf = Vec::new();
        for _ in 0..2 {
            // SAFETY: bytes of a POD struct.
            buf.extend_from_slice(unsafe {
                std::slice::from_raw_parts(
                    (&one as *const libc::fanotify_event_metadata).cast::<u8>(),
                    24,
                )
            });
        }
        buf.extend_from_slice(&[0u8; 5]); // a partial record is ignored
        let evs = parse_events(&buf);
        assert_eq!(evs.len(), 2);
        assert!(
            evs.iter()
                .all(|e| e.fd == 7 && e.tid == 42 && e.version_ok && e.mask == libc::FAN_OPEN_PERM)
        );
    }

    #[test]
    fn inotify_names_lose_their_nul_padding() {
        let mut buf = Vec::new();
        for (wd, name) in [(1i32, &b"bin"[..]), (2, &b""[..])] {
            let padded = if name.is_empty() { 0 } else { 16 };
            buf.extend_from_slice(&wd.to_ne_bytes());
            buf.extend_from_slice(&libc::IN_CREATE.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&(padded as u32).to_ne_bytes());
            let mut n = name.to_vec();
            n.resize(padded, 0);
            buf.extend_from_slice(&n);
        }
        let evs = parse_inotify(&buf);
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].name.as_deref(), Some(OsStr::new("bin")));
        assert_eq!((evs[1].wd, evs[1].name.as_deref()), (2, None));
    }

    #[test]
    fn st_dev_is_converted_to_the_kernel_encoding() {
        let k = inode_key(libc::makedev(254, 3), 9);
        assert_eq!((k.dev, k.ino), ((254 << 20) | 3, 9));
    }
}
