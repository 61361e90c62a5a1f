//! The operations airlock gates, as one type for the daemon, the server and the wire.
use airlock_common::op;
use serde::{Deserialize, Serialize};

/// A gated operation, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Exec,
    OpenWrite,
    Create,
    Unlink,
    Rename,
    Truncate,
    Link,
    Chmod,
    Chown,
    Mkdir,
    Rmdir,
    Symlink,
    /// Self-protection (see [`airlock_common::op::SIGNAL`]): recorded, never requested.
    Signal,
    /// Self-protection: ptrace of airlockd.
    Ptrace,
    /// Self-protection: a bpf(2) call.
    Bpf,
    /// Self-protection: loading a module, a kexec image or other kernel-read data.
    KernelLoad,
    /// Self-protection: moving a process to a cgroup outside its agent's subtree.
    CgroupMove,
    /// Connecting to a gated local service socket.
    Connect,
    /// Setting or removing an extended attribute in a protected tree.
    Xattr,
    /// Changing user ids.
    Setuid,
    /// Changing group ids.
    Setgid,
    /// Creating a user namespace.
    Userns,
    /// Mounting on or in a protected tree, or unmounting a protected filesystem.
    Mount,
    /// Gaining capabilities at exec.
    Caps,
    /// Opening one of airlockd's secrets (self-protection).
    ReadSecret,
    /// Mapping a gated program's code executable outside its exec (mmap/mprotect).
    MapExec,
    /// Changing inode flags or timestamps of a protected object.
    Setattr,
}

impl Op {
    /// Decodes an [`airlock_common::op`] value.
    pub fn from_raw(v: u32) -> Option<Op> {
        Some(match v {
            op::EXEC => Op::Exec,
            op::OPEN_WRITE => Op::OpenWrite,
            op::CREATE => Op::Create,
            op::UNLINK => Op::Unlink,
            op::RENAME => Op::Rename,
            op::TRUNCATE => Op::Truncate,
            op::LINK => Op::Link,
            op::CHMOD => Op::Chmod,
            op::CHOWN => Op::Chown,
            op::MKDIR => Op::Mkdir,
            op::RMDIR => Op::Rmdir,
            op::SYMLINK => Op::Symlink,
            op::SIGNAL => Op::Signal,
            op::PTRACE => Op::Ptrace,
            op::BPF => Op::Bpf,
            op::KERNEL_LOAD => Op::KernelLoad,
            op::CGROUP_MOVE => Op::CgroupMove,
            op::CONNECT => Op::Connect,
            op::XATTR => Op::Xattr,
            op::SETUID => Op::Setuid,
            op::SETGID => Op::Setgid,
            op::USERNS => Op::Userns,
            op::MOUNT => Op::Mount,
            op::CAPS => Op::Caps,
            op::READ_SECRET => Op::ReadSecret,
            op::MAP_EXEC => Op::MapExec,
            op::SETATTR => Op::Setattr,
            _ => return None,
        })
    }

    /// The [`airlock_common::op`] value.
    pub fn raw(self) -> u32 {
        match self {
            Op::Exec => op::EXEC,
            Op::OpenWrite => op::OPEN_WRITE,
            Op::Create => op::CREATE,
            Op::Unlink => op::UNLINK,
            Op::Rename => op::RENAME,
            Op::Truncate => op::TRUNCATE,
            Op::Link => op::LINK,
            Op::Chmod => op::CHMOD,
            Op::Chown => op::CHOWN,
            Op::Mkdir => op::MKDIR,
            Op::Rmdir => op::RMDIR,
            Op::Symlink => op::SYMLINK,
            Op::Signal => op::SIGNAL,
            Op::Ptrace => op::PTRACE,
            Op::Bpf => op::BPF,
            Op::KernelLoad => op::KERNEL_LOAD,
            Op::CgroupMove => op::CGROUP_MOVE,
            Op::Connect => op::CONNECT,
            Op::Xattr => op::XATTR,
            Op::Setuid => op::SETUID,
            Op::Setgid => op::SETGID,
            Op::Userns => op::USERNS,
            Op::Mount => op::MOUNT,
            Op::Caps => op::CAPS,
            Op::ReadSecret => op::READ_SECRET,
            Op::MapExec => op::MAP_EXEC,
            Op::Setattr => op::SETATTR,
        }
    }
}
