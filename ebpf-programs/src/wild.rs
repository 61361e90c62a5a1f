//! `connect` rules with a wildcard directory (`/run/user/*/bus`, `/run/user/*/systemd/private`):
//! per-user and per-session service sockets, which appear whenever a user logs in, so they
//! cannot be resolved to inodes when the policy is compiled. The kernel matches the socket by
//! the directory above the `*` (its inode) and the names below it (a hash over them, socket
//! first: [`airlock_common::wild_fold`]), trying each depth up to [`WILD_DEPTH`].
use airlock_common::{
    FNV_OFFSET, FNV_PRIME, KernelOffsets, NAME_LEN, RuleRef, WILD_DEPTH, WildKey,
};
use aya_ebpf::{helpers::bpf_probe_read_kernel_str_bytes, macros::map, maps::HashMap};

use crate::{inode_key, read_u64, rule_in_slot};

/// Wildcard socket rules.
#[map]
pub(crate) static CONNECT_WILD: HashMap<WildKey, RuleRef> = HashMap::with_max_entries(1024, 0);

/// The rule of a wildcard `connect` path that matches the socket at `dentry`, for the agent in
/// `slot` (its own entry first).
#[inline(always)]
pub(crate) fn wild_rule(o: &KernelOffsets, dentry: u64, slot: u32) -> Option<RuleRef> {
    let mut d = dentry;
    let mut h = FNV_OFFSET;
    let mut depth = 1u32;
    while depth <= WILD_DEPTH {
        let mut name = [0u8; NAME_LEN];
        let p = read_u64(d + u64::from(o.dentry_d_name + o.qstr_name));
        // SAFETY: bounded kernel string read into a stack buffer.
        if unsafe { bpf_probe_read_kernel_str_bytes(p as *const u8, &mut name) }.is_err() {
            return None;
        }
        let mut i = 0usize;
        while i < NAME_LEN {
            let b = name[i];
            if b == 0 {
                break;
            }
            h = (h ^ u64::from(b)).wrapping_mul(FNV_PRIME);
            i += 1;
        }
        h = (h ^ u64::from(b'/')).wrapping_mul(FNV_PRIME);
        // `d`'s parent stands for the `*`; the directory above it is the rule's.
        let wild = read_u64(d + u64::from(o.dentry_d_parent));
        let dir = read_u64(wild + u64::from(o.dentry_d_parent));
        if wild == d || dir == wild {
            return None;
        }
        let id = inode_key(o, read_u64(dir + u64::from(o.dentry_d_inode)));
        let key = WildKey {
            dir_ino: id.ino,
            dev: id.dev,
            slot: 0,
            depth,
            _pad: 0,
            hash: h,
        };
        if let Some(r) = rule_in_slot(&CONNECT_WILD, &key, slot, |slot| WildKey { slot, ..key }) {
            return Some(r);
        }
        d = wild;
        depth += 1;
    }
    None
}
