//! `privilege` rules: changes of user or group ids and new user namespaces by agent processes,
//! gated like exec (allow, audit, deny, or a hold until someone decides). Each hook runs
//! before the change takes effect, and failing it leaves the caller's credentials as they were;
//! a hold restarts the syscall (setuid family, unshare, clone, execve).
use airlock_common::{InodeKey, KernelOffsets, op};
use aya_ebpf::{macros::lsm, programs::LsmContext};

use crate::hold::{decide, settle};
use crate::{
    Agent, GO, PRIVILEGE, agent, chained, offsets, read_u32, read_u64, ret, rule_for_inode,
};

/// Gates privilege change `opv` (`what`: the new id, or 0) by the agent's `privilege` rule.
/// `dentry`: the file an exec runs (its name goes into the event, so the approver sees which
/// program gains the privilege), or 0.
#[inline(always)]
fn gate(o: &KernelOffsets, a: Agent, opv: u32, what: u64, dentry: u64) -> u32 {
    let key = InodeKey {
        ino: u64::from(opv),
        dev: 0,
        slot: 0,
    };
    let Some(rule) = rule_for_inode(&PRIVILEGE, &key, a.slot) else {
        return GO;
    };
    let target = InodeKey {
        ino: what,
        dev: 0,
        slot: 0,
    };
    settle(
        o,
        a.cg,
        opv,
        &decide(a.cg, opv, &rule, &target, dentry, 0, 0),
    )
}

/// Whether any of the ids at `offs` in `new` differs from `old` (both `struct cred *`).
#[inline(always)]
fn changes(new: u64, old: u64, offs: [u32; 3]) -> bool {
    let mut i = 0;
    while i < 3 {
        let off = u64::from(offs[i]);
        if read_u32(new + off) != read_u32(old + off) {
            return true;
        }
        i += 1;
    }
    false
}

/// Which ids a set*id hook compares: real, effective (also the one reported), saved.
#[derive(Clone, Copy)]
enum Ids {
    User,
    Group,
}

/// The body of `task_fix_setuid` / `task_fix_setgid` (`new`, `old`: `struct cred *`): gated
/// when one of `ids` changes.
#[inline(always)]
fn id_change(ctx: &LsmContext, ids: Ids) -> i32 {
    let prev: u64 = ctx.arg(3);
    if prev as i32 != 0 {
        return chained(prev);
    }
    let Some(a) = agent() else { return 0 };
    let Some(o) = offsets() else { return 0 };
    let (offs, opv) = match ids {
        Ids::User => ([o.cred_uid, o.cred_euid, o.cred_suid], op::SETUID),
        Ids::Group => ([o.cred_gid, o.cred_egid, o.cred_sgid], op::SETGID),
    };
    let (new, old): (u64, u64) = (ctx.arg(0), ctx.arg(1));
    if !changes(new, old, offs) {
        return 0;
    }
    let effective = u64::from(read_u32(new + u64::from(offs[1])));
    ret(gate(o, a, opv, effective, 0))
}

/// setuid(2), setreuid(2), setresuid(2) (also setfsuid, which changes none of these ids and
/// passes): a change of the real, effective or saved uid.
#[lsm(hook = "task_fix_setuid")]
pub fn task_fix_setuid(ctx: LsmContext) -> i32 {
    id_change(&ctx, Ids::User)
}

/// setgid(2), setregid(2), setresgid(2): a change of the real, effective or saved gid.
#[lsm(hook = "task_fix_setgid")]
pub fn task_fix_setgid(ctx: LsmContext) -> i32 {
    id_change(&ctx, Ids::Group)
}

/// unshare(CLONE_NEWUSER), clone(CLONE_NEWUSER): a new user namespace (kernel 6.1 and later).
#[lsm(hook = "userns_create")]
pub fn userns_create(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(1);
    if prev as i32 != 0 {
        return chained(prev);
    }
    let Some(a) = agent() else { return 0 };
    let Some(o) = offsets() else { return 0 };
    ret(gate(o, a, op::USERNS, 0, 0))
}

/// execve of a set-user-ID or set-group-ID file (a new effective id) or one that gives
/// permitted capabilities the caller lacks (file capabilities; root's exec after dropping
/// some). `bprm->cred` holds what the exec will install, computed by the capability LSM,
/// which always runs first; `file` is arg 1. This runs before the exec's point of no return,
/// so EPERM fails the execve and a hold restarts it. Real and saved ids are not compared: every
/// exec sets the saved ids to the effective ones, which is no gain.
#[lsm(hook = "bprm_creds_from_file")]
pub fn bprm_creds_from_file(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(2);
    if prev as i32 != 0 {
        return chained(prev);
    }
    let Some(a) = agent() else { return 0 };
    let Some(o) = offsets() else { return 0 };
    let bprm: u64 = ctx.arg(0);
    let file: u64 = ctx.arg(1);
    let exe = read_u64(file + u64::from(o.file_f_path + o.path_dentry));
    let new = read_u64(bprm + u64::from(o.binprm_cred));
    // SAFETY: helper without arguments; the pointer is only read through probe reads.
    let task = unsafe { aya_ebpf::helpers::bpf_get_current_task() };
    let old = read_u64(task + u64::from(o.task_cred));
    for (off, opv) in [(o.cred_euid, op::SETUID), (o.cred_egid, op::SETGID)] {
        let off = u64::from(off);
        let id = read_u32(new + off);
        if id != read_u32(old + off) {
            let r = gate(o, a, opv, u64::from(id), exe);
            if r != GO {
                return ret(r);
            }
        }
    }
    let caps = u64::from(o.cred_cap_permitted);
    let gained = read_u64(new + caps) & !read_u64(old + caps);
    if gained != 0 {
        return ret(gate(o, a, op::CAPS, gained, exe));
    }
    0
}
