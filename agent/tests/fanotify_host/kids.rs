//! Children a test starts and does not wait for at once (held ones): forked, optionally in the
//! marker cgroup, stdout on a pipe. Dropping a [`Kid`] that was not reaped kills it (by its pid:
//! it is this test's own child) and reaps it, so a failing test leaves no process behind.
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::support::World;

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: valid out-array of two ints.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 returned two new fds.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// What a [`Kid`] does after joining the cgroup.
pub enum Act<'a> {
    /// execv(path, args) (args\[0\] included); exits with errno if the exec fails.
    Exec(&'a Path, &'a [&'a str]),
    /// open(path, flags); writes `data` to the fd on success; exits 0 or errno.
    Open(&'a Path, i32, &'a [u8]),
}

pub struct Kid {
    pub pid: i32,
    out: OwnedFd,
    go: Option<OwnedFd>,
    status: Option<i32>,
}

impl Kid {
    /// Forks a child (an agent when `agent`) that does `act`; with `wait_go` it first waits
    /// for [`Kid::go`] (so the test knows its pid before the act).
    pub fn start(w: &World, agent: bool, act: Act<'_>, wait_go: bool) -> Kid {
        let procs = agent.then(|| w.cg.procs());
        let procs_fd = procs.as_ref().map(AsRawFd::as_raw_fd);
        let (out_r, out_w) = pipe();
        let (go_r, go_w) = pipe();
        let (path, args, flags, data): (CString, Vec<CString>, i32, Vec<u8>) = match act {
            Act::Exec(p, a) => (
                CString::new(p.as_os_str().as_bytes()).unwrap(),
                a.iter().map(|s| CString::new(*s).unwrap()).collect(),
                0,
                Vec::new(),
            ),
            Act::Open(p, f, d) => (
                CString::new(p.as_os_str().as_bytes()).unwrap(),
                Vec::new(),
                f,
                d.to_vec(),
            ),
        };
        let exec = !args.is_empty();
        let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        // SAFETY: the child only makes async-signal-safe calls (write, read, dup2, open,
        // execv, _exit) on data prepared before the fork.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: as above; every path ends in execv or _exit.
            unsafe {
                if let Some(fd) = procs_fd
                    && libc::write(fd, b"0".as_ptr().cast(), 1) != 1
                {
                    libc::_exit(125);
                }
                if libc::dup2(out_w.as_raw_fd(), 1) != 1 {
                    libc::_exit(124);
                }
                if wait_go {
                    let mut b = 0u8;
                    if libc::read(go_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1) != 1 {
                        libc::_exit(123);
                    }
                }
                if exec {
                    libc::execv(path.as_ptr(), argv.as_ptr());
                    libc::_exit(*libc::__errno_location());
                }
                let fd = libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, 0o644);
                if fd < 0 {
                    libc::_exit(*libc::__errno_location());
                }
                if libc::write(fd, data.as_ptr().cast(), data.len()) != data.len() as isize {
                    libc::_exit(122);
                }
                libc::_exit(0);
            }
        }
        drop((out_w, go_r));
        // SAFETY: fcntl on our own fd.
        unsafe { libc::fcntl(out_r.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        Kid {
            pid,
            out: out_r,
            go: Some(go_w),
            status: None,
        }
    }

    /// Lets a child started with `wait_go` proceed.
    pub fn go(&mut self) {
        let go = self.go.take().expect("go once");
        // SAFETY: writing one byte from a static buffer to our pipe.
        assert_eq!(
            unsafe { libc::write(go.as_raw_fd(), b"g".as_ptr().cast(), 1) },
            1
        );
    }

    /// Process state letter from /proc/PID/stat (R, S, D, T, Z...).
    pub fn state(&self) -> Option<char> {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        s[s.rfind(')')? + 1..].trim_start().chars().next()
    }

    /// Waits up to 3 s for the state to become `c`.
    pub fn wait_state(&self, c: char) -> bool {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) {
            if self.state() == Some(c) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// The raw wait status if it has exited (without blocking).
    pub fn try_wait(&mut self) -> Option<i32> {
        if self.status.is_none() {
            let mut st = 0;
            // SAFETY: waiting for our own child without blocking.
            if unsafe { libc::waitpid(self.pid, &mut st, libc::WNOHANG) } == self.pid {
                self.status = Some(st);
            }
        }
        self.status
    }

    /// Waits up to 5 s for it to exit; the raw wait status.
    pub fn wait(&mut self) -> i32 {
        let t = Instant::now();
        loop {
            if let Some(s) = self.try_wait() {
                return s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "child {} did not exit (state {:?})",
                self.pid,
                self.state()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for a normal exit and returns its code.
    pub fn code(&mut self) -> i32 {
        let s = self.wait();
        assert!(libc::WIFEXITED(s), "child {} died: status {s:#x}", self.pid);
        libc::WEXITSTATUS(s)
    }

    /// Whatever the child wrote to stdout so far.
    pub fn output(&self) -> String {
        let mut v = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reading into a valid buffer from our non-blocking pipe.
            let n = unsafe { libc::read(self.out.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            v.extend_from_slice(&buf[..n as usize]);
        }
        String::from_utf8_lossy(&v).into_owned()
    }

    /// Whether it is still there (not exited).
    pub fn alive(&mut self) -> bool {
        self.try_wait().is_none()
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            // SAFETY: signalling and reaping our own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}
