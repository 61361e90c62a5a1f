//! What the kernel maps hold: one [`RuleRef`] per key, merged from every rule that names the
//! same object. Both backends load these, so they decide the same way.
//!
//! Precedence, highest first:
//! 1. an enforcing `deny`/`approve` (it stops the action),
//! 2. a monitoring `deny`/`approve` (it records "would have denied"),
//! 3. `audit`, 4. `allow`;
//!
//! within a class, [`strictness`] (deny over approve), then the lower rule id. A monitor-mode
//! policy thus never weakens an enforcing one that names the same object.
//!
//! The winner's `ops` also take in the ops of every other rule of the same class, because one
//! map value must carry them all: `deny unlink` and `approve write` on `/etc` become one entry
//! gating both (attributed to the deny rule). That over-enforces only approve-as-deny, which is
//! how `approve` is enforced today anyway; dropping ops instead would let writes through.
//!
//! A rule restricted to some agents goes into those agents' own entries only (see
//! [`crate::scope`]).
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;

use airlock_common::{DigestKey, DirEntryKey, InodeKey, RuleRef, action, flags, op};

use crate::compiled::{CompiledPolicy, strictness};
use crate::scope::{Scopes, SlotKey};

/// Gated binaries by inode.
pub fn effective_exec_map(policy: &CompiledPolicy) -> HashMap<InodeKey, RuleRef> {
    merge(
        policy,
        policy.exec.iter().filter_map(|t| Some((t.inode?, t.rule))),
    )
}

/// Gated binaries by (directory inode, name): matches a binary installed or replaced after the
/// policy was compiled.
pub fn effective_exec_entry_map(policy: &CompiledPolicy) -> HashMap<DirEntryKey, RuleRef> {
    merge(
        policy,
        policy.exec.iter().filter_map(|t| Some((t.entry?, t.rule))),
    )
}

/// Gated binaries by content (SHA-256 of the whole file), and the sizes of those files: the
/// kernel hashes only files of one of these sizes.
pub fn effective_exec_digest_map(
    policy: &CompiledPolicy,
) -> (HashMap<DigestKey, RuleRef>, HashMap<u64, u32>) {
    let digests = merge(
        policy,
        policy.exec.iter().filter_map(|t| {
            let c = t.content?;
            let key = DigestKey {
                sha256: c.sha256,
                slot: 0,
                _pad: 0,
            };
            Some((key, t.rule))
        }),
    );
    let mut sizes: HashMap<u64, u32> = HashMap::new();
    let distinct: std::collections::HashSet<_> =
        policy.exec.iter().filter_map(|t| t.content).collect();
    for c in distinct {
        *sizes.entry(c.size).or_default() += 1;
    }
    (digests, sizes)
}

/// Block devices that hold protected trees, by device (`ino`: the kernel's `dev_t`, `dev` 0):
/// writing one writes the filesystem under every rule on it. `devices_of(s_dev)` names the
/// devices that hold a filesystem (itself, the whole disk of a partition, what a mapped or
/// RAID device is built on); each gets the rules of the trees on that filesystem that gate
/// write opens, merged like any object's.
pub fn effective_block_map(
    policy: &CompiledPolicy,
    devices_of: impl Fn(u32) -> Vec<u32>,
) -> HashMap<InodeKey, RuleRef> {
    let mut by_fs: HashMap<u32, Vec<u32>> = HashMap::new();
    let items = policy
        .protected
        .iter()
        .filter(|t| t.rule.ops & op::bit(op::OPEN_WRITE) != 0)
        .flat_map(|t| {
            let devs = by_fs
                .entry(t.inode.dev)
                .or_insert_with(|| devices_of(t.inode.dev))
                .clone();
            devs.into_iter().map(move |d| (block_key(d), t.rule))
        })
        .collect::<Vec<_>>();
    merge(policy, items.into_iter())
}

/// The block-device map's key for device `dev` (`s_dev` encoding).
pub fn block_key(dev: u32) -> InodeKey {
    InodeKey {
        ino: u64::from(dev),
        dev: 0,
        slot: 0,
    }
}

/// Gated service sockets by wildcard path (`/run/user/*/bus`).
pub fn effective_connect_wild_map(
    policy: &CompiledPolicy,
) -> HashMap<airlock_common::WildKey, RuleRef> {
    merge(policy, policy.connect_wild.iter().map(|t| (t.key, t.rule)))
}

/// Gated service sockets by inode.
pub fn effective_connect_map(policy: &CompiledPolicy) -> HashMap<InodeKey, RuleRef> {
    merge(
        policy,
        policy
            .connect
            .iter()
            .filter_map(|t| Some((t.inode?, t.rule))),
    )
}

/// Gated service sockets by (directory inode, name): a socket bound anew after the policy was
/// compiled (the service restarted) is still gated.
pub fn effective_connect_entry_map(policy: &CompiledPolicy) -> HashMap<DirEntryKey, RuleRef> {
    merge(
        policy,
        policy
            .connect
            .iter()
            .filter_map(|t| Some((t.entry?, t.rule))),
    )
}

/// Privilege changes, keyed by their op in `ino` (`dev` 0): one entry per op a `privilege`
/// rule names.
pub fn effective_privilege_map(policy: &CompiledPolicy) -> HashMap<InodeKey, RuleRef> {
    let items = policy.privilege.iter().flat_map(|r| {
        (0..=op::MAX)
            .filter(|o| r.ops & op::bit(*o) != 0)
            .map(|o| (privilege_key(o), *r))
    });
    merge(policy, items)
}

/// The key of privilege change `opv` in the privilege map.
pub fn privilege_key(opv: u32) -> InodeKey {
    InodeKey {
        ino: u64::from(opv),
        dev: 0,
        slot: 0,
    }
}

/// Protected trees and files by inode. The backends apply the entry of the nearest protected
/// ancestor (or the object itself), so an `allow` entry on a subdirectory carves it out of a
/// protected tree.
pub fn effective_protected_map(policy: &CompiledPolicy) -> HashMap<InodeKey, RuleRef> {
    let all = policy.protected.iter().chain(&policy.ancestors);
    merge(policy, all.map(|t| (t.inode, t.rule)))
}

/// Class of a rule (see the module docs): higher wins.
fn class(r: &RuleRef) -> u8 {
    let gate = r.action == action::DENY || r.action == action::APPROVE;
    match (gate, r.flags & flags::MONITOR != 0) {
        (true, false) => 3,
        (true, true) => 2,
        (false, _) if r.action == action::AUDIT => 1,
        (false, _) => 0,
    }
}

/// Whether `new` takes precedence over `old` (ties keep the lower rule id).
fn beats(new: &RuleRef, old: &RuleRef) -> bool {
    let key = |r: &RuleRef| (class(r), strictness(r.action), std::cmp::Reverse(r.rule_id));
    key(new) > key(old)
}

/// Every (object, rule) in the entries of the agents each rule applies to (see [`Scopes`]).
fn merge<K: SlotKey>(
    policy: &CompiledPolicy,
    items: impl Iterator<Item = (K, RuleRef)>,
) -> HashMap<K, RuleRef> {
    let scopes = Scopes::of(policy);
    let mut map = HashMap::new();
    for (key, rule) in items {
        scopes.insert(&mut map, &key, rule);
    }
    map
}

/// The one rule that stands for `old` and `new` on one object: the one that takes precedence,
/// with the ops of both when they are of the same class.
pub fn merge_rules(old: RuleRef, new: RuleRef) -> RuleRef {
    // A rule for a tree always beats an ancestor's rename-only entry on the same object (see
    // `CompiledPolicy::ancestors`): the tree's own rule decides there, and the other way round
    // the tree would lose its subtree.
    let self_only = |r: &RuleRef| r.flags & flags::SELF_ONLY != 0;
    if self_only(&old) != self_only(&new) {
        return if self_only(&old) { new } else { old };
    }
    let mut winner = if beats(&new, &old) { new } else { old };
    if class(&old) == class(&new) {
        winner.ops = old.ops | new.ops;
    }
    winner
}

/// Adds `rule` to whatever `map` holds for `key`, merged ([`merge_rules`]).
pub fn merge_into<K: Hash + Eq>(map: &mut HashMap<K, RuleRef>, key: K, rule: RuleRef) {
    match map.entry(key) {
        Entry::Vacant(v) => {
            v.insert(rule);
        }
        Entry::Occupied(mut o) => {
            let merged = merge_rules(*o.get(), rule);
            o.insert(merged);
        }
    }
}
