//! airlockd's own files, protected from agent processes (LSM backend): its state directory
//! (status, event log, requests, run records), its bpffs pins, its policy files and, with a
//! server link, its host identity. They join the compiled policy as protected trees of
//! [`SELF_RULE`]: an enforcing deny of every write-like operation, whatever the policy says
//! and whatever its mode, recorded as `self-protection` events. Its secrets (the host key) may
//! not even be opened for reading by agent processes.
//!
//! Not on the fanotify fallback: marking airlockd's own files there would make airlockd answer
//! permission events for its own writes.
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;

use airlock_common::{RuleRef, SELF_RULE, action, op};
use airlock_policy::{CompiledPolicy, HostResolver, ProtectedTarget};

use super::DaemonConfig;
use crate::backend::BackendKind;

/// The paths protected for airlockd (those that exist).
fn own_paths(cfg: &DaemonConfig) -> Vec<PathBuf> {
    let mut v = vec![cfg.state_dir.clone(), cfg.pin_dir.clone()];
    v.extend(cfg.policy_paths.iter().cloned());
    if let Some(l) = &cfg.link {
        v.push(l.identity_dir.clone());
    }
    v
}

/// `p` with airlockd's own files added as protected trees, on the LSM backend.
pub fn protect_self(
    mut p: CompiledPolicy,
    cfg: &DaemonConfig,
    kind: BackendKind,
) -> CompiledPolicy {
    if kind != BackendKind::Lsm {
        return p;
    }
    let before = p.protected.len();
    for path in own_paths(cfg) {
        let Ok(canonical) = std::fs::canonicalize(&path) else {
            continue;
        };
        let Ok(md) = std::fs::symlink_metadata(&canonical) else {
            continue;
        };
        p.protected.push(ProtectedTarget {
            rule: RuleRef {
                rule_id: SELF_RULE,
                action: action::DENY,
                ops: op::ALL_WRITES,
                flags: 0,
            },
            path,
            canonical,
            inode: airlock_policy::inode_key(md.dev(), md.ino()),
            is_dir: md.is_dir(),
        });
    }
    // The host key is not only unwritable: agent processes may not open it at all.
    if let Some(l) = &cfg.link {
        let key = l.identity_dir.join(crate::link::identity::HOST_KEY);
        if let Ok(md) = std::fs::metadata(&key) {
            p.secrets
                .push(airlock_policy::inode_key(md.dev(), md.ino()));
        }
    }
    // Renaming /etc/airlock (say) would free the policy directory's path for the agent's own.
    let own = airlock_policy::protected_ancestors(&p.protected[before..], &HostResolver);
    p.ancestors.extend(own);
    p
}
