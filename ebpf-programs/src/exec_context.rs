//! Exec context (both backends): what agent processes execute, recorded after the exec; and the
//! fanotify fallback's exec backstop.
//!
//! Backstop: the fanotify backend gates execs in userspace, and when airlockd dies the kernel
//! allows what it did not answer and closing the group removes every mark. This program
//! (pinned by userspace, so it outlives the daemon) then still sees every agent exec: an exec
//! of a binary under an enforcing `deny` or `approve` rule ([`EXEC_INODES`]) that the daemon
//! did not allow ([`EXEC_ALLOW`], written by the listener right before it answers `FAN_ALLOW`)
//! went through without a decision. The new image is stopped (`approve`: SIGSTOP, the daemon
//! can resume it with SIGCONT) or killed (`deny`: SIGKILL) before its first instruction, and an
//! event with [`flags::BACKSTOP`] goes to [`EVENTS`], where a restarted daemon finds it.
use airlock_common::{
    Event, ExecAllowKey, ExecContext, InodeKey, KernelOffsets, RuleRef, action, flags, op, verdict,
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns, bpf_probe_read_kernel_str_bytes,
        bpf_send_signal,
    },
    macros::{btf_tracepoint, map},
    maps::LruHashMap,
    programs::BtfTracePointContext,
};

use crate::hold::Decision;
use crate::{
    Agent, EVENTS, EXEC_CONTEXT, EXEC_CONTEXT_BYTES, EXEC_INODES, LOST, SETTINGS, agent, inode_key,
    offsets, read_u64, rule_for_inode,
};

/// `bpf_ringbuf_submit` / `bpf_ringbuf_query` flags (uapi `bpf.h`).
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

const SIGKILL: u32 = 9;
const SIGSTOP: u32 = 19;
/// How long an `EXEC_ALLOW` entry stays good: the exec it was written for reaches this
/// tracepoint within milliseconds; a stale one (its exec failed after the open) must not let a
/// later exec of the same thread through once the daemon is gone.
const ALLOW_TTL_NS: u64 = 10_000_000_000;

/// Execs the daemon allowed: (thread that exec'd, binary) → CLOCK_BOOTTIME ns of the allow.
/// Consumed by the exec it was written for. LRU: stale entries age out.
#[map]
pub(crate) static EXEC_ALLOW: LruHashMap<ExecAllowKey, u64> =
    LruHashMap::with_max_entries(16384, 0);

/// After a successful exec by an agent process: backstop, then record what it now runs. Runs on
/// every exec on the host (tp_btf: no measurable cost here); non-agents leave at the
/// classification lookup. Works on kernels that refuse BPF LSM, so both backends get exec
/// context.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> i32 {
    let Some(a) = agent() else {
        return 0;
    };
    let Some(o) = offsets() else { return 0 };
    // (struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
    let old_pid: u64 = ctx.arg(1);
    let bprm: u64 = ctx.arg(2);
    backstop(o, a, old_pid as u32, bprm);
    record(o, a.cg, bprm);
    0
}

fn count_lost() {
    if let Some(n) = LOST.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *n += 1 };
    }
}

#[inline(always)]
fn record(o: &KernelOffsets, cg: u64, bprm: u64) {
    let Some(mut entry) = EXEC_CONTEXT.reserve::<ExecContext>(0) else {
        count_lost();
        return;
    };
    let e = entry.as_mut_ptr();
    let pid_tgid = bpf_get_current_pid_tgid();
    let name = read_u64(bprm + o.binprm_filename as u64);
    // SAFETY: `e` points at a reserved, exclusively owned ring-buffer record.
    unsafe {
        (*e).ktime_ns = bpf_ktime_get_boot_ns();
        (*e).cgroup_id = cg;
        (*e).pid = pid_tgid as u32;
        (*e).tgid = (pid_tgid >> 32) as u32;
        (*e).filename = [0; airlock_common::FILENAME_LEN];
        let _ = bpf_probe_read_kernel_str_bytes(name as *const u8, &mut (*e).filename);
    }
    // No wakeup per record: airlockd reads this ring itself right before it records an event
    // (and on a slow timer). Waking it for every agent exec was most of the overhead on an
    // agent's exec (two thread wakeups each). Past half full it is woken, so a burst of execs
    // is not lost.
    let flags = if EXEC_CONTEXT.query(BPF_RB_AVAIL_DATA) > u64::from(EXEC_CONTEXT_BYTES / 2) {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags);
}

/// `old_pid` is the thread that called execve (a non-leader thread's exec takes the leader's
/// pid by now): the one the daemon allowed.
#[inline(always)]
fn backstop(o: &KernelOffsets, a: Agent, old_pid: u32, bprm: u64) {
    let Some(s) = SETTINGS.get(0) else { return };
    if s.backstop == 0 {
        return;
    }
    // bprm->file is the image now running (for a script: its interpreter, so a gated script
    // is not caught here).
    let file = read_u64(bprm + o.binprm_file as u64);
    let key = inode_key(o, read_u64(file + o.file_f_inode as u64));
    let Some(rule) = rule_for_inode(&EXEC_INODES, &key, a.slot) else {
        return;
    };
    if rule.flags & flags::MONITOR != 0
        || (rule.action != action::DENY && rule.action != action::APPROVE)
    {
        return;
    }
    let allow = ExecAllowKey {
        tid: old_pid,
        dev: key.dev,
        ino: key.ino,
    };
    // SAFETY: the value is copied out at once.
    if let Some(at) = unsafe { EXEC_ALLOW.get(&allow) }.copied() {
        let _ = EXEC_ALLOW.remove(&allow);
        // SAFETY: helper without arguments.
        if unsafe { bpf_ktime_get_boot_ns() }.wrapping_sub(at) < ALLOW_TTL_NS {
            return;
        }
    }
    let held = rule.action == action::APPROVE;
    let dentry = read_u64(file + (o.file_f_path + o.path_dentry) as u64);
    emit(
        o,
        a.cg,
        &rule,
        &key,
        dentry,
        if held { verdict::HELD } else { verdict::DENIED },
    );
    // SAFETY: signals the current process (the one that just exec'd); delivered on its return
    // to user space, before the new image's first instruction.
    unsafe { bpf_send_signal(if held { SIGSTOP } else { SIGKILL }) };
}

/// Records a backstop event: the same record the LSM gates write (see `hold::fill`), flagged
/// BACKSTOP. Arguments are not read here (the offsets of mm->arg_start are not in OFFSETS);
/// userspace reads /proc/<pid>/cmdline of the stopped process instead.
#[inline(always)]
fn emit(o: &KernelOffsets, cg: u64, rule: &RuleRef, target: &InodeKey, dentry: u64, v: u32) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_lost();
        return;
    };
    let e = entry.as_mut_ptr();
    let d = Decision {
        rule: *rule,
        target: *target,
        dentry,
        verdict: v,
        flags: flags::BACKSTOP,
        ..Decision::none()
    };
    crate::hold::fill(o, cg, op::EXEC, &d, e);
    crate::hold::zero_argv(e);
    // SAFETY: `e` points at a reserved, exclusively owned ring-buffer record.
    unsafe {
        (*e).argv_hash = 0;
        (*e).argc = 0;
    }
    entry.submit(0);
}
