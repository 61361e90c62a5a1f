//! Gate the program, not one inode of it: content identity for `exec` rules.
//!
//! A gated binary is matched by inode and by its directory entry in `bprm_check_security`
//! (main.rs). A byte-identical copy (`cp /usr/bin/gated /tmp/x`, a memfd run with `fexecve`,
//! a hard-to-spot rename on another filesystem) has neither, so the programs here also match
//! by the SHA-256 of the whole file, taken by the kernel itself (`bpf_ima_file_hash`, which
//! hashes the file even without an IMA policy from 5.18 on):
//!
//! - `bprm_creds_from_file` (sleepable): the ELF the exec is about to run. It has the file as a
//!   direct argument, which the hash helper needs (a trusted pointer), and it is still before
//!   the exec's point of no return, so EPERM fails the execve and a hold restarts it.
//! - `mmap_file` (sleepable): code mapped executable outside its own exec, e.g. the dynamic
//!   loader run directly (`ld.so /usr/bin/gated`) or a loader of its own. The ELF loader's
//!   mappings of the program being exec'd are not a second exec (their file is the task's
//!   `exe_file`).
//! - `file_mprotect` (not sleepable: `mmap_lock` is held, the hash helper may fault pages in):
//!   a mapping turned executable later. It can only use a digest computed before; a file with
//!   a gated size and no current digest is refused ([`flags::UNIDENTIFIED`]). `mmap_file`
//!   computes the digest for every mapping of such a file, executable or not, so a plain
//!   mmap-then-mprotect finds it.
//!
//! Cost: only files whose size equals a gated binary's size are hashed (`DIGEST_SIZES`), once
//! per version (`DIGESTS`, keyed by inode, checked against size and ctime; an agent's write
//! open drops the entry so a rewrite within one timestamp tick is hashed again). Everything
//! else pays one hash-map lookup, and only inside agent cgroups.
//!
//! Not covered (README, Threat model): code copied into anonymous memory and made executable
//! (what every JIT does, so it cannot be refused wholesale); scripts (their interpreter is
//! what runs).
use airlock_common::{
    DigestKey, FileDigest, HASH_ALGO_SHA256, InodeKey, KernelOffsets, RuleRef, action, flags, op,
};
use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_ima_file_hash},
    macros::{lsm, map},
    maps::{HashMap, LruHashMap},
    programs::LsmContext,
};

use crate::guard::refuse_object;
use crate::hold::{decide, settle};
use crate::{
    Agent, EXEC_ENTRIES, EXEC_INODES, agent, chained, file_rule, gate_exec, inode_key, offsets,
    read_u32, read_u64, ret, rule_in_slot,
};

/// Gated binaries by content.
#[map]
pub(crate) static EXEC_DIGESTS: HashMap<DigestKey, RuleRef> = HashMap::with_max_entries(16384, 0);

/// The sizes of the gated binaries (value: how many): a file of any other size cannot match
/// by content and is never hashed.
#[map]
pub(crate) static DIGEST_SIZES: HashMap<u64, u32> = HashMap::with_max_entries(16384, 0);

/// Digests the kernel computed, by inode (see [`FileDigest`]).
#[map]
pub(crate) static DIGESTS: LruHashMap<InodeKey, FileDigest> =
    LruHashMap::with_max_entries(16384, 0);

/// `PROT_EXEC` (mmap, mprotect) and `VM_EXEC` (vm_flags).
const PROT_EXEC: u64 = 4;
const VM_EXEC: u64 = 4;

/// The version of the file behind `inode` that a digest is valid for.
#[inline(always)]
fn version(o: &KernelOffsets, inode: u64) -> (u64, u64, u32) {
    (
        read_u64(inode + u64::from(o.inode_i_size)),
        read_u64(inode + u64::from(o.inode_ctime_sec)),
        read_u32(inode + u64::from(o.inode_ctime_nsec)),
    )
}

/// Whether a file of `size` bytes could be a gated binary.
#[inline(always)]
fn gated_size(size: u64) -> bool {
    // SAFETY: the value is not kept.
    unsafe { DIGEST_SIZES.get(&size) }.is_some()
}

/// The digest kept for `key` if it is still the file's (same size and ctime).
#[inline(always)]
fn kept(key: &InodeKey, v: (u64, u64, u32)) -> Option<[u8; 32]> {
    // SAFETY: the value is copied out at once.
    let d = unsafe { DIGESTS.get(key) }?;
    if d.size == v.0 && d.ctime_sec == v.1 && d.ctime_nsec == v.2 {
        Some(d.sha256)
    } else {
        None
    }
}

/// What the content of a file showed.
enum Content {
    /// Not a gated binary's size, or hashed and matching none.
    Unmatched,
    /// A gated binary's content, under this rule.
    Gated(RuleRef),
    /// A gated size, but no digest could be had: refuse.
    Unknown,
}

/// The rule for content `sha256` that applies to the agent in `slot` (its own entry first).
#[inline(always)]
fn rule_for_digest(sha256: [u8; 32], slot: u32) -> Option<RuleRef> {
    let k = DigestKey {
        sha256,
        slot: 0,
        _pad: 0,
    };
    rule_in_slot(&EXEC_DIGESTS, &k, slot, |slot| DigestKey { slot, ..k })
}

/// The content identity of the file `key`, from the digest kept for its current version, else
/// by hashing `file` when given (a trusted pointer: sleepable hooks only), else unknown.
#[inline(always)]
fn identify(
    o: &KernelOffsets,
    file: Option<u64>,
    key: &InodeKey,
    inode: u64,
    slot: u32,
) -> Content {
    let v = version(o, inode);
    if !gated_size(v.0) {
        return Content::Unmatched;
    }
    let sha256 = match (kept(key, v), file) {
        (Some(d), _) => d,
        (None, None) => return Content::Unknown,
        (None, Some(file)) => {
            let mut buf = [0u8; 32];
            // SAFETY: `file` is the hook's own argument (a trusted `struct file *`), `buf` a
            // stack buffer of the size passed.
            let algo = unsafe {
                bpf_ima_file_hash(file as *mut _, buf.as_mut_ptr() as *mut _, buf.len() as u32)
            };
            if algo != i64::from(HASH_ALGO_SHA256) {
                return Content::Unknown;
            }
            let d = FileDigest {
                size: v.0,
                ctime_sec: v.1,
                ctime_nsec: v.2,
                _pad: 0,
                sha256: buf,
            };
            let _ = DIGESTS.insert(key, &d, 0);
            buf
        }
    };
    match rule_for_digest(sha256, slot) {
        Some(r) => Content::Gated(r),
        None => Content::Unmatched,
    }
}

/// Drops the digest kept for `inode`: an agent process opened it for writing, so its next
/// version may keep the ctime of this one (timestamps have a tick's granularity).
#[inline(always)]
pub(crate) fn forget(o: &KernelOffsets, inode: u64) {
    let _ = DIGESTS.remove(&inode_key(o, inode));
}

/// Whether `file` is the current task's own program (`mm->exe_file`): the ELF loader mapping
/// what the exec gate already let through.
#[inline(always)]
fn is_own_program(o: &KernelOffsets, file_inode: u64) -> bool {
    // SAFETY: helper without arguments; the pointer is only read through probe reads.
    let task = unsafe { bpf_get_current_task() };
    let mm = read_u64(task + u64::from(o.task_mm));
    if mm == 0 {
        return false;
    }
    let exe = read_u64(mm + u64::from(o.mm_exe_file));
    exe != 0 && read_u64(exe + u64::from(o.file_f_inode)) == file_inode
}

/// The exec of a byte-identical copy of a gated binary. The inode and entry rules are the
/// business of `bprm_check_security`: a file they match is left to it, so one exec is never
/// asked about twice.
#[lsm(hook = "bprm_creds_from_file", sleepable)]
pub fn bprm_exec_content(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(2);
    if prev as i32 != 0 {
        return chained(prev);
    }
    let Some(Agent { cg, slot }) = agent() else {
        return 0;
    };
    let Some(o) = offsets() else { return 0 };
    let file: u64 = ctx.arg(1);
    let inode = read_u64(file + u64::from(o.file_f_inode));
    let dentry = read_u64(file + u64::from(o.file_f_path + o.path_dentry));
    let key = inode_key(o, inode);
    if file_rule(o, &EXEC_INODES, &EXEC_ENTRIES, &key, dentry, slot).is_some() {
        return 0;
    }
    match identify(o, Some(file), &key, inode, slot) {
        Content::Unmatched => 0,
        Content::Unknown => refuse_object(cg, op::EXEC, &key, dentry, flags::UNIDENTIFIED),
        Content::Gated(rule) => gate_exec(o, cg, &rule, &key, dentry, flags::MATCHED_BY_CONTENT),
    }
}

/// Gates mapping the file `key` (at `dentry`) executable: by its inode or entry rule, else by
/// its content (`file`: hash it if no digest is kept; `None`: only a kept digest will do).
#[inline(always)]
fn gate_map(
    o: &KernelOffsets,
    a: Agent,
    file: Option<u64>,
    key: &InodeKey,
    inode: u64,
    dentry: u64,
) -> i32 {
    let Agent { cg, slot } = a;
    let (rule, extra) = match file_rule(o, &EXEC_INODES, &EXEC_ENTRIES, key, dentry, slot) {
        Some(found) => found,
        None => match identify(o, file, key, inode, slot) {
            Content::Unmatched => return 0,
            Content::Unknown => {
                return refuse_object(cg, op::MAP_EXEC, key, dentry, flags::UNIDENTIFIED);
            }
            Content::Gated(r) => (r, flags::MATCHED_BY_CONTENT),
        },
    };
    if rule.action == action::ALLOW {
        return 0;
    }
    let d = decide(cg, op::MAP_EXEC, &rule, key, dentry, extra, 0);
    ret(settle(o, cg, op::MAP_EXEC, &d))
}

/// mmap(2) of a file. Executable: gated as above. Not executable, of a gated size: hashed, so
/// that a later `mprotect(PROT_EXEC)` knows what it is.
#[lsm(hook = "mmap_file", sleepable)]
pub fn mmap_file(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(4);
    if prev as i32 != 0 {
        return chained(prev);
    }
    let file: u64 = ctx.arg(0);
    if file == 0 {
        return 0;
    }
    let Some(a) = agent() else {
        return 0;
    };
    let Some(o) = offsets() else { return 0 };
    let prot: u64 = ctx.arg(2);
    let inode = read_u64(file + u64::from(o.file_f_inode));
    let key = inode_key(o, inode);
    if prot & PROT_EXEC == 0 {
        let _ = identify(o, Some(file), &key, inode, a.slot);
        return 0;
    }
    if is_own_program(o, inode) {
        return 0;
    }
    let dentry = read_u64(file + u64::from(o.file_f_path + o.path_dentry));
    gate_map(o, a, Some(file), &key, inode, dentry)
}

/// mprotect(2) adding `PROT_EXEC` to a mapping of a file that was not executable. Not
/// sleepable, so it cannot hash: only a digest kept since the file last changed identifies it.
#[lsm(hook = "file_mprotect")]
pub fn file_mprotect(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(3);
    if prev as i32 != 0 {
        return chained(prev);
    }
    let prot: u64 = ctx.arg(2);
    if prot & PROT_EXEC == 0 {
        return 0;
    }
    let Some(a) = agent() else {
        return 0;
    };
    let Some(o) = offsets() else { return 0 };
    let vma: u64 = ctx.arg(0);
    let file = read_u64(vma + u64::from(o.vma_vm_file));
    if file == 0 || read_u64(vma + u64::from(o.vma_vm_flags)) & VM_EXEC != 0 {
        return 0;
    }
    let inode = read_u64(file + u64::from(o.file_f_inode));
    if is_own_program(o, inode) {
        return 0;
    }
    let key = inode_key(o, inode);
    let dentry = read_u64(file + u64::from(o.file_f_path + o.path_dentry));
    gate_map(o, a, None, &key, inode, dentry)
}
