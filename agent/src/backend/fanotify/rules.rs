//! The rules the listener consults, keyed by kernel identity, and the pure decisions: which rule
//! an event falls under (nearest protected ancestor wins) and what to answer.
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;

use airlock_common::{InodeKey, RuleRef, action, op, verdict};
use airlock_policy::{ANY_AGENT, Scopes, SlotKey, lookup, merge_into};

use super::sys::{FileId, Response};
use crate::event::{Op, Verdict};

/// A name in a directory, by the directory's identity (the name is not cut at `NAME_LEN`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EntryKey {
    /// The directory.
    pub dir: InodeKey,
    /// The name in it.
    pub name: OsString,
    /// The agent the entry applies to, as in [`InodeKey::slot`] (`dir.slot` stays 0).
    pub slot: u32,
}

impl EntryKey {
    /// `name` in `dir`, in the entries for every agent.
    pub fn new(dir: InodeKey, name: OsString) -> Self {
        EntryKey {
            dir,
            name,
            slot: ANY_AGENT,
        }
    }
}

impl SlotKey for EntryKey {
    fn with_slot(&self, slot: u32) -> Self {
        EntryKey {
            slot,
            ..self.clone()
        }
    }
}

/// Everything the listener looks up: per object one merged rule for every agent, and one for
/// each agent that rules are restricted to ([`Scopes`]), merged by the policy crate's
/// precedence so that this backend and the LSM backend decide alike. Built by `apply`, extended
/// by the watcher when a policy root gets a new inode or a protected tree grows.
#[derive(Clone, Debug, Default)]
pub struct Ruleset {
    /// Which agents each rule applies to; every `add_*` goes through it.
    pub scopes: Scopes,
    /// Gated binaries by inode.
    pub exec: HashMap<InodeKey, RuleRef>,
    /// Gated binaries by (directory, name): whatever inode is installed at the path.
    pub exec_entries: HashMap<EntryKey, RuleRef>,
    /// Protected trees and files by inode.
    pub protected: HashMap<InodeKey, RuleRef>,
    /// Protected trees and files by (directory, name), for when the object at the path changed.
    pub protected_entries: HashMap<EntryKey, RuleRef>,
    /// Each regular file found inside a protected tree → that tree's root, so that a hard link
    /// to it from outside any protected tree is still gated.
    pub members: HashMap<InodeKey, InodeKey>,
}

/// Looks up filesystem objects by path without following the last component.
pub trait StatFs {
    /// Identity of the object at `path`, `None` if there is none.
    fn lstat(&self, path: &Path) -> Option<FileId>;
}

/// The real filesystem.
pub struct RealFs;

impl StatFs for RealFs {
    fn lstat(&self, path: &Path) -> Option<FileId> {
        super::sys::lstat(path).ok()
    }
}

/// The rule an event fell under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    /// The (merged) rule.
    pub rule: RuleRef,
    /// Matched by (directory, name) rather than by inode.
    pub by_entry: bool,
}

impl Ruleset {
    /// An empty rule set for a policy whose rules apply to agents as `scopes` says.
    pub fn new(scopes: Scopes) -> Self {
        Ruleset {
            scopes,
            ..Ruleset::default()
        }
    }

    /// Is nothing gated?
    pub fn is_empty(&self) -> bool {
        self.exec.is_empty()
            && self.exec_entries.is_empty()
            && self.protected.is_empty()
            && self.protected_entries.is_empty()
    }

    /// The slot `agent`'s processes look rules up with: its own when some rule names it, else
    /// [`ANY_AGENT`] (one lookup per object instead of two).
    pub fn slot_of(&self, agent: &str) -> u32 {
        let slot = airlock_policy::agent_slot(agent);
        if self.scopes.has_own_rules(slot) {
            slot
        } else {
            ANY_AGENT
        }
    }

    /// Gates executing the binary `key` by `rule`.
    pub fn add_exec(&mut self, key: InodeKey, rule: RuleRef) {
        self.scopes.insert(&mut self.exec, &key, rule);
    }

    /// Gates executing whatever binary is at `entry` by `rule`.
    pub fn add_exec_entry(&mut self, entry: EntryKey, rule: RuleRef) {
        self.scopes.insert(&mut self.exec_entries, &entry, rule);
    }

    /// Protects the object `key` (and, for a directory, its tree) by `rule`.
    pub fn add_protected(&mut self, key: InodeKey, rule: RuleRef) {
        self.scopes.insert(&mut self.protected, &key, rule);
    }

    /// Protects whatever object is at `entry` by `rule`.
    pub fn add_protected_entry(&mut self, entry: EntryKey, rule: RuleRef) {
        self.scopes
            .insert(&mut self.protected_entries, &entry, rule);
    }

    /// Takes in what the watcher found (`delta`, built with the same scopes): its entries are
    /// already one per agent and object, so they merge key by key.
    pub fn absorb(&mut self, delta: Ruleset) {
        for (k, r) in delta.exec {
            merge_into(&mut self.exec, k, r);
        }
        for (k, r) in delta.protected {
            merge_into(&mut self.protected, k, r);
        }
        self.members.extend(delta.members);
    }

    /// Drops every rule on the object `key` (it is gone), for every agent.
    pub fn forget(&mut self, key: InodeKey) {
        for map in [&mut self.exec, &mut self.protected] {
            map.retain(|k, _| k.with_slot(ANY_AGENT) != key);
        }
    }

    /// The exec rule for the binary `file`, opened through `path`.
    pub fn find_exec(
        &self,
        file: InodeKey,
        path: Option<&Path>,
        fs: &impl StatFs,
        slot: u32,
    ) -> Option<Hit> {
        if let Some(r) = lookup(&self.exec, &file, slot) {
            return Some(Hit {
                rule: *r,
                by_entry: false,
            });
        }
        if self.exec_entries.is_empty() {
            return None;
        }
        let path = path?;
        let entry = EntryKey::new(fs.lstat(path.parent()?)?.key, path.file_name()?.to_owned());
        lookup(&self.exec_entries, &entry, slot).map(|r| Hit {
            rule: *r,
            by_entry: true,
        })
    }

    /// The protected-tree rule for an open of `file` (reached through `path`) that may perform
    /// any operation in `want`: the nearest protected object, the file itself first, then each
    /// ancestor directory, that has a rule covering `want`. So a nested rule (say `allow` on
    /// `/etc/app`) carves an exception out of an enclosing one (`deny` on `/etc`). A file
    /// reached through no protected path but hard-linked from a protected tree falls back to that
    /// tree's rules.
    pub fn find_protected(
        &self,
        file: FileId,
        path: Option<&Path>,
        want: u32,
        fs: &impl StatFs,
        slot: u32,
    ) -> Option<Hit> {
        let use_entries = !self.protected_entries.is_empty();
        // Level 0 is the file itself, known by fstat of the event fd (its path may be stale).
        let mut level_key = Some(file.key);
        let mut level: Option<&Path> = path;
        loop {
            let parent = level.and_then(Path::parent);
            // The parent's identity: for the entry lookup here, and as the next level's key.
            let parent_key = parent.and_then(|p| fs.lstat(p));
            if let Some(k) = level_key
                && let Some(r) = lookup(&self.protected, &k, slot).filter(|r| r.ops & want != 0)
            {
                return Some(Hit {
                    rule: *r,
                    by_entry: false,
                });
            }
            if use_entries
                && let (Some(pk), Some(name)) = (parent_key, level.and_then(Path::file_name))
            {
                let e = EntryKey::new(pk.key, name.to_owned());
                if let Some(r) =
                    lookup(&self.protected_entries, &e, slot).filter(|r| r.ops & want != 0)
                {
                    return Some(Hit {
                        rule: *r,
                        by_entry: true,
                    });
                }
            }
            let Some(p) = parent else { break };
            level = Some(p);
            // An ancestor that cannot be stat'ed (renamed meanwhile) is skipped, not the end.
            level_key = parent_key.map(|f| f.key);
        }
        if file.nlink > 1 {
            let root = self.members.get(&file.key)?;
            let r = lookup(&self.protected, root, slot).filter(|r| r.ops & want != 0)?;
            return Some(Hit {
                rule: *r,
                by_entry: false,
            });
        }
        None
    }
}

/// Operations an open with these flags performs on a protected tree, as an [`op::bit`] mask.
pub fn write_ops(open_flags: Option<u64>) -> u32 {
    match open_flags {
        Some(f) if f & libc::O_CREAT as u64 != 0 => op::bit(op::OPEN_WRITE) | op::bit(op::CREATE),
        Some(_) => op::bit(op::OPEN_WRITE),
        // Unknown flags: assume everything an open can do.
        None => op::bit(op::OPEN_WRITE) | op::bit(op::CREATE),
    }
}

/// The op an event reports: `OpenWrite` unless the rule only covers creation.
pub fn reported_op(rule: &RuleRef) -> Op {
    if rule.ops & op::bit(op::OPEN_WRITE) == 0 && rule.ops & op::bit(op::CREATE) != 0 {
        Op::Create
    } else {
        Op::OpenWrite
    }
}

/// What the listener does with the permission event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Answer at once.
    Now(Response),
    /// `approve`: park the [`super::Permission`] until a person (or a standing decision)
    /// decides; the listener moves on to other events.
    Hold,
}

/// What to do with a gated operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// What happens to the permission event.
    pub answer: Answer,
    /// What the event records.
    pub verdict: Verdict,
    /// Whether an event is sent (every action but `allow`).
    pub report: bool,
}

/// The decision for an operation that falls under `rule`: [`crate::event::verdict_for`]
/// (`approve` holds, `deny` denies, monitor mode never denies nor holds).
pub fn decide(rule: &RuleRef) -> Decision {
    let (answer, recorded) = match crate::event::verdict_for(rule.action, rule.flags) {
        verdict::HELD => (Answer::Hold, Verdict::Held),
        verdict::DENIED => (Answer::Now(Response::Deny), Verdict::Denied),
        _ => (Answer::Now(Response::Allow), Verdict::Allowed),
    };
    Decision {
        answer,
        verdict: recorded,
        report: rule.action != action::ALLOW,
    }
}

/// Whether an allowed exec under `rule` needs an `EXEC_ALLOW` entry for the exec backstop:
/// the tracepoint stops or kills every agent exec of a binary whose rule is an enforcing
/// `deny` or `approve` unless the daemon allowed that exec.
pub fn backstopped(rule: &RuleRef) -> bool {
    (rule.action == action::DENY || rule.action == action::APPROVE)
        && rule.flags & airlock_common::flags::MONITOR == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_common::flags;
    use std::path::PathBuf;

    fn rr(id: u32, act: u32, ops: u32) -> RuleRef {
        RuleRef {
            rule_id: id,
            action: act,
            ops,
            flags: 0,
        }
    }
    fn key(ino: u64) -> InodeKey {
        InodeKey {
            ino,
            dev: 8 << 20,
            slot: 0,
        }
    }
    fn fid(ino: u64, nlink: u64) -> FileId {
        FileId {
            key: key(ino),
            kind: libc::S_IFREG,
            nlink,
        }
    }

    /// Paths → inodes.
    struct FakeFs(HashMap<PathBuf, u64>);
    impl StatFs for FakeFs {
        fn lstat(&self, p: &Path) -> Option<FileId> {
            self.0.get(p).map(|&i| FileId {
                key: key(i),
                kind: libc::S_IFDIR,
                nlink: 2,
            })
        }
    }
    fn fs() -> FakeFs {
        FakeFs(
            [
                ("/", 2),
                ("/etc", 10),
                ("/etc/app", 11),
                ("/etc/app/conf.d", 12),
                ("/tmp", 20),
            ]
            .into_iter()
            .map(|(p, i)| (PathBuf::from(p), i))
            .collect(),
        )
    }
    const W: u32 = op::bit(op::OPEN_WRITE);

    #[test]
    fn nearest_protected_ancestor_wins() {
        let mut rs = Ruleset::default();
        rs.protected
            .insert(key(10), rr(1, action::DENY, op::ALL_WRITES));
        rs.protected
            .insert(key(11), rr(2, action::ALLOW, op::ALL_WRITES));
        let f = fs();
        let deep = rs
            .find_protected(
                fid(100, 1),
                Some(Path::new("/etc/app/conf.d/x")),
                W,
                &f,
                ANY_AGENT,
            )
            .unwrap();
        assert_eq!((deep.rule.rule_id, deep.by_entry), (2, false));
        let top = rs
            .find_protected(
                fid(101, 1),
                Some(Path::new("/etc/passwd")),
                W,
                &f,
                ANY_AGENT,
            )
            .unwrap();
        assert_eq!(top.rule.rule_id, 1);
        assert_eq!(
            rs.find_protected(fid(102, 1), Some(Path::new("/tmp/x")), W, &f, ANY_AGENT),
            None
        );
    }

    #[test]
    fn a_nearer_rule_not_covering_the_op_is_skipped() {
        let mut rs = Ruleset::default();
        rs.protected.insert(key(10), rr(1, action::DENY, W));
        rs.protected
            .insert(key(11), rr(2, action::ALLOW, op::bit(op::UNLINK)));
        let hit = rs
            .find_protected(
                fid(100, 1),
                Some(Path::new("/etc/app/x")),
                W,
                &fs(),
                ANY_AGENT,
            )
            .unwrap();
        assert_eq!(hit.rule.rule_id, 1);
    }

    #[test]
    fn the_file_itself_and_entries_are_levels_too() {
        let mut rs = Ruleset::default();
        rs.protected.insert(key(10), rr(1, action::AUDIT, W));
        rs.protected.insert(key(100), rr(2, action::DENY, W));
        let f = fs();
        assert_eq!(
            rs.find_protected(
                fid(100, 1),
                Some(Path::new("/etc/shadow")),
                W,
                &f,
                ANY_AGENT
            )
            .unwrap()
            .rule
            .rule_id,
            2
        );
        // A protected single file replaced at its path: found by (directory, name).
        rs.protected_entries.insert(
            EntryKey::new(key(11), "secret".into()),
            rr(3, action::DENY, W),
        );
        let h = rs
            .find_protected(
                fid(555, 1),
                Some(Path::new("/etc/app/secret")),
                W,
                &f,
                ANY_AGENT,
            )
            .unwrap();
        assert_eq!((h.rule.rule_id, h.by_entry), (3, true));
    }

    #[test]
    fn hard_links_out_of_a_tree_fall_back_to_the_tree() {
        let mut rs = Ruleset::default();
        rs.protected.insert(key(10), rr(1, action::DENY, W));
        rs.members.insert(key(100), key(10));
        let f = fs();
        assert_eq!(
            rs.find_protected(fid(100, 2), Some(Path::new("/tmp/link")), W, &f, ANY_AGENT)
                .unwrap()
                .rule
                .rule_id,
            1
        );
        // nlink 1: moved out of the tree, no longer protected.
        assert_eq!(
            rs.find_protected(fid(100, 1), Some(Path::new("/tmp/moved")), W, &f, ANY_AGENT),
            None
        );
        // No path at all (deleted, unreachable): the inode alone decides.
        assert_eq!(
            rs.find_protected(fid(100, 2), None, W, &f, ANY_AGENT)
                .unwrap()
                .rule
                .rule_id,
            1
        );
    }

    #[test]
    fn exec_by_inode_then_by_entry() {
        let mut rs = Ruleset::default();
        rs.exec.insert(key(100), rr(1, action::DENY, 0));
        rs.exec_entries.insert(
            EntryKey::new(key(20), "apt".into()),
            rr(2, action::APPROVE, 0),
        );
        let f = fs();
        assert_eq!(
            rs.find_exec(key(100), None, &f, ANY_AGENT),
            Some(Hit {
                rule: rr(1, action::DENY, 0),
                by_entry: false
            })
        );
        assert_eq!(
            rs.find_exec(key(7), Some(Path::new("/tmp/apt")), &f, ANY_AGENT)
                .map(|h| (h.rule.rule_id, h.by_entry)),
            Some((2, true))
        );
        assert_eq!(
            rs.find_exec(key(7), Some(Path::new("/tmp/ls")), &f, ANY_AGENT),
            None
        );
    }

    /// A policy whose rule 1 names agent "ci" only, rule 0 every agent.
    fn scoped_rules() -> Ruleset {
        let rule = |id: u32, agents: &[&str]| airlock_policy::RuleInfo {
            id,
            name: format!("r{id}"),
            policy: "p".into(),
            source: PathBuf::from("p.yaml"),
            action: action::DENY,
            mode: airlock_policy::Mode::Enforce,
            ops: W,
            agents: agents.iter().map(|a| a.to_string()).collect(),
            approval: None,
        };
        let policy = airlock_policy::CompiledPolicy {
            rules: vec![rule(0, &[]), rule(1, &["ci"])],
            ..Default::default()
        };
        Ruleset::new(Scopes::of(&policy))
    }

    #[test]
    fn a_rule_naming_an_agent_gates_only_that_agent() {
        let (ci, other) = (
            airlock_policy::agent_slot("ci"),
            airlock_policy::agent_slot("x"),
        );
        let mut rs = scoped_rules();
        rs.add_protected(key(11), rr(1, action::DENY, W));
        rs.add_exec(key(100), rr(1, action::DENY, 0));
        let f = fs();
        let at = |rs: &Ruleset, slot| {
            rs.find_protected(fid(100, 1), Some(Path::new("/etc/app/x")), W, &f, slot)
                .map(|h| h.rule.rule_id)
        };
        assert_eq!(at(&rs, ci), Some(1));
        assert_eq!(at(&rs, other), None);
        assert_eq!(at(&rs, ANY_AGENT), None);
        assert!(rs.find_exec(key(100), None, &f, ci).is_some());
        assert!(rs.find_exec(key(100), None, &f, other).is_none());
        // A rule for every agent on an enclosing tree still reaches both, and the scoped rule's
        // own entry on /etc/app keeps it for "ci" whichever order they were added in.
        rs.add_protected(key(10), rr(0, action::DENY, W));
        assert_eq!(at(&rs, other), Some(0));
        assert_eq!(at(&rs, ci), Some(1));
        // Both on one object: "ci" gets the merge of both, everyone else only rule 0.
        let mut a = scoped_rules();
        a.add_protected(key(11), rr(1, action::DENY, op::bit(op::UNLINK)));
        a.add_protected(key(11), rr(0, action::DENY, W));
        let mut b = scoped_rules();
        b.add_protected(key(11), rr(0, action::DENY, W));
        b.add_protected(key(11), rr(1, action::DENY, op::bit(op::UNLINK)));
        assert_eq!(a.protected, b.protected);
        assert_eq!(
            lookup(&a.protected, &key(11), ci).unwrap().ops,
            W | op::bit(op::UNLINK)
        );
        assert_eq!(lookup(&a.protected, &key(11), other).unwrap().ops, W);
        // An object that disappears takes every agent's entries with it.
        a.forget(key(11));
        assert!(a.protected.is_empty());
    }

    #[test]
    fn decide_table() {
        use Verdict::*;
        let (allow, deny, hold) = (
            Answer::Now(Response::Allow),
            Answer::Now(Response::Deny),
            Answer::Hold,
        );
        for (act, monitor, want, stop) in [
            (action::ALLOW, false, (allow, Allowed, false), false),
            (action::AUDIT, false, (allow, Allowed, true), false),
            (action::DENY, false, (deny, Denied, true), true),
            (action::APPROVE, false, (hold, Held, true), true),
            (action::ALLOW, true, (allow, Allowed, false), false),
            (action::AUDIT, true, (allow, Allowed, true), false),
            (action::DENY, true, (allow, Allowed, true), false),
            (action::APPROVE, true, (allow, Allowed, true), false),
        ] {
            let r = RuleRef {
                flags: if monitor { flags::MONITOR } else { 0 },
                ..rr(1, act, 0)
            };
            let d = decide(&r);
            assert_eq!(
                (d.answer, d.verdict, d.report),
                want,
                "action {act} monitor {monitor}"
            );
            assert_eq!(
                backstopped(&r),
                stop,
                "backstop for action {act} monitor {monitor}"
            );
        }
    }

    #[test]
    fn creating_opens_also_ask_for_create_rules() {
        assert_eq!(write_ops(Some(libc::O_WRONLY as u64)), W);
        assert_eq!(
            write_ops(Some((libc::O_WRONLY | libc::O_CREAT) as u64)),
            W | op::bit(op::CREATE)
        );
        assert_eq!(write_ops(None), W | op::bit(op::CREATE));
        assert_eq!(
            reported_op(&rr(1, action::DENY, op::bit(op::CREATE))),
            Op::Create
        );
        assert_eq!(
            reported_op(&rr(1, action::DENY, op::ALL_WRITES)),
            Op::OpenWrite
        );
    }
}
