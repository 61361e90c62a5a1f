//! Membership sticks to the process: an agent process moved out of its agent's cgroup subtree
//! (by a process outside the agent, which the gates do not see: an administrator, a service
//! manager, a descriptor of `cgroup.procs` inherited at launch) is still that agent's, and so
//! are its children.
//!
//! Agent processes are known by tgid in [`AGENT_TASKS`]: seeded by userspace from the agent
//! cgroups when it arms the programs, added at fork (children of agent processes, escaped ones
//! included) and when a process is moved into an agent cgroup, removed when the process is
//! freed. A move out of the subtree is seen after the fact (tracepoint `cgroup_attach_task`)
//! and counted in [`ESCAPES`]; from then on [`crate::agent`] also asks `AGENT_TASKS` about
//! tasks of cgroups outside agents. While nothing has escaped, tasks outside agents pay one
//! array read for it.
//!
//! Limit: between the move and the tracepoint (the same `write(2)` of `cgroup.procs`, before
//! it returns) the moved process is outside for an instant if it runs on another CPU.
use airlock_common::{AgentTask, MAX_CGROUP_LEVEL};
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, map},
    maps::{Array, HashMap},
    programs::BtfTracePointContext,
};

use crate::{AGENT_ROOTS, Agent, agent, agent_root, offsets, read_u32, read_u64};

/// Agent processes by tgid.
#[map]
pub(crate) static AGENT_TASKS: HashMap<u32, AgentTask> = HashMap::with_max_entries(65536, 0);

/// How many times an agent process was moved out of its agent's subtree (ever).
#[map]
pub(crate) static ESCAPES: Array<u64> = Array::with_max_entries(1, 0);

/// The agent of the current process if it left its agent's subtree (see the module docs),
/// while that agent is still one.
#[inline(always)]
pub(crate) fn escaped() -> Option<Agent> {
    if ESCAPES.get(0).copied().unwrap_or(0) == 0 {
        return None;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: the value is copied out at once.
    let t = unsafe { AGENT_TASKS.get(&tgid) }.copied()?;
    // SAFETY: the value is not kept.
    unsafe { AGENT_ROOTS.get(&t.root) }?;
    Some(Agent {
        cg: t.root,
        slot: t.slot,
    })
}

/// The current process as an [`AgentTask`], if it is an agent's.
#[inline(always)]
fn current_agent_task() -> Option<AgentTask> {
    let a = agent()?;
    match agent_root() {
        Some((root, slot)) => Some(AgentTask {
            root,
            slot,
            _pad: 0,
        }),
        // An escaped process: `agent` answered from AGENT_TASKS, with its root as `cg`.
        None => Some(AgentTask {
            root: a.cg,
            slot: a.slot,
            _pad: 0,
        }),
    }
}

/// A new process (or thread) of an agent process is the agent's.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn agent_fork(ctx: BtfTracePointContext) -> i32 {
    let Some(t) = current_agent_task() else {
        return 0;
    };
    let Some(o) = offsets() else { return 0 };
    // (struct task_struct *parent, struct task_struct *child)
    let child: u64 = ctx.arg(1);
    let tgid = read_u32(child + u64::from(o.task_tgid));
    let _ = AGENT_TASKS.insert(&tgid, &t, 0);
    0
}

/// A process moved into an agent's subtree joins it; an agent process moved out of it stays
/// (and is counted in [`ESCAPES`]).
#[btf_tracepoint(function = "cgroup_attach_task")]
pub fn agent_moved(ctx: BtfTracePointContext) -> i32 {
    let Some(o) = offsets() else { return 0 };
    // (struct cgroup *dst_cgrp, const char *path, struct task_struct *task, bool threadgroup)
    let dst: u64 = ctx.arg(0);
    let task: u64 = ctx.arg(2);
    let tgid = read_u32(task + u64::from(o.task_tgid));
    let mut kn = read_u64(dst + u64::from(o.cgroup_kn));
    let mut level = 0u32;
    while level <= MAX_CGROUP_LEVEL {
        if kn == 0 {
            break;
        }
        let id = read_u64(kn + u64::from(o.kernfs_node_id));
        // SAFETY: the value is copied out at once.
        if let Some(slot) = unsafe { AGENT_ROOTS.get(&id) } {
            let t = AgentTask {
                root: id,
                slot: *slot,
                _pad: 0,
            };
            let _ = AGENT_TASKS.insert(&tgid, &t, 0);
            return 0;
        }
        kn = read_u64(kn + u64::from(o.kernfs_node_parent));
        level += 1;
    }
    // SAFETY: the value is not kept.
    if unsafe { AGENT_TASKS.get(&tgid) }.is_some()
        && let Some(n) = ESCAPES.get_ptr_mut(0)
    {
        // SAFETY: the array's one element; a lost increment under a race still leaves it
        // non-zero, which is all readers look at.
        unsafe { *n += 1 };
    }
    0
}

/// A process is gone: forget it (its first thread is freed last).
#[btf_tracepoint(function = "sched_process_free")]
pub fn agent_freed(ctx: BtfTracePointContext) -> i32 {
    let Some(o) = offsets() else { return 0 };
    // (struct task_struct *p)
    let task: u64 = ctx.arg(0);
    let tgid = read_u32(task + u64::from(o.task_tgid));
    if read_u32(task + u64::from(o.task_pid)) == tgid {
        let _ = AGENT_TASKS.remove(&tgid);
    }
    0
}
