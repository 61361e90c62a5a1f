//! airlock's BPF LSM gates.
//!
//! Every hook first asks "is the current task in an agent cgroup?" (one LRU lookup for tasks
//! outside agent cgroups once their cgroup has been classified) and leaves at once if not. For
//! agent tasks it identifies the object by kernel identity — (s_dev, inode) of the file, of its
//! dentry ancestors for protected trees, or (parent inode, name) for gated binaries replaced at
//! their path — looks the rule up, records an event, and returns 0, -EPERM, or (approve rules)
//! holds the task: SIGSTOP plus -ERESTARTNOINTR, so that after SIGCONT the kernel runs the same
//! syscall again and it reaches the gate again, where a decision written by userspace
//! (`ONCE_GRANTS`, `AGENT_GRANTS`) lets it through or fails it.
//!
//! Rules for the verifier (see shared/KERNEL-FACTS.md): return constants on every path (6.12
//! checks the range), read hook arguments as raw scalars and walk struct fields with
//! `bpf_probe_read_kernel` at offsets userspace took from the running kernel's BTF.
#![no_std]
#![no_main]

use airlock_common::{
    ARG_LEN, ARGV_MAX, AgentGrantKey, DirEntryKey, Event, GRANT_FOREVER, Grant, InodeKey,
    KernelOffsets, MAX_CGROUP_LEVEL, MAX_DENTRY_DEPTH, NAME_LEN, OnceKey, RuleRef, Settings,
    action, flags, op, verdict, FMODE_WRITE, O_TRUNC,
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_comm,
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_uid_gid,
        bpf_ktime_get_boot_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
        bpf_probe_read_user, bpf_probe_read_user_str_bytes,
        generated::{bpf_get_current_task_btf, bpf_send_signal, bpf_task_pt_regs},
    },
    macros::{lsm, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf, ring_buf::RingBufEntry},
    programs::LsmContext,
};

mod exec_context;

const EPERM: i32 = 1;
/// The kernel's ERESTARTNOINTR: with a signal pending the syscall is restarted after the signal
/// is handled (here: after the SIGSTOP ends with SIGCONT), never failed with EINTR.
const ERESTARTNOINTR: i32 = 513;
/// x86_64 SIGSTOP.
const SIGSTOP: u32 = 19;

/// What a gate wants the hook to do; hooks map it to a constant return value in [`ret`].
const GO: u32 = 0;
const REFUSE: u32 = 1;
const HOLD: u32 = 2;

/// Field offsets of the running kernel (one entry).
#[map]
pub(crate) static OFFSETS: Array<KernelOffsets> = Array::with_max_entries(1, 0);
/// Global switches (one entry).
#[map]
pub(crate) static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);
/// Agent root cgroups: cgroup id → agent index.
#[map]
pub(crate) static AGENT_ROOTS: HashMap<u64, u32> = HashMap::with_max_entries(4096, 0);
/// Classification cache: cgroup id → (generation << 1) | is_agent. A stale generation means
/// the agent roots changed since the entry was written and the cgroup must be classified again.
#[map]
pub(crate) static CGROUP_CLASS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);
/// Gated binaries by inode.
#[map]
pub(crate) static EXEC_INODES: HashMap<InodeKey, RuleRef> = HashMap::with_max_entries(65536, 0);
/// Gated binaries by (parent directory inode, name).
#[map]
pub(crate) static EXEC_ENTRIES: HashMap<DirEntryKey, RuleRef> = HashMap::with_max_entries(65536, 0);
/// Roots of protected trees (and protected single files) by inode.
#[map]
pub(crate) static PROTECTED: HashMap<InodeKey, RuleRef> = HashMap::with_max_entries(16384, 0);
/// Flagged events for userspace.
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);
/// What agent processes executed (see [`sched_process_exec`]).
#[map]
pub(crate) static EXEC_CONTEXT: RingBuf = RingBuf::with_byte_size(256 << 10, 0);
/// Events that did not fit in [`EVENTS`].
#[map]
pub(crate) static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
/// Decisions for one held request of one thread, written by userspace before it sends SIGCONT;
/// the restarted syscall consumes its entry.
#[map]
static ONCE_GRANTS: HashMap<OnceKey, Grant> = HashMap::with_max_entries(16384, 0);
/// Standing decisions of an agent cgroup on an operation on an object (`approve --for`,
/// `deny --always`); they expire by time (compared here), not by use.
#[map]
static AGENT_GRANTS: HashMap<AgentGrantKey, Grant> = HashMap::with_max_entries(16384, 0);

#[inline(always)]
pub(crate) fn read_u64(addr: u64) -> u64 {
    // SAFETY: bpf_probe_read_kernel copes with any address; a fault reads as an error.
    unsafe { bpf_probe_read_kernel(addr as *const u64) }.unwrap_or(0)
}

#[inline(always)]
pub(crate) fn read_u32(addr: u64) -> u32 {
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel(addr as *const u32) }.unwrap_or(0)
}

#[inline(always)]
pub(crate) fn offsets() -> Option<&'static KernelOffsets> {
    let o = OFFSETS.get(0)?;
    if o.valid == 0 { None } else { Some(o) }
}

/// Is the current task in an agent cgroup (or below one)? Tasks outside agents pay one array
/// read (inlined by the verifier) and one LRU lookup once their cgroup is classified.
#[inline(always)]
pub(crate) fn in_agent_cgroup() -> Option<u64> {
    // SAFETY: helper without arguments.
    let cg = unsafe { bpf_get_current_cgroup_id() };
    let settings = SETTINGS.get(0)?;
    if settings.armed == 0 {
        return None;
    }
    let generation = settings.generation;
    // SAFETY: the value is a plain u64 copied out at once.
    if let Some(v) = unsafe { CGROUP_CLASS.get(&cg) } {
        let v = *v;
        if v >> 1 == generation {
            return if v & 1 != 0 { Some(cg) } else { None };
        }
    }
    let mut agent = 0u64;
    let mut level = 0u32;
    while level < MAX_CGROUP_LEVEL {
        // SAFETY: helper with a scalar argument.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if id == 0 {
            break;
        }
        // SAFETY: presence test only.
        if unsafe { AGENT_ROOTS.get(&id) }.is_some() {
            agent = 1;
            break;
        }
        level += 1;
    }
    let _ = CGROUP_CLASS.insert(&cg, &((generation << 1) | agent), 0);
    if agent != 0 { Some(cg) } else { None }
}

#[inline(always)]
pub(crate) fn inode_key(o: &KernelOffsets, inode: u64) -> InodeKey {
    let sb = read_u64(inode + o.inode_i_sb as u64);
    InodeKey {
        ino: read_u64(inode + o.inode_i_ino as u64),
        dev: read_u32(sb + o.sb_s_dev as u64),
        _pad: 0,
    }
}

/// Where a protected-tree match was found.
struct TreeMatch {
    rule: RuleRef,
    /// The object itself, or for a not-yet-existing one its nearest existing ancestor.
    target: InodeKey,
}

/// Walks from `dentry` up its parents to the nearest protected inode whose rule covers `op`.
/// Identity is the dentry chain, so symlinks, hardlinked names, relative paths, /proc/self/fd
/// and bind mounts all end at the same protected inode.
#[inline(always)]
fn protected_match(o: &KernelOffsets, dentry: u64, op_bit: u32) -> Option<TreeMatch> {
    let mut d = dentry;
    let mut target = InodeKey::default();
    let mut have_target = false;
    let mut depth = 0u32;
    while depth < MAX_DENTRY_DEPTH {
        if d == 0 {
            break;
        }
        let inode = read_u64(d + o.dentry_d_inode as u64);
        if inode != 0 {
            let key = inode_key(o, inode);
            if !have_target {
                target = key;
                have_target = true;
            }
            // SAFETY: the value is copied out at once.
            if let Some(r) = unsafe { PROTECTED.get(&key) } {
                if r.ops & op_bit != 0 {
                    return Some(TreeMatch { rule: *r, target });
                }
            }
        }
        let parent = read_u64(d + o.dentry_d_parent as u64);
        if parent == d {
            break;
        }
        d = parent;
        depth += 1;
    }
    None
}

/// What the gate decided about one matched object, before any side effect (two-sided hooks
/// decide both sides first and only then record, hold or consume).
#[derive(Clone, Copy)]
struct Decision {
    rule: RuleRef,
    target: InodeKey,
    /// Dentry whose name goes into the event.
    dentry: u64,
    /// One of [`verdict`].
    verdict: u32,
    /// Event [`flags`] bits besides MONITOR (MATCHED_BY_ENTRY, BY_ONCE, ARGV_TRUNCATED, …).
    flags: u32,
    /// exec: the argv hash of this attempt (part of the once-grant key); 0 otherwise.
    argv_hash: u64,
    /// A once-grant decided it: delete the grant when the syscall goes ahead or fails.
    consume: bool,
}

#[inline(always)]
fn once_key(opv: u32, target: &InodeKey, argv_hash: u64) -> OnceKey {
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
fn decide(cg: u64, opv: u32, rule: &RuleRef, target: &InodeKey, dentry: u64, extra: u32, argv_hash: u64) -> Decision {
    let mut d = Decision {
        rule: *rule,
        target: *target,
        dentry,
        verdict: verdict::ALLOWED,
        flags: extra,
        argv_hash,
        consume: false,
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
            d.verdict = if g.verdict == verdict::ALLOWED { verdict::ALLOWED } else { verdict::DENIED };
            d.flags |= flags::BY_ONCE;
            d.consume = true;
            return d;
        }
        // Expired: left over from a thread that died while held; never applies again.
        let _ = ONCE_GRANTS.remove(&ok);
    }
    let ak = AgentGrantKey { cgroup_id: cg, ino: target.ino, dev: target.dev, op: opv };
    // SAFETY: the value is copied out at once.
    if let Some(g) = unsafe { AGENT_GRANTS.get(&ak) } {
        let g = *g;
        if g.expires_ns == GRANT_FOREVER || now < g.expires_ns {
            d.verdict = if g.verdict == verdict::ALLOWED { verdict::ALLOWED } else { verdict::DENIED };
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

/// Zeroes the argv part of a reserved record (ring memory is not zeroed). Volatile stores keep
/// LLVM from turning the loop into a memset call, which BPF cannot make.
#[inline(always)]
fn zero_argv(e: *mut Event) {
    // SAFETY: `e` is an exclusively owned ring-buffer record; the slots are 1 KiB of u8s,
    // written as 128 u64s (the record is 8-byte aligned and so is the field).
    unsafe {
        let p = (*e).argv.as_mut_ptr().cast::<u64>();
        let mut i = 0usize;
        while i < ARGV_MAX * ARG_LEN / 8 {
            core::ptr::write_volatile(p.add(i), 0);
            i += 1;
        }
    }
}

/// Fills every field of a reserved record except the argv part (`argv_hash`, `argc`, `argv`),
/// which the caller has written.
#[inline(always)]
fn fill(o: &KernelOffsets, cg: u64, opv: u32, d: &Decision, e: *mut Event) {
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
        (*e).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        (*e).name = [0; NAME_LEN];
        let name_ptr = read_u64(d.dentry + (o.dentry_d_name + o.qstr_name) as u64);
        if let Ok(s) = bpf_probe_read_kernel_str_bytes(name_ptr as *const u8, &mut (*e).name) {
            if s.len() >= NAME_LEN - 1 {
                (*e).flags |= flags::NAME_TRUNCATED;
            }
        }
    }
}

/// Records the decision in `entry` and carries it out. A hold sends SIGSTOP *before* the event
/// is submitted, so userspace can never SIGCONT the task before its stop is pending; if the
/// signal cannot be sent the hold becomes a denial (returning -ERESTARTNOINTR without a pending
/// signal would hand error 513 to the caller).
#[inline(always)]
fn finish(o: &KernelOffsets, cg: u64, opv: u32, d: &Decision, mut entry: RingBufEntry<Event>) -> u32 {
    let e = entry.as_mut_ptr();
    fill(o, cg, opv, d, e);
    let mut v = d.verdict;
    if v == verdict::HELD {
        // SAFETY: helper with a scalar argument; signals the current task.
        if unsafe { bpf_send_signal(SIGSTOP) } != 0 {
            v = verdict::DENIED;
            // SAFETY: as in fill.
            unsafe { (*e).verdict = verdict::DENIED };
        }
    } else if d.consume {
        let _ = ONCE_GRANTS.remove(&once_key(opv, &d.target, d.argv_hash));
    }
    entry.submit(0);
    code_of(v)
}

/// Carries out a decision that could not be recorded (ring buffer full): a hold nobody hears of
/// would never end, so it is refused instead.
#[inline(always)]
fn settle_unrecorded(opv: u32, d: &Decision) -> u32 {
    count_lost();
    if d.consume {
        let _ = ONCE_GRANTS.remove(&once_key(opv, &d.target, d.argv_hash));
    }
    if d.verdict == verdict::ALLOWED { GO } else { REFUSE }
}

/// Records (unless the rule is a plain allow) and carries out a non-exec decision.
#[inline(always)]
fn settle(o: &KernelOffsets, cg: u64, opv: u32, d: &Decision) -> u32 {
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

/// Matches `dentry` against the protected trees for `opv` and decides.
#[inline(always)]
fn decide_tree(o: &KernelOffsets, cg: u64, dentry: u64, opv: u32) -> Option<Decision> {
    let m = protected_match(o, dentry, op::bit(opv))?;
    Some(decide(cg, opv, &m.rule, &m.target, dentry, 0, 0))
}

/// Gate on the protected tree containing `dentry` for `opv`.
#[inline(always)]
fn gate_tree(dentry: u64, opv: u32) -> u32 {
    let Some(cg) = in_agent_cgroup() else { return GO };
    let Some(o) = offsets() else { return GO };
    match decide_tree(o, cg, dentry, opv) {
        Some(d) => settle(o, cg, opv, &d),
        None => GO,
    }
}

/// Gate on two objects of one syscall (link: source and new name; rename: both sides). Both are
/// decided before anything happens: a denial on either side wins; else a hold on either side
/// holds without consuming the other side's once-grant, so that after both requests were
/// approved one restart finds both grants; else both are recorded.
#[inline(always)]
fn gate_pair(a: u64, b: u64, opv: u32) -> u32 {
    let Some(cg) = in_agent_cgroup() else { return GO };
    let Some(o) = offsets() else { return GO };
    let da = decide_tree(o, cg, a, opv);
    if let Some(d) = &da {
        if d.verdict == verdict::DENIED {
            return settle(o, cg, opv, d);
        }
    }
    let db = decide_tree(o, cg, b, opv);
    if let Some(d) = &db {
        if d.verdict == verdict::DENIED {
            if let Some(x) = &da {
                if x.verdict != verdict::HELD {
                    settle(o, cg, opv, x);
                }
            }
            return settle(o, cg, opv, d);
        }
    }
    if let Some(d) = &da {
        if d.verdict == verdict::HELD {
            return settle(o, cg, opv, d);
        }
    }
    if let Some(d) = &db {
        if d.verdict == verdict::HELD {
            return settle(o, cg, opv, d);
        }
    }
    let mut code = GO;
    if let Some(d) = &da {
        code = settle(o, cg, opv, d);
    }
    if let Some(d) = &db {
        if settle(o, cg, opv, d) != GO {
            code = REFUSE;
        }
    }
    code
}

/// Hook return value for a gate's answer: constants only (6.12 checks the range).
#[inline(always)]
fn ret(code: u32) -> i32 {
    if code == HOLD {
        -ERESTARTNOINTR
    } else if code == REFUSE {
        -EPERM
    } else {
        0
    }
}

/// Return value when an earlier BPF LSM program already refused (`prev` != 0): keep a hold a
/// hold (an older airlock version still attached during an upgrade), anything else is EPERM.
#[inline(always)]
fn chained(prev: u64) -> i32 {
    if prev as i32 == -ERESTARTNOINTR { -ERESTARTNOINTR } else { -EPERM }
}

/// x86_64 `struct pt_regs` offsets (a stable ABI, the same on every kernel).
const REGS_ORIG_AX: u64 = 120;
const REGS_SI: u64 = 104;
const REGS_DX: u64 = 96;
const NR_EXECVE: u64 = 59;
const NR_EXECVEAT: u64 = 322;

/// Reads the exec caller's argv from its memory (still the old image at bprm_check_security)
/// into the record: argv of execve is the second syscall argument, of execveat the third.
/// Returns (argc, flags): at most [`ARGV_MAX`] arguments, ARGV_TRUNCATED when there were more,
/// one filled its slot, or a read failed.
#[inline(always)]
fn capture_argv(e: *mut Event) -> (u32, u32) {
    zero_argv(e);
    // SAFETY: helpers on the current task; the regs pointer is only read through
    // bpf_probe_read_kernel.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
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
        let next = unsafe { bpf_probe_read_user((argv + 8 * ARGV_MAX as u64) as *const u64) }.unwrap_or(1);
        if next != 0 {
            fl = flags::ARGV_TRUNCATED;
        }
    }
    (argc, fl)
}

#[inline(always)]
fn path_dentry(o: &KernelOffsets, path: u64) -> u64 {
    read_u64(path + o.path_dentry as u64)
}

#[lsm(hook = "bprm_check_security")]
pub fn bprm_check_security(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(1);
    if prev as i32 != 0 {
        return chained(prev);
    }
    let Some(cg) = in_agent_cgroup() else { return 0 };
    let Some(o) = offsets() else { return 0 };
    let bprm: u64 = ctx.arg(0);
    let file = read_u64(bprm + o.binprm_file as u64);
    let inode = read_u64(file + o.file_f_inode as u64);
    let dentry = read_u64(file + (o.file_f_path + o.path_dentry) as u64);
    let key = inode_key(o, inode);
    // SAFETY: values are copied out at once.
    let (rule, extra) = if let Some(r) = unsafe { EXEC_INODES.get(&key) } {
        (*r, 0)
    } else {
        let parent = read_u64(dentry + o.dentry_d_parent as u64);
        let pkey = inode_key(o, read_u64(parent + o.dentry_d_inode as u64));
        let mut ek = DirEntryKey { dir_ino: pkey.ino, dev: pkey.dev, _pad: 0, name: [0; NAME_LEN] };
        let name_ptr = read_u64(dentry + (o.dentry_d_name + o.qstr_name) as u64);
        // SAFETY: bounded kernel string read into a stack buffer.
        if unsafe { bpf_probe_read_kernel_str_bytes(name_ptr as *const u8, &mut ek.name) }.is_err() {
            return 0;
        }
        match unsafe { EXEC_ENTRIES.get(&ek) } {
            Some(r) => (*r, flags::MATCHED_BY_ENTRY),
            None => return 0,
        }
    };
    if rule.action == action::ALLOW {
        return 0;
    }
    // The record is reserved first and the arguments are read straight into it: the hash that
    // keys the once-grant is computed from the same bytes the event shows (no shared scratch).
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        let d = decide(cg, op::EXEC, &rule, &key, dentry, extra, 0);
        return ret(settle_unrecorded(op::EXEC, &d));
    };
    let e = entry.as_mut_ptr();
    let (argc, argv_flags) = capture_argv(e);
    // SAFETY: the record is exclusively owned; its argv slots were fully written above.
    let hash = unsafe {
        (*e).argc = argc;
        let h = airlock_common::argv_hash(argc, &(*e).argv);
        (*e).argv_hash = h;
        h
    };
    let d = decide(cg, op::EXEC, &rule, &key, dentry, extra | argv_flags, hash);
    ret(finish(o, cg, op::EXEC, &d, entry))
}

#[lsm(hook = "file_open")]
pub fn file_open(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(1);
    if prev as i32 != 0 {
        return chained(prev);
    }
    let Some(o) = offsets() else { return 0 };
    let file: u64 = ctx.arg(0);
    let mode = read_u32(file + o.file_f_mode as u64);
    let fl = read_u32(file + o.file_f_flags as u64);
    // Read-only opens are not gated; O_TRUNC truncates even with O_RDONLY.
    if mode & FMODE_WRITE == 0 && fl & O_TRUNC == 0 {
        return 0;
    }
    ret(gate_tree(read_u64(file + (o.file_f_path + o.path_dentry) as u64), op::OPEN_WRITE))
}

#[lsm(hook = "path_truncate")]
pub fn path_truncate(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(1);
    if prev as i32 != 0 {
        return chained(prev);
    }
    let Some(o) = offsets() else { return 0 };
    ret(gate_tree(path_dentry(o, ctx.arg(0)), op::TRUNCATE))
}

#[lsm(hook = "path_unlink")]
pub fn path_unlink(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(2);
    if prev as i32 != 0 {
        return chained(prev);
    }
    ret(gate_tree(ctx.arg(1), op::UNLINK))
}

#[lsm(hook = "path_rmdir")]
pub fn path_rmdir(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(2);
    if prev as i32 != 0 {
        return chained(prev);
    }
    ret(gate_tree(ctx.arg(1), op::RMDIR))
}

#[lsm(hook = "path_mkdir")]
pub fn path_mkdir(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(3);
    if prev as i32 != 0 {
        return chained(prev);
    }
    ret(gate_tree(ctx.arg(1), op::MKDIR))
}

/// Also reached for O_CREAT of a new file (may_o_create), before the file exists.
#[lsm(hook = "path_mknod")]
pub fn path_mknod(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(4);
    if prev as i32 != 0 {
        return chained(prev);
    }
    ret(gate_tree(ctx.arg(1), op::CREATE))
}

#[lsm(hook = "path_symlink")]
pub fn path_symlink(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(3);
    if prev as i32 != 0 {
        return chained(prev);
    }
    ret(gate_tree(ctx.arg(1), op::SYMLINK))
}

/// A hard link is gated when its source is protected (a second name for a protected file) or
/// when it is made inside a protected directory.
#[lsm(hook = "path_link")]
pub fn path_link(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(3);
    if prev as i32 != 0 {
        return chained(prev);
    }
    ret(gate_pair(ctx.arg(0), ctx.arg(2), op::LINK))
}

/// Either side of a rename being protected gates it (renaming over a protected file replaces it).
#[lsm(hook = "path_rename")]
pub fn path_rename(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(5);
    if prev as i32 != 0 {
        return chained(prev);
    }
    ret(gate_pair(ctx.arg(1), ctx.arg(3), op::RENAME))
}

#[lsm(hook = "path_chmod")]
pub fn path_chmod(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(2);
    if prev as i32 != 0 {
        return chained(prev);
    }
    let Some(o) = offsets() else { return 0 };
    ret(gate_tree(path_dentry(o, ctx.arg(0)), op::CHMOD))
}

#[lsm(hook = "path_chown")]
pub fn path_chown(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(3);
    if prev as i32 != 0 {
        return chained(prev);
    }
    let Some(o) = offsets() else { return 0 };
    ret(gate_tree(path_dentry(o, ctx.arg(0)), op::CHOWN))
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
