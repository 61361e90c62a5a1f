//! Telling the agent: one line on the held process's standard error when its request opens
//! and when it closes, so that an agent's tool output says why its command stopped, how long
//! it may wait, and who decided what (an agent otherwise sees a command that hangs, then
//! EPERM).
//!
//! Written only where standard error is a pipe or a terminal (what an agent's tool runner
//! reads), never to a file or a device: the daemon runs as root, and the agent chooses what
//! its fd 2 is. So the fd is first opened `O_PATH` through `/proc/<tid>/fd/2` (no open of the
//! object itself happens), its type checked on that handle, and only a FIFO or a terminal
//! (character devices of the tty majors) is then reopened for writing through the handle,
//! non-blocking: a full pipe loses the line rather than stalling the daemon. Turned off per
//! rule (`tellAgent: false`) or per run (`airlock run --quiet`, kept in the run record).
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
        let mut tids: BTreeSet<u32> = r.holders.iter().map(|h| h.tid).collect();
        if tids.is_empty() {
            tids.insert(r.context.pid);
        }
        for tid in tids {
            if let Err(e) = write_to_stderr(tid, &text) {
                tracing::debug!(tid, error = %e, "not told on its stderr");
            }
        }
    }
}

/// Whether the request's run was started with `airlock run --quiet`.
fn run_is_quiet(r: &Request, state_dir: &Path) -> bool {
    let Some(unit) = r.context.unit.as_deref() else {
        return false;
    };
    std::fs::read(crate::paths::run_record(state_dir, unit))
        .ok()
        .and_then(|b| serde_json::from_slice::<crate::hold::RunRecordFile>(&b).ok())
        .is_some_and(|f| f.quiet)
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
    s.truncate(s.floor_char_boundary(MAX_LINE - 1));
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
    #[error("stderr is neither a pipe nor a terminal")]
    NotPipeOrTerminal,
}

/// Character-device majors of terminals (Documentation/admin-guide/devices.txt): 4 virtual
/// consoles and serial ports, 5 /dev/tty and /dev/ptmx, 136-143 pseudo-terminal slaves.
fn tty_major(major: u64) -> bool {
    major == 4 || major == 5 || (136..=143).contains(&major)
}

/// Writes `text` to the stderr of thread `tid` when that is a FIFO or a terminal.
pub(crate) fn write_to_stderr(tid: u32, text: &str) -> Result<(), NoticeError> {
    let io = |what| move |source| NoticeError::Io { what, source };
    // O_PATH: a handle to whatever fd 2 is, without opening the object (no side effects of
    // opening a device, no blocking open of a FIFO).
    let path = std::ffi::CString::new(format!("/proc/{tid}/fd/2")).expect("no NUL");
    // SAFETY: open(2) of a NUL-terminated path; the result is checked and owned below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io("open /proc/TID/fd/2")(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by open and is owned by nobody else.
    let handle = unsafe { OwnedFd::from_raw_fd(fd) };
    let st = nix::sys::stat::fstat(&handle)
        .map_err(|e| io("fstat")(std::io::Error::from_raw_os_error(e as i32)))?;
    let kind = st.st_mode & libc::S_IFMT;
    let ok = kind == libc::S_IFIFO
        || (kind == libc::S_IFCHR && tty_major(u64::from(libc::major(st.st_rdev))));
    if !ok {
        return Err(NoticeError::NotPipeOrTerminal);
    }
    // Reopen the very object the handle holds (not whatever fd 2 is by now).
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))
        .map_err(io("reopen for writing"))?;
    f.write_all(text.as_bytes()).map_err(io("write"))
}

use std::os::unix::fs::OpenOptionsExt as _;

#[cfg(test)]
mod tests;
