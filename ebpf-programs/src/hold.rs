//! Holds and the argv of held execs: what the gates do once a rule matched.
//!
//! `decide` turns a rule plus the grant maps into a verdict without side effects; `finish`
//! records it in a reserved event and carries it out (a hold: SIGSTOP, then -ERESTARTNOINTR in
//! the hook, so the syscall runs again after SIGCONT and comes back here). Exec events carry
//! the arguments, read from the caller's memory, and their hash keys the once-grant.
use airlock_common::{
    ARG_LEN, ARGV_MAX, AgentGrantKey, COMM_LEN, Event, GRANT_FOREVER, InodeKey, KernelOffsets,
    NAME_LEN, OnceKey, RuleRef, action, flags, verdict,
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_uid_gid,
        bpf_ktime_get_boot_ns, bpf_probe_read_user, bpf_probe_read_user_str_bytes,
        generated::{
            self as raw, bpf_get_current_task_btf, bpf_send_signal_thread, bpf_task_pt_regs,
        },
    },
    maps::ring_buf::RingBufEntry,
};

use crate::{
    AGENT_GRANTS, EVENTS, GO, HOLD, LOST, ONCE_GRANTS, REFUSE, ZEROES, read_u32, read_u64,
};

/// x86_64 SIGSTOP.
const SIGSTOP: u32 = 19;
/// `task_struct.flags` bit of io_uring's worker threads.
const PF_IO_WORKER: u32 = 0x10;
/// x86_64 io_uring_enter(2): an operation it runs inline is not run again by a restart.
const NR_IO_URING_ENTER: u64 = 426;
/// x86_64 recvmsg(2), recvmmsg(2): a descriptor passed with SCM_RIGHTS is gated when the
/// message has already been taken off the socket, so a restart would not receive it again.
const NR_RECVMSG: u64 = 47;
const NR_RECVMMSG: u64 = 299;

/// Whether a hold of the current task could not be kept (see [`flags::UNHOLDABLE`]): an
/// io_uring worker, or inside io_uring_enter, where a restart does not run the operation
/// again (the completion would carry the internal ERESTARTNOINTR); or a traced task, whose
/// tracer may swallow the SIGSTOP so that the syscall restarts into the gate in a loop.
#[inline(always)]
fn unholdable(o: &KernelOffsets) -> bool {
    // SAFETY: helper without arguments; the pointer is only read through probe reads.
    let task = unsafe { bpf_get_current_task() };
    read_u32(task + o.task_flags as u64) & PF_IO_WORKER != 0
        || read_u32(task + o.task_ptrace as u64) != 0
        || {
            let nr = read_u64(user_regs() + REGS_ORIG_AX);
            nr == NR_IO_URING_ENTER || nr == NR_RECVMSG || nr == NR_RECVMMSG
        }
}

/// What the gate decided about one matched object, before any side effect: [`settle`] or
/// [`finish`] records and carries it out.
#[derive(Clone, Copy)]
pub(crate) struct Decision {
    pub(crate) rule: RuleRef,
    pub(crate) target: InodeKey,
    /// Dentry whose name goes into the event.
    pub(crate) dentry: u64,
    /// One of [`verdict`].
    pub(crate) verdict: u32,
    /// Event [`flags`] bits besides MONITOR (MATCHED_BY_ENTRY, BY_ONCE, ARGV_TRUNCATED, …).
    pub(crate) flags: u32,
    /// exec: the argv hash of this attempt (part of the once-grant key); 0 otherwise.
    pub(crate) argv_hash: u64,
    /// Non-zero: a once-grant decided it; delete the grant when the syscall goes ahead or
    /// fails. (u32 and explicit padding: no uninitialised bytes for LLVM to copy around.)
    pub(crate) consume: u32,
    pub(crate) _pad: u32,
}

impl Decision {
    /// Nothing matched: an allow that records nothing.
    #[inline(always)]
    pub(crate) fn none() -> Decision {
        Decision {
            rule: RuleRef {
                rule_id: 0,
                action: action::ALLOW,
                ops: 0,
                flags: 0,
            },
            target: InodeKey {
                ino: 0,
                dev: 0,
                slot: 0,
            },
            dentry: 0,
            verdict: verdict::ALLOWED,
            flags: 0,
            argv_hash: 0,
            consume: 0,
            _pad: 0,
        }
    }
}

/// The once-grant key of the current thread's request on `target` (see [`OnceKey`]).
#[inline(always)]
pub(crate) fn once_key(opv: u32, target: &InodeKey, argv_hash: u64) -> OnceKey {
    OnceKey {
        tid: bpf_get_current_pid_tgid() as u32,
        op: opv,
        ino: target.ino,
        dev: target.dev,
        _pad: 0,
        argv_hash,
    }
}

/// The verdict for `rule` on `target`: deny and audit as the rule says (monitor mode: always
/// allowed); approve consults this thread's once-grant, then the cgroup's standing grant, and
/// otherwise holds. The verdict is always one of the constants, never a value from a map.
#[inline(always)]
pub(crate) fn decide(
    cg: u64,
    opv: u32,
    rule: &RuleRef,
    target: &InodeKey,
    dentry: u64,
    extra: u32,
    argv_hash: u64,
) -> Decision {
    let mut d = Decision {
        rule: *rule,
        target: *target,
        dentry,
        verdict: verdict::ALLOWED,
        flags: extra,
        argv_hash,
        consume: 0,
        _pad: 0,
    };
    if rule.flags & flags::MONITOR != 0 {
        return d;
    }
    if rule.action == action::DENY {
        d.verdict = verdict::DENIED;
        return d;
    }
    if rule.action != action::APPROVE {
        return d;
    }
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let ok = once_key(opv, target, argv_hash);
    // SAFETY: the value is copied out at once.
    if let Some(g) = unsafe { ONCE_GRANTS.get(&ok) } {
        let g = *g;
        if now < g.expires_ns {
            d.verdict = if g.verdict == verdict::ALLOWED {
                verdict::ALLOWED
            } else {
                verdict::DENIED
            };
            d.flags |= flags::BY_ONCE;
            d.consume = 1;
            return d;
        }
        // Expired: left over from a thread that died while held; never applies again.
        let _ = ONCE_GRANTS.remove(&ok);
    }
    let ak = AgentGrantKey {
        cgroup_id: cg,
        ino: target.ino,
        dev: target.dev,
        op: opv,
    };
    // SAFETY: the value is copied out at once.
    if let Some(g) = unsafe { AGENT_GRANTS.get(&ak) } {
        let g = *g;
        if g.expires_ns == GRANT_FOREVER || now < g.expires_ns {
            d.verdict = if g.verdict == verdict::ALLOWED {
                verdict::ALLOWED
            } else {
                verdict::DENIED
            };
            d.flags |= flags::BY_AGENT_GRANT;
            return d;
        }
    }
    d.verdict = verdict::HELD;
    d
}

#[inline(always)]
fn count_lost() {
    if let Some(n) = LOST.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *n += 1 };
    }
}

#[inline(always)]
fn code_of(v: u32) -> u32 {
    if v == verdict::HELD {
        HOLD
    } else if v == verdict::DENIED {
        REFUSE
    } else {
        GO
    }
}

/// Zeroes `len` (at most 1 KiB) bytes of a reserved record (ring memory is not zeroed) with
/// one helper call copying from the all-zero [`ZEROES`] map: a store loop would be walked by
/// the verifier on every path (too many on 6.1 for the two-sided hooks). Were the map missing,
/// the read from address 0 fails, and a failed `bpf_probe_read_kernel` zero-fills too.
#[inline(always)]
fn zero_from_map(dst: *mut u8, len: u32) {
    let src = ZEROES
        .get_ptr(0)
        .map_or(core::ptr::null(), |p| p as *const core::ffi::c_void);
    // SAFETY: `dst` points into an exclusively owned ring-buffer record with `len` bytes left.
    unsafe { raw::bpf_probe_read_kernel(dst.cast(), len, src) };
}

/// Zeroes the argv part of a reserved record.
#[inline(always)]
pub(crate) fn zero_argv(e: *mut Event) {
    // SAFETY: `e` is an exclusively owned ring-buffer record.
    let dst = unsafe { (*e).argv.as_mut_ptr().cast::<u8>() };
    zero_from_map(dst, (ARGV_MAX * ARG_LEN) as u32);
}

/// Fills every field of a reserved record except the argv part (`argv_hash`, `argc`, `argv`),
/// which the caller has written.
#[inline(always)]
pub(crate) fn fill(o: &KernelOffsets, cg: u64, opv: u32, d: &Decision, e: *mut Event) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: helper without arguments; the task pointer is only dereferenced through
    // bpf_probe_read_kernel.
    let task = unsafe { bpf_get_current_task() };
    let cred = read_u64(task + o.task_cred as u64);
    let parent = read_u64(task + o.task_real_parent as u64);
    // SAFETY: `e` points at a reserved, exclusively owned ring-buffer record.
    unsafe {
        (*e).ktime_ns = bpf_ktime_get_boot_ns();
        (*e).cgroup_id = cg;
        (*e).target_ino = d.target.ino;
        (*e).pid = pid_tgid as u32;
        (*e).tgid = (pid_tgid >> 32) as u32;
        (*e).ppid = read_u32(parent + o.task_tgid as u64);
        (*e).uid = bpf_get_current_uid_gid() as u32;
        (*e).euid = read_u32(cred + o.cred_euid as u64);
        (*e).target_dev = d.target.dev;
        (*e).op = opv;
        (*e).rule_id = d.rule.rule_id;
        (*e).action = d.rule.action;
        (*e).verdict = d.verdict;
        (*e).flags = (d.rule.flags & flags::MONITOR) | d.flags;
        (*e)._pad = 0;
        // Raw helpers with the record as destination: both zero-fill it on failure, and no
        // byte-wise memset loop lands in every path the verifier walks.
        raw::bpf_get_current_comm((*e).comm.as_mut_ptr().cast(), COMM_LEN as u32);
        zero_from_map((*e).name.as_mut_ptr(), NAME_LEN as u32);
        let name_ptr = read_u64(d.dentry + (o.dentry_d_name + o.qstr_name) as u64);
        // Length with the NUL; a full buffer means the name was cut.
        let n = raw::bpf_probe_read_kernel_str(
            (*e).name.as_mut_ptr().cast(),
            NAME_LEN as u32,
            name_ptr as *const _,
        );
        if n >= NAME_LEN as i64 {
            (*e).flags |= flags::NAME_TRUNCATED;
        }
    }
}

/// Records the decision in `entry` and carries it out. A hold sends SIGSTOP *before* the event
/// is submitted, so userspace can never SIGCONT the task before its stop is pending; if the
/// signal cannot be sent the hold becomes a denial (returning -ERESTARTNOINTR without a pending
/// signal would hand error 513 to the caller).
///
/// The stop is sent to this thread, not to the process: a SIGSTOP for the process that is
/// already pending (another thread of it was held a moment earlier) is not queued again and
/// wakes nobody, so this thread would return to user space without a signal to handle and
/// without restarting: `errno` 513. A thread-directed stop is always queued on this thread
/// and still stops the whole process.
#[inline(always)]
pub(crate) fn finish(
    o: &KernelOffsets,
    cg: u64,
    opv: u32,
    d: &Decision,
    mut entry: RingBufEntry<Event>,
) -> u32 {
    let e = entry.as_mut_ptr();
    fill(o, cg, opv, d, e);
    let mut v = d.verdict;
    if v == verdict::HELD && unholdable(o) {
        v = verdict::DENIED;
        // SAFETY: as in fill.
        unsafe {
            (*e).verdict = verdict::DENIED;
            (*e).flags |= flags::UNHOLDABLE;
        }
    } else if v == verdict::HELD {
        // SAFETY: helper with a scalar argument; signals the current task.
        if unsafe { bpf_send_signal_thread(SIGSTOP) } != 0 {
            v = verdict::DENIED;
            // SAFETY: as in fill.
            unsafe { (*e).verdict = verdict::DENIED };
        }
    } else if d.consume != 0 {
        let _ = ONCE_GRANTS.remove(&once_key(opv, &d.target, d.argv_hash));
    }
    entry.submit(0);
    code_of(v)
}

/// Carries out a decision that could not be recorded (ring buffer full): a hold nobody hears of
/// would never end, so it is refused instead.
#[inline(always)]
pub(crate) fn settle_unrecorded(opv: u32, d: &Decision) -> u32 {
    count_lost();
    if d.consume != 0 {
        let _ = ONCE_GRANTS.remove(&once_key(opv, &d.target, d.argv_hash));
    }
    if d.verdict == verdict::ALLOWED {
        GO
    } else {
        REFUSE
    }
}

/// Records (unless the rule is a plain allow) and carries out a non-exec decision.
#[inline(always)]
pub(crate) fn settle(o: &KernelOffsets, cg: u64, opv: u32, d: &Decision) -> u32 {
    if d.rule.action == action::ALLOW {
        return GO;
    }
    match EVENTS.reserve::<Event>(0) {
        Some(mut entry) => {
            let e = entry.as_mut_ptr();
            zero_argv(e);
            // SAFETY: exclusively owned record.
            unsafe {
                (*e).argv_hash = 0;
                (*e).argc = 0;
            }
            finish(o, cg, opv, d, entry)
        }
        None => settle_unrecorded(opv, d),
    }
}

/// x86_64 `struct pt_regs` offsets (a stable ABI, the same on every kernel).
const REGS_ORIG_AX: u64 = 120;
const REGS_SI: u64 = 104;
const REGS_DX: u64 = 96;
const NR_EXECVE: u64 = 59;
const NR_EXECVEAT: u64 = 322;

/// x86_64 numbers of the syscalls that open files (open, creat, openat, openat2).
const NR_OPEN: u64 = 2;
const NR_CREAT: u64 = 85;
const NR_OPENAT: u64 = 257;
const NR_OPENAT2: u64 = 437;

/// The current task's user registers (x86_64 `struct pt_regs`), as an address for
/// `bpf_probe_read_kernel`.
#[inline(always)]
fn user_regs() -> u64 {
    // SAFETY: helpers on the current task; the result is only read through
    // bpf_probe_read_kernel.
    unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) as u64 }
}

/// Whether the current task is inside an open-family syscall.
#[inline(always)]
pub(crate) fn in_open_syscall() -> bool {
    let nr = read_u64(user_regs() + REGS_ORIG_AX);
    nr == NR_OPEN || nr == NR_CREAT || nr == NR_OPENAT || nr == NR_OPENAT2
}

/// Reads the exec caller's argv from its memory (still the old image at bprm_check_security)
/// into the record: argv of execve is the second syscall argument, of execveat the third.
/// Returns (argc, flags): at most [`ARGV_MAX`] arguments, ARGV_TRUNCATED when there were more,
/// one filled its slot, or a read failed.
#[inline(always)]
pub(crate) fn capture_argv(e: *mut Event) -> (u32, u32) {
    zero_argv(e);
    let regs = user_regs();
    let nr = read_u64(regs + REGS_ORIG_AX);
    let argv = if nr == NR_EXECVE {
        read_u64(regs + REGS_SI)
    } else if nr == NR_EXECVEAT {
        read_u64(regs + REGS_DX)
    } else {
        return (0, 0);
    };
    if argv == 0 {
        return (0, 0);
    }
    let mut argc = 0u32;
    let mut fl = 0u32;
    let mut i = 0usize;
    while i < ARGV_MAX {
        // SAFETY: bpf_probe_read_user copes with any address.
        let Ok(p) = (unsafe { bpf_probe_read_user((argv + 8 * i as u64) as *const u64) }) else {
            fl = flags::ARGV_TRUNCATED;
            break;
        };
        if p == 0 {
            break;
        }
        // SAFETY: bounded user string read into the record's slot `i` (< ARGV_MAX).
        match unsafe { bpf_probe_read_user_str_bytes(p as *const u8, &mut (*e).argv[i]) } {
            Ok(s) => {
                if s.len() >= ARG_LEN - 1 {
                    fl = flags::ARGV_TRUNCATED;
                }
            }
            Err(_) => fl = flags::ARGV_TRUNCATED,
        }
        argc += 1;
        i += 1;
    }
    if i == ARGV_MAX {
        // SAFETY: as above.
        let next =
            unsafe { bpf_probe_read_user((argv + 8 * ARGV_MAX as u64) as *const u64) }.unwrap_or(1);
        if next != 0 {
            fl = flags::ARGV_TRUNCATED;
        }
    }
    (argc, fl)
}
