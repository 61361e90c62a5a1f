//! Telling the agent: one line on the held process's standard error when its request opens
//! and when it closes, so that an agent's tool output says why its command stopped, how long
//! it may wait, and who decided what (an agent otherwise sees a command that hangs, then
//! EPERM).
//!
//! Written only where standard error is a pipe, a stream socket or a terminal (what an agent's
//! tool runner reads) that the process itself holds open for writing, never to a file or
//! another device: the daemon runs as root, and the agent chooses what its fd 2 is (see
//! [`write_to_stderr`]). Turned off per rule (`tellAgent: false`) or per run
//! (`airlock run --quiet`, kept in the run record).
use std::collections::{BTreeSet, HashSet};
use std::io::Write as _;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use airlock_policy::CompiledPolicy;

use crate::hold::{Herald, Release, Request, RequestState, Update};

/// Which requests are told about: rules that said `tellAgent: false` are not, nor runs
/// started with `airlock run --quiet`.
///
/// The hold table tells it of each request as it opens and right before its holders are
/// released (see [`Herald`]): after the release, a denied process may print its error and
/// exit before a line written later could reach it.
pub(crate) struct Notices {
    state_dir: PathBuf,
    quiet_rules: RwLock<HashSet<String>>,
}

impl Notices {
    /// Run records are looked up in `state_dir`.
    pub fn new(state_dir: &Path) -> Notices {
        Notices {
            state_dir: state_dir.to_path_buf(),
            quiet_rules: RwLock::default(),
        }
    }

    /// The rules of `policy` that keep quiet (called at start and on every reload).
    pub fn set_policy(&self, policy: &CompiledPolicy) {
        *self.quiet_rules.write().unwrap_or_else(|e| e.into_inner()) = policy
            .rules
            .iter()
            .filter(|r| r.approval.is_some_and(|a| !a.tell_agent))
            .map(|r| r.name.clone())
            .collect();
    }
}

impl Herald for Notices {
    /// Writes the line for `u` to every process holding the request, unless its rule or its
    /// run keeps quiet.
    fn tell(&self, u: &Update) {
        let r = match u {
            Update::Opened(r) | Update::Closed(r) => r,
        };
        let quiet_rule = r.context.rule.as_ref().is_some_and(|n| {
            (self.quiet_rules.read().unwrap_or_else(|e| e.into_inner())).contains(n)
        });
        if quiet_rule || run_is_quiet(r, &self.state_dir) {
            return;
        }
        let text = line(u, now_unix_ms());
        // One line per process: its threads share one descriptor table.
        let mut tgids: BTreeSet<u32> = r.holders.iter().map(|h| h.tgid).collect();
        if tgids.is_empty() {
            tgids.insert(r.context.tgid);
        }
        for tgid in tgids {
            if let Err(e) = write_to_stderr(tgid, &text) {
                tracing::debug!(tgid, error = %e, "not told on its stderr");
            }
        }
    }
}

/// Whether the request's run was started with `airlock run --quiet`.
fn run_is_quiet(r: &Request, state_dir: &Path) -> bool {
    let Some(unit) = r.context.unit.as_deref() else {
        return false;
    };
    crate::hold::RunRecordFile::read(state_dir, unit).is_some_and(|f| f.quiet)
}

fn now_unix_ms() -> u64 {
    crate::hold::approvals::now_unix_ms()
}

/// The line for an update (ends with a newline; one `write` of under `PIPE_BUF` bytes, so it
/// is not interleaved with the agent's own output in a pipe).
pub(crate) fn line(u: &Update, now_ms: u64) -> String {
    let mut s = match u {
        Update::Opened(r) => {
            let c = &r.context;
            let wait_s = r.deadline_unix_ms.saturating_sub(now_ms).div_ceil(1000);
            let then = match r.on_timeout {
                crate::hold::OnTimeout::Deny => "denied",
                crate::hold::OnTimeout::Allow => "allowed",
            };
            format!(
                "airlock: {} {} is held for approval by rule {} (request {}); waiting up to {}, then {} ({} UTC)",
                crate::cli::show::op_name(c.op),
                target(r),
                c.rule.as_deref().unwrap_or("?"),
                r.id,
                human_secs(wait_s),
                then,
                clock(r.deadline_unix_ms),
            )
        }
        Update::Closed(r) => {
            let what = match (r.state, r.decision.as_ref()) {
                (RequestState::Approved, Some(d)) => match d.for_ms {
                    Some(ms) => format!("approved for {}", human_secs(ms / 1000)),
                    None => "approved".to_string(),
                },
                (RequestState::TimedOut, Some(d)) if d.release == Release::Allow => {
                    "timed out; allowed by the rule".to_string()
                }
                (RequestState::TimedOut, _) => "timed out; denied by the rule".to_string(),
                (RequestState::Abandoned, _) => "abandoned".to_string(),
                (state, _) => state.as_str().to_string(),
            };
            let mut s = format!("airlock: request {} {}: {what}", r.id, target(r));
            if let Some(by) = r.decision.as_ref().and_then(|d| d.by.as_ref()) {
                let who = by
                    .principal
                    .clone()
                    .or_else(|| by.user.clone())
                    .unwrap_or_else(|| format!("uid {}", by.uid));
                s += &format!(" by {who} via {}", by.via);
            }
            if let Some(reason) = r.decision.as_ref().and_then(|d| d.reason.as_deref()) {
                s += &format!(": {reason}");
            }
            s
        }
    };
    // One line, whatever the reason or path held: control characters would let a reason
    // (typed by a person, or a path the agent chose) forge more lines in the agent's output.
    s = s
        .chars()
        .map(|ch| if ch.is_control() { ' ' } else { ch })
        .collect();
    let mut cut = s.len().min(MAX_LINE - 1);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s.push('\n');
    s
}

/// Longest line written (`PIPE_BUF` is 4096: a write up to that size to a pipe is atomic).
const MAX_LINE: usize = 1024;

fn target(r: &Request) -> String {
    let c = &r.context;
    c.target_path
        .clone()
        .unwrap_or_else(|| format!("dev {} ino {}", c.target_dev, c.target_ino))
}

/// "90 s", "5 min", "1 h 30 min".
fn human_secs(s: u64) -> String {
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s.div_ceil(60)),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// HH:MM:SS (UTC) of a Unix time in ms.
fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

/// Errors of writing a line to a process's stderr.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NoticeError {
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("stderr is not open for writing by the process (O_PATH or read-only)")]
    NotWritable,
    #[error("stderr is neither a pipe, a stream socket nor a terminal")]
    NotPipeOrTerminal,
}

/// Character-device majors of terminals an agent runs in (Documentation/admin-guide/
/// devices.txt): 136-143 pseudo-terminal slaves, and 4 below minor 64, the virtual consoles.
/// Not major 5 (/dev/tty would be airlockd's own terminal, /dev/console, ptmx, ttyprintk)
/// and not serial ports (4, minor 64 and up: opening one changes modem lines).
fn terminal(major: u32, minor: u32) -> bool {
    (136..=143).contains(&major) || (major == 4 && minor < 64)
}

fn last_os_error(what: &'static str) -> NoticeError {
    NoticeError::Io {
        what,
        source: std::io::Error::last_os_error(),
    }
}

/// Writes `text` to the stderr of process `tgid` when the process itself holds it open for
/// writing and it is a FIFO, a stream socket or a terminal.
///
/// The process's own descriptor is taken with `pidfd_getfd` (no path is followed, so an
/// agent cannot make fd 2 an `O_PATH` handle on something it may not write and have root
/// write there): its access mode is the agent's own. Its type is read with `statx` and
/// `AT_STATX_DONT_SYNC` (no round trip to a FUSE server or an NFS mount the agent could
/// stall). A pipe or terminal is then reopened non-blocking through the descriptor (the same
/// object), a socket written with `MSG_DONTWAIT`: a full pipe loses the line rather than
/// stalling the daemon.
pub(crate) fn write_to_stderr(tgid: u32, text: &str) -> Result<(), NoticeError> {
    // SAFETY: pidfd_open(2) with a pid and no flags; the result is checked and owned below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, tgid as libc::pid_t, 0) };
    if pidfd < 0 {
        return Err(last_os_error("pidfd_open"));
    }
    // SAFETY: a new descriptor, owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // SAFETY: pidfd_getfd(2) of fd 2 with no flags; the result is checked and owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), 2, 0) };
    if fd < 0 {
        return Err(last_os_error("pidfd_getfd"));
    }
    // SAFETY: a new descriptor, owned by nobody else.
    let theirs = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: F_GETFL on a descriptor we own.
    let fl = unsafe { libc::fcntl(theirs.as_raw_fd(), libc::F_GETFL) };
    if fl < 0 {
        return Err(last_os_error("fcntl"));
    }
    if fl & libc::O_PATH != 0 || fl & libc::O_ACCMODE == libc::O_RDONLY {
        return Err(NoticeError::NotWritable);
    }
    // SAFETY: statx(2) of the descriptor itself (empty path, AT_EMPTY_PATH) into a zeroed
    // struct of the right type.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::statx(
            theirs.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC,
            libc::STATX_TYPE,
            &mut stx,
        )
    };
    if r < 0 {
        return Err(last_os_error("statx"));
    }
    match u32::from(stx.stx_mode) & libc::S_IFMT {
        libc::S_IFSOCK => send(&theirs, text),
        libc::S_IFIFO => reopen_and_write(&theirs, text),
        libc::S_IFCHR if terminal(stx.stx_rdev_major, stx.stx_rdev_minor) => {
            reopen_and_write(&theirs, text)
        }
        _ => Err(NoticeError::NotPipeOrTerminal),
    }
}

/// Writes through a new non-blocking open file description of the object `fd` holds (setting
/// O_NONBLOCK on `fd` itself would change the agent's own description).
fn reopen_and_write(fd: &OwnedFd, text: &str) -> Result<(), NoticeError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|source| NoticeError::Io {
            what: "reopen for writing",
            source,
        })?;
    f.write_all(text.as_bytes())
        .map_err(|source| NoticeError::Io {
            what: "write",
            source,
        })
}

/// Sends on a stream socket (what Node's child_process gives a child as stderr), without
/// waiting and without SIGPIPE.
fn send(fd: &OwnedFd, text: &str) -> Result<(), NoticeError> {
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt(SO_TYPE) into an int of the size given.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(last_os_error("getsockopt"));
    }
    if ty != libc::SOCK_STREAM {
        return Err(NoticeError::NotPipeOrTerminal);
    }
    // SAFETY: send(2) of a buffer we own, with its length.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            text.as_ptr().cast(),
            text.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(last_os_error("send"));
    }
    Ok(())
}

use std::os::unix::fs::OpenOptionsExt as _;

#[cfg(test)]
mod tests;
