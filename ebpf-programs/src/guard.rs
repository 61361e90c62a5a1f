//! Self-protection: what no agent process may do, whatever the policy says — signal or ptrace
//! airlockd, call bpf(2) (airlock's programs, maps, links and pins are all reached through it),
//! load kernel code. Each attempt is refused with EPERM and recorded as an event of
//! [`SELF_RULE`]. Processes outside agent cgroups pay what every hook pays: one classification
//! lookup.
use airlock_common::{
    InodeKey, KernelOffsets, MAX_CGROUP_LEVEL, MAX_DENTRY_DEPTH, MODULE_AUTOLOAD, RuleRef,
    SELF_RULE, action, op, verdict,
};
use aya_ebpf::{helpers::bpf_probe_read_kernel_str_bytes, macros::lsm, programs::LsmContext};

use crate::hold::{Decision, settle};
use crate::{
    EPERM, REFUSE, SECRETS, SECRETS_ON, SETTINGS, agent_root, chained, in_agent_cgroup, inode_key,
    offsets, read_u32, read_u64, ret,
};

/// `CGROUP2_SUPER_MAGIC`.
const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;

/// `enum kernel_read_file_id` / `enum kernel_load_data_id`: FIRMWARE is 1 in both (the kernel
/// loads firmware for drivers in whatever task triggered it; everything else an agent might
/// load is refused: modules, kexec images and initramfs, policies, certificates).
const READING_FIRMWARE: u32 = 1;

/// Refuses and records `opv` on `what` (a tgid, a bpf command, a load id) for agent cgroup `cg`.
#[inline(always)]
fn refuse(cg: u64, opv: u32, what: u64) -> i32 {
    let target = InodeKey {
        ino: what,
        dev: 0,
        slot: 0,
    };
    refuse_object(cg, opv, &target, 0, 0)
}

/// Refuses and records `opv` on `target` (named by `dentry`, or 0), with event `flags`, as
/// self-protection ([`SELF_RULE`]) whatever the policy says.
#[inline(always)]
pub(crate) fn refuse_object(cg: u64, opv: u32, target: &InodeKey, dentry: u64, flags: u32) -> i32 {
    let Some(o) = offsets() else {
        // No offsets, no record; refused all the same.
        return -EPERM;
    };
    let d = Decision {
        rule: RuleRef {
            rule_id: SELF_RULE,
            action: action::DENY,
            ops: 0,
            flags: 0,
        },
        target: *target,
        dentry,
        verdict: verdict::DENIED,
        flags,
        argv_hash: 0,
        consume: 0,
        _pad: 0,
    };
    // `settle` refuses whether or not the event fits in the ring.
    let code = settle(o, cg, opv, &d);
    if code == REFUSE { -EPERM } else { ret(code) }
}

/// Is `task` one of airlockd's threads?
#[inline(always)]
fn is_airlockd(task: u64) -> Option<u32> {
    let me = SETTINGS.get(0)?.self_tgid;
    let o = offsets()?;
    let tgid = read_u32(task + o.task_tgid as u64);
    if me != 0 && tgid == me {
        Some(tgid)
    } else {
        None
    }
}

/// kill(2), tgkill(2), pidfd_send_signal(2), sigqueue and the like aimed at airlockd. Signal 0
/// (does it exist?) is let through.
#[lsm(hook = "task_kill")]
pub fn task_kill(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(4);
    if prev as i32 != 0 {
        return chained(prev);
    }
    let sig: u64 = ctx.arg(2);
    if sig as i32 == 0 {
        return 0;
    }
    let Some(cg) = in_agent_cgroup() else {
        return 0;
    };
    match is_airlockd(ctx.arg(0)) {
        Some(tgid) => refuse(cg, op::SIGNAL, u64::from(tgid)),
        None => 0,
    }
}

/// `PTRACE_MODE_ATTACH`: the access that lets the caller act as the target.
const PTRACE_MODE_ATTACH: u64 = 0x02;

/// ptrace attach and seize, /proc/PID/mem, process_vm_readv/writev, pidfd_getfd: everything
/// that asks `ptrace_may_access` about airlockd (any mode), or about any process outside the
/// caller's agent subtree in attach mode: tracing a process, or writing its memory, makes it do
/// the agent's work outside every gate (delegation). Read-mode checks of other processes (`ps`,
/// `lsof`, `/proc/PID/environ`) are left to the kernel's own rules.
#[lsm(hook = "ptrace_access_check")]
pub fn ptrace_access_check(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(2);
    if prev as i32 != 0 {
        return chained(prev);
    }
    let Some(cg) = in_agent_cgroup() else {
        return 0;
    };
    let task: u64 = ctx.arg(0);
    if let Some(tgid) = is_airlockd(task) {
        return refuse(cg, op::PTRACE, u64::from(tgid));
    }
    let mode: u64 = ctx.arg(1);
    if mode & PTRACE_MODE_ATTACH == 0 {
        return 0;
    }
    let Some(o) = offsets() else { return 0 };
    let root = agent_root().map_or(0, |(id, _)| id);
    // The target's cgroup and its ancestors, by kernfs node: inside if one is the agent root.
    let cgroup = read_u64(read_u64(task + o.task_cgroups as u64) + o.css_set_dfl_cgrp as u64);
    let mut kn = read_u64(cgroup + o.cgroup_kn as u64);
    let mut level = 0u32;
    while level <= MAX_CGROUP_LEVEL {
        if kn == 0 {
            break;
        }
        if root != 0 && read_u64(kn + o.kernfs_node_id as u64) == root {
            return 0;
        }
        kn = read_u64(kn + o.kernfs_node_parent as u64);
        level += 1;
    }
    refuse(
        cg,
        op::PTRACE,
        u64::from(read_u32(task + o.task_tgid as u64)),
    )
}

/// Every bpf(2) command of an agent process: loading, attaching, detaching, pinning, reading
/// and writing maps, getting fds of existing objects by id.
#[lsm(hook = "bpf")]
pub fn bpf(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(3);
    if prev as i32 != 0 {
        return chained(prev);
    }
    let Some(cg) = in_agent_cgroup() else {
        return 0;
    };
    let cmd: u64 = ctx.arg(0);
    refuse(cg, op::BPF, u64::from(cmd as u32))
}

/// Refuses (and records) a kernel load of `id` by an agent process, unless it is firmware.
#[inline(always)]
fn kernel_load(prev: u64, id: u32) -> i32 {
    if prev as i32 != 0 {
        return chained(prev);
    }
    if id == READING_FIRMWARE {
        return 0;
    }
    match in_agent_cgroup() {
        Some(cg) => refuse(cg, op::KERNEL_LOAD, u64::from(id)),
        None => 0,
    }
}

/// finit_module(2), kexec_file_load(2) and the other reads of files for the kernel.
#[lsm(hook = "kernel_read_file")]
pub fn kernel_read_file(ctx: LsmContext) -> i32 {
    kernel_load(ctx.arg(3), ctx.arg::<u64>(1) as u32)
}

/// A module the kernel would load on the agent's behalf (`request_module`: a socket of an
/// unloaded family, a filesystem type, a device node). modprobe then runs as a kernel helper
/// outside every cgroup, so the request itself is what an agent must not make; the operation
/// that wanted the module fails as if it did not exist.
#[lsm(hook = "kernel_module_request")]
pub fn kernel_module_request(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(1);
    if prev as i32 != 0 {
        return chained(prev);
    }
    let Some(cg) = in_agent_cgroup() else {
        return 0;
    };
    refuse(cg, op::KERNEL_LOAD, MODULE_AUTOLOAD)
}

/// init_module(2), kexec_load(2) and the other loads of kernel data from memory.
#[lsm(hook = "kernel_load_data")]
pub fn kernel_load_data(ctx: LsmContext) -> i32 {
    kernel_load(ctx.arg(2), ctx.arg::<u64>(0) as u32)
}

/// `CLONE_INTO_CGROUP` (clone3(2)).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// clone3(2) with `CLONE_INTO_CGROUP` by an agent process would start the child in whatever
/// cgroup the caller names. This hook runs before the kernel has resolved that cgroup, so every
/// such clone by an agent is refused, even into its own subtree: only service managers use it,
/// and an agent can still create a child cgroup of its own and move processes there.
#[lsm(hook = "task_alloc")]
pub fn task_alloc(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(2);
    if prev as i32 != 0 {
        return chained(prev);
    }
    let clone_flags: u64 = ctx.arg(1);
    if clone_flags & CLONE_INTO_CGROUP == 0 {
        return 0;
    }
    match in_agent_cgroup() {
        Some(cg) => refuse(cg, op::CGROUP_MOVE, 0),
        None => 0,
    }
}

/// Whether the NUL-terminated `name` read from the kernel is `want` (which ends in NUL).
#[inline(always)]
fn name_is(name: &[u8; 16], want: &[u8]) -> bool {
    let mut i = 0;
    while i < want.len() && i < 16 {
        if name[i] != want[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// A write open of `cgroup.procs` / `cgroup.threads` (the file at `dentry`) by an agent
/// process, for a cgroup outside its agent's subtree: moving any process there would take it
/// out of the agent (and out of every gate). Returns the hook's answer when it is one, else
/// `None` (not such a file, not an agent, or a cgroup inside the subtree: an agent may
/// organise its own subtree).
///
/// On cgroup2 a directory's inode number is its cgroup id, so "inside" is: the agent root's
/// id appears among the inode numbers of the target directory and its dentry ancestors.
#[inline(always)]
pub(crate) fn cgroup_move(o: &KernelOffsets, dentry: u64) -> Option<i32> {
    let cg = in_agent_cgroup()?;
    let inode = read_u64(dentry + o.dentry_d_inode as u64);
    let sb = read_u64(inode + o.inode_i_sb as u64);
    if read_u64(sb + o.sb_s_magic as u64) & 0xffff_ffff != CGROUP2_SUPER_MAGIC {
        return None;
    }
    let mut name = [0u8; 16];
    let p = read_u64(dentry + (o.dentry_d_name + o.qstr_name) as u64);
    // SAFETY: bounded kernel string read into a stack buffer.
    if unsafe { bpf_probe_read_kernel_str_bytes(p as *const u8, &mut name) }.is_err() {
        return None;
    }
    if !name_is(&name, b"cgroup.procs\0") && !name_is(&name, b"cgroup.threads\0") {
        return None;
    }
    let root = agent_root().map_or(0, |(id, _)| id);
    let dir = read_u64(dentry + o.dentry_d_parent as u64);
    let target = read_u64(read_u64(dir + o.dentry_d_inode as u64) + o.inode_i_ino as u64);
    let mut d = dir;
    let mut depth = 0u32;
    while depth < MAX_DENTRY_DEPTH {
        let ino = read_u64(read_u64(d + o.dentry_d_inode as u64) + o.inode_i_ino as u64);
        if root != 0 && ino == root {
            return None;
        }
        let parent = read_u64(d + o.dentry_d_parent as u64);
        if parent == d || parent == 0 {
            break;
        }
        d = parent;
        depth += 1;
    }
    Some(refuse(cg, op::CGROUP_MOVE, target))
}

/// A read-only open of one of airlockd's secrets (its host key) by an agent process: refused.
/// The file is matched by inode, so a hard link or a renamed copy of the name reaches the same
/// check; a copy of the content would need this open first.
#[inline(always)]
pub(crate) fn secret_open(o: &KernelOffsets, file: u64) -> i32 {
    if SECRETS_ON.get(0).copied().unwrap_or(0) == 0 {
        return 0;
    }
    let Some(cg) = in_agent_cgroup() else {
        return 0;
    };
    let inode = read_u64(file + o.file_f_inode as u64);
    let key = inode_key(o, inode);
    // SAFETY: the value is not kept.
    if unsafe { SECRETS.get(&key) }.is_none() {
        return 0;
    }
    refuse(cg, op::READ_SECRET, key.ino)
}
