//! What procfs tells about a task blocked in a permission event: the open flags it asked for
//! (`/proc/<tid>/syscall`, and `/proc/<tid>/mem` for `openat2`'s `struct open_how`) and its
//! identity (`/proc/<tid>/status`, `comm`).
//!
//! Reading `syscall` and `mem` takes the task's `exec_update_lock` (before 5.7:
//! `cred_guard_mutex`, which a thread in `execve` holds while the kernel opens the binary's
//! interpreter, so a read could wait for an exec that waits for our answer). `exec_update_lock`
//! is held by an exec only between `begin_new_exec` and `setup_new_exec`, where no file is
//! opened; on this host (6.18) `syscall` and the caller's memory read fine while the thread
//! waits in the permission event of its exec open, a script's interpreter open included
//! (verified). The reads still run on a [`ProcReader`] worker with a deadline; past it the
//! intent is unknown (fail closed).
//!
//! `syscall` reads `running` unless the task is off the CPU in the state it was in when the
//! read began (the kernel's `task_current_syscall` → `wait_task_inactive`), and a task in a
//! permission event is on a CPU, or waiting for one, more often than one would think: the
//! kernel queues the event and wakes the listener *before* the task goes to sleep in
//! `fanotify_get_response`, and every answer to any event of the group wakes *all* tasks
//! waiting in the group (`access_waitq` is one wait queue, woken non-exclusively), each of
//! which must run again to recheck its own event and go back to sleep. With several agent
//! processes opening at once the first read of a task's line therefore often says `running`.
//! Failing closed on that turned concurrent plain reads into write requests (issue 7); the
//! line is re-read instead ([`read_settled`], with a [`Patience`]) until the task sleeps, the
//! longer waits off the listener's thread (see the listener module).
use std::io::Read as _;
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod settle;
pub use settle::{Patience, Settled, read_settled};

/// What an open asked for, as far as procfs tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    /// No write, create, truncate or append bit.
    Read,
    /// An exec (the binary or its interpreter); never a write.
    Exec,
    /// Open flags with write intent.
    Write { flags: u64 },
    /// Could not be determined (io_uring, kernel-internal open, a compat task, procfs
    /// unreadable or blocked): treated as a write for agent processes (fail closed).
    Unknown(&'static str),
}

/// Open-flag bits that mean write intent.
pub const WRITE_BITS: u64 =
    (libc::O_WRONLY | libc::O_RDWR | libc::O_TRUNC | libc::O_CREAT | libc::O_APPEND) as u64;

/// Intent of an open with these flags.
pub fn intent_of_flags(flags: u64) -> Intent {
    if flags & WRITE_BITS != 0 {
        Intent::Write { flags }
    } else {
        Intent::Read
    }
}

/// A parsed `/proc/<tid>/syscall` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyscallLine {
    /// `running`: the task was on a CPU, or runnable, or changed state while it was read
    /// (transient for a task in a permission event: see the module docs).
    Running,
    /// `-1 sp pc`: blocked, but not in a system call.
    NotInSyscall,
    /// `nr arg0 .. arg5 sp pc`.
    Call { nr: i64, args: [u64; 6] },
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok()
}

/// Parses `/proc/<tid>/syscall`: decimal number, then hex arguments, stack and pc.
pub fn parse_syscall(line: &str) -> Option<SyscallLine> {
    let mut it = line.split_ascii_whitespace();
    let first = it.next()?;
    if first == "running" {
        return Some(SyscallLine::Running);
    }
    let nr: i64 = first.parse().ok()?;
    if nr < 0 {
        return Some(SyscallLine::NotInSyscall);
    }
    let mut args = [0u64; 6];
    for a in &mut args {
        *a = hex(it.next()?)?;
    }
    Some(SyscallLine::Call { nr, args })
}

/// How a system call says which flags it opens with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenCall {
    /// The flags are an argument.
    Flags(u64),
    /// `openat2`: the flags are the first u64 of a `struct open_how` at this user address.
    OpenHowAt(u64),
    Exec,
    /// Not a system call we know to open files.
    Other,
}

/// Native system call numbers. Compat (32-bit) tasks use other numbers; they fall in `Other`
/// or, where numbers coincide with a non-opening call, never reach here.
#[cfg(target_arch = "x86_64")]
mod nr {
    pub const OPEN: i64 = 2;
    pub const CREAT: i64 = 85;
    pub const OPENAT: i64 = 257;
    pub const OPEN_BY_HANDLE_AT: i64 = 304;
    pub const OPENAT2: i64 = 437;
    pub const EXECVE: i64 = 59;
    pub const EXECVEAT: i64 = 322;
    pub const USELIB: i64 = 134;
}
#[cfg(target_arch = "aarch64")]
mod nr {
    pub const OPEN: i64 = -100; // no open(2)
    pub const CREAT: i64 = -101; // no creat(2)
    pub const OPENAT: i64 = 56;
    pub const OPEN_BY_HANDLE_AT: i64 = 265;
    pub const OPENAT2: i64 = 437;
    pub const EXECVE: i64 = 221;
    pub const EXECVEAT: i64 = 281;
    pub const USELIB: i64 = -102; // no uselib(2)
}
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod nr {
    // Unknown table: every open is Unknown (fail closed) until this architecture is added.
    pub const OPEN: i64 = -100;
    pub const CREAT: i64 = -101;
    pub const OPENAT: i64 = -102;
    pub const OPEN_BY_HANDLE_AT: i64 = -103;
    pub const OPENAT2: i64 = -104;
    pub const EXECVE: i64 = -105;
    pub const EXECVEAT: i64 = -106;
    pub const USELIB: i64 = -107;
}

/// Which argument carries the open flags of system call `nr`.
pub fn open_call(nr: i64, args: &[u64; 6]) -> OpenCall {
    match nr {
        nr::OPEN => OpenCall::Flags(args[1]),
        nr::OPENAT | nr::OPEN_BY_HANDLE_AT => OpenCall::Flags(args[2]),
        // creat(path, mode) == open(path, O_CREAT|O_WRONLY|O_TRUNC, mode)
        nr::CREAT => OpenCall::Flags((libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u64),
        nr::OPENAT2 => OpenCall::OpenHowAt(args[2]),
        nr::EXECVE | nr::EXECVEAT | nr::USELIB => OpenCall::Exec,
        _ => OpenCall::Other,
    }
}

/// Intent from the `syscall` file's text, reading `open_how` through `read_how` when needed.
pub fn intent_from_syscall(text: &str, read_how: impl FnOnce(u64) -> Option<u64>) -> Intent {
    match parse_syscall(text) {
        None => Intent::Unknown("unparsable /proc/<tid>/syscall"),
        Some(SyscallLine::Running) => Intent::Unknown(TASK_RUNNING),
        Some(SyscallLine::NotInSyscall) => {
            Intent::Unknown("not in a system call (kernel-internal open)")
        }
        Some(SyscallLine::Call { nr, args }) => match open_call(nr, &args) {
            OpenCall::Flags(f) => intent_of_flags(f),
            OpenCall::Exec => Intent::Exec,
            OpenCall::OpenHowAt(addr) => match read_how(addr) {
                Some(f) => intent_of_flags(f),
                None => Intent::Unknown("cannot read openat2's open_how"),
            },
            OpenCall::Other => {
                Intent::Unknown("not an open system call (io_uring, compat task, kernel-internal)")
            }
        },
    }
}

/// Why the intent is unknown when the task never stopped reading as `running`.
pub const TASK_RUNNING: &str = "task running";

/// `/proc/<tid>/syscall` of a thread waiting in a permission event, read once it sleeps
/// there (or once `p` ran out). May block: see the module docs.
pub fn syscall_settled(tid: u32, p: Patience) -> std::io::Result<Settled> {
    let path = format!("/proc/{tid}/syscall");
    read_settled(p, || {
        let mut text = String::new();
        std::fs::File::open(&path)?.read_to_string(&mut text)?;
        Ok(text)
    })
}

/// The intent of an open and how long its task had to be waited for (see [`Settled`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    pub intent: Intent,
    pub waited: Duration,
    pub rereads: u32,
}

impl Reading {
    /// An intent known without reading procfs.
    pub fn known(intent: Intent) -> Reading {
        Reading {
            intent,
            waited: Duration::ZERO,
            rereads: 0,
        }
    }

    /// The task was still `running` at the last read: a later read may tell.
    pub fn task_running(&self) -> bool {
        self.intent == Intent::Unknown(TASK_RUNNING)
    }
}

/// Reads the intent of thread `tid` directly (may block: see the module docs).
pub fn read_intent(tid: u32, p: Patience) -> Reading {
    let Ok(s) = syscall_settled(tid, p) else {
        return Reading::known(Intent::Unknown("cannot read /proc/<tid>/syscall"));
    };
    let intent = intent_from_syscall(&s.line, |addr| {
        let f = std::fs::File::open(format!("/proc/{tid}/mem")).ok()?;
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, addr).ok()?;
        Some(u64::from_ne_bytes(b))
    });
    Reading {
        intent,
        waited: s.waited,
        rereads: s.rereads,
    }
}

/// Fields of `/proc/<tid>/status` that events carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskStatus {
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub euid: u32,
}

/// Parses `/proc/<tid>/status` (`Uid:` is real, effective, saved, fs).
pub fn parse_status(text: &str) -> Option<TaskStatus> {
    let mut s = TaskStatus::default();
    let (mut tgid, mut ppid, mut uid) = (false, false, false);
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let mut nums = v.split_ascii_whitespace().map(|n| n.parse::<u32>().ok());
        match k {
            "Tgid" => (s.tgid, tgid) = (nums.next()??, true),
            "PPid" => (s.ppid, ppid) = (nums.next()??, true),
            "Uid" => {
                s.uid = nums.next()??;
                s.euid = nums.next()??;
                uid = true;
            }
            _ => {}
        }
    }
    (tgid && ppid && uid).then_some(s)
}

/// Reads `/proc/<tid>/status` and `comm` (neither takes the locks `syscall` does).
pub fn task_identity(tid: u32) -> (TaskStatus, String) {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|t| parse_status(&t))
        .unwrap_or(TaskStatus {
            tgid: tid,
            ..TaskStatus::default()
        });
    let comm = std::fs::read_to_string(format!("/proc/{tid}/comm"))
        .map(|c| c.trim_end_matches('\n').to_owned())
        .unwrap_or_default();
    (status, comm)
}

type Job = Box<dyn FnOnce() + Send>;

/// Runs procfs reads (see [`read_intent`], [`super::argv::read_exec_argv`]) on a worker thread
/// and waits for them with a deadline. A worker that misses the deadline is abandoned (it
/// finishes on its own once the lock it waits for is released, which our answering the exec's
/// events makes happen) and a fresh one takes over.
pub struct ProcReader {
    tx: Option<mpsc::Sender<Job>>,
    deadline: Duration,
    /// Workers alive, abandoned ones included: bounded so a pathological case cannot pile up
    /// threads.
    alive: Arc<AtomicUsize>,
}

/// Most workers alive at once (one current, the others stuck behind an exec).
const MAX_WORKERS: usize = 4;

impl ProcReader {
    pub fn new(deadline: Duration) -> ProcReader {
        ProcReader {
            tx: None,
            deadline,
            alive: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn spawn(&mut self) -> Option<&mpsc::Sender<Job>> {
        if self.tx.is_none() {
            if self.alive.load(Ordering::Relaxed) >= MAX_WORKERS {
                return None;
            }
            let (tx, rx) = mpsc::channel::<Job>();
            let alive = self.alive.clone();
            alive.fetch_add(1, Ordering::Relaxed);
            let spawned = std::thread::Builder::new()
                .name("airlock-procrd".into())
                .spawn(move || {
                    for job in rx {
                        job();
                    }
                    alive.fetch_sub(1, Ordering::Relaxed);
                });
            if spawned.is_err() {
                self.alive.fetch_sub(1, Ordering::Relaxed);
                return None;
            }
            self.tx = Some(tx);
        }
        self.tx.as_ref()
    }

    /// Runs `f` on the worker; `Err(why)` past the deadline or without a worker.
    pub fn run<T: Send + 'static>(
        &mut self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, &'static str> {
        let Some(tx) = self.spawn() else {
            return Err("procfs readers all blocked");
        };
        let (rtx, rrx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = rtx.send(f());
        });
        if tx.send(job).is_err() {
            self.tx = None;
            return Err("procfs reader gone");
        }
        rrx.recv_timeout(self.deadline).map_err(|_| {
            // Abandon this worker: dropping its sender lets it exit after its stuck read.
            self.tx = None;
            "/proc/<tid>/syscall blocked (a thread of the process is in execve)"
        })
    }

    /// The open intent of blocked thread `tid`, or `Unknown` past the deadline.
    pub fn intent(&mut self, tid: u32, p: Patience) -> Reading {
        let t0 = Instant::now();
        self.run(move || read_intent(tid, p))
            .unwrap_or_else(|why| Reading {
                intent: Intent::Unknown(why),
                waited: t0.elapsed(),
                rereads: 0,
            })
    }
}

/// Where the `argv` array of an `execve` (argument 1) or `execveat` (argument 2) is, from a
/// `/proc/<tid>/syscall` line; `None` for any other call.
pub fn exec_argv_pointer(line: &str) -> Option<u64> {
    match parse_syscall(line)? {
        SyscallLine::Call {
            nr: nr::EXECVE,
            args,
        } => Some(args[1]),
        SyscallLine::Call {
            nr: nr::EXECVEAT,
            args,
        } => Some(args[2]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_lines_parse() {
        let l = "257 0xffffff9c 0x7ffd1000 0x241 0x1b6 0x0 0x0 0x7ffd0ff8 0x7f0012345678";
        assert_eq!(
            parse_syscall(l),
            Some(SyscallLine::Call {
                nr: 257,
                args: [0xffffff9c, 0x7ffd1000, 0x241, 0x1b6, 0, 0]
            })
        );
        assert_eq!(parse_syscall("running\n"), Some(SyscallLine::Running));
        assert_eq!(
            parse_syscall("-1 0x7ffd0ff8 0x7f0012345678\n"),
            Some(SyscallLine::NotInSyscall)
        );
        assert_eq!(parse_syscall("257 0x1 0x2"), None);
        assert_eq!(parse_syscall("abc"), None);
        assert_eq!(parse_syscall(""), None);
    }

    #[test]
    fn write_intent_is_any_write_create_truncate_or_append_bit() {
        for f in [
            libc::O_WRONLY,
            libc::O_RDWR,
            libc::O_TRUNC,
            libc::O_CREAT,
            libc::O_APPEND,
        ] {
            assert!(
                matches!(intent_of_flags(f as u64), Intent::Write { .. }),
                "{f:#o}"
            );
        }
        let read = libc::O_RDONLY
            | libc::O_CLOEXEC
            | libc::O_NOFOLLOW
            | libc::O_LARGEFILE
            | libc::O_NONBLOCK;
        assert_eq!(intent_of_flags(read as u64), Intent::Read);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn open_calls_find_their_flags() {
        let none = |_| panic!("no open_how here");
        let w = (libc::O_WRONLY | libc::O_CREAT) as u64;
        // openat(dirfd, path, flags, mode)
        assert_eq!(
            intent_from_syscall("257 0xffffff9c 0x1000 0x41 0x1a4 0x0 0x0 0x0 0x0", none),
            Intent::Write { flags: w }
        );
        // open(path, flags, mode)
        assert_eq!(
            intent_from_syscall("2 0x1000 0x0 0x0 0x0 0x0 0x0 0x0 0x0", none),
            Intent::Read
        );
        // creat(path, mode): always write+create+truncate
        assert!(
            matches!(intent_from_syscall("85 0x1000 0x1a4 0x0 0x0 0x0 0x0 0x0 0x0", none), Intent::Write { flags } if flags & libc::O_TRUNC as u64 != 0)
        );
        // openat2(dirfd, path, how, size): flags read from memory at `how`
        let i = intent_from_syscall("437 0xffffff9c 0x1000 0x2000 0x18 0x0 0x0 0x0 0x0", |a| {
            assert_eq!(a, 0x2000);
            Some(libc::O_RDWR as u64)
        });
        assert_eq!(
            i,
            Intent::Write {
                flags: libc::O_RDWR as u64
            }
        );
        assert!(matches!(
            intent_from_syscall("437 0xffffff9c 0x1000 0x2000 0x18 0x0 0x0 0x0 0x0", |_| {
                None
            }),
            Intent::Unknown(_)
        ));
        assert_eq!(
            intent_from_syscall("59 0x1000 0x2000 0x3000 0x0 0x0 0x0 0x0 0x0", none),
            Intent::Exec
        );
        // io_uring_enter and friends: unknown, fail closed
        assert!(matches!(
            intent_from_syscall("426 0x3 0x1 0x0 0x0 0x0 0x0 0x0 0x0", none),
            Intent::Unknown(_)
        ));
        assert!(matches!(
            intent_from_syscall("-1 0x0 0x0", none),
            Intent::Unknown(_)
        ));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exec_calls_say_where_argv_is() {
        assert_eq!(
            exec_argv_pointer("59 0x1000 0x2000 0x3000 0x0 0x0 0x0 0x0 0x0"),
            Some(0x2000)
        );
        assert_eq!(
            exec_argv_pointer("322 0x3 0x1000 0x4000 0x0 0x0 0x0 0x0 0x0"),
            Some(0x4000)
        );
        assert_eq!(
            exec_argv_pointer("257 0x3 0x1000 0x4000 0x0 0x0 0x0 0x0 0x0"),
            None
        );
        assert_eq!(exec_argv_pointer("running"), None);
    }

    #[test]
    fn status_gives_tgid_ppid_and_real_and_effective_uid() {
        let t = "Name:\tbash\nTgid:\t100\nNgid:\t0\nPid:\t101\nPPid:\t1\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(
            parse_status(t),
            Some(TaskStatus {
                tgid: 100,
                ppid: 1,
                uid: 1000,
                euid: 0
            })
        );
        assert_eq!(parse_status("Name:\tx\n"), None);
    }

    #[test]
    fn reader_reads_our_own_blocked_thread() {
        // A thread of ours blocked in read(2) on a pipe: not an open, so Unknown, but the read
        // itself must come back well within the deadline.
        let (r, w) = crate::backend::fanotify::sys::pipe().unwrap();
        let (tx, rx) = mpsc::channel();
        let h = std::thread::spawn(move || {
            // SAFETY: gettid has no arguments.
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            let mut pfd = libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(&r),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd; times out after 2 s.
            unsafe { libc::poll(&mut pfd, 1, 2000) };
        });
        let tid = rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let mut pr = ProcReader::new(Duration::from_secs(1));
        let r = pr.intent(
            tid,
            Patience {
                bound: Duration::from_secs(1),
                min_rereads: 0,
            },
        );
        let not_open = matches!(r.intent, Intent::Unknown(why) if why.starts_with("not an open"));
        assert!(not_open, "{r:?}");
        assert_eq!(r.rereads, 0, "a sleeping thread is read at once");
        drop(w); // wakes the poll
        h.join().unwrap();
    }
}
