//! The arguments of a held exec, read while the thread waits in the permission event of its
//! exec open: `/proc/<tid>/syscall` gives the `argv` pointer (6.8 and later open the binary in
//! `alloc_bprm`, before any exec lock is taken, and even a script's interpreter open under
//! `cred_guard_mutex` does not block these reads: verified on 6.18), and
//! `process_vm_readv` copies the pointers and strings out of the caller's (still intact)
//! memory. Same slot layout as the kernel side ([`airlock_common::Event::argv`]), so the hash
//! is [`airlock_common::argv_hash`] over the same bytes.
use airlock_common::{ARG_LEN, ARGV_MAX, argv_hash};

use super::procfs::{Patience, exec_argv_pointer, syscall_settled};

/// Captured arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Argv {
    /// Arguments captured (at most [`ARGV_MAX`]).
    pub argc: u32,
    pub slots: [[u8; ARG_LEN]; ARGV_MAX],
    /// More arguments than slots, or one cut at `ARG_LEN - 1` bytes.
    pub truncated: bool,
}

impl Argv {
    /// [`airlock_common::argv_hash`] of the slots.
    pub fn hash(&self) -> u64 {
        argv_hash(self.argc, &self.slots)
    }

    /// The arguments as strings (lossy UTF-8).
    pub fn strings(&self) -> Vec<String> {
        crate::event::decode_argv(self.argc, &self.slots).0
    }

    /// Builds the slots from argument byte strings (each cut at its first NUL).
    pub fn from_args<'a>(args: impl IntoIterator<Item = &'a [u8]>) -> Argv {
        let mut a = Argv {
            argc: 0,
            slots: [[0; ARG_LEN]; ARGV_MAX],
            truncated: false,
        };
        for arg in args {
            if a.argc as usize == ARGV_MAX {
                a.truncated = true;
                break;
            }
            let arg = &arg[..arg.iter().position(|&b| b == 0).unwrap_or(arg.len())];
            let n = arg.len().min(ARG_LEN - 1);
            a.truncated |= n < arg.len();
            a.slots[a.argc as usize][..n].copy_from_slice(&arg[..n]);
            a.argc += 1;
        }
        a
    }
}

/// Copies `buf.len()` bytes (or fewer, up to a fault) from `addr` in process `pid`.
fn read_remote(pid: u32, addr: u64, buf: &mut [u8]) -> usize {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: one local iovec over `buf`, one remote iovec; the kernel checks the remote one.
    let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    n.max(0) as usize
}

/// The arguments of thread `tid`, blocked in `execve`/`execveat`; `None` if it is not in one
/// or its memory cannot be read. May block (see the module docs): run it on a
/// [`super::procfs::ProcReader`]. Like the open flags, the `argv` pointer can be read only
/// once the thread sleeps in its event: re-read with patience `p` (see the procfs module).
pub fn read_exec_argv(tid: u32, p: Patience) -> Option<Argv> {
    let line = syscall_settled(tid, p).ok()?.line;
    let at = exec_argv_pointer(&line)?;
    let mut raw = [0u8; 8 * (ARGV_MAX + 1)];
    let got = read_remote(tid, at, &mut raw) / 8;
    if got == 0 {
        return None;
    }
    let ptrs: Vec<u64> = raw
        .chunks_exact(8)
        .take(got)
        .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
        .take_while(|&p| p != 0)
        .collect();
    let mut strings = Vec::with_capacity(ptrs.len().min(ARGV_MAX));
    for &p in ptrs.iter().take(ARGV_MAX) {
        // One byte more than a slot keeps, so that a cut argument is seen as cut.
        let mut s = [0u8; ARG_LEN];
        let n = read_remote(tid, p, &mut s);
        strings.push(s[..n].to_vec());
    }
    let mut a = Argv::from_args(strings.iter().map(Vec::as_slice));
    // A pointer past the last slot (or a table cut by a fault before its NULL) means more.
    a.truncated |= ptrs.len() > ARGV_MAX || (got == ptrs.len() && got < ARGV_MAX + 1);
    Some(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_nul_padded_cut_and_hashed_like_the_kernel_side() {
        let long = [b'x'; 100];
        let a = Argv::from_args([&b"apt"[..], b"install", &long]);
        assert_eq!(a.argc, 3);
        assert!(a.truncated, "an argument longer than a slot is cut");
        assert_eq!(&a.slots[0][..4], b"apt\0");
        assert_eq!(a.slots[2][ARG_LEN - 1], 0, "slots stay NUL-terminated");
        assert_eq!(a.strings()[..2], ["apt", "install"]);
        assert_eq!(a.hash(), argv_hash(3, &a.slots));
        let many: Vec<&[u8]> = (0..ARGV_MAX + 2).map(|_| &b"a"[..]).collect();
        let m = Argv::from_args(many);
        assert_eq!((m.argc as usize, m.truncated), (ARGV_MAX, true));
        assert_ne!(
            Argv::from_args([&b"rm"[..], b"-rf"]).hash(),
            Argv::from_args([&b"rm"[..]]).hash()
        );
    }

    #[test]
    fn our_own_arguments_cannot_be_read_outside_an_exec() {
        // SAFETY: gettid has no arguments.
        let tid = unsafe { libc::gettid() } as u32;
        assert_eq!(
            read_exec_argv(tid, Patience::ONCE),
            None,
            "a running thread is in no execve"
        );
    }
}
