//! What airlockd reads of other processes, through the `procfs` crate: state, parent and
//! name, executable, threads, environment. (Not here: `/proc/TID/syscall`, which the crate
//! does not read, see `backend/fanotify/procfs.rs`; `/proc/PID/cgroup`, read byte-exact in
//! `cgroup.rs` because cgroup names need not be UTF-8; `/proc/PID/cmdline`, kept as bytes for
//! the argv hash.)
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::PathBuf;

use procfs::process::Process;

fn process(pid: u32) -> Option<Process> {
    Process::new(i32::try_from(pid).ok()?).ok()
}

/// Scheduler state letter of process or thread `pid` ('R', 'S', 'T' stopped, 'Z' zombie, …).
pub fn state(pid: u32) -> Option<char> {
    process(pid)?.stat().ok().map(|s| s.state)
}

/// Is `tid` there and not a zombie (or dead)?
pub fn alive(tid: u32) -> bool {
    state(tid).is_some_and(|c| c != 'Z' && c != 'X')
}

/// `pid`'s parent and command name.
pub fn parent_and_comm(pid: u32) -> Option<(u32, String)> {
    let s = process(pid)?.stat().ok()?;
    Some((u32::try_from(s.ppid).ok()?, s.comm))
}

/// The executable `pid` runs (as the kernel names it).
pub fn exe(pid: u32) -> Option<PathBuf> {
    process(pid)?.exe().ok()
}

/// `pid`'s working directory.
pub fn cwd(pid: u32) -> Option<PathBuf> {
    process(pid)?.cwd().ok()
}

/// Is `tid` a thread of process `tgid` (both still there)?
pub fn has_thread(tgid: u32, tid: u32) -> bool {
    let Ok(tid) = i32::try_from(tid) else {
        return false;
    };
    process(tgid).is_some_and(|p| p.task_from_tid(tid).is_ok())
}

/// Thread ids of process `tgid` (empty when it is gone).
pub fn threads(tgid: u32) -> Vec<u32> {
    let Some(p) = process(tgid) else {
        return vec![];
    };
    p.tasks()
        .map(|it| {
            it.filter_map(Result::ok)
                .filter_map(|t| u32::try_from(t.tid).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The value of `name` in `pid`'s environment block (set at exec; the process can have
/// rewritten that memory since), lossily UTF-8, cut to
/// `max` bytes; `None` when unset, empty or unreadable.
pub fn environ_var(pid: u32, name: &str, max: usize) -> Option<String> {
    let env = process(pid)?.environ().ok()?;
    let v = env.get(OsStr::new(name))?.as_bytes();
    let v = &v[..v.len().min(max)];
    (!v.is_empty()).then(|| String::from_utf8_lossy(v).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(alive(me));
        assert!(matches!(state(me), Some('R' | 'S')));
        let (ppid, comm) = parent_and_comm(me).unwrap();
        assert_eq!(ppid, std::os::unix::process::parent_id());
        assert!(!comm.is_empty());
        assert_eq!(exe(me).unwrap(), std::env::current_exe().unwrap());
        assert!(threads(me).contains(&me));
        assert!(has_thread(me, me));
        assert_eq!(cwd(me).unwrap(), std::env::current_dir().unwrap());
    }

    #[test]
    fn a_child_is_read_and_a_gone_process_is_none() {
        let mut c = std::process::Command::new("sleep")
            .arg("30")
            .env("AIRLOCK_TEST_VAR", "a value")
            .spawn()
            .unwrap();
        let pid = c.id();
        // Until its exec is done, the child shows the environment it was forked with (ours),
        // then for an instant none (the new image's stack is set up after its exe is).
        let t = std::time::Instant::now();
        while environ_var(pid, "AIRLOCK_TEST_VAR", 100).is_none()
            && t.elapsed() < std::time::Duration::from_secs(5)
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(
            environ_var(pid, "AIRLOCK_TEST_VAR", 100).as_deref(),
            Some("a value")
        );
        assert_eq!(
            environ_var(pid, "AIRLOCK_TEST_VAR", 3).as_deref(),
            Some("a v")
        );
        assert_eq!(environ_var(pid, "AIRLOCK_NOT_SET", 100), None);
        assert_eq!(parent_and_comm(pid).unwrap().1, "sleep");
        c.kill().unwrap();
        // Killed, not yet reaped: a zombie.
        let t = std::time::Instant::now();
        while state(pid) != Some('Z') && t.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!alive(pid));
        c.wait().unwrap();
        assert_eq!(state(pid), None);
        assert!(threads(pid).is_empty());
        assert!(!has_thread(pid, pid));
    }
}
