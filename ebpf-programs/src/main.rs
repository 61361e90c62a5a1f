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
    ARG_LEN, ARGV_MAX, AgentGrantKey, CgroupClass, DirEntryKey, Event, FMODE_WRITE, Grant,
    InodeKey, KernelOffsets, MAX_CGROUP_LEVEL, MAX_DENTRY_DEPTH, NAME_LEN, O_TRUNC, OnceKey,
    RuleRef, Settings, action, flags, op, verdict,
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_pid_tgid,
        bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
    },
    macros::{lsm, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::LsmContext,
};

mod attrs;
mod digest;
mod exec_context;
mod guard;
mod hold;
mod privilege;
mod sticky;
mod wild;

use hold::{Decision, capture_argv, decide, finish, settle, settle_unrecorded};

pub(crate) const EPERM: i32 = 1;
/// The kernel's ERESTARTNOINTR: with a signal pending the syscall is restarted after the signal
/// is handled (here: after the SIGSTOP ends with SIGCONT), never failed with EINTR.
const ERESTARTNOINTR: i32 = 513;

/// What a gate wants the hook to do; hooks map it to a constant return value in [`ret`].
pub(crate) const GO: u32 = 0;
pub(crate) const REFUSE: u32 = 1;
pub(crate) const HOLD: u32 = 2;

/// Field offsets of the running kernel (one entry).
#[map]
pub(crate) static OFFSETS: Array<KernelOffsets> = Array::with_max_entries(1, 0);
/// Global switches (one entry).
#[map]
pub(crate) static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);
/// Agent root cgroups: cgroup id → the agent's slot in the rule maps' keys, 0 when no rule is
/// restricted to that agent (its processes then look up only the entries for every agent).
#[map]
pub(crate) static AGENT_ROOTS: HashMap<u64, u32> = HashMap::with_max_entries(4096, 0);
/// Classification cache: cgroup id → what [`agent`] found. A stale generation means the agent
/// roots changed since the entry was written and the cgroup must be classified again.
#[map]
pub(crate) static CGROUP_CLASS: LruHashMap<u64, CgroupClass> =
    LruHashMap::with_max_entries(16384, 0);
/// Gated binaries by inode.
#[map]
pub(crate) static EXEC_INODES: HashMap<InodeKey, RuleRef> = HashMap::with_max_entries(65536, 0);
/// Gated binaries by (parent directory inode, name).
#[map]
pub(crate) static EXEC_ENTRIES: HashMap<DirEntryKey, RuleRef> = HashMap::with_max_entries(65536, 0);
/// Gated service sockets by inode (`connect` rules).
#[map]
pub(crate) static CONNECT_INODES: HashMap<InodeKey, RuleRef> = HashMap::with_max_entries(4096, 0);
/// Gated service sockets by (parent directory inode, name): a socket bound anew after a
/// service restart.
#[map]
pub(crate) static CONNECT_ENTRIES: HashMap<DirEntryKey, RuleRef> =
    HashMap::with_max_entries(4096, 0);
/// `privilege` rules by op (`airlock_policy::privilege_key`).
#[map]
pub(crate) static PRIVILEGE: HashMap<InodeKey, RuleRef> = HashMap::with_max_entries(256, 0);

/// Block devices that hold protected trees (key: `ino` = the device, `dev` 0; see
/// `airlock_policy::effective_block_map`).
#[map]
pub(crate) static BLOCK_DEVS: HashMap<InodeKey, RuleRef> = HashMap::with_max_entries(1024, 0);
/// airlockd's secrets (its host key) by inode: no agent process opens them, reads included.
#[map]
pub(crate) static SECRETS: HashMap<InodeKey, u32> = HashMap::with_max_entries(64, 0);
/// Entry 0: how many entries [`SECRETS`] has. Read opens system-wide look here first (an
/// array lookup, inlined by the verifier) and pay nothing more while it is 0.
#[map]
pub(crate) static SECRETS_ON: Array<u32> = Array::with_max_entries(1, 0);
/// Roots of protected trees (and protected single files) by inode.
#[map]
pub(crate) static PROTECTED: HashMap<InodeKey, RuleRef> = HashMap::with_max_entries(16384, 0);
/// Flagged events for userspace.
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);
/// What agent processes executed (see [`sched_process_exec`]).
#[map]
pub(crate) static EXEC_CONTEXT: RingBuf = RingBuf::with_byte_size(EXEC_CONTEXT_BYTES, 0);
/// Size of [`EXEC_CONTEXT`].
pub(crate) const EXEC_CONTEXT_BYTES: u32 = 256 << 10;
/// Events that did not fit in [`EVENTS`].
#[map]
pub(crate) static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
/// Decisions for one held request of one thread, written by userspace before it sends SIGCONT;
/// the restarted syscall consumes its entry.
#[map]
pub(crate) static ONCE_GRANTS: HashMap<OnceKey, Grant> = HashMap::with_max_entries(16384, 0);
/// Standing decisions of an agent cgroup on an operation on an object (`approve --for`,
/// `deny --always`); they expire by time (compared here), not by use.
#[map]
pub(crate) static AGENT_GRANTS: HashMap<AgentGrantKey, Grant> = HashMap::with_max_entries(16384, 0);
/// First-side objects of two-sided hooks (link, rename) whose once-grant is consumed only when
/// the second side does not hold: thread id → object (see [`gate_pair`]).
#[map]
pub(crate) static PAIR_KEPT: LruHashMap<u32, InodeKey> = LruHashMap::with_max_entries(4096, 0);
/// 1 KiB of zeroes (never written): the source for clearing the argv part of event records.
#[map]
pub(crate) static ZEROES: Array<[u8; ARGV_MAX * ARG_LEN]> = Array::with_max_entries(1, 0);

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

/// The agent the current task belongs to: its cgroup (events and grants name it) and the
/// agent's slot in the rule maps ([`rule_for_inode`]).
#[derive(Clone, Copy)]
pub(crate) struct Agent {
    pub cg: u64,
    pub slot: u32,
}

/// Is the current task an agent's: in an agent cgroup (or below one), or an agent process moved
/// out of it (`sticky.rs`)? Tasks outside agents pay two array reads (inlined by the verifier)
/// and one LRU lookup once their cgroup is classified.
#[inline(always)]
pub(crate) fn agent() -> Option<Agent> {
    // SAFETY: helper without arguments.
    let cg = unsafe { bpf_get_current_cgroup_id() };
    let settings = SETTINGS.get(0)?;
    if settings.armed == 0 {
        return None;
    }
    let generation = settings.generation;
    // SAFETY: the value is copied out at once.
    if let Some(c) = unsafe { CGROUP_CLASS.get(&cg) } {
        let c = *c;
        if c.generation == generation {
            return if c.agent != 0 {
                Some(Agent { cg, slot: c.slot })
            } else {
                sticky::escaped()
            };
        }
    }
    let mut class = CgroupClass {
        generation,
        agent: 0,
        slot: 0,
    };
    if let Some((_, slot)) = agent_root() {
        class.agent = 1;
        class.slot = slot;
    }
    let _ = CGROUP_CLASS.insert(&cg, &class, 0);
    if class.agent != 0 {
        Some(Agent {
            cg,
            slot: class.slot,
        })
    } else {
        sticky::escaped()
    }
}

/// The agent root cgroup the current task is in (or below): its id and its `AGENT_ROOTS`
/// value. Walks the ancestors from the top; [`agent`] caches the answer per cgroup.
#[inline(always)]
pub(crate) fn agent_root() -> Option<(u64, u32)> {
    let mut level = 0u32;
    while level < MAX_CGROUP_LEVEL {
        // SAFETY: helper with a scalar argument.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if id == 0 {
            break;
        }
        // SAFETY: the value is copied out at once.
        if let Some(slot) = unsafe { AGENT_ROOTS.get(&id) } {
            return Some((id, *slot));
        }
        level += 1;
    }
    None
}

/// [`agent`]'s cgroup, for hooks that do not look rules up.
#[inline(always)]
pub(crate) fn in_agent_cgroup() -> Option<u64> {
    agent().map(|a| a.cg)
}

/// The rule for the object `key` in `map` that applies to the agent in `slot`: its own entry
/// if it has one, else the entry for every agent (airlock_policy::scope).
#[inline(always)]
pub(crate) fn rule_for_inode(
    map: &HashMap<InodeKey, RuleRef>,
    key: &InodeKey,
    slot: u32,
) -> Option<RuleRef> {
    rule_in_slot(map, key, slot, |slot| InodeKey { slot, ..*key })
}

/// [`rule_for_inode`] for any rule-map key: `everyone` is the key with slot 0, `own(slot)` the
/// same object's key in the agent's slot.
#[inline(always)]
pub(crate) fn rule_in_slot<K>(
    map: &HashMap<K, RuleRef>,
    everyone: &K,
    slot: u32,
    own: impl FnOnce(u32) -> K,
) -> Option<RuleRef> {
    if slot != 0 {
        // SAFETY: the value is copied out at once.
        if let Some(r) = unsafe { map.get(&own(slot)) } {
            return Some(*r);
        }
    }
    // SAFETY: as above.
    unsafe { map.get(everyone) }.copied()
}

#[inline(always)]
pub(crate) fn inode_key(o: &KernelOffsets, inode: u64) -> InodeKey {
    let sb = read_u64(inode + o.inode_i_sb as u64);
    InodeKey {
        ino: read_u64(inode + o.inode_i_ino as u64),
        dev: read_u32(sb + o.sb_s_dev as u64),
        slot: 0,
    }
}

/// Where a protected-tree match was found. Every field is always initialised (no `Option`):
/// LLVM may otherwise copy uninitialised registers around, which the verifier refuses.
struct TreeMatch {
    rule: RuleRef,
    /// The object itself, or for a not-yet-existing one its nearest existing ancestor.
    target: InodeKey,
    /// Non-zero when a protected inode covering the operation was found.
    found: u32,
    _pad: u32,
}

/// Walks from `dentry` up its parents to the nearest protected inode whose rule covers `op`.
/// Identity is the dentry chain, so symlinks, hardlinked names, relative paths, /proc/self/fd
/// and bind mounts all end at the same protected inode.
#[inline(always)]
fn protected_match(o: &KernelOffsets, dentry: u64, op_bit: u32, slot: u32) -> TreeMatch {
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
            if let Some(r) = rule_for_inode(&PROTECTED, &key, slot) {
                // A SELF_ONLY entry (an ancestor of a protected root) gates the object itself.
                if r.ops & op_bit != 0 && (depth == 0 || r.flags & flags::SELF_ONLY == 0) {
                    return TreeMatch {
                        rule: r,
                        target,
                        found: 1,
                        _pad: 0,
                    };
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
    TreeMatch {
        rule: RuleRef::default(),
        target: InodeKey::default(),
        found: 0,
        _pad: 0,
    }
}

/// The decision for a protected-tree match; [`Decision::none`] when nothing protects it.
#[inline(always)]
fn decide_match(cg: u64, opv: u32, m: &TreeMatch, dentry: u64) -> Decision {
    if m.found == 0 {
        return Decision::none();
    }
    decide(cg, opv, &m.rule, &m.target, dentry, 0, 0)
}

/// Gate on the protected tree containing `dentry` for `opv`.
#[inline(always)]
pub(crate) fn gate_tree(dentry: u64, opv: u32) -> u32 {
    let Some(Agent { cg, slot }) = agent() else {
        return GO;
    };
    let Some(o) = offsets() else { return GO };
    let m = protected_match(o, dentry, op::bit(opv), slot);
    settle(o, cg, opv, &decide_match(cg, opv, &m, dentry))
}

/// Gate on two objects of one syscall (link: source and new name; rename: both sides), one
/// after the other: a denial or a hold on the first side ends it (the second side is decided
/// on the restart). A once-grant that lets the first side through is only consumed once the
/// second side does not hold: a hold there restarts the syscall, and the restart must find the
/// first side's grant again (otherwise approving both sides would never be enough).
///
/// Which grant to consume at the end is kept in [`PAIR_KEPT`] (by thread), not in locals: a
/// flag and a target live across the second walk multiplied the states 6.1's verifier explores
/// to near its million-instruction limit; a map value is one unknown to it.
#[inline(always)]
fn gate_pair(a: u64, b: u64, opv: u32) -> u32 {
    let Some(Agent { cg, slot }) = agent() else {
        return GO;
    };
    let Some(o) = offsets() else { return GO };
    let tid = bpf_get_current_pid_tgid() as u32;
    // Left over from an earlier syscall of this thread that ended held and never restarted.
    let _ = PAIR_KEPT.remove(&tid);
    let ma = protected_match(o, a, op::bit(opv), slot);
    let mut da = decide_match(cg, opv, &ma, a);
    if da.verdict == verdict::ALLOWED && da.consume != 0 {
        da.consume = 0;
        let _ = PAIR_KEPT.insert(&tid, &da.target, 0);
    }
    let ca = settle(o, cg, opv, &da);
    if ca != GO {
        return ca;
    }
    let mb = protected_match(o, b, op::bit(opv), slot);
    let cb = settle(o, cg, opv, &decide_match(cg, opv, &mb, b));
    if cb != HOLD {
        // SAFETY: the value is copied out at once.
        if let Some(t) = unsafe { PAIR_KEPT.get(&tid) } {
            let t = *t;
            let _ = ONCE_GRANTS.remove(&hold::once_key(opv, &t, 0));
            let _ = PAIR_KEPT.remove(&tid);
        }
    }
    cb
}

/// Hook return value for a gate's answer: constants only (6.12 checks the range).
#[inline(always)]
pub(crate) fn ret(code: u32) -> i32 {
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
pub(crate) fn chained(prev: u64) -> i32 {
    if prev as i32 == -ERESTARTNOINTR {
        -ERESTARTNOINTR
    } else {
        -EPERM
    }
}

#[inline(always)]
fn path_dentry(o: &KernelOffsets, path: u64) -> u64 {
    read_u64(path + o.path_dentry as u64)
}

/// The rule for the file at `dentry` (identity `key`) in a pair of file-rule maps (gated
/// binaries, gated sockets): by inode, else by (parent inode, name) with `MATCHED_BY_ENTRY`;
/// each time the agent's own entry first.
#[inline(always)]
pub(crate) fn file_rule(
    o: &KernelOffsets,
    inodes: &HashMap<InodeKey, RuleRef>,
    entries: &HashMap<DirEntryKey, RuleRef>,
    key: &InodeKey,
    dentry: u64,
    slot: u32,
) -> Option<(RuleRef, u32)> {
    if let Some(r) = rule_for_inode(inodes, key, slot) {
        return Some((r, 0));
    }
    let parent = read_u64(dentry + o.dentry_d_parent as u64);
    let pkey = inode_key(o, read_u64(parent + o.dentry_d_inode as u64));
    let mut ek = DirEntryKey {
        dir_ino: pkey.ino,
        dev: pkey.dev,
        slot,
        name: [0; NAME_LEN],
    };
    let name_ptr = read_u64(dentry + (o.dentry_d_name + o.qstr_name) as u64);
    // SAFETY: bounded kernel string read into a stack buffer.
    if unsafe { bpf_probe_read_kernel_str_bytes(name_ptr as *const u8, &mut ek.name) }.is_err() {
        return None;
    }
    // The agent's own entry, then the one for every agent (as in `rule_for_inode`; the key is
    // too large to copy twice on the stack).
    // SAFETY: values are copied out at once.
    let mut found = if slot != 0 {
        unsafe { entries.get(&ek) }.copied()
    } else {
        None
    };
    if found.is_none() {
        ek.slot = 0;
        // SAFETY: as above.
        found = unsafe { entries.get(&ek) }.copied();
    }
    found.map(|r| (r, flags::MATCHED_BY_ENTRY))
}

#[lsm(hook = "bprm_check_security")]
pub fn bprm_check_security(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(1);
    if prev as i32 != 0 {
        return chained(prev);
    }
    let Some(Agent { cg, slot }) = agent() else {
        return 0;
    };
    let Some(o) = offsets() else { return 0 };
    let bprm: u64 = ctx.arg(0);
    let file = read_u64(bprm + o.binprm_file as u64);
    let inode = read_u64(file + o.file_f_inode as u64);
    let dentry = read_u64(file + (o.file_f_path + o.path_dentry) as u64);
    let key = inode_key(o, inode);
    let Some((rule, extra)) = file_rule(o, &EXEC_INODES, &EXEC_ENTRIES, &key, dentry, slot) else {
        return 0;
    };
    gate_exec(o, cg, &rule, &key, dentry, extra)
}

/// Carries out `rule` for the exec of the file `key` at `dentry` by agent cgroup `cg`, with
/// the caller's argv in the record (`extra`: how the file matched).
#[inline(always)]
pub(crate) fn gate_exec(
    o: &KernelOffsets,
    cg: u64,
    rule: &RuleRef,
    key: &InodeKey,
    dentry: u64,
    extra: u32,
) -> i32 {
    let rule = *rule;
    let key = *key;
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

/// connect(2) to a Unix stream or seqpacket socket bound at a path that a `connect` rule names:
/// a local service (container runtime, service manager) that would act for the agent outside
/// its cgroup. Abstract and unbound sockets have no path and are not gated. Runs with both
/// sockets' state locks held (fine: nothing here sleeps); a hold restarts the connect.
#[lsm(hook = "unix_stream_connect")]
pub fn unix_stream_connect(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(3);
    if prev as i32 != 0 {
        return chained(prev);
    }
    let Some(Agent { cg, slot }) = agent() else {
        return 0;
    };
    let Some(o) = offsets() else { return 0 };
    let other: u64 = ctx.arg(1);
    let dentry = read_u64(other + (o.unix_sock_path + o.path_dentry) as u64);
    if dentry == 0 {
        return 0;
    }
    let inode = read_u64(dentry + o.dentry_d_inode as u64);
    if inode == 0 {
        return 0;
    }
    let key = inode_key(o, inode);
    let found = file_rule(o, &CONNECT_INODES, &CONNECT_ENTRIES, &key, dentry, slot)
        .or_else(|| wild::wild_rule(o, dentry, slot).map(|r| (r, 0)));
    let Some((rule, extra)) = found else {
        return 0;
    };
    if rule.action == action::ALLOW {
        return 0;
    }
    let d = decide(cg, op::CONNECT, &rule, &key, dentry, extra, 0);
    ret(settle(o, cg, op::CONNECT, &d))
}

#[lsm(hook = "file_open")]
pub fn file_open(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(1);
    if prev as i32 != 0 {
        return chained(prev);
    }
    let Some(o) = offsets() else { return 0 };
    let file: u64 = ctx.arg(0);
    let fl = read_u32(file + o.file_f_flags as u64);
    // O_TRUNC truncates even with O_RDONLY.
    gate_file(o, file, fl & O_TRUNC != 0)
}

/// A descriptor an agent process receives from another process (SCM_RIGHTS, `pidfd_getfd`):
/// opened by someone the gates did not see, so it is gated as if the agent had opened it. A
/// write descriptor of a protected file, or of `cgroup.procs` outside the agent, is refused
/// or held like that open; a descriptor of one of airlockd's secrets is refused. recvmsg has
/// consumed the message when this runs, so a hold there cannot be kept (`hold::unholdable`):
/// refused instead.
#[lsm(hook = "file_receive")]
pub fn file_receive(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(1);
    if prev as i32 != 0 {
        return chained(prev);
    }
    let Some(o) = offsets() else { return 0 };
    gate_file(o, ctx.arg(0), false)
}

/// The gates of an open `file` (opened, or received): read-only ones only for airlockd's
/// secrets (`truncates`: it writes all the same).
#[inline(always)]
fn gate_file(o: &KernelOffsets, file: u64, truncates: bool) -> i32 {
    let mode = read_u32(file + o.file_f_mode as u64);
    if mode & FMODE_WRITE == 0 && !truncates {
        return guard::secret_open(o, file);
    }
    // Every write open on the host comes here: one classification lookup for non-agents.
    let Some(a) = agent() else { return 0 };
    let dentry = read_u64(file + (o.file_f_path + o.path_dentry) as u64);
    if let Some(r) = guard::cgroup_move(o, dentry) {
        return r;
    }
    let inode = read_u64(file + o.file_f_inode as u64);
    digest::forget(o, inode);
    if read_u32(inode + o.inode_i_mode as u64) & S_IFMT == S_IFBLK {
        return ret(gate_block(o, a, inode, dentry));
    }
    ret(gate_tree(dentry, op::OPEN_WRITE))
}

/// `S_IFMT` and `S_IFBLK` of `i_mode`.
const S_IFMT: u32 = 0o170_000;
const S_IFBLK: u32 = 0o060_000;

/// A write open of a block device node: gated by the rules of the protected trees on the
/// filesystems it holds (writing the device rewrites them under every path rule).
#[inline(always)]
fn gate_block(o: &KernelOffsets, a: Agent, inode: u64, dentry: u64) -> u32 {
    let Agent { cg, slot } = a;
    let dev = InodeKey {
        ino: u64::from(read_u32(inode + o.inode_i_rdev as u64)),
        dev: 0,
        slot: 0,
    };
    let Some(rule) = rule_for_inode(&BLOCK_DEVS, &dev, slot) else {
        return GO;
    };
    if rule.ops & op::bit(op::OPEN_WRITE) == 0 {
        return GO;
    }
    let d = decide(
        cg,
        op::OPEN_WRITE,
        &rule,
        &inode_key(o, inode),
        dentry,
        0,
        0,
    );
    settle(o, cg, op::OPEN_WRITE, &d)
}

/// truncate(2), and on kernels before 6.2 also ftruncate(2) and the truncation of an open with
/// O_TRUNC. That last one is skipped: `file_open` already gated the open with its O_TRUNC, and
/// a second request for the same write would make a person approve it twice.
#[lsm(hook = "path_truncate")]
pub fn path_truncate(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(1);
    if prev as i32 != 0 {
        return chained(prev);
    }
    // Agents only: the syscall check costs two helper calls.
    if in_agent_cgroup().is_none() || hold::in_open_syscall() {
        return 0;
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

/// setxattr(2) and friends (file capabilities, security labels, ACLs on kernels before 6.2,
/// `trusted.*`, `user.*`): the dentry is the second argument on every supported kernel.
#[lsm(hook = "inode_setxattr")]
pub fn inode_setxattr(ctx: LsmContext) -> i32 {
    xattr_change(&ctx, 6)
}

/// The body of the four extended-attribute and ACL hooks: the dentry is argument 1 of each,
/// the previous program's verdict argument `prev_arg`.
#[inline(always)]
fn xattr_change(ctx: &LsmContext, prev_arg: usize) -> i32 {
    let prev: u64 = ctx.arg(prev_arg);
    if prev as i32 != 0 {
        return chained(prev);
    }
    ret(gate_tree(ctx.arg(1), op::XATTR))
}

/// removexattr(2) and friends.
#[lsm(hook = "inode_removexattr")]
pub fn inode_removexattr(ctx: LsmContext) -> i32 {
    xattr_change(&ctx, 3)
}

/// POSIX ACLs on 6.2+ (`setfacl`, setxattr of `system.posix_acl_*`): since 6.2 these go through
/// `vfs_set_acl`, which calls this hook instead of `inode_setxattr`. An ACL entry grants access
/// like mode bits do, so it is gated like them. Optional: absent (and not attached) on 6.1.
#[lsm(hook = "inode_set_acl")]
pub fn inode_set_acl(ctx: LsmContext) -> i32 {
    xattr_change(&ctx, 4)
}

/// Removing a POSIX ACL on 6.2+ (`setfacl -b`); see [`inode_set_acl`].
#[lsm(hook = "inode_remove_acl")]
pub fn inode_remove_acl(ctx: LsmContext) -> i32 {
    xattr_change(&ctx, 3)
}

/// mount(2): new mounts, bind mounts, `MS_MOVE`, remounts, by their mountpoint: on a protected
/// object, inside a protected tree, or on a directory above a protected root (which would hide
/// the tree and free its path).
#[lsm(hook = "sb_mount")]
pub fn sb_mount(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(5);
    if prev as i32 != 0 {
        return chained(prev);
    }
    let Some(o) = offsets() else { return 0 };
    ret(gate_tree(path_dentry(o, ctx.arg(1)), op::MOUNT))
}

/// move_mount(2) (the new mount API's attach step, and moves), by the target path.
#[lsm(hook = "move_mount")]
pub fn move_mount(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(2);
    if prev as i32 != 0 {
        return chained(prev);
    }
    let Some(o) = offsets() else { return 0 };
    ret(gate_tree(path_dentry(o, ctx.arg(1)), op::MOUNT))
}

/// umount2(2), by the unmounted filesystem's root: gated when that root is protected or above
/// a protected root (bpffs under airlockd's pins; a protected tree that is a mount of its own).
#[lsm(hook = "sb_umount")]
pub fn sb_umount(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(2);
    if prev as i32 != 0 {
        return chained(prev);
    }
    let Some(o) = offsets() else { return 0 };
    let root = read_u64(ctx.arg::<u64>(0) + o.vfsmount_mnt_root as u64);
    ret(gate_tree(root, op::MOUNT))
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
