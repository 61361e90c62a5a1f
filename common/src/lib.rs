//! Types shared by airlock's eBPF programs and its userspace agent.
//!
//! Every type here is `#[repr(C)]` and plain old data: the kernel side writes it into a map or a
//! ring buffer and userspace reads the same bytes back. Enumerations cross the boundary as `u32`
//! constants rather than Rust enums so that decoding an unknown value is an error, never UB.
//! The `user` feature adds `aya::Pod` so that userspace can put these types in maps directly.
#![no_std]

/// Bytes of a task's `comm` (TASK_COMM_LEN).
pub const COMM_LEN: usize = 16;
/// Bytes of a dentry name kept in events and in directory-entry keys (longer names are cut).
pub const NAME_LEN: usize = 64;
/// How many dentry parents a protected-tree check walks before giving up (and treating the
/// object as unprotected). Deeper trees than this are rare; the policy compiler warns about them.
pub const MAX_DENTRY_DEPTH: u32 = 32;
/// How many cgroup ancestor levels the agent check walks.
pub const MAX_CGROUP_LEVEL: u32 = 16;

/// Operations airlock can gate. Values are stable: they travel in events and in rule masks.
pub mod op {
    /// execve/execveat of a gated binary.
    pub const EXEC: u32 = 1;
    /// open with write intent (O_WRONLY/O_RDWR, O_TRUNC, O_APPEND) of a protected object.
    pub const OPEN_WRITE: u32 = 2;
    /// creation of a file, device, fifo or socket node in a protected directory (incl. O_CREAT).
    pub const CREATE: u32 = 3;
    /// unlink of a protected object.
    pub const UNLINK: u32 = 4;
    /// rename where the source or the destination is protected.
    pub const RENAME: u32 = 5;
    /// truncate(2) by path.
    pub const TRUNCATE: u32 = 6;
    /// hard link to a protected object, or into a protected directory.
    pub const LINK: u32 = 7;
    /// chmod of a protected object.
    pub const CHMOD: u32 = 8;
    /// chown of a protected object.
    pub const CHOWN: u32 = 9;
    /// mkdir in a protected directory.
    pub const MKDIR: u32 = 10;
    /// rmdir of a protected directory.
    pub const RMDIR: u32 = 11;
    /// symlink created in a protected directory.
    pub const SYMLINK: u32 = 12;
    /// A signal (other than the existence probe 0) sent by an agent process to airlockd.
    /// Self-protection: refused on the LSM backend, never a policy target. The event's
    /// `target_ino` is the target's tgid.
    pub const SIGNAL: u32 = 13;
    /// ptrace (attach, seize, /proc/PID/mem and the like) by an agent process of airlockd, or
    /// in attach mode of any process outside the agent's subtree. Self-protection;
    /// `target_ino` is the target's tgid.
    pub const PTRACE: u32 = 14;
    /// A bpf(2) call by an agent process (programs, maps, links, pins: airlock's own among
    /// them). Self-protection; `target_ino` is the bpf command.
    pub const BPF: u32 = 15;
    /// Loading kernel code or kernel-read data by an agent process: a module (init_module,
    /// finit_module), a kexec image, a security policy, a certificate; firmware is let through.
    /// Self-protection; `target_ino` is the kernel's read/load id.
    pub const KERNEL_LOAD: u32 = 16;
    /// A write open of `cgroup.procs` or `cgroup.threads` of a cgroup outside the agent's own
    /// subtree (moving a process out of it). Self-protection; `target_ino` is the target
    /// cgroup's id.
    pub const CGROUP_MOVE: u32 = 17;
    /// Connecting to a local service's stream socket (`connect` rules): a service outside the
    /// agent that acts on its callers' behalf (a container runtime, the service manager).
    pub const CONNECT: u32 = 18;
    /// Setting or removing an extended attribute of a protected object: file capabilities
    /// (`security.capability`), security labels, `trusted.*` and `user.*` attributes.
    pub const XATTR: u32 = 19;
    /// An agent process changing its real, effective or saved user id (setuid, setreuid,
    /// setresuid, or exec of a set-user-ID file): `privilege` rules. `target_ino` is the new
    /// effective uid.
    pub const SETUID: u32 = 20;
    /// The same for group ids (setgid, setregid, setresgid, exec of a set-group-ID file).
    /// `target_ino` is the new egid.
    pub const SETGID: u32 = 21;
    /// Creating a user namespace (unshare or clone with CLONE_NEWUSER): inside it the process
    /// holds every capability over what the namespace owns.
    pub const USERNS: u32 = 22;
    /// Mounting on a protected object, inside a protected tree or over a directory above one
    /// (mount(2), move_mount(2)), or unmounting a filesystem whose root is protected (bpffs
    /// holding airlockd's pins).
    pub const MOUNT: u32 = 23;
    /// An exec that gives an agent process permitted capabilities it did not have (file
    /// capabilities, or a root process's exec after it dropped some): `privilege` rules.
    /// `target_ino` is the capability bits gained.
    pub const CAPS: u32 = 24;
    /// An agent process opening one of airlockd's secrets (its host key), for reading too.
    /// Self-protection; `target_ino` is the file's inode.
    pub const READ_SECRET: u32 = 25;
    /// Code of a gated program mapped executable outside its own exec (`mmap` or `mprotect`
    /// with `PROT_EXEC` of the file, or of a byte-identical copy): the dynamic loader run
    /// directly (`ld.so /usr/bin/gated`), a loader of its own. `exec` rules gate it like the
    /// exec itself.
    pub const MAP_EXEC: u32 = 26;
    /// Changing a protected object's other attributes: inode flags (`chattr`: immutable,
    /// append-only, …) and timestamps set by `utimensat` (`touch`).
    pub const SETATTR: u32 = 27;
    /// Highest value in use.
    pub const MAX: u32 = 27;

    /// Bit of `op` in a [`crate::RuleRef::ops`] mask.
    pub const fn bit(op: u32) -> u32 {
        1 << op
    }

    /// Every write-like operation on protected trees.
    pub const ALL_WRITES: u32 = bit(OPEN_WRITE)
        | bit(CREATE)
        | bit(UNLINK)
        | bit(RENAME)
        | bit(TRUNCATE)
        | bit(LINK)
        | bit(CHMOD)
        | bit(CHOWN)
        | bit(MKDIR)
        | bit(RMDIR)
        | bit(SYMLINK)
        | bit(XATTR)
        | bit(SETATTR)
        | bit(MOUNT);
}

/// The `rule_id` of events that no policy rule made: airlock's self-protection (see
/// [`op::SIGNAL`], [`op::PTRACE`], [`op::BPF`], [`op::KERNEL_LOAD`]), which every agent process
/// meets whatever the policy says.
pub const SELF_RULE: u32 = u32::MAX;

/// The `target_ino` of an [`op::KERNEL_LOAD`] event for a module autoload request
/// (`request_module`); other values are the kernel's read/load ids.
pub const MODULE_AUTOLOAD: u64 = 1 << 32;

/// What a rule asks for. Stable values.
pub mod action {
    /// Let the action happen, record nothing.
    pub const ALLOW: u32 = 0;
    /// Let the action happen and record an event.
    pub const AUDIT: u32 = 1;
    /// Fail the action with EPERM and record an event.
    pub const DENY: u32 = 2;
    /// Hold the action inside its syscall until a human decides (see [`crate::verdict::HELD`]).
    pub const APPROVE: u32 = 3;
}

/// What actually happened to the action. Stable values.
pub mod verdict {
    /// The action went ahead (audit rule, or monitor mode).
    pub const ALLOWED: u32 = 1;
    /// The action failed with EPERM.
    pub const DENIED: u32 = 2;
    /// The action is held for a decision: the task waits inside its syscall (LSM: stopped with
    /// SIGSTOP, the syscall restarts after SIGCONT; fanotify: the permission event is pending).
    pub const HELD: u32 = 3;
}

/// Bits of [`RuleRef::flags`] and [`Event::flags`].
pub mod flags {
    /// The policy is in monitor mode: deny/approve rules only record what they would have done.
    pub const MONITOR: u32 = 1 << 0;
    /// (event only) the target name was cut at [`crate::NAME_LEN`].
    pub const NAME_TRUNCATED: u32 = 1 << 1;
    /// (event only) the exec matched by directory entry (path), not by inode: the file at a gated
    /// path was replaced and userspace has not re-resolved it yet.
    pub const MATCHED_BY_ENTRY: u32 = 1 << 2;
    /// (event only) decided by a once-grant or once-denial bound to this thread and request.
    pub const BY_ONCE: u32 = 1 << 3;
    /// (event only) decided by an agent-wide grant (`approve --for`) or denial (`deny --always`).
    pub const BY_AGENT_GRANT: u32 = 1 << 4;
    /// (event only) argv had more than [`crate::ARGV_MAX`] entries, or one was cut at
    /// [`crate::ARG_LEN`].
    pub const ARGV_TRUNCATED: u32 = 1 << 5;
    /// (event only) raised by the fallback's exec backstop (tracepoint after exec): the exec
    /// went through without a daemon decision, so the new image was stopped (approve rule) or
    /// killed (deny rule) before its first instruction.
    pub const BACKSTOP: u32 = 1 << 6;
    /// (event only) an approve rule matched, but the hold could not be kept, so the action
    /// was refused instead: the task is an io_uring worker or inside io_uring_enter (a restart
    /// would not run the operation again), or it is being ptraced (its tracer could swallow
    /// the stop and the syscall would restart into the gate forever).
    pub const UNHOLDABLE: u32 = 1 << 7;
    /// Rule maps only: the entry gates the object itself, not its subtree (an ancestor of a
    /// protected root, gated against being renamed away with the tree inside it).
    pub const SELF_ONLY: u32 = 1 << 8;
    /// (event only) the file matched a gated binary by content (the SHA-256 of the whole
    /// file), not by inode or path: a byte-identical copy of it.
    pub const MATCHED_BY_CONTENT: u32 = 1 << 9;
    /// (event only) the file has the size of a gated binary but its content could not be
    /// identified where it had to be (the kernel could not hash it, or a `mprotect` met a
    /// file not hashed since it last changed), so the action was refused (fail closed).
    pub const UNIDENTIFIED: u32 = 1 << 10;
}

/// A `connect` rule with a wildcard (`/run/user/*/bus`) in the rule maps: the directory above
/// the `*` (its inode), how many literal components follow it (`depth`, the socket's name
/// included), and [`wild_fold`] over their names from the socket upwards.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct WildKey {
    pub dir_ino: u64,
    pub dev: u32,
    /// The agent the entry applies to, as in [`InodeKey::slot`].
    pub slot: u32,
    pub depth: u32,
    pub _pad: u32,
    pub hash: u64,
}

/// Most literal components after a wildcard that the kernel walks.
pub const WILD_DEPTH: u32 = 3;

/// Folds one path component into a [`WildKey::hash`] (FNV-1a over its bytes, then `/`); start
/// from [`FNV_OFFSET`] with the socket's own name.
pub fn wild_fold(mut h: u64, name: &[u8]) -> u64 {
    let mut i = 0;
    while i < name.len() {
        h = (h ^ name[i] as u64).wrapping_mul(FNV_PRIME);
        i += 1;
    }
    (h ^ b'/' as u64).wrapping_mul(FNV_PRIME)
}

/// The kernel's `HASH_ALGO_SHA256` (`enum hash_algo`), which `bpf_ima_file_hash` returns when
/// it hashed with SHA-256 (IMA's default hash on the kernels airlock supports).
pub const HASH_ALGO_SHA256: u32 = 4;

/// A gated binary's content identity in the rule maps: the SHA-256 of the whole file.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DigestKey {
    pub sha256: [u8; 32],
    /// The agent the entry applies to, as in [`InodeKey::slot`].
    pub slot: u32,
    pub _pad: u32,
}

/// A file's SHA-256 as the kernel computed it, kept per inode ([`InodeKey`] with `slot` 0)
/// with the version it was computed for: a later change of size or ctime makes it stale, and
/// an agent's write open drops it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileDigest {
    pub size: u64,
    pub ctime_sec: u64,
    pub ctime_nsec: u32,
    pub _pad: u32,
    pub sha256: [u8; 32],
}

/// Identity of a filesystem object: the kernel's `s_dev` encoding (`MAJOR << 20 | MINOR`, not
/// `stat`'s) and the inode number.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub ino: u64,
    pub dev: u32,
    /// In rule-map keys, the agent the entry applies to (0: every agent; see
    /// `airlock_policy::Scopes`). 0 everywhere else.
    pub slot: u32,
}

/// A name inside a directory: how a gated binary is matched when the inode at its path changes
/// (a package upgrade renames a new file over the old one).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DirEntryKey {
    pub dir_ino: u64,
    pub dev: u32,
    /// The agent the entry applies to, as in [`InodeKey::slot`].
    pub slot: u32,
    /// NUL-padded name.
    pub name: [u8; NAME_LEN],
}

/// What the kernel found out about a cgroup (the `CGROUP_CLASS` cache): whether it is in an
/// agent's subtree, and that agent's slot in the rule maps (0 when no rule names the agent).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupClass {
    /// `Settings::generation` when it was classified; an older one is classified again.
    pub generation: u64,
    /// Non-zero: in an agent's subtree.
    pub agent: u32,
    /// The agent's `AGENT_ROOTS` value.
    pub slot: u32,
}

/// An agent process in `AGENT_TASKS` (by tgid): the root cgroup of its agent and the agent's
/// slot. Membership sticks to the process: moved out of its agent's subtree by anyone, it is
/// still that agent's (LSM backend; see ebpf-programs/src/sticky.rs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentTask {
    pub root: u64,
    pub slot: u32,
    pub _pad: u32,
}

/// Map value pointing at a compiled rule.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleRef {
    /// Index of the rule in the compiled policy set (stable for one load).
    pub rule_id: u32,
    /// One of [`action`].
    pub action: u32,
    /// Mask of [`op::bit`]s the rule covers (protected trees); ignored for exec rules.
    pub ops: u32,
    /// [`flags`] bits.
    pub flags: u32,
}

/// One flagged action, written by the kernel (LSM backend) or built in userspace (fallback).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// `bpf_ktime_get_boot_ns` (CLOCK_BOOTTIME) at the hook.
    pub ktime_ns: u64,
    pub cgroup_id: u64,
    pub target_ino: u64,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub euid: u32,
    /// Kernel `s_dev` encoding.
    pub target_dev: u32,
    pub op: u32,
    pub rule_id: u32,
    pub action: u32,
    pub verdict: u32,
    pub flags: u32,
    pub comm: [u8; COMM_LEN],
    /// Last path component of the target (NUL-padded).
    pub name: [u8; NAME_LEN],
    /// exec only: FNV-1a over `argc` and the `argv` slots as captured; binds a once-grant to
    /// the exact arguments (0 for other operations).
    pub argv_hash: u64,
    /// exec only: number of arguments captured (at most [`ARGV_MAX`]).
    pub argc: u32,
    pub _pad: u32,
    /// exec only: the arguments, read in the kernel from the execve caller's memory at the hook
    /// (each NUL-terminated within its slot, cut at [`ARG_LEN`] - 1 bytes).
    pub argv: [[u8; ARG_LEN]; ARGV_MAX],
}

/// Arguments of a held exec kept in an [`Event`].
pub const ARGV_MAX: usize = 16;
/// Bytes per argument slot in an [`Event`].
pub const ARG_LEN: usize = 64;

/// FNV-1a 64 offset basis and prime: the argv hash both sides compute the same way.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// See [`FNV_OFFSET`].
pub const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The argv hash of [`Event::argv_hash`]: FNV-1a over `argc` (as one byte-sized step) and then
/// every byte of every slot, zeros included. Userspace uses it for the fanotify fallback, the
/// kernel side computes the same over the same bytes.
pub fn argv_hash(argc: u32, argv: &[[u8; ARG_LEN]; ARGV_MAX]) -> u64 {
    let mut h = (FNV_OFFSET ^ argc as u64).wrapping_mul(FNV_PRIME);
    let mut i = 0;
    while i < ARGV_MAX {
        let mut j = 0;
        while j < ARG_LEN {
            h = (h ^ argv[i][j] as u64).wrapping_mul(FNV_PRIME);
            j += 1;
        }
        i += 1;
    }
    h
}

/// A decision bound to one thread and one request: `(tid, op, object, argv hash)`. Written by
/// userspace when a request is decided once; the resumed syscall consumes (deletes) it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OnceKey {
    /// Thread id (kernel `pid`) that was held.
    pub tid: u32,
    pub op: u32,
    pub ino: u64,
    /// Kernel `s_dev` encoding.
    pub dev: u32,
    pub _pad: u32,
    /// [`Event::argv_hash`] of the held attempt (0 for non-exec operations).
    pub argv_hash: u64,
}

/// A decision for one agent cgroup on one operation on one object (`approve --for`, `deny
/// --always`). Never crosses cgroups: the key is the cgroup of the acting task.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AgentGrantKey {
    pub cgroup_id: u64,
    pub ino: u64,
    /// Kernel `s_dev` encoding.
    pub dev: u32,
    pub op: u32,
}

/// Value of a once or agent-wide decision.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Grant {
    /// CLOCK_BOOTTIME ns after which the decision no longer applies ([`GRANT_FOREVER`]: never
    /// expires). The kernel compares it with `bpf_ktime_get_boot_ns`, so expiry needs no sweep.
    pub expires_ns: u64,
    /// [`verdict::ALLOWED`] or [`verdict::DENIED`].
    pub verdict: u32,
    pub _pad: u32,
}

/// [`Grant::expires_ns`] of a decision that never expires.
pub const GRANT_FOREVER: u64 = u64::MAX;

/// Backstop allowance (fallback backend): the daemon let this thread exec this binary, so the
/// exec tracepoint must not stop it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExecAllowKey {
    pub tid: u32,
    /// Kernel `s_dev` encoding.
    pub dev: u32,
    pub ino: u64,
}

/// Byte offsets of the kernel struct fields the programs read, taken from the running kernel's
/// BTF by userspace (Rust eBPF has no CO-RE for kernel structs). A zero `valid` means "not filled
/// in": the programs then do nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelOffsets {
    pub valid: u32,
    pub task_real_parent: u32,
    pub task_tgid: u32,
    pub task_cred: u32,
    pub cred_euid: u32,
    pub binprm_file: u32,
    pub file_f_path: u32,
    pub file_f_inode: u32,
    pub file_f_mode: u32,
    pub file_f_flags: u32,
    pub path_dentry: u32,
    pub dentry_d_parent: u32,
    pub dentry_d_name: u32,
    pub dentry_d_inode: u32,
    pub qstr_name: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub sb_s_dev: u32,
    pub binprm_filename: u32,
    pub task_flags: u32,
    pub task_ptrace: u32,
    pub sb_s_magic: u32,
    /// `struct unix_sock` → `path` (where a Unix socket is bound; no dentry when abstract).
    pub unix_sock_path: u32,
    /// `task_struct` → `cgroups` (`css_set *`) → `dfl_cgrp` (`cgroup *`) → `kn`
    /// (`kernfs_node *`), whose `id` is the cgroup id and `parent` the parent cgroup's node:
    /// which cgroup another task is in.
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    pub kernfs_node_parent: u32,
    /// `struct cred` ids other than `euid` (privilege rules compare old and new).
    pub cred_uid: u32,
    pub cred_suid: u32,
    pub cred_gid: u32,
    pub cred_egid: u32,
    pub cred_sgid: u32,
    /// `struct vfsmount` → `mnt_root`: the root dentry of a mounted filesystem.
    pub vfsmount_mnt_root: u32,
    /// `struct linux_binprm` → `cred` (the credentials the exec will install) and
    /// `struct cred` → `cap_permitted` (64 bits: `kernel_cap_t` is `u32[2]` before 6.3, `u64`
    /// after, the same bytes on little-endian).
    pub binprm_cred: u32,
    pub cred_cap_permitted: u32,
    /// `struct inode` → `i_size`, and its ctime (seconds, nanoseconds): a file version, for the
    /// content digests the kernel keeps ([`FileDigest`]).
    pub inode_i_size: u32,
    pub inode_ctime_sec: u32,
    pub inode_ctime_nsec: u32,
    /// `task_struct` → `mm` → `exe_file`: the file the process runs (the ELF loader's own
    /// mappings of it are not a second exec), and `vm_area_struct` → `vm_file`, `vm_flags`.
    pub task_mm: u32,
    pub mm_exe_file: u32,
    pub vma_vm_file: u32,
    pub vma_vm_flags: u32,
    /// `task_struct` → `pid` (thread id; equal to `tgid` for a process's first thread).
    pub task_pid: u32,
    /// `struct inode` → `i_mode` (16 bits) and `i_rdev` (a device node's device, `s_dev`
    /// encoding): block devices that hold protected trees.
    pub inode_i_mode: u32,
    pub inode_i_rdev: u32,
}

/// Bytes of an exec'd file name kept in [`ExecContext`] (longer names are cut).
pub const FILENAME_LEN: usize = 256;

/// What an agent process executed, recorded by the `sched_process_exec` tracepoint after a
/// successful exec, so that later events of that process can say which program it runs.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecContext {
    pub ktime_ns: u64,
    pub cgroup_id: u64,
    pub pid: u32,
    pub tgid: u32,
    /// The file name as passed to execve (may be relative).
    pub filename: [u8; FILENAME_LEN],
}

/// Global switches read by every program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Settings {
    /// Non-zero once userspace has filled in the policy maps; until then programs allow all.
    pub armed: u32,
    /// Non-zero on the fanotify fallback: the exec tracepoint stops (approve) or kills (deny)
    /// an agent's exec of a gated binary that the daemon did not allow (see [`ExecAllowKey`]).
    pub backstop: u32,
    /// Bumped by userspace whenever the agent roots change; classification cache entries of an
    /// older generation are recomputed.
    pub generation: u64,
    /// airlockd's tgid (LSM backend): signals and ptrace from agent processes to it are
    /// refused. 0: nothing to protect yet.
    pub self_tgid: u32,
    pub _pad: u32,
}

/// Kernel `FMODE_WRITE`.
pub const FMODE_WRITE: u32 = 0x2;
/// x86_64/generic `O_TRUNC`.
pub const O_TRUNC: u32 = 0o1000;
/// x86_64/generic `O_APPEND`.
pub const O_APPEND: u32 = 0o2000;

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: all of these are repr(C), Copy, with explicit padding fields and no pointers.
    unsafe impl aya::Pod for InodeKey {}
    unsafe impl aya::Pod for DirEntryKey {}
    unsafe impl aya::Pod for RuleRef {}
    unsafe impl aya::Pod for Event {}
    unsafe impl aya::Pod for KernelOffsets {}
    unsafe impl aya::Pod for Settings {}
    unsafe impl aya::Pod for ExecContext {}
    unsafe impl aya::Pod for OnceKey {}
    unsafe impl aya::Pod for AgentGrantKey {}
    unsafe impl aya::Pod for Grant {}
    unsafe impl aya::Pod for ExecAllowKey {}
    unsafe impl aya::Pod for DigestKey {}
    unsafe impl aya::Pod for FileDigest {}
    unsafe impl aya::Pod for AgentTask {}
    unsafe impl aya::Pod for WildKey {}
}

/// Converts a userspace `st_dev` (glibc `makedev` encoding) to the kernel's `s_dev`.
pub const fn kernel_dev(major: u32, minor: u32) -> u32 {
    (major << 20) | minor
}
