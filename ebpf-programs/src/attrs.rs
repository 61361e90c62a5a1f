//! A protected object's other attributes: inode flags (`chattr +i/+a/-i`, through an ioctl on
//! any descriptor of it, read-only ones included) and timestamps (`utimensat`, `touch -d`).
//! Gated as op `setattr` by the tree's rule. Mode, owner and size changes also reach
//! `inode_setattr` but are gated by their own hooks (`path_chmod`, `path_chown`,
//! `path_truncate`), so they are left alone here.
use aya_ebpf::{macros::lsm, programs::LsmContext};

use airlock_common::op;

use crate::{chained, gate_tree, offsets, read_u32, read_u64, ret};

/// `FS_IOC_SETFLAGS` and `FS_IOC32_SETFLAGS` (`chattr`), `FS_IOC_FSSETXATTR` (`xfs_io
/// chattr`, project ids and the same flags).
const FS_IOC_SETFLAGS: u64 = 0x4008_6602;
const FS_IOC32_SETFLAGS: u64 = 0x4004_6602;
const FS_IOC_FSSETXATTR: u64 = 0x401c_5820;

/// `struct iattr` → `ia_valid` bits: what `notify_change` changes.
const ATTR_MODE: u32 = 1;
const ATTR_UID: u32 = 2;
const ATTR_GID: u32 = 4;
const ATTR_SIZE: u32 = 8;
const ATTR_ATIME: u32 = 16;
const ATTR_MTIME: u32 = 32;

#[lsm(hook = "file_ioctl")]
pub fn file_ioctl(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(3);
    if prev as i32 != 0 {
        return chained(prev);
    }
    let cmd: u64 = ctx.arg(1);
    let cmd = cmd & 0xffff_ffff;
    if cmd != FS_IOC_SETFLAGS && cmd != FS_IOC32_SETFLAGS && cmd != FS_IOC_FSSETXATTR {
        return 0;
    }
    let Some(o) = offsets() else { return 0 };
    let file: u64 = ctx.arg(0);
    let dentry = read_u64(file + u64::from(o.file_f_path + o.path_dentry));
    ret(gate_tree(dentry, op::SETATTR))
}

/// Timestamps only (see the module docs).
#[inline(always)]
fn setattr(dentry: u64, attr: u64) -> i32 {
    let valid = read_u32(attr);
    if valid & (ATTR_ATIME | ATTR_MTIME) == 0
        || valid & (ATTR_MODE | ATTR_UID | ATTR_GID | ATTR_SIZE) != 0
    {
        return 0;
    }
    ret(gate_tree(dentry, op::SETATTR))
}

/// `inode_setattr(struct dentry *, struct iattr *)`: kernels before 6.8. (Each version has a
/// section of its own, so the linker keeps them apart; userspace attaches the one that fits
/// the running kernel to `inode_setattr`: `attach_point` in agent/src/backend/lsm.rs.)
#[lsm(hook = "inode_setattr_dentry")]
pub fn inode_setattr_dentry(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(2);
    if prev as i32 != 0 {
        return chained(prev);
    }
    setattr(ctx.arg(0), ctx.arg(1))
}

/// `inode_setattr(struct mnt_idmap *, struct dentry *, struct iattr *)`: 6.8 on.
#[lsm(hook = "inode_setattr_idmap")]
pub fn inode_setattr_idmap(ctx: LsmContext) -> i32 {
    let prev: u64 = ctx.arg(3);
    if prev as i32 != 0 {
        return chained(prev);
    }
    setattr(ctx.arg(1), ctx.arg(2))
}
